package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/state"
)

// detector consumes the repartition topic in a consumer group: one worker
// per owned partition, each driving its state partition. Offsets live in
// the state (the Pebble batch is the source of truth) and are committed to
// Kafka too, for the next owner and for lag monitoring, but only up to
// what every published alert before them has been acknowledged for.
type detector struct {
	s     *Service
	cl    *kgo.Client
	adm   *kadm.Client
	store *state.Store
	codec *alertCodec // nil for JSON alerts (newAlertCodec)
	topic string

	work       context.Context // canceled only by a crash or a fatal error
	cancelWork context.CancelFunc

	mu      sync.Mutex
	workers map[int32]*worker
	ready   chan struct{} // closed once cl is set: callbacks may run before NewClient returns

	errOnce    sync.Once
	err        error
	cancelPoll context.CancelFunc
	shutting   atomic.Bool

	late atomic.Int64 // connections dropped as older than their window
}

func newDetector(s *Service) (*detector, error) {
	d := &detector{s: s, topic: s.cfg.repartition, workers: make(map[int32]*worker), ready: make(chan struct{})}
	c, err := newAlertCodec(s.cfg.alertFormat, s.cfg.alertSchemaID)
	if err != nil {
		return nil, err
	}
	d.codec = c
	st, err := state.Open(s.cfg.stateDir, s.cfg.params, state.WithLogger(s.log.Named("state")))
	if err != nil {
		return nil, err
	}
	d.store = st
	d.work, d.cancelWork = context.WithCancel(context.Background())
	opts := s.clientOpts("beacon-detect",
		kgo.ConsumerGroup(s.cfg.group+".detect"),
		kgo.ConsumeTopics(d.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(d.assigned),
		kgo.OnPartitionsRevoked(d.revoked),
		kgo.OnPartitionsLost(d.lost),
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.ProducerLinger(0),
	)
	if d.cl, err = kgo.NewClient(append(opts, s.groupOpts()...)...); err != nil {
		st.Close()
		return nil, err
	}
	d.adm = kadm.NewClient(d.cl)
	close(d.ready)
	return d, nil
}

// fail records the first fatal error and stops polling.
func (d *detector) fail(err error) {
	d.errOnce.Do(func() {
		d.err = err
		if d.cancelPoll != nil {
			d.cancelPoll()
		}
	})
}

func (d *detector) run(ctx context.Context) error {
	pollCtx, cancel := context.WithCancel(ctx)
	d.cancelPoll = cancel
	defer cancel()
	lastCommit := time.Now()
	for {
		pctx, pcancel := context.WithTimeout(pollCtx, d.s.cfg.commitInterval)
		fetches := d.cl.PollRecords(pctx, 10_000)
		pcancel()
		if d.s.crashed.Load() {
			return d.crash()
		}
		if d.err != nil {
			d.cl.AllowRebalance()
			d.close(false)
			return d.err
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				d.s.log.Warn("repartition fetch error", zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
			}
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			d.mu.Lock()
			w := d.workers[p.Partition]
			d.mu.Unlock()
			if w != nil {
				w.send(batch{recs: p.Records, hwm: p.HighWatermark})
			}
		})
		if time.Since(lastCommit) >= d.s.cfg.commitInterval {
			d.commit(ctx, nil)
			lastCommit = time.Now()
		}
		d.cl.AllowRebalance()
		if ctx.Err() != nil {
			d.close(true)
			return d.err
		}
	}
}

// close shuts down gracefully (final): every worker stops at its last
// evaluation point, whose state, offset and alerts are recorded; those
// offsets are committed; the group is left (the revoke callback then has
// nothing to do); the store is closed.
func (d *detector) close(final bool) {
	d.shutting.Store(true)
	ws := d.take(nil)
	for _, w := range ws {
		w.stop(final)
	}
	if final {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		d.commit(ctx, ws)
		cancel()
	}
	d.cl.CloseAllowingRebalance()
	d.cancelWork()
	if err := d.store.Close(); err != nil {
		d.s.log.Warn("closing state failed", zap.Error(err))
	}
	d.s.log.Info("detection stopped")
}

// crash stops as a killed process would (tests): no final batch, no
// commit. The group is left so that the test does not wait for the
// session timeout.
func (d *detector) crash() error {
	d.shutting.Store(true)
	d.cancelWork()
	for _, w := range d.take(nil) {
		w.stop(false)
	}
	d.cl.LeaveGroupContext(nil)
	d.cl.CloseAllowingRebalance()
	d.store.Close()
	return nil
}

