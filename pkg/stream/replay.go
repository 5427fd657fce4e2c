package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/state"
)

// ReplayOptions says what part of the input topics Replay reads and how.
// The topics, the parameters, the re-alert interval, the warm-up, the
// evaluation interval, the domain margin, the input format and the Kafka
// connection are the service options (InputTopics, Params, …), exactly as
// for a Service.
type ReplayOptions struct {
	// Partitions is the number of detection partitions, in process (default
	// 1). Events are routed to them by RemoteIP with the partitioner of the
	// live repartition topic (Kafka's murmur2 of the key), so with the live
	// repartition topic's partition count each partition sees the events,
	// the stream time and the evaluation points a live partition saw.
	Partitions int
	// Shards splits each detection partition's work over that many
	// workers, each on its own goroutine with its own state partition, by
	// a hash of RemoteIP (0: GOMAXPROCS / Partitions, within [1, 8]). Only
	// with scratch state (no StateDir): a kept state's partitions are
	// those of the repartition topic. The result does not depend on it:
	// every decision is a destination's, and a shard owns whole
	// destinations and the domains of their IP, while every shard also
	// sees the time of every record of its partition (see route), so
	// that each has the partition's stream time and evaluation points.
	Shards int
	// decideInWarmup makes the workers decide membership at every point of
	// the warm-up as a live worker does, not only at the point that ends
	// it: what TestReplayColdWarmup holds the default to.
	decideInWarmup bool

	// From and To keep the events with From ≤ Timestamp < To (nil: no
	// bound), connections and domain observations alike: the replay is
	// the streaming path over the events of that range.
	From, To *beacon.Time
	// End, when set, is the query's now of the final beacon set (Result.Rows
	// is `hunt --end End`): connections newer than End − 1 s are not
	// applied (their domain observations are, as the query's Domains have
	// no upper bound), and every partition is evaluated at End − 1 s.
	// Without it every partition is evaluated at the newest stream time of
	// any partition: `hunt` with its default now.
	End *beacon.Time
	// FromSlack: with From set, each input partition is read from the first
	// offset whose record timestamp is at or after From − FromSlack
	// (ListOffsets by timestamp), which assumes that no record carries a
	// timestamp more than FromSlack before its event's Timestamp (true when
	// records are produced after the events happen). Negative: read from
	// the start and filter.
	FromSlack time.Duration
	// StartOffsets and EndOffsets bound the offsets read per input
	// partition: from StartOffsets[p] (inclusive; default the log start, or
	// the From seek) to EndOffsets[p] (exclusive; default the high
	// watermark when Replay starts). Key -1 applies to every partition not
	// listed; with several topics the partition numbers apply to each.
	StartOffsets, EndOffsets map[int32]int64

	// AlertTopic, when not empty, receives the alerts at the end, in the
	// order of Result.Alerts, encoded as the service's alerts are
	// (WithAlertFormat, AlertSchemaID). It must exist: Replay creates no
	// topic and no consumer group.
	AlertTopic string

	// OnBad is called for every input record that does not decode (its
	// events before the error are kept, as ingest keeps them). Replay has
	// no dead-letter topic.
	OnBad func(BadRecord)
	// OnProgress is called after every fetch and every few thousand
	// events, from the goroutine that called Replay.
	OnProgress func(ReplayProgress)
}

// BadRecord is an input record that does not decode.
type BadRecord struct {
	Topic     string
	Partition int32
	Offset    int64
	Reason    string // as the dead-letter topic's beacon.reason header
	Err       error
}

func (b BadRecord) String() string {
	return fmt.Sprintf("%s/%d@%d: %v", b.Topic, b.Partition, b.Offset, b.Err)
}

// ReplayProgress counts what a replay has read.
type ReplayProgress struct {
	Records int64 // input offsets whose events went on to detection
	Total   int64 // input offsets to read
	Events  int64 // events decoded
}

