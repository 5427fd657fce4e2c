package stream

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// merger hands ingest's events on in event-time order across the input
// partitions. Each partition is in order (roughly: the sensor's order), but
// when ingest catches up on a backlog one partition can be hours ahead of
// another; the detector's stream time would then run ahead of the slower
// partitions' events and see their tuples only in part, missing beacons
// that the batch query finds. So events wait in per-partition queues and
// the oldest head goes first, as long as every partition that may still
// deliver something older has something queued: a partition that has
// reached its high watermark with an empty queue is idle and holds nothing
// back. For a backlog the output is then a function of the input alone,
// (event time, topic, partition, offset) order, whatever the fetch sizes.
//
// A partition whose queue grows past maxQueued is paused until it drains,
// which bounds memory when one partition is far ahead. If the partition
// that holds the others back delivers nothing for maxWait, the others go
// on without it.
type merger struct {
	mu      sync.Mutex
	parts   []*mpart // sorted by topic, partition: the tie-break
	blocked time.Time
	// exact never skips a partition that is behind (replay: the end
	// offsets are fixed and known, so waiting always ends), which makes
	// the output a function of the input alone.
	exact bool

	out []emitted // emit's steps, run once the lock is released; only emit uses it
}

type mpart struct {
	topic  string
	id     int32
	q      []mentry
	head   int
	next   int64 // offset after the last record received
	hwm    int64 // high watermark at the last fetch
	paused bool

	// The partition's watermark (docs/streaming.md, "Time"): the newest
	// Timestamp of an event handed on from it, and when (wall time) the
	// last one was.
	prog      beacon.Time
	hasProg   bool
	lastEvent time.Time
	// needProg: newly assigned, its watermark is still to be taken from
	// the previous reader's (ingest.initProgress).
	needProg bool
}

// caughtUp reports whether the partition has handed on everything up to
// its high watermark.
func (mp *mpart) caughtUp() bool { return mp.head == len(mp.q) && mp.next >= mp.hwm }

// mentry is an event, or a marker for a record without events (one that
// went to the dead-letter topic), which only moves the commit.
type mentry struct {
	ev     beacon.Event
	offset int64
	epoch  int32
	last   bool // last entry of its record: its offset can be committed
	marker bool
}

const (
	maxQueued = 50_000
	maxWait   = 2 * time.Second
)

func (m *merger) find(topic string, p int32) (int, bool) {
	return slices.BinarySearchFunc(m.parts, struct {
		t string
		p int32
	}{topic, p}, func(a *mpart, k struct {
		t string
		p int32
	}) int {
		if c := cmp.Compare(a.topic, k.t); c != 0 {
			return c
		}
		return cmp.Compare(a.id, k.p)
	})
}

// assign starts tracking a partition that will be consumed from position
// and currently ends at end.
func (m *merger) assign(topic string, p int32, position, end int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.find(topic, p)
	if ok {
		m.parts[i].next, m.parts[i].hwm = position, end
		return
	}
	m.parts = slices.Insert(m.parts, i, &mpart{topic: topic, id: p, next: position, hwm: end, lastEvent: time.Now(), needProg: true})
}

// assigned returns how many partitions are tracked, and the most records
// one of them is behind its high watermark as of its last fetch (/readyz).
func (m *merger) assigned() (n int, lag int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mp := range m.parts {
		lag = max(lag, mp.hwm-mp.next)
	}
	return len(m.parts), lag
}

// revoke forgets a partition and what it queued: its offsets were not
// committed past the last emitted record, so the next owner reads them.
func (m *merger) revoke(topic string, p int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i, ok := m.find(topic, p); ok {
		m.parts = slices.Delete(m.parts, i, i+1)
	}
}

// add queues the events of a fetched partition; decode appends a record's
// events to the queue through push.
func (m *merger) add(fp *kgo.FetchTopicPartition, decode func(r *kgo.Record, push func(*beacon.Event))) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.find(fp.Topic, fp.Partition)
	if !ok { // consumed without an assignment we saw: track it from here
		m.parts = slices.Insert(m.parts, i, &mpart{topic: fp.Topic, id: fp.Partition, lastEvent: time.Now()})
	}
	mp := m.parts[i]
	for _, r := range fp.Records {
		n := len(mp.q)
		decode(r, func(e *beacon.Event) {
			mp.q = append(mp.q, mentry{ev: *e, offset: r.Offset, epoch: r.LeaderEpoch})
		})
		if len(mp.q) == n {
			mp.q = append(mp.q, mentry{offset: r.Offset, epoch: r.LeaderEpoch, marker: true})
		}
		mp.q[len(mp.q)-1].last = true
		mp.next = r.Offset + 1
	}
	if fp.HighWatermark > mp.hwm || len(fp.Records) > 0 {
		mp.hwm = fp.HighWatermark
	}
}

