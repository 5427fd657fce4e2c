package stream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
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
	cancelCl   context.CancelFunc // cl's context (closeWithin)

	mu      sync.Mutex
	workers map[int32]*worker
	ready   chan struct{} // closed once cl is set: callbacks may run before NewClient returns
	// released says since when (wall time) a partition whose state is on
	// disk has not been owned: it is dropped after orphanTTL.
	released map[int32]time.Time
	// seeks are the start offsets that rebuilding workers found, for the
	// poll loop to apply (SetOffsets belongs to the polling goroutine).
	seeks []seek
	// rebuilt counts the rebuilds of each partition after a state error.
	rebuilt map[int32]int

	errMu      sync.Mutex
	err        error              // the first fatal error; under errMu
	cancelPoll context.CancelFunc // stops run's poll; under errMu
	shutting   atomic.Bool

	late atomic.Int64 // connections dropped as older than their window
}

func newDetector(s *Service) (*detector, error) {
	d := &detector{s: s, topic: s.cfg.repartition, workers: make(map[int32]*worker), ready: make(chan struct{}),
		released: make(map[int32]time.Time), rebuilt: make(map[int32]int)}
	c, err := newAlertCodec(s.cfg.alertFormat, s.cfg.alertSchemaID)
	if err != nil {
		return nil, err
	}
	d.codec = c
	st, err := state.Open(s.cfg.stateDir, s.cfg.params, s.stateOpts()...)
	if err != nil {
		return nil, err
	}
	d.store = st
	// States left by an earlier run count as released now: the group
	// gives them back to this process, or they are collected.
	if offs, err := st.Offsets(); err == nil {
		for p := range offs {
			d.released[p] = time.Now()
		}
	}
	d.work, d.cancelWork = context.WithCancel(context.Background())
	clCtx, cancelCl := context.WithCancel(context.Background())
	d.cancelCl = cancelCl
	opts := s.clientOpts("beacon-detect",
		kgo.WithContext(clCtx), // see closeWithin
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
		cancelCl()
		st.Close()
		return nil, err
	}
	d.adm = kadm.NewClient(d.cl)
	close(d.ready)
	return d, nil
}

// fail records the first fatal error and stops polling (the cancel runs
// after the lock is released: nothing is called out under errMu).
func (d *detector) fail(err error) {
	d.errMu.Lock()
	first := d.err == nil
	if first {
		d.err = err
	}
	cancel := d.cancelPoll
	d.errMu.Unlock()
	if first && cancel != nil {
		cancel()
	}
}

// failed returns the first fatal error, if any.
func (d *detector) failed() error {
	d.errMu.Lock()
	defer d.errMu.Unlock()
	return d.err
}

func (d *detector) run(ctx context.Context) error {
	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.errMu.Lock()
	d.cancelPoll = cancel
	if d.err != nil { // failed before run started
		cancel()
	}
	d.errMu.Unlock()
	lastCommit := time.Now()
	for {
		pctx, pcancel := context.WithTimeout(pollCtx, d.s.cfg.commitInterval)
		fetches := d.cl.PollRecords(pctx, 10_000)
		pcancel()
		if d.s.crashed.Load() {
			return d.crash()
		}
		if err := d.failed(); err != nil {
			d.cl.AllowRebalance()
			d.close(false)
			return err
		}
		failed := false
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				failed = true
				d.s.quiet.Warn("repartition fetch error", zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
			}
		})
		if failed && fetches.NumRecords() == 0 { // errors only return at once: wait instead of spinning
			select {
			case <-pollCtx.Done():
			case <-time.After(time.Second):
			}
		}
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
		d.applySeeks()
		if time.Since(lastCommit) >= d.s.cfg.commitInterval {
			d.commit(ctx, nil)
			d.collect()
			lastCommit = time.Now()
		}
		d.cl.AllowRebalance()
		if ctx.Err() != nil {
			d.close(true)
			return d.failed()
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
		// Bounded like the close (closeWithin): during a rebalance a
		// commit waits for the JoinGroup in flight. Without it the next
		// owner starts from the previous commit and publishes the
		// alerts after it again, with their IDs.
		ctx, cancel := context.WithTimeout(context.Background(), 2*closeWait)
		d.commit(ctx, ws)
		cancel()
	}
	closeWithin(d.cl, d.cancelCl, closeWait)
	if final {
		d.s.leaveGroup(d.s.cfg.group + ".detect")
	}
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
	closeWithin(d.cl, d.cancelCl, 0) // a kill waits for nothing
	d.store.Close()
	return nil
}

// orphanTTL is how long the state of a partition this process no longer
// owns stays on disk: long enough for a broker outage or a rebalance to
// give it back (then work resumes from its own offset, with no rebuild),
// short enough not to keep every partition a process ever owned.
const orphanTTL = time.Hour

// collect drops the states released more than orphanTTL ago.
func (d *detector) collect() {
	d.mu.Lock()
	var old []int32
	for p, at := range d.released {
		if _, owned := d.workers[p]; !owned && time.Since(at) > orphanTTL {
			old = append(old, p)
			delete(d.released, p)
		}
	}
	d.mu.Unlock()
	for _, p := range old {
		if err := d.store.DropPartition(p); err != nil {
			d.s.log.Warn("dropping an unclaimed partition state failed", zap.Int32("partition", p), zap.Error(err))
			continue
		}
		d.s.log.Info("unclaimed partition state dropped", zap.Int32("partition", p), zap.Duration("after", orphanTTL))
	}
}

