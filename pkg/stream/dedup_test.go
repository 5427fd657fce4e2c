package stream

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// dedupModel is domainDedup as first written: a sweep walks the whole
// table. The queue of pending pairs must send what it sent.
type dedupModel struct {
	margin, clock, lastSweep beacon.Time
	m                        map[ipDomain]*[2]beacon.Time // sent, pending
}

func (d *dedupModel) advance(t beacon.Time) {
	if t > d.clock {
		if d.clock == 0 {
			d.lastSweep = t
		}
		d.clock = t
	}
}

func (d *dedupModel) observe(ip, dom string, t beacon.Time, max int) bool {
	s := d.m[ipDomain{ip, dom}]
	switch {
	case s == nil:
		if len(d.m) >= max {
			return true
		}
		d.m[ipDomain{ip, dom}] = &[2]beacon.Time{t, 0}
		return true
	case t > s[0]+d.margin:
		s[0], s[1] = t, 0
		return true
	case t > s[0] && t > s[1]:
		s[1] = t
	}
	return false
}

func (d *dedupModel) sweep(force bool, max int, send func(ip, dom string, t beacon.Time)) {
	full := len(d.m) >= max
	if !force && !full && d.clock < d.lastSweep+d.margin {
		return
	}
	d.lastSweep = d.clock
	for k, s := range d.m {
		if s[1] > s[0] {
			send(k.ip, k.domain, s[1])
			s[0] = s[1]
		}
		s[1] = 0
	}
	if full {
		clear(d.m)
	}
}

type dedupSent struct {
	ip, dom string
	t       beacon.Time
}

func sortedSent(s []dedupSent) []dedupSent {
	slices.SortFunc(s, func(a, b dedupSent) int {
		return cmp.Or(cmp.Compare(a.ip, b.ip), cmp.Compare(a.dom, b.dom), cmp.Compare(a.t, b.t))
	})
	return s
}

// TestDomainDedupModel: random observations of a few pairs, times
// mostly moving forward with some out of order, sweeps forced and not:
// every observe answers as the model's, and every sweep sends the set the
// model's walk of the whole table sends (the order of a map's walk is
// random, so the sets are compared). It runs with the table's real bound
// and with one of 5 pairs of the 12, so that starting over is covered.
func TestDomainDedupModel(t *testing.T) {
	const margin = 10 * time.Minute
	for _, small := range []bool{false, true} {
		for seed := range uint64(20) {
			rng := rand.New(rand.NewPCG(seed, 7))
			d := newDomainDedup(margin)
			mo := &dedupModel{margin: beacon.Time(margin / 100), m: make(map[ipDomain]*[2]beacon.Time)}
			max := maxPairs
			ips, doms := []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"}, []string{"a.com", "b.com", "c.com", "d.com"}
			if small {
				max, d.max = 5, 5
			}
			now := beacon.Time(1_700_000_000 * 10_000_000)
			for step := range 3000 {
				now += beacon.Time(rng.IntN(int(3 * time.Minute / 100)))
				ts := now
				if rng.IntN(5) == 0 {
					ts -= beacon.Time(rng.IntN(int(20 * time.Minute / 100)))
				}
				ip, dom := ips[rng.IntN(len(ips))], doms[rng.IntN(len(doms))]
				d.advance(ts)
				mo.advance(ts)
				got, want := d.observe(ip, dom, ts), mo.observe(ip, dom, ts, max)
				if got != want {
					t.Fatalf("seed %d step %d: observe(%s, %s, %d) = %v, model %v", seed, step, ip, dom, ts, got, want)
				}
				force := rng.IntN(50) == 0
				var gs, ws []dedupSent
				d.sweep(force, func(ip, dom string, t beacon.Time) { gs = append(gs, dedupSent{ip, dom, t}) })
				mo.sweep(force, max, func(ip, dom string, t beacon.Time) { ws = append(ws, dedupSent{ip, dom, t}) })
				if !slices.Equal(sortedSent(gs), sortedSent(ws)) {
					t.Fatalf("seed %d step %d: sweep sent %v, model %v", seed, step, gs, ws)
				}
			}
		}
	}
}
