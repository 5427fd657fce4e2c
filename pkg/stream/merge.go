package stream

import (
	"cmp"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
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
	// recycle: the records come from a client with a fetchPool (replay):
	// each segment keeps its records and recycles them once handed on, so
	// that their decompressed batches are reused. Only safe where nothing
	// keeps a record, or a string of its value, after emit handed it on.
	recycle bool
	// classify, when set, is asked of every decoded event by the
	// goroutine that decoded it (add), and its answer handed to emit's
	// event with the event: what the serial event needs of an event's
	// strings is read where they were just written, in parallel. It must
	// be safe for concurrent use; it may rewrite the event.
	classify func(*beacon.Event) uint8

	out     []emitted // emit's steps, run once the lock is released; only emit uses it
	drained []*mseg   // segments handed on by order, recycled once emit's steps ran
	free    []*mseg   // recycled segments, their slices kept for the next fetch
}

type mpart struct {
	topic  string
	id     int32
	segs   []*mseg // queued, oldest first: one per fetch of the partition
	queued int     // entries in segs not yet handed on
	next   int64   // offset after the last record received
	hwm    int64   // high watermark at the last fetch
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

	rp *replayPart // a replay's account of the partition (replay.plan)
}

// caughtUp reports whether the partition has handed on everything up to
// its high watermark.
func (mp *mpart) caughtUp() bool { return mp.queued == 0 && mp.next >= mp.hwm }

// head returns the partition's next entry and its segment, skipping
// segments that are handed on (to drained).
func (m *merger) head(mp *mpart) (*mseg, *mentry) {
	for len(mp.segs) > 0 {
		sg := mp.segs[0]
		if sg.head < len(sg.ents) {
			return sg, &sg.ents[sg.head]
		}
		m.drained = append(m.drained, sg)
		mp.segs[0] = nil
		mp.segs = mp.segs[1:]
	}
	return nil, nil
}

// mseg is what one fetch delivered of one partition: the events decoded
// straight into evs (the decoder appends there; they alias the records'
// values) and one small entry per event, in offset order, which is what
// the merge reads and moves. Nothing the size of an event is copied or
// queued twice, and the entries hold no pointers for the collector to
// scan. Segments are reused once handed on.
type mseg struct {
	evs  []beacon.Event
	ents []mentry
	head int // next entry to hand on

	bad []badRecord // records that did not decode, for reject, in offset order

	recs []*kgo.Record // the records the events alias, when the merger recycles

	// stale: evs[len(evs):stale] are events of the fetch the segment held
	// before, not cleared when it was recycled (emit) but after the next
	// fetch was decoded over them (add), and only past what it wrote:
	// clearing every handed-on event was a tenth of the serial emit. Only
	// when the merger recycles (replay), whose pooled records hold the
	// bytes anyway; live segments are cleared in emit.
	stale int
}

// mentry is an event (evs[ev]), or a marker for a record without events
// (one that went to the dead-letter topic), which only moves the commit.
type mentry struct {
	ts     beacon.Time // the event's Timestamp: the merge's key
	offset int64
	ev     int32 // index in the segment's evs; -1: a marker
	epoch  int32
	last   bool  // last entry of its record: its offset can be committed
	class  uint8 // merger.classify's answer for the event (0 without it)
}

func (e *mentry) marker() bool { return e.ev < 0 }

type badRecord struct {
	r      *kgo.Record
	reason string
	err    error
}