// ReplayResult is what a replay found.
type ReplayResult struct {
	// Rows is the beacon set at the end, every partition evaluated at the
	// same stream time (Now − 1 s), in the query's output order.
	Rows []beacon.Row
	// Now is the query's now of Rows; HasNow is false when no connection
	// passed the filters (and no End was given).
	Now    beacon.Time
	HasNow bool
	// Alerts are the alerts the streaming detector would have published,
	// ordered by StreamTime, then tuple, then epoch.
	Alerts []Alert
	// WarmPartitions counts the partitions whose warm-up ended: the others
	// published nothing.
	WarmPartitions int
	Partitions     int

	Records     int64 // input records read
	Events      int64 // events decoded
	Bad         int64 // records that did not decode
	OutOfRange  int64 // events outside From/To
	Connections int64 // connection records routed to the detection partitions
	Domains     int64 // domain observations routed (after deduplication)
	Late        int64 // connections older than their partition's window when they arrived
	// Stalled counts input partitions given up on: they delivered nothing
	// for stallTimeout before their end offset (a warning names each).
	Stalled int
	Elapsed time.Duration
}

// Replay runs the history of the input topics through the path of a
// Service — ingest's decoding, filters, event-time merge and domain
// deduplication, then per partition the detection worker of `beacon run`
// with its evaluation points, warm-up, re-alert periods and alert IDs —
// in process, with scratch state, and returns the alerts that would have
// fired and the beacon set at the end. It consumes the input partitions
// directly (no consumer group) from their start offsets to the end offsets
// seen when it starts, and creates nothing on the cluster.
//
// The state lives in the StateDir option's directory, which must be empty
// or missing and is kept; without it, in a temporary directory removed at
// the end.
//
// The result is a function of the input records alone: the merge waits
// for every partition (it never skips a slow one), the evaluation points
// are the interval points plus one at the end, and the alerts are sorted.
func Replay(ctx context.Context, ro ReplayOptions, opts ...Opt) (*ReplayResult, error) {
	began := time.Now()
	c := defaults()
	for _, o := range opts {
		o.apply(&c)
	}
	scratch := c.stateDir == ""
	if scratch {
		dir, err := os.MkdirTemp("", "beacon-replay-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		opts = append(slices.Clip(opts), StateDir(dir))
	} else if ents, err := os.ReadDir(c.stateDir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("stream: replay needs a new state directory, and %s is not empty", c.stateDir)
	}
	s, err := New(append(slices.Clip(opts), CreateTopics(false, -1, -1))...)
	if err != nil {
		return nil, err
	}
	if ro.Partitions == 0 {
		ro.Partitions = 1
	}
	if ro.Partitions < 0 || ro.Partitions > 1<<16 {
		return nil, fmt.Errorf("stream: replay partitions must be in [1, 65536], got %d", ro.Partitions)
	}
	if ro.Shards < 0 || ro.Shards > maxShards {
		return nil, fmt.Errorf("stream: replay shards must be in [0, %d], got %d", maxShards, ro.Shards)
	}
	shards := ro.Shards
	switch {
	case !scratch && shards > 1:
		// A kept state is for `run` to pick up: its partitions must be
		// the repartition topic's, and a live partition commits its
		// offset and its state in one atomic batch, which state split
		// over shards would not be.
		return nil, fmt.Errorf("stream: replay shards need scratch state (no state directory), got %d shards with %s", shards, c.stateDir)
	case !scratch:
		shards = 1
	case shards == 0:
		shards = min(max(runtime.GOMAXPROCS(0)/ro.Partitions, 1), defaultMaxShards)
	}
	if ro.Partitions*shards > 1<<16 {
		return nil, fmt.Errorf("stream: replay partitions × shards must be at most 65536, got %d × %d", ro.Partitions, shards)
	}
	r := &replay{s: s, ro: ro, res: &ReplayResult{Partitions: ro.Partitions}, scratch: scratch, shards: shards}
	err = r.run(ctx)
	r.res.Elapsed = time.Since(began)
	if err != nil {
		return nil, err
	}
	return r.res, nil
}

type replay struct {
	s   *Service
	ro  ReplayOptions
	res *ReplayResult

	store   *state.Store
	scratch bool // the state is not kept: it needs no disk
	// Every detection partition p is split in shards workers, p*shards
	// to p*shards+shards-1 in ws (and pend, offsets): see route.
	shards int
	ws     []*worker
	shadow []byte       // route's, reused
	late   atomic.Int64 // the workers' connections older than their window
	in     *ingest
	merge  merger

	parts map[tp]*replayPart
	total int64

	universe  []tp // every input partition, sorted
	wmSources []source
	filters   string // filterFingerprint, computed once
	lastWM    []byte
	wmBuf     []byte // the next watermark value, compared with lastWM

	// Batches being filled, one per detection partition.
	pend    []pendBatch
	offsets []int64
	keyRec  kgo.Record
	keyPart kgo.TopicPartitioner

	mu     sync.Mutex
	alerts []Alert
	err    error // the first error a worker stopped on; under mu
}

type tp struct {
	topic string
	p     int32
}

// replayPart is one input partition: it is read from start to end; next
// is after the last record fetched, emitted after the last one whose
// events the merger handed on.
type replayPart struct {
	start, next, emitted, end int64
	done                      bool
}

// pendBatch is a batch of repartition records being built: their keys and
// values in one buffer, which the worker's strings alias once sent.
type pendBatch struct {
	buf  []byte
	ents []pendEnt
	// The buffers sent, oldest first, each with the offset after its last
	// record: once the worker has released that offset (worker.released)
	// nothing aliases the buffer and the next batch is built in it.
	sent []sentBuf
}

type sentBuf struct {
	buf []byte
	end int64
}

// replayReuse: replay reuses the batch buffers its workers released (tests
// turn it off to compare).
var replayReuse = true

// onBatchReuse, when set (tests), sees every buffer before it is reused.
var onBatchReuse func([]byte)

type pendEnt struct{ keyStart, keyEnd, valEnd int32 }

// replayBatch is the records of a batch to a worker (tests lower it).
var replayBatch = 4096

// maxShards bounds ReplayOptions.Shards; defaultMaxShards its default:
// past the cores, more shards only repeat the time of every record.
const (
	maxShards        = 64
	defaultMaxShards = 8
)

// A replay owns its workers (workerOwner): it collects their alerts, and
// fails when one stops.

// publish collects the alerts of an evaluation point.
func (r *replay) publish(_ *worker, alerts []Alert) error {
	r.mu.Lock()
	r.alerts = append(r.alerts, alerts...)
	r.mu.Unlock()
	return nil
}

// stopped records the first error a worker stopped on: a replay does not
// rebuild a partition, it fails (replay.failed).
func (r *replay) stopped(w *worker, err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = fmt.Errorf("%s: %w", r.name(w), err)
	}
	r.mu.Unlock()
}