// release records that the partitions' states are kept but not owned.
func (d *detector) release(ws []*worker) {
	d.mu.Lock()
	for _, w := range ws {
		d.released[w.id] = time.Now()
	}
	d.mu.Unlock()
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
	var starts, ends kadm.ListedOffsets
	for p, o := range parts {
		committed := o.EpochOffset().Offset
		if committed < 0 {
			committed = -1
		}
		d.mu.Lock()
		delete(d.released, p)
		d.mu.Unlock()
		part, err := d.store.Partition(p)
		if err != nil {
			// A state that does not load is dropped and rebuilt from the
			// repartition topic; the other partitions go on.
			d.s.log.Error("partition state unreadable, rebuilding it", zap.Int32("partition", p), zap.Error(err))
			d.s.m.dropped.WithLabelValues("corrupt").Inc()
			if err := d.store.DropPartition(p); err != nil {
				return nil, err
			}
			if part, err = d.store.Partition(p); err != nil {
				return nil, err
			}
		}
		if ends == nil {
			if ends, err = d.adm.ListEndOffsets(ctx, d.topic); err != nil {
				return nil, err
			}
		}
		if le, ok := ends.Lookup(d.topic, p); ok && le.Err == nil && committed > le.Offset {
			committed = -1 // the offsets of a topic since deleted (see below)
		}
		recorded, has := part.Offset()
		if has {
			if starts == nil {
				if starts, err = d.adm.ListStartOffsets(ctx, d.topic); err != nil {
					return nil, err
				}
			}
			// fresh drops the partition's state and opens it empty.
			fresh := func() error {
				if err := d.store.DropPartition(p); err != nil {
					return err
				}
				part, err = d.store.Partition(p)
				has = false
				return err
			}
			if le, ok := ends.Lookup(d.topic, p); ok && le.Err == nil && recorded > le.Offset {
				// The state is ahead of the topic: the topic was deleted and
				// created again (a broker that lost its data). Its offsets
				// mean nothing here; resuming would skip the new records.
				d.s.log.Warn("partition state is past the topic's end (topic recreated?), rebuilding",
					zap.Int32("partition", p), zap.Int64("recorded", recorded), zap.Int64("end", le.Offset))
				if err := fresh(); err != nil {
					return nil, err
				}
			} else if ls, ok := starts.Lookup(d.topic, p); ok && ls.Err == nil && recorded < ls.Offset {
				d.s.log.Warn("partition state older than the topic's retention, rebuilding",
					zap.Int32("partition", p), zap.Int64("recorded", recorded), zap.Int64("log_start", ls.Offset))
				if err := fresh(); err != nil {
					return nil, err
				}
			}
		}
		start := o
		rebuild := false
		switch {
		case has:
			start = kgo.NewOffset().At(recorded)
			d.s.log.Info("partition assigned", zap.Int32("partition", p), zap.Int64("state_offset", recorded),
				zap.Int64("committed", committed))
		case committed >= 0:
			// Where the rebuild starts takes reading the topic: the worker
			// finds it, outside this callback, while the partition is
			// paused, and the poll loop seeks there.
			rebuild = true
			d.cl.PauseFetchPartitions(map[string][]int32{d.topic: {p}})
			d.s.log.Info("partition assigned without state, rebuilding", zap.Int32("partition", p),
				zap.Int64("committed", committed))
		default:
			d.s.log.Info("partition assigned, never consumed", zap.Int32("partition", p))
		}
		if !rebuild {
			d.cl.ResumeFetchPartitions(map[string][]int32{d.topic: {p}}) // paused by an earlier rebuild
		}
		w := newWorker(d.s.workerEnv(d, d.work, &d.late), p, part, committed)
		if rebuild {
			w.rebuild, w.next = true, math.MaxInt64 // nothing counts until the seek
		}
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
			if decodeItem(r.Key, r.Value, &it) == nil && (it.kind == kindConn || it.kind == kindNoPort) && (!found || it.time > newest) {
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

// revoked stops the workers of partitions that move and commits the
// offsets of their last evaluation points so that the next owner starts
// there. Their state stays on disk: if the partition comes back, work
// resumes from the state's own offset (catching up, alerts muted, to what
// the other owner committed) instead of a rebuild; otherwise it is
// collected after orphanTTL.
func (d *detector) revoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	if d.s.crashed.Load() || len(revoked[d.topic]) == 0 {
		return
	}
	ws := d.take(revoked[d.topic])
	for _, w := range ws {
		w.stop(true)
	}
	d.commit(ctx, ws)
	d.release(ws)
	for _, w := range ws {
		d.s.log.Info("partition revoked, state kept", zap.Int32("partition", w.id))
	}
}

// lost stops the workers at once: another member may already own the
// partitions, so nothing is committed. The state stays on disk, as for a
// revoke: a broker outage that loses the session gives the partitions back
// with their state.
func (d *detector) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	if d.s.crashed.Load() {
		return
	}
	ws := d.take(lost[d.topic])
	for _, w := range ws {
		w.stop(false)
		d.s.log.Warn("partition lost, state kept", zap.Int32("partition", w.id))
	}
	d.release(ws)
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
	Lag        int64  `json:"lag"` // records between Offset and the topic's end, as of the last watch (/readyz)
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
	// Or, from a replay, records without a kgo.Record each: their keys
	// and values in buf (pendEnt), at offsets first, first+1, …; the
	// worker's strings and held records alias buf, which the replay
	// reuses only once the worker released it (worker.released).
	buf   []byte
	ents  []pendEnt
	first int64
	hwm   int64
	// end makes the end of the batch an evaluation point, as reaching the
	// high watermark does: replay marks its last batch so.
	end bool
	// done, when not nil, is closed once the batch is processed.
	done chan struct{}
	// seek: the poll loop moved the partition to offset from (the start
	// of a rebuild); records before it were fetched before the move.
	seek bool
	from int64
}

func (b *batch) len() int { return len(b.recs) + len(b.ents) }

// at returns the offset, key and value of the batch's i-th record.
func (b *batch) at(i int) (offset int64, key, value []byte) {
	if b.recs != nil {
		r := b.recs[i]
		return r.Offset, r.Key, r.Value
	}
	e := b.ents[i]
	return b.first + int64(i), b.buf[e.keyStart:e.keyEnd:e.keyEnd], b.buf[e.keyEnd:e.valEnd:e.valEnd]
}

// record returns the batch's i-th record, for the dead-letter path; a
// replay's is made up, of topic "replay" and partition p.
func (b *batch) record(i int, p int32) *kgo.Record {
	if b.recs != nil {
		return b.recs[i]
	}
	off, key, value := b.at(i)
	return replayRecord(p, off, key, value)
}

// replayRecord names a replay's record (it has no kgo.Record) for the
// dead letters.
func replayRecord(p int32, offset int64, key, value []byte) *kgo.Record {
	return &kgo.Record{Topic: "replay", Partition: p, Offset: offset, Key: key, Value: value}
}

// seek is a rebuild start for the poll loop to apply.
type seek struct {
	w    *worker
	from int64
}

// applySeeks moves rebuilding partitions to where their rebuild starts
// and resumes them. It runs in the poll loop, before AllowRebalance.
func (d *detector) applySeeks() {
	d.mu.Lock()
	seeks := d.seeks
	d.seeks = nil
	d.mu.Unlock()
	for _, sk := range seeks {
		d.mu.Lock()
		current := d.workers[sk.w.id] == sk.w
		d.mu.Unlock()
		if !current {
			continue
		}
		d.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{d.topic: {sk.w.id: {Epoch: -1, Offset: sk.from}}})
		sk.w.send(batch{seek: true, from: sk.from})
		d.cl.ResumeFetchPartitions(map[string][]int32{d.topic: {sk.w.id}})
	}
}