// emit hands on events in order while no partition that may deliver older
// ones is empty, calling mark with the offset to commit after each
// completed record. It returns the partitions to pause and to resume.
//
// The order is decided under the lock, but event and mark run after it is
// released, in that order: event produces, which can block while the
// client's buffer is full, and the rebalance callbacks must not wait for
// that to take the lock.
func (m *merger) emit(event func(*mpart, *beacon.Event), mark func(topic string, p int32, epoch int32, next int64)) (pause, resume map[string][]int32) {
	pause, resume = m.order()
	for i := range m.out {
		o := &m.out[i]
		if o.event {
			event(o.mp, &o.ev)
		}
		if o.mark {
			mark(o.topic, o.id, o.epoch, o.next)
		}
	}
	clear(m.out)
	m.out = m.out[:0]
	return pause, resume
}

// emitted is one step of emit: an event, a mark, or an event and the mark
// of the record it completes.
type emitted struct {
	mp          *mpart // the event's partition; event may update its watermark (ingest goroutine only)
	ev          beacon.Event
	event, mark bool
	topic       string
	id          int32
	epoch       int32
	next        int64
}

// order appends emit's steps to m.out.
func (m *merger) order() (pause, resume map[string][]int32) {
	mark := func(topic string, p int32, epoch int32, next int64) {
		m.out = append(m.out, emitted{mark: true, topic: topic, id: p, epoch: epoch, next: next})
	}
	event := func(mp *mpart, e *beacon.Event) { m.out = append(m.out, emitted{mp: mp, ev: *e, event: true}) }
	m.mu.Lock()
	defer m.mu.Unlock()
	waiting := false
	for {
		var best *mpart
		blocked := false
		for _, mp := range m.parts {
			for mp.head < len(mp.q) && mp.q[mp.head].marker {
				e := &mp.q[mp.head]
				mark(mp.topic, mp.id, e.epoch, e.offset+1)
				mp.head++
			}
			if mp.head == len(mp.q) {
				if mp.next < mp.hwm {
					blocked = true
				}
				continue
			}
			if best == nil || mp.q[mp.head].ev.Timestamp < best.q[best.head].ev.Timestamp {
				best = mp
			}
		}
		if best == nil {
			break
		}
		if blocked {
			if m.blocked.IsZero() {
				m.blocked = time.Now()
			}
			if m.exact || time.Since(m.blocked) < maxWait {
				waiting = true
				break
			}
		} else {
			m.blocked = time.Time{}
		}
		e := &best.q[best.head]
		event(best, &e.ev)
		if e.last {
			o := &m.out[len(m.out)-1]
			o.mark, o.topic, o.id, o.epoch, o.next = true, best.topic, best.id, e.epoch, e.offset+1
		}
		best.head++
	}
	if !waiting {
		m.blocked = time.Time{}
	}
	for _, mp := range m.parts {
		if mp.head == len(mp.q) {
			clear(mp.q)
			mp.q, mp.head = mp.q[:0], 0
		} else if mp.head > len(mp.q)/2 {
			n := copy(mp.q, mp.q[mp.head:])
			clear(mp.q[n:])
			mp.q, mp.head = mp.q[:n], 0
		}
		switch queued := len(mp.q) - mp.head; {
		case !mp.paused && queued > maxQueued:
			mp.paused = true
			pause = addTP(pause, mp.topic, mp.id)
		case mp.paused && queued < maxQueued/2:
			mp.paused = false
			resume = addTP(resume, mp.topic, mp.id)
		}
	}
	return pause, resume
}

// skipTo records that the partition has nothing to deliver before next
// (records it consumed without queueing: control records, or records past
// the end of a replay).
func (m *merger) skipTo(topic string, p int32, next int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i, ok := m.find(topic, p); ok && next > m.parts[i].next {
		m.parts[i].next = next
	}
}

// sources appends the watermark entry of every partition in universe (the
// input partitions that exist): owned ones with their progress, idle when
// caught up and without an event for idleAfter of wall time.
func (m *merger) sources(dst []source, universe []tp, idleAfter time.Duration, now time.Time) []source {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sourcesLocked(dst, universe, idleAfter, now)
}

// sourcesLocked is sources for a caller that holds m.mu (an emit callback).
func (m *merger) sourcesLocked(dst []source, universe []tp, idleAfter time.Duration, now time.Time) []source {
	for _, k := range universe {
		s := source{topic: k.topic, part: k.p}
		if i, ok := m.find(k.topic, k.p); ok {
			mp := m.parts[i]
			s.flags |= wmOwned
			if mp.hasProg {
				s.flags |= wmHasTime
				s.time = mp.prog
			}
			if mp.caughtUp() && now.Sub(mp.lastEvent) >= idleAfter {
				s.flags |= wmIdle
			}
		}
		dst = append(dst, s)
	}
	return dst
}

// needProg returns the partitions whose watermark is still to be
// initialized, and clears their flag.
func (m *merger) needProg() []*mpart {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*mpart
	for _, mp := range m.parts {
		if mp.needProg {
			mp.needProg = false
			out = append(out, mp)
		}
	}
	return out
}

func addTP(m map[string][]int32, t string, p int32) map[string][]int32 {
	if m == nil {
		m = make(map[string][]int32)
	}
	m[t] = append(m[t], p)
	return m
}