// name names a worker's detection partition, and its shard if split.
func (r *replay) name(w *worker) string {
	if r.shards == 1 {
		return fmt.Sprintf("partition %d", w.id)
	}
	return fmt.Sprintf("partition %d shard %d", int(w.id)/r.shards, int(w.id)%r.shards)
}

var errReplayRebuild = errors.New("stream: a replay does not rebuild partitions")

// rebuildStart is never reached: a replay's workers start with empty
// state and never rebuild (stopped fails the replay instead).
func (r *replay) rebuildStart(context.Context, int32, int64) (int64, error) {
	return 0, errReplayRebuild
}

func (r *replay) seekTo(*worker, int64) {}

// deadLetter counts and logs a repartition record that does not decode;
// a replay produces nothing.
func (r *replay) deadLetter(rec *kgo.Record, reason string, err error) {
	r.s.deadLetter(nil, rec, reason, err)
}

func (r *replay) run(ctx context.Context) error {
	s := r.s
	// Nothing reopens the state during a replay: it needs no commit per
	// batch (Close writes what is kept), and scratch state no disk, WAL or
	// fsync.
	sopts := append(s.stateOpts(), state.WithCommitEvery(0))
	if r.scratch {
		sopts = append(sopts, state.WithInMemory())
	}
	st, err := state.Open(s.cfg.stateDir, s.cfg.params, sopts...)
	if err != nil {
		return err
	}
	r.store = st
	work, cancelWork := context.WithCancel(context.Background())
	env := s.workerEnv(r, work, &r.late)
	env.noMeta = r.scratch                // nothing reads a scratch state's blob
	env.coldWarmup = !r.ro.decideInWarmup // a replay shows no beacon count
	if r.shards > 1 {
		env.par = max(runtime.GOMAXPROCS(0)/r.shards, 1)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			for _, w := range r.ws {
				w.stop(true)
			}
		}
	}
	defer func() {
		stop()
		cancelWork()
		if err := st.Close(); err != nil {
			s.log.Warn("closing replay state failed", zap.Error(err))
		}
	}()
	// With shards, the state partition of shard s of detection partition
	// p is p*shards+s: one scratch store holds them all. Without, the
	// partitions are the repartition topic's, as a kept state must have
	// them.
	for id := range r.ro.Partitions * r.shards {
		part, err := st.Partition(int32(id))
		if err != nil {
			return err
		}
		w := newWorker(env, int32(id), part, -1)
		r.ws = append(r.ws, w)
		go w.run()
	}

	if r.in, err = newIngestCore(s); err != nil {
		return err
	}
	r.in.route = r.route
	r.in.reject = r.reject
	if r.ro.End != nil {
		r.in.connUntil, r.in.hasConnUntil = *r.ro.End-beacon.Second, true
	}
	r.merge.exact = true
	r.merge.classify = r.in.classify
	r.pend = make([]pendBatch, len(r.ws))
	r.offsets = make([]int64, len(r.ws))
	r.keyPart = kgo.StickyKeyPartitioner(nil).ForTopic("replay")

	adm, err := kgo.NewClient(s.clientOpts("beacon-replay-admin")...)
	if err != nil {
		return err
	}
	defer adm.Close()
	consume, err := r.plan(ctx, kadm.NewClient(adm))
	if err != nil {
		return err
	}
	if len(consume) > 0 {
		if err := r.consume(ctx, consume); err != nil {
			return err
		}
	}
	// Whatever the deduplication still holds back, then a last evaluation
	// point in every partition, as a live worker has when it catches up.
	r.in.dedup.sweep(true, r.in.produceDomain)
	r.watermark()
	dones := make([]chan struct{}, len(r.ws))
	for p := range r.ws {
		dones[p] = make(chan struct{})
		r.send(p, true, dones[p])
	}
	for p, w := range r.ws {
		select {
		case <-dones[p]:
		case <-w.done:
		}
	}
	if err := r.failed(); err != nil {
		return err
	}
	stop()
	// Shadows are never tuples: each connection was counted late, or
	// not, by its own shard alone.
	r.res.Late = r.late.Load()
	if err := r.shardsAgree(); err != nil {
		return err
	}
	for p := range r.ro.Partitions {
		if r.ws[p*r.shards].book.warm {
			r.res.WarmPartitions++
		}
	}
	if err := r.finalSet(); err != nil {
		return err
	}
	slices.SortStableFunc(r.alerts, func(a, b Alert) int {
		if a.StreamTime != b.StreamTime {
			if a.StreamTime < b.StreamTime {
				return -1
			}
			return 1
		}
		if c := a.Row.Tuple.Compare(&b.Row.Tuple); c != 0 {
			return c
		}
		switch {
		case a.Epoch < b.Epoch:
			return -1
		case a.Epoch > b.Epoch:
			return 1
		}
		return 0
	})
	r.res.Alerts = r.alerts
	if r.ro.AlertTopic != "" && len(r.alerts) > 0 {
		codec, err := newAlertCodec(s.cfg.alertFormat, s.cfg.alertSchemaID)
		if err != nil {
			return err
		}
		for i := 0; i < len(r.alerts); i += 1000 {
			if err := produceAlerts(ctx, adm, r.ro.AlertTopic, codec, r.alerts[i:min(i+1000, len(r.alerts))]); err != nil {
				return err
			}
		}
	}
	return nil
}