// fatalError marks an error that stops the detector; any other error of
// a worker is taken for a broken partition state, which is rebuilt.
type fatalError struct{ error }

func (e fatalError) Unwrap() error { return e.error }

// stopped is told why a worker stopped: a fatal error, or a partition
// that failed too often, stops the detector; another error rebuilds the
// partition.
func (d *detector) stopped(w *worker, err error) {
	var fe fatalError
	if errors.As(err, &fe) || !d.recover(w, err) {
		d.fail(fmt.Errorf("partition %d: %w", w.id, err))
	}
}

// seekTo hands the poll loop a rebuilding worker's start (applySeeks).
func (d *detector) seekTo(w *worker, from int64) {
	d.mu.Lock()
	d.seeks = append(d.seeks, seek{w, from})
	d.mu.Unlock()
}

// deadLetter sets aside a repartition record that does not decode.
func (d *detector) deadLetter(r *kgo.Record, reason string, err error) {
	d.s.deadLetter(d.cl, r, reason, err)
}

// maxRebuilds bounds the rebuilds of one partition after state errors: a
// state that keeps failing (a full disk) stops the process instead.
const maxRebuilds = 3

// recover replaces a worker whose state failed by one rebuilding the
// partition from the repartition topic, alerts muted up to what the
// failed one acknowledged; the other partitions go on. It reports false
// when the partition failed too often.
func (d *detector) recover(w *worker, cause error) bool {
	if d.shutting.Load() {
		return true
	}
	d.mu.Lock()
	if d.workers[w.id] != w {
		d.mu.Unlock()
		return true // revoked meanwhile
	}
	d.rebuilt[w.id]++
	if d.rebuilt[w.id] > maxRebuilds {
		d.mu.Unlock()
		return false
	}
	d.mu.Unlock()
	d.s.log.Error("partition state failed, rebuilding it", zap.Int32("partition", w.id), zap.Error(cause))
	d.s.m.dropped.WithLabelValues("corrupt").Inc()
	d.cl.PauseFetchPartitions(map[string][]int32{d.topic: {w.id}})
	go func() {
		<-w.done
		if err := d.store.DropPartition(w.id); err != nil {
			d.fail(fmt.Errorf("partition %d: %w", w.id, err))
			return
		}
		part, err := d.store.Partition(w.id)
		if err != nil {
			d.fail(fmt.Errorf("partition %d: %w", w.id, err))
			return
		}
		nw := newWorker(d.s.workerEnv(d, d.work, &d.late), w.id, part, max(w.committed, w.acked.Load()))
		nw.rebuild, nw.next = true, math.MaxInt64
		d.mu.Lock()
		if d.workers[w.id] != w {
			d.mu.Unlock()
			return
		}
		d.workers[w.id] = nw
		d.mu.Unlock()
		go nw.run()
	}()
	return true
}

// workerOwner is what a worker needs from what runs it: the live detector
// or a replay. The worker calls it from its own goroutine, holding none of
// the owner's locks.
type workerOwner interface {
	// publish takes the alerts of an evaluation point and returns once
	// they are durable: the detector produces them to the alert topic and
	// waits for the acknowledgements; a replay collects them.
	publish(w *worker, alerts []Alert) error
	// stopped takes the error a worker stopped on (never errStopped, and
	// not after a crash): the detector rebuilds the partition, or stops on
	// a fatalError; a replay fails with it.
	stopped(w *worker, err error)
	// rebuildStart finds where a partition without state is replayed from
	// (detector.assigned), and seekTo has the poll loop move it there.
	rebuildStart(ctx context.Context, p int32, committed int64) (int64, error)
	seekTo(w *worker, from int64)
	// deadLetter sets aside a repartition record that does not decode.
	deadLetter(r *kgo.Record, reason string, err error)
}