// decodeFunc appends the events of one record to evs; a record that does
// not decode returns its dead-letter reason and error along with the
// events it keeps. It must be safe for concurrent use.
type decodeFunc func(evs []beacon.Event, r *kgo.Record) ([]beacon.Event, string, error)

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
// and currently ends at end, and returns it.
func (m *merger) assign(topic string, p int32, position, end int64) *mpart {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.find(topic, p)
	if ok {
		m.parts[i].next, m.parts[i].hwm = position, end
		return m.parts[i]
	}
	mp := &mpart{topic: topic, id: p, next: position, hwm: end, lastEvent: time.Now(), needProg: true}
	m.parts = slices.Insert(m.parts, i, mp)
	return mp
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

// add queues the events of the fetched partitions. Each partition's
// records are decoded into a segment of their own, outside the lock and,
// when several partitions were fetched, in parallel (up to GOMAXPROCS
// goroutines): the order of the output does not depend on it, as the
// merge orders by event time with (topic, partition, offset) as the
// tie-break. Records that do not decode go to reject afterwards, from the
// calling goroutine, in the order of fps.
func (m *merger) add(fps []kgo.FetchTopicPartition, decode decodeFunc, reject func(r *kgo.Record, reason string, err error)) {
	segs := m.segments(len(fps))
	fill := func(i int) {
		sg, fp := segs[i], &fps[i]
		// Room for a record's worth of events each (rows, the common
		// shape: one event a record), so that decoding does not grow them.
		sg.evs = slices.Grow(sg.evs, len(fp.Records))
		sg.ents = slices.Grow(sg.ents, len(fp.Records))
		if m.recycle {
			sg.recs = append(sg.recs, fp.Records...)
		}
		defer func() {
			// What this fetch did not overwrite of the previous one's
			// events, so that they keep no record's value alive.
			if n := len(sg.evs); n < sg.stale {
				clear(sg.evs[n:sg.stale])
			}
			sg.stale = 0
		}()
		for _, r := range fp.Records {
			n := len(sg.evs)
			var reason string
			var err error
			sg.evs, reason, err = decode(sg.evs, r)
			if err != nil {
				sg.bad = append(sg.bad, badRecord{r, reason, err})
			}
			if len(sg.evs) == n {
				sg.ents = append(sg.ents, mentry{offset: r.Offset, ev: -1, epoch: r.LeaderEpoch})
			}
			for j := n; j < len(sg.evs); j++ {
				var class uint8
				if m.classify != nil {
					class = m.classify(&sg.evs[j])
				}
				sg.ents = append(sg.ents, mentry{ts: sg.evs[j].Timestamp, offset: r.Offset, ev: int32(j), epoch: r.LeaderEpoch, class: class})
			}
			sg.ents[len(sg.ents)-1].last = true
		}
	}
	if workers := min(len(fps), runtime.GOMAXPROCS(0)); workers > 1 {
		var next atomic.Int32
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < len(fps); i = int(next.Add(1) - 1) {
					fill(i)
				}
			})
		}
		wg.Wait()
	} else {
		for i := range fps {
			fill(i)
		}
	}
	for i := range segs {
		for _, b := range segs[i].bad {
			reject(b.r, b.reason, b.err)
		}
		clear(segs[i].bad)
		segs[i].bad = segs[i].bad[:0]
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range fps {
		fp, sg := &fps[i], segs[i]
		if fp.Partition < 0 {
			// franz-go reports a client-level error (closed client, a
			// dead context) as a fetch of topic "", partition -1: no
			// partition to track, and none to count as owned or lagging.
			m.free = append(m.free, sg)
			continue
		}
		j, ok := m.find(fp.Topic, fp.Partition)
		if !ok { // consumed without an assignment we saw: track it from here
			m.parts = slices.Insert(m.parts, j, &mpart{topic: fp.Topic, id: fp.Partition, lastEvent: time.Now()})
		}
		mp := m.parts[j]
		if len(sg.ents) > 0 {
			mp.segs = append(mp.segs, sg)
			mp.queued += len(sg.ents)
			mp.next = fp.Records[len(fp.Records)-1].Offset + 1
		} else {
			m.free = append(m.free, sg)
		}
		if fp.HighWatermark > mp.hwm || len(fp.Records) > 0 {
			mp.hwm = fp.HighWatermark
		}
	}
}