// take removes the workers of the given partitions (all when nil) from
// the map and returns them.
func (d *detector) take(ps []int32) []*worker {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*worker
	if ps == nil {
		for id, w := range d.workers {
			out = append(out, w)
			delete(d.workers, id)
		}
		return out
	}
	for _, p := range ps {
		if w := d.workers[p]; w != nil {
			out = append(out, w)
			delete(d.workers, p)
		}
	}
	return out
}

// commit commits to Kafka the acknowledged offsets of the given workers
// (all when nil), never below what was committed when the partition was
// assigned: a rebuilding worker replays older records.
func (d *detector) commit(ctx context.Context, ws []*worker) {
	if ws == nil {
		d.mu.Lock()
		for _, w := range d.workers {
			ws = append(ws, w)
		}
		d.mu.Unlock()
	}
	offs := make(map[int32]kgo.EpochOffset)
	for _, w := range ws {
		a := w.acked.Load()
		if a > w.committed && a > w.lastCommit.Load() {
			offs[w.id] = kgo.EpochOffset{Epoch: -1, Offset: a}
		}
	}
	if len(offs) == 0 {
		return
	}
	d.cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{d.topic: offs},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				if ctx.Err() == nil && !d.s.crashed.Load() {
					d.s.log.Warn("offset commit failed", zap.Error(err))
				}
				return
			}
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
						d.s.log.Warn("offset commit failed", zap.Int32("partition", p.Partition), zap.Error(err))
						continue
					}
					for _, w := range ws {
						if w.id == p.Partition {
							w.lastCommit.Store(offs[w.id].Offset)
						}
					}
				}
			}
		})
}

// assigned runs when partitions are assigned, once their committed
// offsets are known, and says where to consume from. A partition whose
// state is on disk resumes from its recorded offset (replaying, with
// alerts muted, up to the committed offset when another owner got further).
// One without state is rebuilt: the repartition topic is its changelog, so
// the worker replays from the first offset that can still be in the window
// of the committed offset's stream time, alerts muted up to that offset.
func (d *detector) assigned(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	<-d.ready
	parts := offsets[d.topic]
	if len(parts) == 0 {
		return offsets, nil
	}
	var starts kadm.ListedOffsets
	for p, o := range parts {
		committed := o.EpochOffset().Offset
		if committed < 0 {
			committed = -1
		}
		part, err := d.store.Partition(p)
		if err != nil {
			return nil, err
		}
		recorded, has := part.Offset()
		if has {
			if starts == nil {
				if starts, err = d.adm.ListStartOffsets(ctx, d.topic); err != nil {
					return nil, err
				}
			}
			if ls, ok := starts.Lookup(d.topic, p); ok && ls.Err == nil && recorded < ls.Offset {
				d.s.log.Warn("partition state older than the topic's retention, rebuilding",
					zap.Int32("partition", p), zap.Int64("recorded", recorded), zap.Int64("log_start", ls.Offset))
				if err := d.store.DropPartition(p); err != nil {
					return nil, err
				}
				if part, err = d.store.Partition(p); err != nil {
					return nil, err
				}
				has = false
			}
		}
		start := o
		switch {
		case has:
			start = kgo.NewOffset().At(recorded)
			d.s.log.Info("partition assigned", zap.Int32("partition", p), zap.Int64("state_offset", recorded),
				zap.Int64("committed", committed))
		case committed >= 0:
			from, err := d.rebuildStart(ctx, p, committed)
			if err != nil {
				return nil, err
			}
			start = kgo.NewOffset().At(from)
			d.s.m.rebuilds.Inc()
			d.s.log.Info("partition assigned without state, rebuilding", zap.Int32("partition", p),
				zap.Int64("from", from), zap.Int64("committed", committed))
		default:
			d.s.log.Info("partition assigned, never consumed", zap.Int32("partition", p))
		}
		w := newWorker(d, p, part, committed)
		d.mu.Lock()
		if old := d.workers[p]; old != nil { // cannot happen: revoke runs first
			d.mu.Unlock()
			old.stop(false)
			d.mu.Lock()
		}
		d.workers[p] = w
		d.mu.Unlock()
		go w.run()
		parts[p] = start
	}
	return offsets, nil
}

