// Package fleet is a simulated fleet: deterministic, labelled synthetic
// Microsoft Defender DeviceNetworkEvents.
//
// A Generator models a company's devices over a period — work-hours web
// browsing, fleet services that every device polls (Windows Update, Defender
// cloud, Teams, OneDrive), a few benign periodic updaters, and C2 implants
// with the sleep/jitter rules of Cobalt Strike, Sliver, Empire and Mythic —
// seen through an imperfect sensor that misses, duplicates and delays
// events. It yields the events one at a time, roughly in event-time order,
// and knows the ground truth (Labels).
//
//	g, err := fleet.New(fleet.Config{Seed: 7, Devices: 50})
//	for r, ok := g.NextRecord(); ok; r, ok = g.NextRecord() {
//		w.Write(&r)
//	}
//	labels := g.Labels()
//
// Writers render records as flat JSON lines, Defender Streaming API
// envelopes, CSV or Avro.
package fleet

import (
	"iter"
	"math/rand/v2"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Record is one DeviceNetworkEvents row as the simulator writes it: the
// columns the detector reads (beacon.Event) and a few more that real exports
// carry.
type Record struct {
	beacon.Event
	LocalIP   string
	LocalPort int32 // 0 is written as null
	Protocol  string
	ProcessId int64 // InitiatingProcessId; 0 is written as null
	// Reported is when the sensor reported the event: Timestamp, or later
	// for an event emitted late. The envelope writer puts it in "time".
	Reported beacon.Time
}

// Tuple is what the seed query groups connections by.
type Tuple = beacon.Tuple

// Label classes.
const (
	ClassImplant      = "implant"
	ClassUpdater      = "updater"
	ClassFleetService = "fleet-service"
)

// Label is the ground truth about one tuple that calls home on a timer.
type Label struct {
	Tuple
	Class     string // ClassImplant, ClassUpdater or ClassFleetService
	Name      string // product or service ("teamviewer", "windows-update"); for implants the framework
	Framework string // CobaltStrike, Sliver, Empire, Mythic; "" for benign timers
	Trait     string // an implant's trait (Traits), "" for none
	// Sleep and Jitter are the timer's settings in the framework's own
	// terms: Jitter is a fraction of Sleep, except for Sliver where it is
	// seconds. GapMin and GapMax bound every gap between consecutive
	// callbacks (before the sensor drops or duplicates any).
	Sleep          time.Duration
	Jitter         float64
	GapMin, GapMax time.Duration
	RemoteUrl      string      // the host name some of its events carry, or ""
	FirstEvent     beacon.Time // the first callback (the sensor may miss it)
	WorkHoursOnly  bool        // the timer pauses outside its device's working hours
	Callbacks      int64       // callbacks made so far
	Events         int64       // rows emitted so far with this tuple (after drops and duplicates)
}

// Stats counts what a Generator has done so far.
type Stats struct {
	Emitted    int64 // records returned
	Dropped    int64 // connections the sensor missed
	Duplicated int64 // extra records from duplicated connections
	Late       int64 // records the sensor held back (emitted up to MaxLate after their Timestamp)
}

// Generator yields a fleet's events. It is not safe for concurrent use.
type Generator struct {
	cfg        Config
	start, end beacon.Time
	q          queue
	now        beacon.Time // the tick being fired
	ready      []entry     // records due at now, in order: they skip the heap
	readyAt    int
	recs       []Record
	free       []int32
	sensor     *rand.Rand
	labels     []Label
	maxLate    beacon.Time
	stats      Stats
}

// source produces the events of one simulated actor.
type source interface {
	// fire emits the events of the tick at t through g.emit and returns the
	// time of the next tick.
	fire(g *Generator, t beacon.Time) beacon.Time
}

// New builds the fleet a configuration describes. Zero fields take their
// defaults (DefaultConfig).
func New(cfg Config) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	g := &Generator{
		cfg:     cfg,
		start:   beacon.TimeOf(cfg.Start),
		maxLate: beacon.Time(cfg.MaxLate / 100),
	}
	g.end = g.start + beacon.Time(cfg.Duration/100)
	root := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6265_6163_6f6e))
	stream := func() *rand.Rand { return rand.New(rand.NewPCG(root.Uint64(), root.Uint64())) }
	g.sensor = stream()
	w := newWorld(stream(), stream(), cfg.Devices)

	g.plantImplants(w, stream())
	g.installUpdaters(w, stream())
	g.startFleetServices(w, stream())
	for _, d := range w.devices {
		rng := stream()
		if !d.server {
			b := newBrowsing(rng, d, w)
			g.schedule(b, d.nextActive(g.start+beacon.Time(rng.Int64N(int64(60*beacon.Second)))))
		}
		rng = stream()
		n := &noise{rng: rng, dev: d, w: w}
		g.schedule(n, g.start+n.gap())
	}
	return g, nil
}