// workerEnv is what a worker is given besides its partition: its owner
// and the configuration and counters it shares with it.
type workerEnv struct {
	owner   workerOwner
	cfg     *cfg
	m       *metrics
	baseLog *zap.Logger     // the owner's; the worker's own names its partition
	crashed *atomic.Bool    // the Service's test hook: stop as a killed process would
	late    *atomic.Int64   // connections dropped as older than their window
	work    context.Context // canceled only by a crash or a fatal error
	// filters is filterFingerprint of cfg, which every watermark record
	// must carry: computed once, not per record.
	filters string
	// noMeta: nothing will read the state's bookkeeping blob (a replay's
	// scratch state), so the workers do not encode it (tens of KiB at
	// every evaluation point).
	noMeta bool
	// coldWarmup: nothing shows the beacon count before the warm-up ends
	// (a replay serves no status page or metrics), so the workers decide
	// no membership before then (evaluate).
	coldWarmup bool
	// par is how many goroutines an evaluation point decides its
	// destinations on (Partition.MembersOf); 0 is GOMAXPROCS. A replay
	// whose partitions are split in shards, each a worker on its own
	// goroutine, gives each its share of the cores.
	par int
}

// workerEnv returns the environment of the workers of owner o.
func (s *Service) workerEnv(o workerOwner, work context.Context, late *atomic.Int64) workerEnv {
	return workerEnv{owner: o, cfg: &s.cfg, m: s.m, baseLog: s.log, crashed: &s.crashed, late: late, work: work,
		filters: filterFingerprint(s.cfg.profile, &s.cfg.params)}
}

var errStopped = errors.New("stream: partition worker stopped")

// worker drives one partition: it keeps the partition's stream time from
// the watermarks in it, holds the records that stream time has not passed,
// applies the others in segments, each with its offset in one Pebble
// batch, and at evaluation points evaluates the destinations the segments
// changed and publishes the tuples that entered the beacon set.
//
// Stream time W is the minimum over the input partitions' watermarks,
// idle ones left out (docs/streaming.md, "Time"). A record counts at its
// release time (its event time, or later for one out of order in its
// input partition); it waits until W reaches it. Evaluation points are
// the ends of the EvalInterval intervals that hold the release time of a
// connection record, evaluated once W has passed them: they depend on the
// records alone, not on how ingest instances interleaved them. When every
// input partition is idle (caught up and quiet, or at the end of a
// replay), W is the newest watermark and the partition is evaluated there
// too (a caught-up point), which keeps alerts prompt live.
type worker struct {
	workerEnv
	id   int32
	part *state.Partition
	log  *zap.Logger
	ch   chan batch
	quit chan struct{}
	done chan struct{}

	decided    [][]beacon.Tuple // evaluate's members per dirty destination, reused
	rebuild    bool             // find the rebuild's start first (see detector.assigned)
	final      atomic.Bool      // at stop: apply and publish what is held
	committed  int64            // Kafka's committed offset at assignment, -1 if none
	acked      atomic.Int64     // offsets below are applied and their alerts acknowledged
	lastCommit atomic.Int64

	// released: records below it are applied and neither held nor in the
	// segment, so nothing of the worker aliases their values any more (a
	// replay reuses their buffer, replay.send); -1 until the first flush.
	released atomic.Int64

	mu sync.Mutex // guards part against /beacons

	// What /healthz shows, as of the last evaluation: read without the
	// lock, so a busy worker still reports.
	shownStream  atomic.Pointer[beacon.Time]
	shownBeacons atomic.Int64

	// The current segment: released records not yet applied.
	conns     []state.Conn
	domains   []state.DomainSeen
	noPort    beacon.Time
	hasNoPort bool
	n         int   // records in the segment
	next      int64 // offset after the last record seen
	applied   int64 // offset recorded in the state

	// Time, recorded in the meta blob.
	srcs        map[tp]*srcMark // every input partition the watermarks named
	sw          beacon.Time     // stream time W (never decreases)
	hasSW       bool
	open        int64 // interval with released connections not yet evaluated
	hasOpen     bool
	unconfirmed bool      // the state is at an evaluation point whose alerts may be unpublished
	held        heldQueue // records waiting for W
	srcUndo     []srcUndo // how the watermark being applied changed srcs (advance)
	inHand      int64     // offset of the record take is adding (see recordOffset)
	hasHand     bool      // inHand is set
	forced      int64     // records released by the MaxHeld bound
	points      int       // evaluations so far (tests)
	scratch     item      // watermark decoding

	pivotsOf pivotStore // the newest pivots per tuple, for alerts (pivots.go)

	book      alertBook // alert bookkeeping, recorded in the meta blob (alerting.go)
	metaErr   error     // the meta blob loaded did not decode: run stops on it
	metaBuf   []byte    // encodeMeta's, reused
	members   map[beacon.Destination][]beacon.Tuple
	nMembers  int
	metaDirty bool
}

// srcMark is what a partition knows of one input partition's watermark.
type srcMark struct {
	time    beacon.Time
	hasTime bool
	idle    bool
}

// srcUndo is a source's mark before the watermark record being applied
// changed it; existed is false for a source the record named first.
type srcUndo struct {
	k       tp
	was     srcMark
	existed bool
}