// rebuildStart finds where a partition without state must be replayed
// from. The state at the committed offset C depends on the connections
// inside the window ending at that point's stream time S and the domains
// seen during the day before it. S is at least the time T of any
// connection before C, so every record that matters has a timestamp after
// T − lookback − 1 day: ListOffsets by timestamp gives the first such
// offset (the records' timestamps are their event times). A warm-up longer
// than that reaches further back.
func (d *detector) rebuildStart(ctx context.Context, p int32, committed int64) (int64, error) {
	starts, err := d.adm.ListStartOffsets(ctx, d.topic)
	if err != nil {
		return 0, err
	}
	logStart := int64(0)
	if ls, ok := starts.Lookup(d.topic, p); ok && ls.Err == nil {
		logStart = ls.Offset
	}
	if committed <= logStart {
		return logStart, nil
	}
	t, ok, err := d.lastConnTime(ctx, p, logStart, committed)
	if err != nil || !ok {
		return logStart, err
	}
	// The replay must also cover the warm-up, or the rebuilt partition
	// would stay silent where the previous owner was already alerting.
	back := max(d.s.cfg.params.Lookback+24*time.Hour, d.s.cfg.warmup) + time.Second
	target := millis(t) - back.Milliseconds()
	listed, err := d.adm.ListOffsetsAfterMilli(ctx, target, d.topic)
	if err != nil {
		return 0, err
	}
	lo, ok := listed.Lookup(d.topic, p)
	if !ok || lo.Err != nil || lo.Offset < 0 {
		return logStart, nil
	}
	return min(max(lo.Offset, logStart), committed), nil
}

// lastConnTime returns the newest connection time among the records just
// before offset end, reading further back until it finds one.
func (d *detector) lastConnTime(ctx context.Context, p int32, logStart, end int64) (beacon.Time, bool, error) {
	for span := int64(512); ; span *= 16 {
		from := max(logStart, end-span)
		t, ok, err := d.scanConnTime(ctx, p, from, end)
		if err != nil || ok || from == logStart {
			return t, ok, err
		}
	}
}

func (d *detector) scanConnTime(ctx context.Context, p int32, from, end int64) (beacon.Time, bool, error) {
	cl, err := kgo.NewClient(d.s.clientOpts("beacon-rebuild",
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{d.topic: {p: kgo.NewOffset().At(from)}}),
		kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		return 0, false, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var newest beacon.Time
	found := false
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return 0, false, fmt.Errorf("reading partition %d before offset %d: %w", p, end, err)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= end {
				done = true
				return
			}
			var it item
			if decodeItem(r.Key, r.Value, &it) == nil && it.kind != kindDomain && (!found || it.time > newest) {
				newest, found = it.time, true
			}
			if r.Offset+1 >= end {
				done = true
			}
		})
		if done {
			return newest, found, nil
		}
	}
}

// revoked stops the workers of partitions that move, commits the offsets
// of their last evaluation points so that the next owner starts there, and
// drops their state: the next owner has its own, and
// keeping stale state would only cost disk. At shutdown (the group is left
// after close) there is nothing left to do.
func (d *detector) revoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	if d.s.crashed.Load() || len(revoked[d.topic]) == 0 {
		return
	}
	ws := d.take(revoked[d.topic])
	for _, w := range ws {
		w.stop(true)
	}
	d.commit(ctx, ws)
	if d.shutting.Load() {
		return
	}
	for _, w := range ws {
		if err := d.store.DropPartition(w.id); err != nil {
			d.fail(err)
		}
		d.s.log.Info("partition revoked", zap.Int32("partition", w.id))
	}
}

// lost stops the workers at once: another member may already own the
// partitions, so nothing is committed, and the state is dropped.
func (d *detector) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	if d.s.crashed.Load() {
		return
	}
	for _, w := range d.take(lost[d.topic]) {
		w.stop(false)
		if !d.shutting.Load() {
			if err := d.store.DropPartition(w.id); err != nil {
				d.fail(err)
			}
		}
		d.s.log.Warn("partition lost", zap.Int32("partition", w.id))
	}
}