// schedule makes src tick at t, if t is inside the period.
func (g *Generator) schedule(src source, t beacon.Time) bool {
	if t < g.start || t >= g.end {
		return false
	}
	g.q.push(entry{at: t, src: src, rec: -1, label: -1})
	return true
}

// Config returns the configuration with defaults applied.
func (g *Generator) Config() Config { return g.cfg }

// Start and End bound the period: Start ≤ Timestamp < End.
func (g *Generator) Start() beacon.Time { return g.start }

// End is the first instant after the period.
func (g *Generator) End() beacon.Time { return g.end }

// Labels returns the ground truth: every timer-driven tuple whose first
// callback falls in the period, implants first, then updaters, then fleet
// services. Callbacks and Events count what has been generated so far.
func (g *Generator) Labels() []Label { return append([]Label(nil), g.labels...) }

// Stats returns counts of what the generator has done so far.
func (g *Generator) Stats() Stats { return g.stats }

// NextRecord returns the next record, or ok=false when the period is over.
// Records come in the order the sensor emits them: by Reported, which is
// Timestamp except for the few emitted late.
func (g *Generator) NextRecord() (r Record, ok bool) {
	for {
		var e entry
		switch {
		case g.readyAt < len(g.ready):
			// Everything in the heap is due at or after now.
			e = g.ready[g.readyAt]
			g.readyAt++
		case g.q.len() > 0:
			g.ready, g.readyAt = g.ready[:0], 0
			e = g.q.pop()
		default:
			return Record{}, false
		}
		if e.src != nil {
			g.now = e.at
			if next := e.src.fire(g, e.at); next > e.at {
				g.schedule(e.src, next)
			}
			continue
		}
		r = g.recs[e.rec]
		g.free = append(g.free, e.rec)
		if e.label >= 0 {
			g.labels[e.label].Events++
		}
		g.stats.Emitted++
		return r, true
	}
}

// All iterates over the remaining records.
func (g *Generator) All() iter.Seq[Record] {
	return func(yield func(Record) bool) {
		for r, ok := g.NextRecord(); ok; r, ok = g.NextRecord() {
			if !yield(r) {
				return
			}
		}
	}
}

// emit passes a connection through the sensor: it may be dropped,
// duplicated, or emitted late.
func (g *Generator) emit(r *Record, label int) {
	if r.Timestamp >= g.end || r.Timestamp < g.start {
		return
	}
	if g.cfg.DropRate > 0 && g.sensor.Float64() < g.cfg.DropRate {
		g.stats.Dropped++
		return
	}
	g.enqueue(r, label)
	if g.cfg.DupRate > 0 && g.sensor.Float64() < g.cfg.DupRate {
		d := *r
		if g.sensor.IntN(2) == 0 {
			// a few milliseconds later
			if t := d.Timestamp + beacon.Time(10_000+g.sensor.Int64N(500_000)); t < g.end {
				d.Timestamp = t
			}
		}
		g.stats.Duplicated++
		g.enqueue(&d, label)
	}
}

func (g *Generator) enqueue(r *Record, label int) {
	at := r.Timestamp
	if g.cfg.LateRate > 0 && g.sensor.Float64() < g.cfg.LateRate {
		at += 1 + beacon.Time(g.sensor.Int64N(int64(g.maxLate)))
		g.stats.Late++
	}
	r.Reported = at
	var i int32
	if n := len(g.free); n > 0 {
		i = g.free[n-1]
		g.free = g.free[:n-1]
	} else {
		i = int32(len(g.recs))
		g.recs = append(g.recs, Record{})
	}
	g.recs[i] = *r
	if at == g.now {
		g.ready = append(g.ready, entry{at: at, rec: i, label: int32(label)})
		return
	}
	g.q.push(entry{at: at, rec: i, label: int32(label)})
}

// entry is a source's next tick or a record waiting to be emitted.
type entry struct {
	at    beacon.Time
	seq   uint64
	src   source
	rec   int32
	label int32
}

// queue is a binary min-heap on (at, seq): ties keep insertion order, so
// the output never depends on anything but the seed.
type queue struct {
	h   []entry
	seq uint64
}

func (q *queue) len() int { return len(q.h) }

func (q *queue) less(i, j int) bool {
	a, b := &q.h[i], &q.h[j]
	return a.at < b.at || a.at == b.at && a.seq < b.seq
}

func (q *queue) push(e entry) {
	e.seq = q.seq
	q.seq++
	q.h = append(q.h, e)
	i := len(q.h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q.h[i], q.h[p] = q.h[p], q.h[i]
		i = p
	}
}

func (q *queue) pop() entry {
	top := q.h[0]
	n := len(q.h) - 1
	q.h[0] = q.h[n]
	q.h[n] = entry{}
	q.h = q.h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && q.less(r, l) {
			m = r
		}
		if !q.less(m, i) {
			break
		}
		q.h[i], q.h[m] = q.h[m], q.h[i]
		i = m
	}
	return top
}