// plan finds every input partition's offsets to read and tells the merger.
func (r *replay) plan(ctx context.Context, adm *kadm.Client) (map[string]map[int32]kgo.Offset, error) {
	var topics []string
	for _, t := range r.s.cfg.inputTopics {
		if !slices.Contains(topics, t) {
			topics = append(topics, t)
		}
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("listing end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("listing start offsets: %w", err)
	}
	var after kadm.ListedOffsets
	if r.ro.From != nil && r.ro.FromSlack >= 0 {
		ms := millis(*r.ro.From) - r.ro.FromSlack.Milliseconds()
		if after, err = adm.ListOffsetsAfterMilli(ctx, ms, topics...); err != nil {
			r.s.log.Warn("listing offsets by time failed: reading from the start and filtering", zap.Error(err))
			after = nil
		}
	}
	pick := func(m map[int32]int64, p int32) (int64, bool) {
		if v, ok := m[p]; ok {
			return v, true
		}
		v, ok := m[-1]
		return v, ok
	}
	r.parts = make(map[tp]*replayPart)
	consume := make(map[string]map[int32]kgo.Offset)
	for _, t := range topics {
		ps, ok := ends[t]
		if !ok {
			return nil, fmt.Errorf("topic %s does not exist", t)
		}
		for p, lo := range ps {
			if lo.Err != nil && p < 0 {
				return nil, fmt.Errorf("topic %s: %w", t, lo.Err)
			}
			if lo.Err != nil {
				return nil, fmt.Errorf("topic %s partition %d: %w", t, p, lo.Err)
			}
			end, logStart := lo.Offset, int64(0)
			if so, ok := starts.Lookup(t, p); ok && so.Err == nil {
				logStart = so.Offset
			}
			start := logStart
			if ao, ok := after.Lookup(t, p); ok && ao.Err == nil && ao.Offset > start {
				start = ao.Offset
			}
			if v, ok := pick(r.ro.StartOffsets, p); ok {
				start = max(v, logStart)
			}
			if v, ok := pick(r.ro.EndOffsets, p); ok && v < end {
				end = v
			}
			start = min(start, end)
			rp := &replayPart{start: start, next: start, emitted: start, end: end, done: start >= end}
			r.parts[tp{t, p}] = rp
			r.merge.assign(t, p, start, end).rp = rp
			r.total += end - start
			if !rp.done {
				if consume[t] == nil {
					consume[t] = make(map[int32]kgo.Offset)
				}
				consume[t][p] = kgo.NewOffset().At(start)
			}
		}
	}
	return consume, nil
}

// stallTimeout ends a replay that gets nothing more while partitions are
// short of their end offsets (a compacted tail that never comes).
const stallTimeout = 30 * time.Second

// replayFetchBytes is the most a fetch returns of one partition (tests
// lower it). It is a quarter of kcat's (librdkafka's) 1 MiB: see consume.
var replayFetchBytes int32 = 256 << 10

// consume reads the partitions to their end offsets through the merger.
func (r *replay) consume(ctx context.Context, consume map[string]map[int32]kgo.Offset) error {
	var pool []kgo.Opt
	if p := newFetchPool(); p != nil {
		// The merger recycles the records once handed on: the batches'
		// buffers are reused.
		pool = append(pool, kgo.WithPools(p))
		r.merge.recycle = true
	}
	cl, err := kgo.NewClient(r.s.clientOpts("beacon-replay", append(pool,
		kgo.ConsumePartitions(consume),
		kgo.KeepControlRecords(), // they count toward the end offsets
		kgo.FetchMaxWait(200*time.Millisecond),
		// replayFetchBytes a partition: the merger holds the fetched
		// records until every partition has reached their event time,
		// and a partition whose fetch covers more event time than the
		// slowest one's queues the difference, so larger fetches only
		// raise the peak memory (two days from 6 partitions: 1.09 GB RSS
		// at 4 MiB, 0.66-0.72 GB at 1 MiB, 0.50-0.57 GB at 256 KiB, the
		// same CPU).
		kgo.FetchMaxPartitionBytes(replayFetchBytes),
	)...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var idle time.Duration // polling without progress; time spent processing does not count
	var fetched []kgo.FetchTopicPartition
	var nexts []int64
	for {
		if err := r.failed(); err != nil {
			return err
		}
		left := 0
		for _, rp := range r.parts {
			if !rp.done {
				left++
			}
		}
		if left == 0 {
			break
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		polled := time.Now()
		fetches := cl.PollFetches(pctx)
		cancel()
		idle += time.Since(polled)
		if err := ctx.Err(); err != nil {
			return err
		}
		if fetches.IsClientClosed() {
			return errors.New("stream: replay consumer closed")
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				r.s.log.Warn("input fetch error", zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
			}
		})
		var finished map[string][]int32
		fetched, nexts := fetched[:0], nexts[:0]
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			rp := r.parts[tp{fp.Topic, fp.Partition}]
			if rp == nil || rp.done || len(fp.Records) == 0 {
				for _, rec := range fp.Records {
					rec.Recycle()
				}
				return
			}
			keep := fp.Records[:0]
			next := rp.next
			for i, rec := range fp.Records {
				if rec.Offset >= rp.end {
					next = rp.end // nothing else comes before the end
					for _, rec := range fp.Records[i:] {
						rec.Recycle()
					}
					break
				}
				next = rec.Offset + 1
				if rec.Attrs.IsControl() {
					rec.Recycle()
					continue
				}
				keep = append(keep, rec)
			}
			r.res.Records += int64(len(keep))
			fp.Records, fp.HighWatermark = keep, rp.end
			fetched = append(fetched, fp)
			nexts = append(nexts, next)
		})
		r.merge.add(fetched, r.in.decodeRecord, r.in.reject)
		for i := range fetched {
			fp, next := &fetched[i], nexts[i]
			rp := r.parts[tp{fp.Topic, fp.Partition}]
			r.merge.skipTo(fp.Topic, fp.Partition, next)
			if next > rp.next {
				rp.next = next
				idle = 0
			}
			if rp.next >= rp.end {
				rp.done = true
				if finished == nil {
					finished = make(map[string][]int32)
				}
				finished[fp.Topic] = append(finished[fp.Topic], fp.Partition)
			}
		}
		clear(fetched)
		if len(finished) > 0 {
			cl.RemoveConsumePartitions(finished)
		}
		if idle > stallTimeout {
			for k, rp := range r.parts {
				if !rp.done {
					r.s.log.Warn("input partition delivers nothing before its end offset; replaying without the rest",
						zap.String("topic", k.topic), zap.Int32("partition", k.p), zap.Int64("next", rp.next), zap.Int64("end", rp.end))
					rp.done = true
					r.res.Stalled++
					r.merge.skipTo(k.topic, k.p, rp.end)
				}
			}
		}
		pause, resume := r.merge.emit(r.event, r.emitted)
		r.watermark()
		if len(pause) > 0 {
			cl.PauseFetchPartitions(pause)
		}
		if len(resume) > 0 {
			cl.ResumeFetchPartitions(resume)
		}
		if r.ro.OnProgress != nil {
			r.ro.OnProgress(r.progress())
		}
	}
	// Every partition is at its end: nothing holds the queues back.
	r.merge.emit(r.event, r.emitted)
	for _, rp := range r.parts {
		rp.emitted = rp.end
	}
	r.watermark()
	if r.ro.OnProgress != nil {
		r.ro.OnProgress(r.progress())
	}
	return nil
}

// failed returns the error of a worker that stopped.
func (r *replay) failed() error {
	for _, w := range r.ws {
		select {
		case <-w.done: // it set the error before it closed done
			r.mu.Lock()
			err := r.err
			r.mu.Unlock()
			if err != nil {
				return err
			}
			return fmt.Errorf("stream: replay %s stopped", r.name(w))
		default:
		}
	}
	return nil
}

// emitted records that the merger handed on a record's events.
func (r *replay) emitted(mp *mpart, _ int32, next int64) {
	if mp.rp != nil {
		mp.rp.emitted = next
	}
}

func (r *replay) progress() ReplayProgress {
	var done int64
	for _, rp := range r.parts {
		done += rp.emitted - rp.start
	}
	return ReplayProgress{Records: done, Total: r.total, Events: r.res.Events}
}

// event takes the merger's events in order.
func (r *replay) event(mp *mpart, e *beacon.Event, class uint8) {
	r.res.Events++
	if r.res.Events%8192 == 0 && r.ro.OnProgress != nil {
		r.ro.OnProgress(r.progress())
	}
	if r.ro.From != nil && e.Timestamp < *r.ro.From || r.ro.To != nil && e.Timestamp >= *r.ro.To {
		r.res.OutOfRange++
		return
	}
	r.in.event(mp, e, class)
	if r.res.Events%1024 == 0 {
		// Watermarks as the events go, not only once per poll: the
		// workers then hold few records.
		r.watermark() // emit calls event without m.mu held
	}
	// Ingest sweeps once per poll; a replay sweeps at the first event past
	// the margin, so that where the held-back observations land does not
	// depend on fetch sizes.
	r.in.dedup.sweep(false, r.in.produceDomain)
}

func (r *replay) reject(rec *kgo.Record, reason string, err error) {
	r.res.Bad++
	r.s.m.dropped.WithLabelValues(reason).Inc()
	if r.ro.OnBad != nil {
		r.ro.OnBad(BadRecord{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Reason: reason, Err: err})
	}
}

// watermark routes a watermark record to every detection partition when
// the input partitions' watermarks changed. An input partition is idle
// once the merger has handed on everything up to its end offset.
func (r *replay) watermark() {
	if r.universe == nil {
		for k := range r.parts {
			r.universe = append(r.universe, k)
		}
		slices.SortFunc(r.universe, func(a, b tp) int {
			if c := strings.Compare(a.topic, b.topic); c != 0 {
				return c
			}
			return int(a.p) - int(b.p)
		})
		r.filters = filterFingerprint(r.s.cfg.profile, &r.s.cfg.params)
	}
	r.wmSources = r.merge.sources(r.wmSources[:0], r.universe, 0, time.Now().Add(time.Hour))
	v := appendWatermark(r.wmBuf[:0], r.filters, r.wmSources)
	if string(v) == string(r.lastWM) {
		r.wmBuf = v
		return
	}
	// add copies the value: both buffers are reused.
	r.lastWM, r.wmBuf = v, r.lastWM
	for p := range r.pend {
		r.add(p, "", v)
	}
}

// route takes a repartition record from ingest and queues it for the
// detection partition the live repartition topic would put it in.
//
// With shards, it goes to the shard of its IP (shardOf), and every other
// shard of the partition gets its shadow: the record's kind and times
// (shadowOf). Every shard then holds the partition's sequence of release
// times — the same held records, evaluation points, segments (maxSegment
// counts records), the same newest connection in each Apply and so the
// same stream time, lateness, alert bookkeeping and pivot window
// (pivotStore.advance) — while its state and pivot store hold only its
// own destinations' tuples, whose decisions are theirs alone.
func (r *replay) route(ip string, value []byte, _ beacon.Time) {
	if value[0]&^kindReleased == kindDomain {
		r.res.Domains++
	} else {
		r.res.Connections++
	}
	p := 0
	if r.ro.Partitions > 1 {
		r.keyRec.Key = append(r.keyRec.Key[:0], ip...)
		p = r.keyPart.Partition(&r.keyRec, r.ro.Partitions)
	}
	if r.shards == 1 {
		r.add(p, ip, value)
		return
	}
	own := shardOf(ip, r.shards)
	r.shadow = shadowOf(r.shadow[:0], value)
	for s := range r.shards {
		if s == own {
			r.add(p*r.shards+s, ip, value)
		} else {
			r.add(p*r.shards+s, "", r.shadow)
		}
	}
}

// shardOf is the shard of a RemoteIP: FNV-1a, not the murmur2 that
// picked the partition, whose low bits the partition already fixed.
func shardOf(ip string, shards int) int {
	h := uint32(2166136261)
	for i := 0; i < len(ip); i++ {
		h ^= uint32(ip[i])
		h *= 16777619
	}
	return int(h % uint32(shards))
}

// shadowOf appends the shadow of a connection or domain record's value:
// its kind and times, no IP (the key is empty). A connection's shadow is
// a connection with a null port (kindNoPort), which moves stream time,
// opens its interval and moves the pivot store's window (pivotStore.advance)
// and nothing else:
//
//	kind|released  time  [release−time]
//
// A domain observation's shadow is one with an empty domain and no IP,
// which the worker counts and drops for its empty IP (worker.take).
func shadowOf(dst, value []byte) []byte {
	end := 1
	_, n := binary.Varint(value[end:])
	end += n
	if value[0]&kindReleased != 0 {
		_, n := binary.Uvarint(value[end:])
		end += n
	}
	start := len(dst)
	dst = append(dst, value[:end]...)
	switch value[0] &^ kindReleased {
	case kindConn:
		dst[start] = kindNoPort | value[0]&kindReleased
	case kindDomain:
		dst = appendString(dst, "")
	}
	return dst
}

// shardsAgree checks what route promises: the shards of a partition end
// at the same stream time, with the same alert bookkeeping's time (the
// warm-up and the re-alert period) and the same pivot window.
func (r *replay) shardsAgree() error {
	for i, w := range r.ws {
		if i%r.shards == 0 {
			continue
		}
		w0 := r.ws[i-i%r.shards]
		t0, ok0 := w0.part.StreamTime()
		t, ok := w.part.StreamTime()
		b0, b := &w0.book, &w.book
		if t0 != t || ok0 != ok || w0.points != w.points || b0.first != b.first || b0.warm != b.warm || b0.epoch != b.epoch ||
			w0.pivotsOf.now != w.pivotsOf.now {
			return fmt.Errorf("stream: replay %s is at stream time %v (%v) after %d points, first connection %v, warm %v, epoch %d, pivots at %v; shard 0 at %v (%v) after %d, %v, %v, %d, %v (a bug)",
				r.name(w), t, ok, w.points, b.first, b.warm, b.epoch, w.pivotsOf.now, t0, ok0, w0.points, b0.first, b0.warm, b0.epoch, w0.pivotsOf.now)
		}
	}
	return nil
}

func (r *replay) add(p int, key string, value []byte) {
	b := &r.pend[p]
	ks := len(b.buf)
	b.buf = append(b.buf, key...)
	ke := len(b.buf)
	b.buf = append(b.buf, value...)
	b.ents = append(b.ents, pendEnt{int32(ks), int32(ke), int32(len(b.buf))})
	if len(b.ents) >= replayBatch {
		r.send(p, false, nil)
	}
}

// send hands partition p's pending records to its worker; end makes the
// end of the batch an evaluation point.
func (r *replay) send(p int, end bool, done chan struct{}) {
	b := &r.pend[p]
	if len(b.ents) == 0 && !end {
		return
	}
	// The worker's segment and held records alias the buffer until they
	// are applied: the next batch gets one the worker released, or a new
	// one. (The entries are read by the worker until the batch is done:
	// they are not reused.)
	first := r.offsets[p]
	r.offsets[p] += int64(len(b.ents))
	bt := batch{buf: b.buf, ents: b.ents, first: first, hwm: math.MaxInt64, end: end, done: done}
	next := []byte(nil)
	if replayReuse {
		b.sent = append(b.sent, sentBuf{b.buf, r.offsets[p]})
		rel := r.ws[p].released.Load()
		if s := b.sent[0]; len(b.sent) > 1 && rel >= s.end {
			next = s.buf[:0]
			if onBatchReuse != nil {
				onBatchReuse(next[:cap(next)])
			}
			b.sent[0] = sentBuf{}
			b.sent = b.sent[1:]
		}
		// One released buffer is kept for the next batch; the others go to
		// the collector. A record held long pins every buffer sent after
		// it, and once it is applied the queue would otherwise keep that
		// length (one taken, one added per batch) to the end.
		for len(b.sent) > 2 && rel >= b.sent[1].end {
			b.sent[0] = sentBuf{}
			b.sent = b.sent[1:]
		}
	}
	if next == nil {
		next = make([]byte, 0, cap(b.buf))
	}
	b.buf = next
	b.ents = make([]pendEnt, 0, cap(b.ents))
	r.ws[p].send(bt)
}

// finalSet evaluates every partition at the same stream time.
func (r *replay) finalSet() error {
	var newest beacon.Time
	has := false
	for _, w := range r.ws {
		if t, ok := w.part.StreamTime(); ok && (!has || t > newest) {
			newest, has = t, true
		}
	}
	if r.ro.End != nil {
		newest, has = *r.ro.End-beacon.Second, true
	}
	if !has {
		return nil
	}
	r.res.Now, r.res.HasNow = newest+beacon.Second, true
	var rows []beacon.Row
	for _, w := range r.ws {
		if err := w.part.AdvanceTo(newest); err != nil {
			return err
		}
		rs, err := w.part.Beacons()
		if err != nil {
			return err
		}
		if a := r.s.cfg.allow; a != nil {
			rs, _ = a.Filter(rs)
		}
		rows = append(rows, rs...)
	}
	beacon.SortRows(rows)
	r.res.Rows = rows
	return nil
}