// beacons returns the current rows of every owned partition.
func (d *detector) beacons() ([]beacon.Row, error) {
	d.mu.Lock()
	ws := make([]*worker, 0, len(d.workers))
	for _, w := range d.workers {
		ws = append(ws, w)
	}
	d.mu.Unlock()
	var rows []beacon.Row
	for _, w := range ws {
		r, err := w.beacons()
		if err != nil {
			if errors.Is(err, errStopped) {
				continue
			}
			return nil, err
		}
		rows = append(rows, r...)
	}
	beacon.SortRows(rows)
	return rows, nil
}

// status describes the owned partitions for /healthz.
type partitionStatus struct {
	Partition  int32  `json:"partition"`
	StreamTime string `json:"stream_time,omitempty"`
	Offset     int64  `json:"offset"`
	Replaying  bool   `json:"replaying"`
	Beacons    int    `json:"beacons"`
}

func (d *detector) status() []partitionStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]partitionStatus, 0, len(d.workers))
	for _, w := range d.workers {
		out = append(out, w.status())
	}
	return out
}

// batch is one fetch's records of a partition.
type batch struct {
	recs []*kgo.Record
	hwm  int64
	// end makes the end of the batch an evaluation point, as reaching the
	// high watermark does: replay marks its last batch so.
	end bool
	// done, when not nil, is closed once the batch is processed.
	done chan struct{}
}

// alertSink takes the alerts of an evaluation point and returns once they
// are durable: the detector produces them to the alert topic and waits for
// the acknowledgements; a replay collects them.
type alertSink interface {
	publish(w *worker, alerts []Alert) error
}

var errStopped = errors.New("stream: partition worker stopped")

// worker drives one partition: it cuts the records into segments at
// evaluation points, applies each segment to the state with its offset in
// one Pebble batch, evaluates the destinations the segment changed, and
// publishes the tuples that entered the beacon set.
//
// Evaluation points are (a) the last record before stream time enters a
// new EvalInterval, which makes them a function of the records alone, and
// (b) the end of a fetch that reached the partition's high watermark, which
// keeps alerts prompt once the worker has caught up.
type worker struct {
	d    *detector
	id   int32
	part *state.Partition
	log  *zap.Logger
	sink alertSink
	ch   chan batch
	quit chan struct{}
	done chan struct{}

	final      atomic.Bool  // at stop: apply and publish what is held
	committed  int64        // Kafka's committed offset at assignment, -1 if none
	acked      atomic.Int64 // offsets below are applied and their alerts acknowledged
	lastCommit atomic.Int64

	mu sync.Mutex // guards part against /beacons

	// What /healthz shows, as of the last evaluation: read without the
	// lock, so a busy worker still reports.
	shownStream  atomic.Pointer[beacon.Time]
	shownBeacons atomic.Int64

	// The current segment.
	conns     []state.Conn
	domains   []state.DomainSeen
	noPort    beacon.Time
	hasNoPort bool
	n         int   // records in the segment
	next      int64 // offset after the last record seen
	applied   int64 // offset recorded in the state
	stream    beacon.Time
	hasStream bool

	// Alert bookkeeping, recorded in the partition's meta blob.
	first     beacon.Time // first connection time seen: the warm-up starts there
	hasFirst  bool
	warm      bool
	epoch     int64
	alerted   map[beacon.Tuple]struct{} // tuples alerted in epoch
	members   map[beacon.Destination][]beacon.Tuple
	nMembers  int
	metaDirty bool
}

func newWorker(d *detector, id int32, part *state.Partition, committed int64) *worker {
	w := &worker{
		d: d, id: id, part: part, sink: d,
		log:       d.s.log.With(zap.Int32("partition", id)),
		ch:        make(chan batch, 4),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		committed: committed,
		alerted:   make(map[beacon.Tuple]struct{}),
		members:   make(map[beacon.Destination][]beacon.Tuple),
		applied:   -1,
		next:      -1,
	}
	if o, ok := part.Offset(); ok {
		w.applied, w.next = o, o
		w.acked.Store(o)
	}
	w.stream, w.hasStream = part.StreamTime()
	w.epoch = -1 << 63
	w.loadMeta(part.Meta())
	return w
}

// send hands a batch to the worker, unless it is stopping.
func (w *worker) send(b batch) {
	select {
	case w.ch <- b:
	case <-w.quit:
	case <-w.done:
	}
}