func newWorker(env workerEnv, id int32, part *state.Partition, committed int64) *worker {
	w := &worker{
		workerEnv: env, id: id, part: part,
		log:       env.baseLog.With(zap.Int32("partition", id)),
		ch:        make(chan batch, 4),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		committed: committed,
		members:   make(map[beacon.Destination][]beacon.Tuple),
		srcs:      make(map[tp]*srcMark),
		applied:   -1,
		next:      -1,
	}
	w.released.Store(-1)
	if o, ok := part.Offset(); ok {
		w.applied, w.next = o, o
		w.acked.Store(o)
	}
	w.pivotsOf.lookback = env.cfg.params.Lookback
	w.book = newAlertBook(env.cfg.warmup, env.cfg.params.Lookback, env.cfg.reAlert)
	w.metaErr = w.loadMeta(part.Meta())
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
	w.m.streamTime.DeleteLabelValues(strconv.Itoa(int(w.id)))
	w.m.beacons.DeleteLabelValues(strconv.Itoa(int(w.id)))
}

func (w *worker) run() {
	defer close(w.done)
	fail := func(err error) {
		if w.crashed.Load() || errors.Is(err, errStopped) {
			return
		}
		w.owner.stopped(w, err)
	}
	if w.metaErr != nil {
		// A state whose bookkeeping this build cannot read: rebuilt
		// (alerting.go, metaVersion).
		fail(w.metaErr)
		return
	}
	if w.rebuild {
		from, err := w.owner.rebuildStart(w.work, w.id, w.committed)
		if err != nil {
			fail(fatalError{err})
			return
		}
		w.m.rebuilds.Inc()
		w.log.Info("rebuilding partition state", zap.Int64("from", from), zap.Int64("committed", w.committed))
		w.owner.seekTo(w, from)
	}
	if err := w.resume(); err != nil {
		fail(err)
		return
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
			if d := w.cfg.batchDelay; d > 0 {
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

// resume evaluates a state recorded at an evaluation point whose alerts
// may not have been published (a crash between the two) again at that
// same point: what the meta blob does not list as alerted goes out. A
// state recorded between points is not evaluated: its next point comes
// with the records.
//
// Like point, it then records that the point is confirmed: left set, the
// next flush — between points — recorded an unconfirmed point, and a
// second restart evaluated a state no continuous run evaluates.
func (w *worker) resume() error {
	if !w.unconfirmed {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.evaluate(); err != nil {
		return err
	}
	w.unconfirmed, w.metaDirty = false, true
	return nil
}

// finish records the alert bookkeeping when the stop is final. The records
// after the last evaluation point are not applied: they are read again by
// whoever owns the partition next, so that evaluation points stay where
// the records alone put them and a restart finds the same alerts.
func (w *worker) finish(fail func(error)) {
	if !w.final.Load() || w.crashed.Load() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.metaDirty && !w.noMeta {
		if _, err := w.part.Apply(nil, nil, -1, w.encodeMeta()); err != nil {
			fail(err)
			return
		}
		w.metaDirty = false
	}
}

const maxSegment = 50_000

func (w *worker) tick(t beacon.Time) int64 {
	return EpochOf(t, w.cfg.evalInterval)
}

func (w *worker) process(b batch) error {
	if b.seek {
		w.next, w.rebuild = b.from, false
		if w.applied < 0 {
			w.applied = b.from
		}
		return nil
	}
	if w.rebuild {
		return nil // fetched before the seek
	}
	n := b.len()
	for i := range n {
		if w.crashed.Load() {
			return errStopped
		}
		offset, key, value := b.at(i)
		if offset < w.next {
			continue // already seen (a fetch overlapping a resumed offset)
		}
		if w.next >= 0 && offset > w.next {
			// Records this partition's state never saw are gone: the
			// repartition topic's retention removed them before they were
			// read (a detector down longer than retention). The window
			// lacks their events until those age out; say so loudly.
			w.log.Warn("repartition records lost before they were applied",
				zap.Int64("expected_offset", w.next), zap.Int64("offset", offset))
			w.m.dropped.WithLabelValues("lost").Add(float64(offset - w.next))
		}
		w.next = offset + 1
		if b.recs == nil {
			// A replay's record, written by its ingest: one ahead of
			// stream time (most are: they wait for the next watermark)
			// is held on its kind and times alone and decoded once, when
			// released (advance), instead of here too. One whose header
			// does not parse takes the path below to the dead letters;
			// one whose rest does not goes there from advance.
			if rel, ok := peekRelease(value); ok && (!w.hasSW || rel > w.sw) {
				if err := w.hold(held{key: key, value: value, release: rel, offset: offset, peeked: true}); err != nil {
					return err
				}
				continue
			}
		}
		it := &w.scratch
		if err := decodeItem(key, value, it); err != nil {
			w.owner.deadLetter(b.record(i, w.id), reasonRecord, err)
			continue
		}
		if it.kind == kindWatermark {
			if err := w.watermark(it); err != nil {
				return err
			}
			continue
		}
		if !w.hasSW || it.release > w.sw {
			// Ahead of stream time: it waits.
			if err := w.hold(held{key: key, value: value, release: it.release, offset: offset}); err != nil {
				return err
			}
			continue
		}
		// At or behind stream time: it counts now, and in the open
		// interval only if that is its own (a record behind it is a
		// duplicate, or came out of order across a change of ingest
		// owner, and goes with the next point).
		w.inHand, w.hasHand = offset, true
		err := w.take(it, w.tick(it.release) == w.tick(w.sw))
		w.hasHand = false
		if err != nil {
			return err
		}
	}
	if b.end {
		// The end of a replay: whatever is left is evaluated where it is.
		if w.n > 0 || w.hasOpen {
			return w.point()
		}
		return w.flush()
	}
	// Caught up with nothing pending after the last point (only
	// watermarks came): the offset moves on, so that lag shows zero.
	caughtUp := false
	if n > 0 {
		last, _, _ := b.at(n - 1)
		caughtUp = last+1 >= b.hwm
	}
	if caughtUp && w.n == 0 && !w.hasOpen && w.held.len() == 0 && w.next > w.applied {
		if err := w.flush(); err != nil {
			return err
		}
		w.acked.Store(w.applied)
	}
	return nil
}

// hold queues a record ahead of stream time, releasing the oldest when
// too many wait.
func (w *worker) hold(h held) error {
	w.held.push(h)
	if w.held.len() > w.cfg.maxHeld {
		w.forced++
		if w.forced == 1 || w.forced%100_000 == 0 {
			w.log.Warn("too many records wait for stream time; releasing the oldest",
				zap.Int("held", w.held.len()), zap.Int64("released", w.forced))
		}
		w.m.dropped.WithLabelValues("forced").Inc()
		return w.advance(w.held.min().release)
	}
	return nil
}

// take adds a released record to the segment. onTime says it belongs to
// the interval it is released in: a point that interval's records come
// after is evaluated first, and its interval becomes the open one.
func (w *worker) take(it *item, onTime bool) error {
	if onTime {
		k := w.tick(it.release)
		if w.hasOpen && w.open < k {
			if err := w.point(); err != nil {
				return err
			}
		}
		if it.kind != kindDomain {
			w.open, w.hasOpen = k, true
		}
	}
	switch it.kind {
	case kindConn:
		w.conns = append(w.conns, state.Conn{Tuple: it.tupleKey(), Time: it.time})
		w.pivotsOf.observe(it)
	case kindNoPort:
		if !w.hasNoPort || it.time > w.noPort {
			w.noPort, w.hasNoPort = it.time, true
		}
		// A replay shard's shadow of another shard's connection, or one
		// with a null port: the store's window moves with it (pivots.go).
		w.pivotsOf.advance(it.time)
	case kindDomain:
		// A domain observation without an IP is a replay shard's shadow
		// of another shard's (replay.route): it counts here (w.n, and its
		// point above) and is kept nowhere, as the state keeps no
		// observation of an IP that is not a DomainIP, and "" is none.
		if it.ip != "" {
			w.domains = append(w.domains, state.DomainSeen{IP: it.ip, Domain: it.domain, Time: it.time})
		}
	}
	w.n++
	if w.n >= maxSegment {
		return w.flush()
	}
	return nil
}

// watermark merges a watermark record into the partition's view of the
// input partitions and moves stream time.
func (w *worker) watermark(it *item) error {
	if want := w.filters; it.fingerprint != want {
		return fatalError{fmt.Errorf("%w: ingest filters %q, this detector's %q (use the same parameters, or a new --group)",
			errFilters, it.fingerprint, want)}
	}
	// What the record changes is undone in what the advance it makes
	// records (see advance), until the advance has taken everything.
	defer func() { w.srcUndo = w.srcUndo[:0] }()
	for i := range it.sources {
		s := &it.sources[i]
		k := tp{s.topic, s.part}
		m := w.srcs[k]
		if m == nil {
			m = &srcMark{}
			// The key outlives the record: its topic must not alias the
			// record's value (the lookup above may).
			k = tp{strings.Clone(s.topic), s.part}
			w.srcs[k] = m
			w.metaDirty = true
			w.srcUndo = append(w.srcUndo, srcUndo{k: k})
		}
		if s.flags&wmOwned == 0 {
			continue // named only: its reader speaks for it
		}
		was := *m
		if s.flags&wmHasTime != 0 && (!m.hasTime || s.time > m.time) {
			m.time, m.hasTime = s.time, true
			w.metaDirty = true
		}
		if idle := s.flags&wmIdle != 0; idle != m.idle {
			m.idle = idle
			w.metaDirty = true
		}
		if *m != was {
			w.srcUndo = append(w.srcUndo, srcUndo{k: k, was: was, existed: true})
		}
	}
	var low, high beacon.Time
	hasLow, hasHigh, unknown := false, false, false
	for _, m := range w.srcs {
		if m.hasTime && (!hasHigh || m.time > high) {
			high, hasHigh = m.time, true
		}
		if m.idle {
			continue
		}
		if !m.hasTime {
			unknown = true
			continue
		}
		if !hasLow || m.time < low {
			low, hasLow = m.time, true
		}
	}
	switch {
	case unknown:
		// An input partition that may still deliver anything: wait.
		return nil
	case hasLow:
		return w.advance(low)
	case hasHigh:
		// Every input partition is idle: everything read so far is
		// released, and evaluated at the newest watermark.
		if err := w.advance(high); err != nil {
			return err
		}
		if w.hasOpen || w.n > 0 {
			return w.point()
		}
	}
	return nil
}

var errFilters = errors.New("stream: the repartition topic was written with other filters")

// advance moves stream time to t, releasing what it passes and evaluating
// the points it passes.
//
// W becomes t only once every record it releases is taken. A point (or a
// full segment) in between is recorded with the offset of the record in
// hand, or of the first one still held, and a restart reads everything
// from there again: those records must be held again, and released by the
// watermark record that started the advance, which is read again too. So
// what such a flush records is the time state from before that record —
// W as it was and the sources as they were (srcUndo, encodeMeta). With
// W = t recorded, the restart took the records after the point as
// already released, late, and evaluated none of the points up to t: their
// alerts were lost (TestKilledInsideAnAdvance, TestKillDashNine).
func (w *worker) advance(t beacon.Time) error {
	if w.hasSW && t <= w.sw {
		return nil
	}
	for w.held.len() > 0 && w.held.min().release <= t {
		h := w.held.pop()
		// Decoded here (again, unless a replay's record held on its
		// header): holding the record costs less than holding its
		// decoded form (its key and value for the collector, not a dozen
		// strings).
		it := &w.scratch
		if err := decodeItem(h.key, h.value, it); err != nil {
			if !h.peeked {
				return err // decoded once already: not the record process held
			}
			// A replay's record held on its header (process): it goes
			// where process sends the records that do not decode.
			w.owner.deadLetter(replayRecord(w.id, h.offset, h.key, h.value), reasonRecord, err)
			continue
		}
		w.inHand, w.hasHand = h.offset, true
		err := w.take(it, true)
		w.hasHand = false
		if err != nil {
			return err
		}
	}
	// Everything up to t is taken: from here on a restart from the
	// recorded offset finds the records up to t counted and the others
	// held, under the new time state.
	w.sw, w.hasSW, w.metaDirty = t, true, true
	w.srcUndo = w.srcUndo[:0]
	if w.hasOpen && w.open < w.tick(t) {
		return w.point()
	}
	return nil
}

// recordOffset is where a restart must read again from: the first record
// still held or in hand, or the next one. The record in hand is the one
// take is adding: when its release starts a new interval, the point of
// the interval before it is recorded first, without it, so it must be
// read again — counted as consumed there, it was lost on every resume
// from that state (TestWorkerStopAnywhere).
func (w *worker) recordOffset() int64 {
	o, ok := w.held.firstOffset()
	if !ok {
		o = w.next
	}
	if w.hasHand && w.inHand < o {
		o = w.inHand
	}
	return o
}

// flush applies the segment with its offset.
func (w *worker) flush() error {
	off := w.recordOffset()
	if w.n == 0 && off == w.applied && !w.metaDirty {
		return nil
	}
	if w.hasNoPort {
		// A connection with a null port moves stream time and nothing
		// else: it goes with the segment, in the same atomic batch as
		// the offset.
		w.conns = append(w.conns, state.Conn{Time: w.noPort, NoPort: true})
	}
	var meta []byte
	if w.metaDirty {
		if !w.noMeta {
			meta = w.encodeMeta()
		}
		w.metaDirty = false
	}
	w.pivotsOf.apply() // while the segment's records are held
	st, err := w.part.Apply(w.conns, w.domains, off, meta)
	if err != nil {
		return err
	}
	w.applied = off
	w.released.Store(off)
	m := w.m
	m.eventsIn.WithLabelValues("detect").Add(float64(w.n))
	if st.Late > 0 {
		w.late.Add(int64(st.Late))
		m.late.Add(float64(st.Late))
		m.dropped.WithLabelValues("late").Add(float64(st.Late))
	}
	clear(w.conns)
	clear(w.domains)
	w.conns, w.domains, w.n, w.hasNoPort = w.conns[:0], w.domains[:0], 0, false
	return nil
}

// point applies the segment, recorded as an unconfirmed evaluation point,
// then evaluates and publishes at the newest connection applied. The next
// batch records that the alerts went out.
func (w *worker) point() error {
	w.hasOpen = false
	w.unconfirmed, w.metaDirty = true, true
	if err := w.flush(); err != nil {
		return err
	}
	if err := w.evaluate(); err != nil {
		return err
	}
	w.unconfirmed, w.metaDirty = false, true
	return nil
}

// evaluate brings the members of the dirty destinations up to date and
// alerts on every member not yet alerted in the current re-alert period
// (in a replay's warm-up, with coldWarmup, it only moves the offsets and
// stream time: the dirty destinations wait for the point that ends it).
// Below the offset committed when the partition was assigned, alerts are
// muted: the previous owner published them. At that offset they are not:
// consecutive points can record the same offset (the first record still
// held, or the one in hand, is the same), and the previous owner may have
// committed the first and died before publishing the next; publishing the
// last committed point's alerts again, with their IDs, is the price.
func (w *worker) evaluate() error {
	start := time.Now()
	w.points++
	now, ok := w.part.StreamTime()
	if !ok {
		w.acked.Store(w.applied)
		return nil
	}
	e, all := w.book.at(now)
	w.metaDirty = true
	if w.coldWarmup && !w.book.warm {
		// Nothing alerts before the warm-up ends and nothing shows the
		// members: the point that ends it finds every destination
		// changed since the last decided one dirty (Dirty accumulates)
		// and decides it once, with each tuple's Candidate asked once,
		// instead of at every point. Membership is a function of the
		// summaries at the point, so it alerts the same members.
		w.evaluated(now, start)
		return nil
	}
	dirty := w.part.Dirty()
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
	// Membership is decided from summaries, every destination's
	// independently: on every core, as one partition is all a replay has
	// by default. Only the rows of tuples about to be alerted are
	// rendered (their timestamps read), in order, below.
	par := w.par
	if par <= 0 {
		par = runtime.GOMAXPROCS(0)
	}
	members, err := w.part.MembersOf(dirty, par, w.decided)
	w.decided = members
	if err != nil {
		return err
	}
	for i, k := range dirty {
		ts := members[i]
		members[i] = nil
		old, had := w.members[k]
		w.nMembers -= len(old)
		if len(ts) == 0 {
			if had { // most dirty destinations had no members and have none
				delete(w.members, k)
			}
			continue
		}
		slices.SortFunc(ts, func(a, b beacon.Tuple) int { return a.Compare(&b) })
		first := len(alerts)
		for i := range ts {
			t := &ts[i]
			if !w.book.claim(t) {
				continue
			}
			row, ok, err := w.part.Row(*t)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("partition %d: member %v has no row", w.id, *t)
			}
			if a := w.cfg.allow; a != nil && a.Allowed(&row) {
				w.m.allowed.Inc() // handled for this re-alert period, like an alert
				continue
			}
			alerts = append(alerts, w.newAlert(t, e, now, row))
		}
		// A destination's alerts go out in the query's output order.
		slices.SortFunc(alerts[first:], func(a, b Alert) int { return beacon.CompareRows(&a.Row, &b.Row) })
		w.members[k] = ts
		w.nMembers += len(ts)
	}
	m := w.m
	if len(alerts) > 0 {
		if w.applied < w.committed {
			m.muted.Add(float64(len(alerts)))
		} else if err := w.owner.publish(w, alerts); err != nil {
			if errors.Is(err, errStopped) {
				return err
			}
			return fatalError{err}
		}
	}
	w.evaluated(now, start)
	return nil
}

// evaluated records an evaluation point at stream time now, begun at
// start: what is acknowledged, and what the metrics and the status page
// show.
func (w *worker) evaluated(now beacon.Time, start time.Time) {
	w.acked.Store(w.applied)
	m := w.m
	label := strconv.Itoa(int(w.id))
	m.streamTime.WithLabelValues(label).Set(float64(now) / float64(beacon.Second))
	m.beacons.WithLabelValues(label).Set(float64(w.nMembers))
	w.shownStream.Store(&now)
	w.shownBeacons.Store(int64(w.nMembers))
	m.evalSeconds.Observe(time.Since(start).Seconds())
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
	rows, err := w.part.Beacons()
	if a := w.cfg.allow; a != nil && err == nil {
		rows, _ = a.Filter(rows)
	}
	return rows, err
}

func (w *worker) status() partitionStatus {
	st := partitionStatus{Partition: w.id, Offset: w.acked.Load(), Replaying: w.acked.Load() < w.committed,
		Beacons: int(w.shownBeacons.Load())}
	if t := w.shownStream.Load(); t != nil {
		st.StreamTime = t.String()
	}
	return st
}

// held is a record waiting for stream time to reach its release time: its
// key and value (which alias the fetch's buffer, not its kgo.Record).
type held struct {
	key      []byte
	value    []byte
	release  beacon.Time
	offset   int64
	released bool
	peeked   bool // held on its header alone (peekRelease): not decoded yet
}

// heldQueue orders the held records by release time and remembers the
// first offset still held. Records mostly arrive in release order: those
// go to a FIFO of values (no allocation, no sifting); the others, out of
// order, to a heap, with a FIFO of pointers in offset order beside it.
type heldQueue struct {
	run  []held // release times nondecreasing, offsets increasing
	head int
	heap []*held // by (release, offset)
	fifo []*held // the heap's records in offset order; released ones are dropped from the front
}

func (q *heldQueue) len() int { return len(q.run) - q.head + len(q.heap) }

func (q *heldQueue) fromRun() bool {
	if q.head == len(q.run) {
		return false
	}
	if len(q.heap) == 0 {
		return true
	}
	a, b := &q.run[q.head], q.heap[0]
	return a.release < b.release || a.release == b.release && a.offset < b.offset
}

func (q *heldQueue) min() *held {
	if q.fromRun() {
		return &q.run[q.head]
	}
	return q.heap[0]
}

func (q *heldQueue) less(i, j int) bool {
	a, b := q.heap[i], q.heap[j]
	if a.release != b.release {
		return a.release < b.release
	}
	return a.offset < b.offset
}

func (q *heldQueue) push(h held) {
	if n := len(q.run); n == q.head || q.run[n-1].release <= h.release {
		q.run = append(q.run, h)
		return
	}
	// Out of order: the record moves to the heap, the only place it is
	// allocated. (Taking h's address here would move every push's h to
	// the heap, the in-order ones too: 53 MB of garbage in a replay of
	// two days.)
	p := new(held)
	*p = h
	q.fifo = append(q.fifo, p)
	q.heap = append(q.heap, p)
	for i := len(q.heap) - 1; i > 0; {
		parent := (i - 1) / 2
		if !q.less(i, parent) {
			break
		}
		q.heap[i], q.heap[parent] = q.heap[parent], q.heap[i]
		i = parent
	}
}

// pop removes and returns the record with the smallest release time.
func (q *heldQueue) pop() held {
	if q.fromRun() {
		h := q.run[q.head]
		q.run[q.head] = held{}
		q.head++
		if q.head == len(q.run) {
			q.run, q.head = q.run[:0], 0
		} else if q.head > 4096 && q.head*2 > len(q.run) {
			// Keep the backing array from growing without end.
			n := copy(q.run, q.run[q.head:])
			clear(q.run[n:])
			q.run, q.head = q.run[:n], 0
		}
		return h
	}
	top := q.heap[0]
	last := len(q.heap) - 1
	q.heap[0] = q.heap[last]
	q.heap[last] = nil
	q.heap = q.heap[:last]
	for i := 0; ; {
		l, small := 2*i+1, i
		if l < len(q.heap) && q.less(l, small) {
			small = l
		}
		if r := l + 1; r < len(q.heap) && q.less(r, small) {
			small = r
		}
		if small == i {
			break
		}
		q.heap[i], q.heap[small] = q.heap[small], q.heap[i]
		i = small
	}
	top.released = true
	i := 0
	for i < len(q.fifo) && q.fifo[i].released {
		q.fifo[i] = nil
		i++
	}
	if i > 0 {
		q.fifo = q.fifo[i:]
		if len(q.fifo) == 0 {
			q.fifo = nil
		}
	}
	return *top
}

func (q *heldQueue) firstOffset() (int64, bool) {
	o, ok := int64(0), false
	if q.head < len(q.run) {
		o, ok = q.run[q.head].offset, true
	}
	if len(q.fifo) > 0 && (!ok || q.fifo[0].offset < o) {
		o, ok = q.fifo[0].offset, true
	}
	return o, ok
}
