package fleet

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Implant traits: the ways real C2 traffic departs from a clean timer that
// the seed query's semantics miss (DESIGN §6, §8). Config.Traits deals them
// to implants round robin; each implant's label names its trait.
const (
	TraitBurst       = "burst"       // 2–4 connections within 2 s per callback
	TraitDead        = "dead"        // the C2 server is down: every connection fails
	TraitWorkHours   = "workhours"   // calls only in its device's working hours
	TraitSleepChange = "sleepchange" // the operator changes the sleep halfway
	TraitIPv6        = "ipv6"        // the C2 server has a public IPv6 address
	TraitAggregated  = "aggregated"  // seen only through hourly *AggregatedReport rows
	TraitCDN         = "cdn"         // calls a CDN address that 40 other devices poll every 30 min
	TraitLongSleep   = "longsleep"   // sleeps 2 h to 12 h
	TraitNearDup     = "neardup"     // 5 % of callbacks logged twice, up to 1 s apart
	TraitDrops       = "drops"       // the sensor misses 15 % of its callbacks
)

// Traits lists the implant traits the simulator knows.
var Traits = []string{TraitBurst, TraitDead, TraitWorkHours, TraitSleepChange, TraitIPv6,
	TraitAggregated, TraitCDN, TraitLongSleep, TraitNearDup, TraitDrops}

func knownTrait(t string) bool {
	for _, k := range Traits {
		if t == k {
			return true
		}
	}
	return false
}

// AggregatedReport is the ActionType of the rows TraitAggregated emits.
const AggregatedReport = "ConnectionSuccessAggregatedReport"

// cdnPollers is how many other devices poll a TraitCDN implant's address.
const cdnPollers = 40

// applyTrait changes an implant's timer (before addTimer) for trait tr.
// It returns the sleep the implant uses.
func (g *Generator) applyTrait(w *world, rng *rand.Rand, tm *timer, tr string, fw string, sleep beacon.Time, jitter float64) beacon.Time {
	switch tr {
	case TraitBurst:
		tm.burst = 3
	case TraitDead:
		tm.failRate = 1
	case TraitWorkHours:
		tm.work = true
	case TraitIPv6:
		tm.rec.RemoteIP = w.addrs.v6(pick(rng, "2a05:d018:", "2600:1f18:", "2a01:4f8:"))
		if tm.url == "" {
			// A host name (and so Domains) for every IPv6 C2, drawn from
			// the timer's own stream so other actors are unchanged.
			tm.url = c2Host(tm.rng)
		}
	case TraitAggregated:
		tm.aggregated = true
		tm.rec.ActionType = AggregatedReport
	case TraitNearDup:
		tm.dupRate = 0.05
	case TraitDrops:
		tm.dropRate = 0.15
	case TraitLongSleep:
		sleep = ticks(pick(rng, 2*time.Hour, 4*time.Hour, 8*time.Hour, 12*time.Hour))
	case TraitCDN:
		if sleep > ticks(10*time.Minute) {
			sleep = ticks(45 * time.Second)
		}
	}
	tm.lo, tm.hi = gapBounds(fw, sleep, jitter)
	if tr == TraitSleepChange {
		// Halfway through the rest of the period, a new sleep: a quarter
		// or four times the old one, at least 5 s.
		f := pick(rng, 0.25, 4.0)
		s2 := max(beacon.Time(float64(sleep)*f), 5*beacon.Second)
		tm.lo2, tm.hi2 = gapBounds(fw, s2, jitter)
		tm.switchAt = -1 // set in addTimer's caller, from the first callback
	}
	return sleep
}

// plantCDNPollers makes cdnPollers other devices poll the implant's address
// with the implant's process, every 30 min ± 10 %: a fleet service.
func (g *Generator) plantCDNPollers(w *world, rng *rand.Rand, imp *timer) {
	sleep := ticks(30 * time.Minute)
	lo, hi := gapBounds("", sleep, 0.1)
	n := 0
	for _, di := range rng.Perm(len(w.devices)) {
		d := w.devices[di]
		if d == imp.dev || n == cdnPollers {
			continue
		}
		n++
		tm := &timer{rng: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())), dev: d, lo: lo, hi: hi, failRate: 0.003}
		tm.rec = baseRecord(d, rng, 0)
		tm.rec.RemoteIP, tm.rec.RemotePort, tm.rec.FileName = imp.rec.RemoteIP, imp.rec.RemotePort, imp.rec.FileName
		tm.rec.AccountName, tm.rec.AccountDomain = d.user, orgDomain
		tm.rec.ProcessId = d.pid(rng, tm.rec.FileName)
		first := g.start + beacon.Time(rng.Int64N(int64(sleep)+1))
		g.addTimer(tm, Label{Class: ClassFleetService, Name: "cdn-poller", Sleep: 30 * time.Minute, Jitter: 0.1}, first)
	}
}

// traitFire handles what a trait changes about one callback at t: it
// returns false when the callback emits no row of its own (an aggregated
// report already covers its hour).
func (tm *timer) traitFire(g *Generator, r *Record) bool {
	if tm.aggregated {
		hour := r.Timestamp / (3600 * beacon.Second)
		if tm.hasHour && hour == tm.lastHour {
			return false
		}
		tm.hasHour, tm.lastHour = true, hour
	}
	return true
}

// traitExtra emits a callback's extra rows: burst connections and
// near-duplicates.
func (tm *timer) traitExtra(g *Generator, r *Record) {
	if tm.burst == 0 && tm.dupRate == 0 {
		return // no draw: a timer without traits keeps its random stream
	}
	for n := tm.rng.IntN(tm.burst + 1); n > 0 && tm.burst > 0; n-- {
		x := *r
		x.Timestamp += 1 + beacon.Time(tm.rng.Int64N(int64(2*beacon.Second)))
		x.LocalPort = ephemeralPort(tm.rng)
		g.emit(&x, tm.label)
	}
	if tm.dupRate > 0 && tm.rng.Float64() < tm.dupRate {
		x := *r
		x.Timestamp += 1 + beacon.Time(tm.rng.Int64N(int64(beacon.Second)))
		g.emit(&x, tm.label)
	}
}

func validateTraits(ts []string) error {
	for _, t := range ts {
		if !knownTrait(t) {
			return fmt.Errorf("unknown trait %q (want one of %v)", t, Traits)
		}
	}
	return nil
}