// stop ends the worker after its current batch and waits for it; with
// final set it records its alert bookkeeping first (see finish).
func (w *worker) stop(final bool) {
	w.final.Store(final)
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.done
	w.d.s.m.streamTime.DeleteLabelValues(strconv.Itoa(int(w.id)))
	w.d.s.m.beacons.DeleteLabelValues(strconv.Itoa(int(w.id)))
}

func (w *worker) run() {
	defer close(w.done)
	fail := func(err error) {
		if !w.d.s.crashed.Load() && !errors.Is(err, errStopped) {
			w.d.fail(fmt.Errorf("partition %d: %w", w.id, err))
		}
	}
	// A loaded partition may hold alerts that were found but not published
	// before a crash: evaluate it at once (every destination is dirty after
	// a load) and publish what the meta blob does not list.
	if w.hasStream {
		w.mu.Lock()
		err := w.evaluate()
		w.mu.Unlock()
		if err != nil {
			fail(err)
			return
		}
	}
	for {
		select {
		case <-w.quit:
			w.finish(fail)
			return
		default:
		}
		select {
		case <-w.quit:
			w.finish(fail)
			return
		case b := <-w.ch:
			if d := w.d.s.cfg.batchDelay; d > 0 {
				time.Sleep(d)
			}
			w.mu.Lock()
			err := w.process(b)
			w.mu.Unlock()
			if err != nil {
				fail(err)
				return
			}
			if b.done != nil {
				close(b.done)
			}
		}
	}
}

// finish records the alert bookkeeping when the stop is final. The records
// after the last evaluation point are not applied: they are read again by
// whoever owns the partition next, so that evaluation points stay where
// the records alone put them and a restart finds the same alerts.
func (w *worker) finish(fail func(error)) {
	if !w.final.Load() || w.d.s.crashed.Load() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.metaDirty {
		if _, err := w.part.Apply(nil, nil, -1, w.encodeMeta()); err != nil {
			fail(err)
			return
		}
		w.metaDirty = false
	}
}

const maxSegment = 50_000

func (w *worker) tick(t beacon.Time) int64 {
	return EpochOf(t, w.d.s.cfg.evalInterval)
}

func (w *worker) process(b batch) error {
	for _, r := range b.recs {
		if w.d.s.crashed.Load() {
			return errStopped
		}
		if r.Offset < w.next {
			continue // already applied (a fetch overlapping a resumed offset)
		}
		if w.next >= 0 && r.Offset > w.next {
			// Records this partition's state never saw are gone: the
			// repartition topic's retention removed them before they were
			// read (a detector down longer than retention). The window
			// lacks their events until those age out; say so loudly.
			w.log.Warn("repartition records lost before they were applied",
				zap.Int64("expected_offset", w.next), zap.Int64("offset", r.Offset))
			w.d.s.m.dropped.WithLabelValues("lost").Add(float64(r.Offset - w.next))
		}
		var it item
		if err := decodeItem(r.Key, r.Value, &it); err != nil {
			w.d.s.deadLetter(w.d.cl, r, reasonRecord, err)
			w.next = r.Offset + 1
			continue
		}
		if it.kind != kindDomain {
			if !w.hasFirst {
				w.first, w.hasFirst, w.metaDirty = it.time, true, true
			}
			nt := it.time
			if w.hasStream && w.stream > nt {
				nt = w.stream
			}
			if w.hasStream && w.n > 0 && w.tick(nt) != w.tick(w.stream) {
				if err := w.flush(true); err != nil {
					return err
				}
			}
			w.stream, w.hasStream = nt, true
		}
		switch it.kind {
		case kindConn:
			w.conns = append(w.conns, state.Conn{Tuple: it.tupleKey(), Time: it.time})
		case kindNoPort:
			if !w.hasNoPort || it.time > w.noPort {
				w.noPort, w.hasNoPort = it.time, true
			}
		case kindDomain:
			w.domains = append(w.domains, state.DomainSeen{IP: it.ip, Domain: it.domain, Time: it.time})
		}
		w.n++
		w.next = r.Offset + 1
		if w.n >= maxSegment {
			if err := w.flush(false); err != nil {
				return err
			}
		}
	}
	if b.end || len(b.recs) > 0 && b.recs[len(b.recs)-1].Offset+1 >= b.hwm {
		return w.flush(true)
	}
	return nil
}

