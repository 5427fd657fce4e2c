package stream

import (
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// domainDedup thins domain observations before they cross the network.
// The detector keeps, per (IP, domain), only the newest time seen, so an
// observation matters only when it is newer than what was sent. A pair is
// sent at once when new or newer by the margin; a newer time within the
// margin waits (pending) and is sent by the next sweep, which runs every
// margin of event time and when the input goes idle. So the detector
// learns every pair's newest time, at most a margin of event time late,
// while a chatty pair costs two records per margin instead of one per row.
type domainDedup struct {
	margin    beacon.Time
	max       int // pairs the table holds: maxPairs (tests lower it)
	m         map[ipDomain]*seen
	clock     beacon.Time // newest event time ingest has seen
	lastSweep beacon.Time
	// queue holds the pairs whose pending time was set since the last
	// sweep, in that order (a pair whose time was sent meanwhile may be
	// in it twice), so that a sweep visits them alone: walking the whole
	// table, a pointer chase per pair of the day, was most of replay's
	// sweeps (every pair with a pending time is in queue).
	queue []*seen
}

type ipDomain struct{ ip, domain string }

type seen struct {
	sent, pending beacon.Time
	ip, domain    string // the table's key, for sweep
}

// maxPairs bounds the memory of the deduplication; when reached, pending
// times are sent and the table starts over.
const maxPairs = 1 << 20

func newDomainDedup(margin time.Duration) *domainDedup {
	return &domainDedup{margin: beacon.Time(margin / 100), max: maxPairs, m: make(map[ipDomain]*seen)}
}

// advance moves the event-time clock.
func (d *domainDedup) advance(t beacon.Time) {
	if t > d.clock {
		if d.clock == 0 {
			d.lastSweep = t // the first sweep is a margin after the first event
		}
		d.clock = t
	}
}

// observe reports whether an observation must be sent now. ip and domain
// may alias input buffers; the table copies what it keeps.
func (d *domainDedup) observe(ip, domain string, t beacon.Time) bool {
	s := d.m[ipDomain{ip, domain}]
	switch {
	case s == nil:
		if len(d.m) >= d.max {
			return true // sweep will reset the table; send this one as is
		}
		k := ipDomain{string([]byte(ip)), domain}
		d.m[k] = &seen{sent: t, ip: k.ip, domain: k.domain}
		return true
	case t > s.sent+d.margin:
		s.sent, s.pending = t, 0
		return true
	case t > s.sent && t > s.pending:
		if s.pending == 0 {
			d.queue = append(d.queue, s)
		}
		s.pending = t
	}
	return false
}

// sweep sends pending times: all of them when force is set, the table is
// full, or a margin of event time has passed since the last sweep.
func (d *domainDedup) sweep(force bool, send func(ip, domain string, t beacon.Time)) {
	full := len(d.m) >= d.max
	if !force && !full && d.clock < d.lastSweep+d.margin {
		return
	}
	d.lastSweep = d.clock
	for _, s := range d.queue {
		if s.pending > s.sent {
			send(s.ip, s.domain, s.pending)
			s.sent = s.pending
		}
		s.pending = 0
	}
	clear(d.queue)
	d.queue = d.queue[:0]
	if full {
		clear(d.m)
	}
}