// segments returns n empty segments, reused ones first.
func (m *merger) segments(n int) []*mseg {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*mseg, n)
	for i := range out {
		if k := len(m.free); k > 0 {
			out[i] = m.free[k-1]
			m.free[k-1] = nil
			m.free = m.free[:k-1]
		} else {
			out[i] = new(mseg)
		}
	}
	return out
}

// emit hands on events in order while no partition that may deliver older
// ones is empty, calling mark with the record's partition and the offset to
// commit after each completed record. It returns the partitions to pause
// and to resume.
//
// The order is decided under the lock, but event and mark run after it is
// released, in that order: event produces, which can block while the
// client's buffer is full, and the rebalance callbacks must not wait for
// that to take the lock.
func (m *merger) emit(event func(mp *mpart, e *beacon.Event, class uint8), mark func(mp *mpart, epoch int32, next int64)) (pause, resume map[string][]int32) {
	pause, resume = m.order()
	for i := range m.out {
		o := &m.out[i]
		e := &o.seg.ents[o.i]
		if !e.marker() {
			event(o.mp, &o.seg.evs[e.ev], e.class)
		}
		if e.last || e.marker() {
			mark(o.mp, e.epoch, e.offset+1)
		}
	}
	clear(m.out)
	m.out = m.out[:0]
	// The segments handed on are no longer referenced: reuse them, without
	// what they pointed to (the records' values).
	m.mu.Lock()
	for _, sg := range m.drained {
		for _, r := range sg.recs {
			r.Recycle()
		}
		clear(sg.recs)
		sg.recs = sg.recs[:0]
		if m.recycle {
			sg.stale = max(sg.stale, len(sg.evs)) // cleared by the next add
		} else {
			// Live: nothing else holds the records, and a free segment can
			// wait long for a fetch as wide as its last; its events must
			// not keep that fetch's bytes alive meanwhile.
			clear(sg.evs)
		}
		sg.evs, sg.ents, sg.head = sg.evs[:0], sg.ents[:0], 0
		if len(m.free) < 64 {
			m.free = append(m.free, sg)
		}
	}
	clear(m.drained)
	m.drained = m.drained[:0]
	m.mu.Unlock()
	return pause, resume
}

// emitted is one step of emit: the entry i of seg, an event and, when it
// is the last of its record, the record's mark, or a marker's mark alone.
// The segments stay as they are until the steps ran.
type emitted struct {
	mp  *mpart // the entry's partition; event may update its watermark (ingest goroutine only)
	seg *mseg
	i   int
}

// order appends emit's steps to m.out.
func (m *merger) order() (pause, resume map[string][]int32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	waiting := false
	for {
		var best *mpart
		var bestSeg *mseg
		var bestTS beacon.Time
		blocked := false
		for _, mp := range m.parts {
			sg, e := m.head(mp)
			for e != nil && e.marker() {
				m.out = append(m.out, emitted{mp: mp, seg: sg, i: sg.head})
				sg.head++
				mp.queued--
				sg, e = m.head(mp)
			}
			if e == nil {
				if mp.next < mp.hwm {
					blocked = true
				}
				continue
			}
			if best == nil || e.ts < bestTS {
				best, bestSeg, bestTS = mp, sg, e.ts
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
		m.out = append(m.out, emitted{mp: best, seg: bestSeg, i: bestSeg.head})
		bestSeg.head++
		best.queued--
	}
	if !waiting {
		m.blocked = time.Time{}
	}
	for _, mp := range m.parts {
		switch queued := mp.queued; {
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

// startProg sets the watermark a newly assigned partition starts from
// (the one its commit carries), which initProgress then leaves alone.
func (m *merger) startProg(topic string, p int32, t beacon.Time, has bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i, ok := m.find(topic, p); ok {
		mp := m.parts[i]
		mp.prog, mp.hasProg, mp.needProg = t, has, false
	}
}