// flush applies the segment with its offset and, at an evaluation point,
// evaluates and publishes.
func (w *worker) flush(evaluate bool) error {
	if w.n > 0 || w.next > w.applied {
		if w.hasNoPort {
			// A connection with a null port moves stream time and nothing
			// else: it goes with the segment, in the same atomic batch as
			// the offset.
			w.conns = append(w.conns, state.Conn{Time: w.noPort, NoPort: true})
		}
		var meta []byte
		if w.metaDirty {
			meta = w.encodeMeta()
			w.metaDirty = false
		}
		st, err := w.part.Apply(w.conns, w.domains, w.next, meta)
		if err != nil {
			return err
		}
		w.applied = w.next
		m := w.d.s.m
		m.eventsIn.WithLabelValues("detect").Add(float64(w.n))
		if st.Late > 0 {
			w.d.late.Add(int64(st.Late))
			m.late.Add(float64(st.Late))
			m.dropped.WithLabelValues("late").Add(float64(st.Late))
		}
		clear(w.conns)
		clear(w.domains)
		w.conns, w.domains, w.n, w.hasNoPort = w.conns[:0], w.domains[:0], 0, false
	}
	if !evaluate {
		return nil
	}
	return w.evaluate()
}

// evaluate brings the members of the dirty destinations up to date and
// alerts on every member not yet alerted in the current re-alert period.
// Below the offset committed when the partition was assigned, alerts are
// muted: the previous owner published them.
func (w *worker) evaluate() error {
	start := time.Now()
	now, ok := w.part.StreamTime()
	if !ok {
		w.acked.Store(w.applied)
		return nil
	}
	cfg := &w.d.s.cfg
	e := EpochOf(now, cfg.reAlert)
	dirty := w.part.Dirty()
	all := false
	if e != w.epoch {
		// A new period: every member is due again.
		w.epoch = e
		clear(w.alerted)
		w.metaDirty = true
		all = true
	}
	if !w.hasFirst { // state from before the warm-up was recorded
		w.first, w.hasFirst, w.metaDirty = now, true, true
	}
	if !w.warm && now-w.first >= beacon.Time(cfg.warmup/100) {
		w.warm, all = true, true // every member is now alerted
	}
	if all {
		seen := make(map[beacon.Destination]bool, len(dirty))
		for _, k := range dirty {
			seen[k] = true
		}
		for k := range w.members {
			if !seen[k] {
				dirty = append(dirty, k)
			}
		}
	}
	var alerts []Alert
	for _, k := range dirty {
		// Membership is decided from summaries; only the rows of tuples
		// about to be alerted are rendered (their timestamps read).
		ts, err := w.part.Members(k)
		if err != nil {
			return err
		}
		w.nMembers -= len(w.members[k])
		if len(ts) == 0 {
			delete(w.members, k)
			continue
		}
		slices.SortFunc(ts, func(a, b beacon.Tuple) int { return a.Compare(&b) })
		first := len(alerts)
		for i := range ts {
			t := &ts[i]
			if !w.warm {
				continue
			}
			if _, done := w.alerted[*t]; done {
				continue
			}
			row, ok, err := w.part.Row(*t)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("partition %d: member %v has no row", w.id, *t)
			}
			w.alerted[*t] = struct{}{}
			w.metaDirty = true
			alerts = append(alerts, w.newAlert(t, e, now, row))
		}
		// A destination's alerts go out in the query's output order.
		slices.SortFunc(alerts[first:], func(a, b Alert) int { return beacon.CompareRows(&a.Row, &b.Row) })
		w.members[k] = ts
		w.nMembers += len(ts)
	}
	m := w.d.s.m
	if len(alerts) > 0 {
		if w.applied <= w.committed {
			m.muted.Add(float64(len(alerts)))
		} else if err := w.sink.publish(w, alerts); err != nil {
			return err
		}
	}
	w.acked.Store(w.applied)
	label := strconv.Itoa(int(w.id))
	m.streamTime.WithLabelValues(label).Set(float64(now) / float64(beacon.Second))
	m.beacons.WithLabelValues(label).Set(float64(w.nMembers))
	w.shownStream.Store(&now)
	w.shownBeacons.Store(int64(w.nMembers))
	m.evalSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// publish writes the alerts of a worker's evaluation point to the alert
// topic and waits until Kafka acknowledges them all.
func (d *detector) publish(w *worker, alerts []Alert) error {
	if err := produceAlerts(d.work, d.cl, d.s.cfg.alertTopic, d.codec, alerts); err != nil {
		if d.s.crashed.Load() {
			return errStopped
		}
		return err
	}
	d.s.m.alerts.Add(float64(len(alerts)))
	d.s.recent.add(alerts)
	for i := range alerts {
		w.log.Info(AlertLogMessage, zap.String("alert_id", alerts[i].ID),
			zap.String("device", alerts[i].Row.DeviceName), zap.String("process", alerts[i].Row.FileName),
			zap.String("remote_ip", alerts[i].Row.RemoteIP), zap.Int32("remote_port", alerts[i].Row.RemotePort),
			zap.Float64("sleep_s", alerts[i].Row.Avg), zap.Float64("jitter", alerts[i].Row.Jitter))
	}
	return nil
}

// produceAlerts writes alerts to topic, keyed by tuple, JSON or (with a
// codec) Avro, ECS or OCSF, and waits until Kafka acknowledges them all.
func produceAlerts(ctx context.Context, cl *kgo.Client, topic string, codec *alertCodec, alerts []Alert) error {
	recs := make([]*kgo.Record, len(alerts))
	for i := range alerts {
		a := &alerts[i]
		var v []byte
		if codec != nil {
			var err error
			if v, err = codec.append(nil, a); err != nil {
				return fmt.Errorf("encoding alert: %w", err)
			}
		} else {
			v = a.AppendJSON(nil)
		}
		recs[i] = &kgo.Record{
			Topic: topic, Key: a.Key(), Value: v,
			Headers: []kgo.RecordHeader{{Key: "beacon.alert-id", Value: []byte(a.ID)}},
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("publishing alerts: %w", err)
	}
	return nil
}

func (w *worker) beacons() ([]beacon.Row, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.done:
		return nil, errStopped
	default:
	}
	return w.part.Beacons()
}

func (w *worker) status() partitionStatus {
	st := partitionStatus{Partition: w.id, Offset: w.acked.Load(), Replaying: w.acked.Load() < w.committed,
		Beacons: int(w.shownBeacons.Load())}
	if t := w.shownStream.Load(); t != nil {
		st.StreamTime = t.String()
	}
	return st
}

// The meta blob: version, first connection time (the warm-up's start),
// re-alert epoch, then the tuples alerted in that epoch.
const metaVersion = 1

func (w *worker) encodeMeta() []byte {
	b := []byte{metaVersion}
	first := int64(w.first)
	if !w.hasFirst {
		first = math.MinInt64
	}
	b = binary.AppendVarint(b, first)
	b = binary.AppendVarint(b, w.epoch)
	b = binary.AppendUvarint(b, uint64(len(w.alerted)))
	for t := range w.alerted {
		for _, s := range [...]string{t.DeviceId, t.DeviceName, t.AccountName, t.AccountDomain, t.FileName, t.RemoteIP} {
			b = appendString(b, s)
		}
		b = binary.AppendVarint(b, int64(t.RemotePort))
	}
	return b
}

func (w *worker) loadMeta(b []byte) {
	if len(b) < 1 || b[0] != metaVersion {
		return
	}
	b = b[1:]
	first, n := binary.Varint(b)
	if n <= 0 {
		return
	}
	b = b[n:]
	if first != math.MinInt64 {
		w.first, w.hasFirst = beacon.Time(first), true
	}
	e, n := binary.Varint(b)
	if n <= 0 {
		return
	}
	b = b[n:]
	cnt, n := binary.Uvarint(b)
	if n <= 0 {
		return
	}
	b = b[n:]
	alerted := make(map[beacon.Tuple]struct{}, cnt)
	for i := uint64(0); i < cnt; i++ {
		var f [6]string
		for j := range f {
			s, rest, err := readString(b)
			if err != nil {
				w.log.Warn("alert bookkeeping unreadable, alerts may repeat")
				return
			}
			f[j], b = string([]byte(s)), rest
		}
		p, n := binary.Varint(b)
		if n <= 0 {
			return
		}
		b = b[n:]
		alerted[beacon.Tuple{DeviceId: f[0], DeviceName: f[1], AccountName: f[2], AccountDomain: f[3],
			FileName: f[4], RemoteIP: f[5], RemotePort: int32(p)}] = struct{}{}
	}
	w.epoch, w.alerted = e, alerted
}
