package stream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// ingest consumes the input topics, decodes and filters early, and writes
// what detection needs to the repartition topic, keyed by RemoteIP:
// connection events that pass the query's filters and deduplicated domain
// observations. A poll's records are written and acknowledged before their
// input offsets are marked for commit, so a crash replays them (duplicates
// are harmless: timestamps are a set, domains keep the newest time).
type ingest struct {
	s     *Service
	cl    *kgo.Client
	dec   *inputDecoder
	dedup *domainDedup
	urls  map[string]string // RemoteUrl → domain, a bounded cache

	pivots pivotWriter // what was last written of each tuple's pivots (pivots.go)

	merge merger
	ready chan struct{}                        // closed once cl is set: callbacks may run before NewClient returns
	marks map[string]map[int32]kgo.EpochOffset // offsets to mark after the flush
	// markProg is the watermark at each of marks; commitProg the same for
	// the offsets handed to the client, which every commit writes into
	// its metadata (preCommit) for the partition's next reader.
	markProg   map[tp]progMark
	commitMu   sync.Mutex
	commitProg map[tp]progMark
	cancelCl   context.CancelFunc // cl's context (closeWithin)

	fetched []kgo.FetchTopicPartition // the partitions of the current poll, for merge.add
	nexts   []int64                   // and the offset after each one's last record (-1: none)

	arena []byte       // values and keys of the records in flight; reused after each flush
	recs  []kgo.Record // records in flight
	errMu sync.Mutex
	err   error

	// route, when set, takes the repartition records instead of the
	// repartition topic (replay): the value is only valid during the call.
	route func(ip string, value []byte, t beacon.Time)
	// reject handles a record that does not decode (default: the
	// dead-letter topic).
	reject func(r *kgo.Record, reason string, err error)
	// connUntil, when hasConnUntil, drops connections newer than it (replay
	// --end); their domain observations still count.
	connUntil    beacon.Time
	hasConnUntil bool

	// Watermarks (docs/streaming.md, "Time"). universe is every input
	// partition, sorted; nparts the repartition topic's partition count;
	// lastWM the last watermark value written and when.
	universe  []tp
	nparts    int
	lastWM    []byte
	lastWMAt  time.Time
	wmBuf     []byte // the next watermark value, compared with lastWM
	filters   string // filterFingerprint of the service's parameters
	wmSources []source
	wmPending bool       // a watermark was produced and not yet flushed
	wmMu      sync.Mutex // guards universe and nparts, set by assigned
	now       time.Time  // wall time of the current poll

	// counts of the current poll, added to the metrics once per poll
	nIn, nFiltered, nConn, nNoPort, nDomain int
}

// idleAfter is how long an input partition that is caught up must go
// without an event before its watermark is marked idle.
const idleAfter = 3 * time.Second

// wmEvery is how often, in wall time, ingest repeats an unchanged
// watermark (it writes a changed one after every poll).
const wmEvery = time.Minute

// reasonFuture is the dead-letter reason of a record holding an event
// dated more than the future tolerance after its record or the wall clock.
const reasonFuture = "future"

// newIngestCore returns the decoding, filtering and deduplication half of
// ingest, without a Kafka client: replay feeds it and sets route.
func newIngestCore(s *Service) (*ingest, error) {
	dec, err := newInputDecoder(s.cfg.inputFormat, s.cfg.inputSchemaID)
	if err != nil {
		return nil, err
	}
	in := &ingest{
		s: s, dec: dec,
		dedup: newDomainDedup(s.cfg.domainMargin),
		urls:  make(map[string]string),
		marks: make(map[string]map[int32]kgo.EpochOffset),
		ready: make(chan struct{}),

		markProg:   make(map[tp]progMark),
		commitProg: make(map[tp]progMark),
		now:        time.Now(),
		filters:    filterFingerprint(s.cfg.profile, &s.cfg.params),
	}
	in.reject = func(r *kgo.Record, reason string, err error) { s.deadLetter(in.cl, r, reason, err) }
	in.merge.classify = in.classify
	return in, nil
}

func newIngest(s *Service) (*ingest, error) {
	in, err := newIngestCore(s)
	if err != nil {
		return nil, err
	}
	start := kgo.NewOffset().AtStart()
	if s.cfg.fromLatest {
		start = kgo.NewOffset().AtEnd()
	}
	clCtx, cancelCl := context.WithCancel(context.Background())
	in.cancelCl = cancelCl
	opts := s.clientOpts("beacon-ingest",
		kgo.ConsumerGroup(s.cfg.group+".ingest"),
		kgo.ConsumeTopics(s.cfg.inputTopics...),
		kgo.ConsumeResetOffset(start),
		kgo.KeepControlRecords(), // see poll
		kgo.BlockRebalanceOnPoll(),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(max(s.cfg.commitInterval, 100*time.Millisecond)), // franz-go's floor
		kgo.AdjustFetchOffsetsFn(in.assigned),
		kgo.OnPartitionsRevoked(in.revoked),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
			for t, ps := range lost {
				for _, p := range ps {
					in.merge.revoke(t, p)
				}
			}
			if len(lost) > 0 { // franz-go calls it with none while the broker is away, every second
				s.log.Warn("input partitions lost", zap.Any("partitions", lost))
			}
		}),
		// Small fetches per partition keep the input partitions in step
		// when ingest catches up on a backlog: records of one poll are
		// written in order, so the repartition topic interleaves the
		// input partitions in chunks of this size, and stream time runs
		// ahead of a slower partition's events by at most one chunk.
		kgo.FetchMaxPartitionBytes(256<<10),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.RecordPartitioner(repartitioner{kgo.StickyKeyPartitioner(nil)}),
		kgo.MaxBufferedRecords(1<<20),
		// Every commit, the automatic ones included, carries the
		// watermarks at its offsets (preCommit); canceling the context
		// bounds Close (closeWithin).
		kgo.WithContext(kgo.PreCommitFnContext(clCtx, in.preCommit)),
	)
	if in.cl, err = kgo.NewClient(append(opts, s.groupOpts()...)...); err != nil {
		cancelCl()
		return nil, err
	}
	close(in.ready)
	return in, nil
}

// revoked commits what was written before the partitions move: the next
// owner starts where this one stopped. It runs only between polls
// (BlockRebalanceOnPoll), when nothing is in flight.
func (in *ingest) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	for t, ps := range revoked {
		for _, p := range ps {
			in.merge.revoke(t, p)
		}
	}
	if in.s.crashed.Load() {
		return
	}
	if err := cl.CommitMarkedOffsets(in.commitCtx(ctx)); err != nil {
		in.s.log.Warn("committing input offsets on revoke failed", zap.Error(err))
	}
}

func (in *ingest) run(ctx context.Context) error {
	defer func() {
		wait := closeWait
		if in.s.crashed.Load() {
			in.cl.LeaveGroupContext(nil)
			wait = 0 // a kill waits for nothing
		}
		closeWithin(in.cl, in.cancelCl, wait)
		in.s.leaveGroup(in.s.cfg.group + ".ingest")
	}()
	lastSweep := time.Now()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := in.cl.PollFetches(pctx)
		cancel()
		if in.s.crashed.Load() {
			return nil
		}
		if fetches.IsClientClosed() {
			return nil
		}
		if ctx.Err() != nil && fetches.NumRecords() == 0 {
			return in.shutdown()
		}
		failed := false
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				failed = true
				in.s.quiet.Warn("input fetch error", zap.String("topic", t), zap.Int32("partition", p), zap.Error(err))
			}
		})
		if failed && fetches.NumRecords() == 0 {
			// A poll with errors only returns at once (a recreated topic
			// keeps failing until the watch subscribes to it again): wait
			// instead of spinning.
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		in.now = time.Now()
		in.poll(fetches)
		if d := in.s.cfg.batchDelay; d > 0 {
			time.Sleep(d)
		}
		// An idle poll, or one every minute, sends the domain observations
		// that waited for their margin, so that the detector learns every
		// pair's newest time even when the input stops.
		if fetches.NumRecords() == 0 || time.Since(lastSweep) > time.Minute {
			in.dedup.sweep(true, in.produceDomain)
			lastSweep = time.Now()
		} else {
			in.dedup.sweep(false, in.produceDomain)
		}
		if err := in.flush(ctx); err != nil {
			return err
		}
		// The watermark of what this poll handed on is written, after its
		// records were acknowledged, and acknowledged itself before the
		// poll's offsets are committed and before a rebalance may move the
		// partitions: a new reader of an input partition starts from the
		// committed offset with the last watermark it finds
		// (initProgress), so that watermark must cover every event before
		// that offset. Committing first, as the first cut did, let a kill
		// (or a revoke, racing the asynchronous produce) leave the commit
		// ahead of the watermarks: the new reader then released an event
		// out of order just after the commit at its own time, earlier than
		// one reader does, and a row differed (TestScaleOut).
		in.watermark(false)
		if err := in.flush(ctx); err != nil {
			return err
		}
		if len(in.marks) > 0 {
			if h := in.s.beforeCommit; h != nil && h(in.marks) {
				in.s.crash() // a test's kill between the watermark's acknowledgement and the commit
				return nil
			}
			in.commitMu.Lock()
			maps.Copy(in.commitProg, in.markProg)
			in.commitMu.Unlock()
			clear(in.markProg)
			in.cl.MarkCommitOffsets(in.marks)
			marked := in.marks
			in.marks = make(map[string]map[int32]kgo.EpochOffset)
			// Commit now, not at the next auto-commit: a kill re-sends
			// what was written after the last commit, and a backlog is
			// written in seconds (a kill cost 56 % of the repartition
			// topic again with a 5 s interval; one poll now). A commit
			// per poll is one small request beside a poll's produce.
			if err := in.cl.CommitMarkedOffsets(in.commitCtx(ctx)); err != nil && ctx.Err() == nil && !in.s.crashed.Load() {
				in.s.quiet.Warn("committing input offsets failed", zap.Error(err))
			} else if h := in.s.afterCommit; h != nil && err == nil {
				h(marked)
			}
		}
		in.cl.AllowRebalance()
		if ctx.Err() != nil {
			return in.shutdown()
		}
	}
}

// shutdown sends what the domain deduplication holds back, waits for it,
// and commits.
func (in *ingest) shutdown() error {
	in.dedup.sweep(true, in.produceDomain)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := in.flush(ctx); err != nil {
		return err
	}
	// A graceful stop says that the partitions it has read to their end
	// hold nothing back (a crash says nothing: they hold detection until
	// their next reader reports).
	in.watermarkIdle(0)
	if err := in.cl.Flush(ctx); err != nil {
		return err
	}
	// Every poll committed its offsets already; this one waits for a
	// rebalance in flight (see closeWithin) no longer than closeWait.
	cctx, ccancel := context.WithTimeout(ctx, closeWait)
	defer ccancel()
	if err := in.cl.CommitMarkedOffsets(in.commitCtx(cctx)); err != nil {
		in.s.log.Warn("committing input offsets at shutdown failed", zap.Error(err))
	}
	in.s.log.Info("ingest stopped")
	return nil
}

// flush waits until every record of the poll, and any watermark written
// since the last flush, is acknowledged.
func (in *ingest) flush(ctx context.Context) error {
	if len(in.recs) > 0 || in.wmPending {
		in.wmPending = false
		fctx := ctx
		if ctx.Err() != nil { // shutting down: still finish what was started
			var cancel context.CancelFunc
			fctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
		}
		if err := in.cl.Flush(fctx); err != nil {
			return err
		}
	}
	in.errMu.Lock()
	err := in.err
	in.errMu.Unlock()
	if err != nil {
		return err
	}
	m := in.s.m
	m.eventsIn.WithLabelValues("ingest").Add(float64(in.nIn))
	m.dropped.WithLabelValues("filtered").Add(float64(in.nFiltered))
	m.forwarded.WithLabelValues("connection").Add(float64(in.nConn))
	m.forwarded.WithLabelValues("noport").Add(float64(in.nNoPort))
	m.forwarded.WithLabelValues("domain").Add(float64(in.nDomain))
	in.nIn, in.nFiltered, in.nConn, in.nNoPort, in.nDomain = 0, 0, 0, 0, 0
	clear(in.recs)
	in.recs = in.recs[:0]
	in.arena = in.arena[:0]
	return nil
}

func (in *ingest) promise(_ *kgo.Record, err error) {
	if err != nil {
		in.errMu.Lock()
		if in.err == nil {
			in.err = err
		}
		in.errMu.Unlock()
	}
}

// poll queues the events of one poll in the merger and writes those that
// are due, in event-time order across the input partitions (see merger).
func (in *ingest) poll(fetches kgo.Fetches) {
	in.fetched = in.fetched[:0]
	in.nexts = in.nexts[:0]
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		// Transaction markers are kept (KeepControlRecords) only so the
		// merger learns that nothing comes before them; otherwise a topic
		// written by transactional producers would look unfinished after
		// every commit and hold the other partitions back.
		var next int64 = -1
		if n := len(p.Records); n > 0 {
			next = p.Records[n-1].Offset + 1
		}
		keep := p.Records[:0]
		for _, r := range p.Records {
			if !r.Attrs.IsControl() {
				keep = append(keep, r)
			}
		}
		p.Records = keep
		in.fetched = append(in.fetched, p)
		in.nexts = append(in.nexts, next)
	})
	in.merge.add(in.fetched, in.decodeRecord, in.reject)
	for i, next := range in.nexts {
		if next >= 0 {
			in.merge.skipTo(in.fetched[i].Topic, in.fetched[i].Partition, next)
		}
	}
	clear(in.fetched)
	in.initProgress()
	pause, resume := in.merge.emit(in.event, in.markOffset)
	if len(pause) > 0 {
		in.cl.PauseFetchPartitions(pause)
	}
	if len(resume) > 0 {
		in.cl.ResumeFetchPartitions(resume)
	}
}

func (in *ingest) markOffset(mp *mpart, epoch int32, next int64) {
	ps := in.marks[mp.topic]
	if ps == nil {
		ps = make(map[int32]kgo.EpochOffset)
		in.marks[mp.topic] = ps
	}
	ps[mp.id] = kgo.EpochOffset{Epoch: epoch, Offset: next}
	// The record before next is complete: the partition's watermark is
	// now that of the records up to the mark. Only this goroutine moves
	// it while emit runs (event), so it is read without the lock.
	in.markProg[tp{mp.topic, mp.id}] = progMark{offset: next, time: mp.prog, has: mp.hasProg}
}

// progMark is an input partition's watermark at an offset: the newest
// event time handed on from the records before it.
type progMark struct {
	offset int64
	time   beacon.Time
	has    bool
}

// commitCtx makes a commit carry the watermarks at its offsets.
func (in *ingest) commitCtx(ctx context.Context) context.Context {
	return kgo.PreCommitFnContext(ctx, in.preCommit)
}

// preCommit writes, into the metadata of every committed input offset,
// the partition's watermark at that offset (progMeta). The partition's
// next reader starts from the commit with that watermark, so every record
// it writes again — those the previous reader had written, and
// acknowledged with a newer watermark, before dying ahead of its commit —
// carries the same release time as the first copy: an exact duplicate,
// which changes nothing downstream (docs/streaming.md, "Time").
func (in *ingest) preCommit(req *kmsg.OffsetCommitRequest) error {
	in.commitMu.Lock()
	defer in.commitMu.Unlock()
	for i := range req.Topics {
		t := &req.Topics[i]
		for j := range t.Partitions {
			p := &t.Partitions[j]
			if pm, ok := in.commitProg[tp{t.Topic, p.Partition}]; ok && pm.offset == p.Offset {
				meta := progMeta(pm.time, pm.has)
				p.Metadata = &meta
			}
		}
	}
	return nil
}

// assigned learns where each new partition starts and ends, so that the
// merger knows which ones have nothing to deliver and must not hold the
// others back.
func (in *ingest) assigned(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	<-in.ready
	adm := kadm.NewClient(in.cl)
	topics := slices.Clone(in.s.cfg.inputTopics)
	for t := range offsets {
		if !slices.Contains(topics, t) {
			topics = append(topics, t)
		}
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, err
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, err
	}
	// Every input partition, owned or not, goes into the watermarks, so
	// that detection waits for the ones nobody has read yet.
	var universe []tp
	ends.Each(func(lo kadm.ListedOffset) {
		if lo.Err == nil {
			universe = append(universe, tp{lo.Topic, lo.Partition})
		}
	})
	slices.SortFunc(universe, func(a, b tp) int {
		if c := cmp.Compare(a.topic, b.topic); c != 0 {
			return c
		}
		return cmp.Compare(a.p, b.p)
	})
	rp, err := adm.ListEndOffsets(ctx, in.s.cfg.repartition)
	if err != nil {
		return nil, err
	}
	nparts := 0
	rp.Each(func(lo kadm.ListedOffset) {
		if lo.Err == nil {
			nparts++
		}
	})
	in.wmMu.Lock()
	in.universe, in.nparts = universe, nparts
	in.wmMu.Unlock()
	// The watermark each commit carries (preCommit): the partition starts
	// from it, exactly where its previous reader stood at that offset.
	var committed kadm.OffsetResponses
	for _, ps := range offsets {
		for _, o := range ps {
			if o.EpochOffset().Offset >= 0 && committed == nil {
				if committed, err = adm.FetchOffsets(ctx, in.s.cfg.group+".ingest"); err != nil {
					in.s.log.Warn("reading the committed watermarks failed; new input partitions start from the watermark records", zap.Error(err))
					committed = kadm.OffsetResponses{}
				}
			}
		}
	}
	for t, ps := range offsets {
		for p, o := range ps {
			end, start := int64(0), int64(0)
			if lo, ok := ends.Lookup(t, p); ok && lo.Err == nil {
				end = lo.Offset
			}
			if lo, ok := starts.Lookup(t, p); ok && lo.Err == nil {
				start = lo.Offset
			}
			pos := o.EpochOffset().Offset
			switch {
			case pos > end:
				// Committed past the end: the topic was deleted and
				// recreated under the same name (the offsets are the old
				// topic's), or truncated. Read the new one from its start.
				in.s.log.Warn("committed input offset is past the partition's end: reading it from its start",
					zap.String("topic", t), zap.Int32("partition", p), zap.Int64("committed", pos), zap.Int64("end", end))
				pos = start
				ps[p] = kgo.NewOffset().At(start)
			case pos >= 0:
			case in.s.cfg.fromLatest:
				pos = end
			default:
				pos = start
			}
			in.merge.assign(t, p, pos, end)
			if r, ok := committed.Lookup(t, p); ok && r.Err == nil && pos >= 0 && r.At == pos {
				if wm, has, ok := parseProgMeta(r.Metadata); ok {
					in.merge.startProg(t, p, wm, has)
				}
			}
		}
	}
	return offsets, nil
}

// decodeRecord appends the events of one input record to evs. A record
// that does not decode returns its dead-letter reason and error, with the
// events before the error in an envelope kept; one holding an event dated
// more than the future tolerance ahead returns reasonFuture, with its other
// events kept. It is safe for concurrent use (merger.add decodes fetched
// partitions in parallel).
func (in *ingest) decodeRecord(evs []beacon.Event, r *kgo.Record) ([]beacon.Event, string, error) {
	if len(r.Value) > in.s.cfg.maxRecord {
		return evs, reasonOversized, errors.New("record of " + strconv.Itoa(len(r.Value)) + " bytes is over the limit of " + strconv.Itoa(in.s.cfg.maxRecord))
	}
	n := len(evs)
	evs, err := in.dec.appendEvents(evs, r.Value)
	limit := in.futureLimit(r)
	var future beacon.Time
	hasFuture := false
	kept := n
	for i := n; i < len(evs); i++ {
		if evs[i].Timestamp > limit {
			if !hasFuture {
				future, hasFuture = evs[i].Timestamp, true
			}
			continue
		}
		if kept != i {
			evs[kept] = evs[i]
		}
		kept++
	}
	clear(evs[kept:])
	evs = evs[:kept]
	if err == nil && hasFuture {
		return evs, reasonFuture, fmt.Errorf("event dated %s, more than %s after its record (%s) or the clock",
			future, in.s.cfg.futureTolerance, r.Timestamp.UTC().Format(time.RFC3339Nano))
	}
	if err != nil {
		var de *decodeError
		reason := reasonFormat
		if errors.As(err, &de) {
			reason = de.reason
		}
		return evs, reason, err
	}
	return evs, "", nil
}

// futureLimit is the newest event time a record may hold: its own
// timestamp or the wall clock, whichever is earlier, plus the tolerance.
// No real event is dated in the future, not even in a replay of history.
func (in *ingest) futureLimit(r *kgo.Record) beacon.Time {
	lim := in.now
	if !r.Timestamp.IsZero() && r.Timestamp.Before(lim) {
		lim = r.Timestamp
	}
	return beacon.TimeOf(lim.Add(in.s.cfg.futureTolerance))
}

// Event classes: what ingest.event needs to know of an event's strings,
// found by classify in the goroutine that decoded the event (merger.add),
// where its bytes are in cache and several partitions are decoded at once,
// instead of in the serial event, which read them again cold (the address
// parse and the lower-casing were a fifth of its time).
const (
	classKnown    uint8 = 1 << 0 // classify ran: the other bits hold
	classDomainIP uint8 = 1 << 1 // Params.DomainIP(e.RemoteIP)
	classConn     uint8 = 1 << 2 // Params.ConnectionOf: a connection, already normalized (Params.Normalize)
)

// classify returns the event's class and normalizes a connection's tuple
// columns (robust: case-insensitive names), which only connections use.
// It is safe for concurrent use.
func (in *ingest) classify(e *beacon.Event) uint8 {
	p := &in.s.cfg.params
	c := classKnown
	domainIP := p.DomainIP(e.RemoteIP)
	if domainIP {
		c |= classDomainIP
	}
	if p.ConnectionOf(e, domainIP) {
		c |= classConn
		p.Normalize(e)
	}
	return c
}

// event handles one decoded event of input partition mp (nil: none, for
// tests), of class (0: classify has not seen it). Its strings alias the
// record. It is released (docs/streaming.md,
// "Time") at its Timestamp, or at the partition's watermark when that is
// later: an event out of order in its partition counts where the
// watermark already was, so that whether it is in an evaluation does not
// depend on how the partitions interleave.
func (in *ingest) event(mp *mpart, e *beacon.Event, class uint8) {
	in.nIn++
	if class&classKnown == 0 {
		class = in.classify(e)
	}
	rel := e.Timestamp
	if mp != nil {
		mp.lastEvent = in.now
		if mp.hasProg && mp.prog > rel {
			rel = mp.prog
		} else {
			mp.prog, mp.hasProg = e.Timestamp, true
		}
	}
	in.dedup.advance(e.Timestamp)
	domainIP := class&classDomainIP != 0
	if domainIP {
		d, ok := emptyURLDomain, e.RemoteUrl == "" // half the rows of a fleet: no map lookup
		if !ok {
			d, ok = in.urls[e.RemoteUrl]
		}
		if !ok {
			d = beacon.DomainOf(e.RemoteUrl)
			if len(in.urls) >= 1<<16 {
				clear(in.urls)
			}
			d = string([]byte(d))
			in.urls[string([]byte(e.RemoteUrl))] = d
		}
		if in.dedup.observe(e.RemoteIP, d, e.Timestamp) {
			in.produceDomainAt(e.RemoteIP, d, e.Timestamp, rel)
		}
	}
	if class&classConn == 0 || in.hasConnUntil && e.Timestamp > in.connUntil {
		in.nFiltered++
		return
	}
	if e.HasPort {
		in.nConn++
	} else {
		in.nNoPort++
	}
	start := len(in.arena)
	in.arena = appendConn(in.arena, e, rel)
	if e.HasPort {
		in.arena = in.pivots.append(in.arena, e)
	}
	in.produce(e.RemoteIP, start, e.Timestamp)
}

// emptyURLDomain is the domain of an empty RemoteUrl.
var emptyURLDomain = beacon.DomainOf("")

// produceDomain sends a domain observation that the deduplication held
// back: it is released at its own time, which the watermark has passed.
func (in *ingest) produceDomain(ip, domain string, t beacon.Time) {
	in.produceDomainAt(ip, domain, t, t)
}

func (in *ingest) produceDomainAt(ip, domain string, t, rel beacon.Time) {
	in.nDomain++
	start := len(in.arena)
	in.arena = appendDomain(in.arena, t, rel, domain)
	in.produce(ip, start, t)
}

// watermark writes what ingest knows of every input partition to every
// repartition partition, after the records it covers were acknowledged:
// when it changed, and every wmEvery (so that idleness shows).
func (in *ingest) watermark(force bool) {
	if force {
		in.watermarkIdle(0)
		return
	}
	in.watermarkIdle(idleAfter)
}

func (in *ingest) watermarkIdle(quiet time.Duration) {
	force := quiet == 0
	in.wmMu.Lock()
	universe, nparts := in.universe, in.nparts
	in.wmMu.Unlock()
	if nparts == 0 || len(universe) == 0 {
		return
	}
	now := time.Now()
	in.wmSources = in.merge.sources(in.wmSources[:0], universe, quiet, now)
	in.wmBuf = appendWatermark(in.wmBuf[:0], in.filters, in.wmSources)
	if !force && string(in.wmBuf) == string(in.lastWM) && now.Sub(in.lastWMAt) < wmEvery {
		return
	}
	// A new value for the records: the client holds it until they are
	// acknowledged.
	v := slices.Clone(in.wmBuf)
	in.lastWM, in.lastWMAt = v, now
	in.wmPending = true
	for p := range nparts {
		in.cl.Produce(context.Background(), &kgo.Record{
			Topic: in.s.cfg.repartition, Partition: int32(p), Value: v, Timestamp: now,
		}, in.promise)
	}
}

// initProgress starts the watermark of newly assigned input partitions
// whose commit carried none (written by an older version: the commit's
// own is exact, see preCommit) where their previous reader's was, from
// the newest watermark records in the repartition topic: an event out of
// order just after the committed offset is then released where the
// previous reader would have released it, not at its own time. It runs in
// the poll loop, before the partitions' first events are handed on;
// without a previous watermark (a first reader, or one whose watermarks
// are too far back) the partition starts from its first event.
func (in *ingest) initProgress() {
	mps := in.merge.needProg()
	if len(mps) == 0 || in.s.cfg.repartition == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	last, err := lastWatermarks(ctx, in.s, 4096)
	if err != nil {
		in.s.log.Warn("reading the previous watermarks failed; new input partitions start from their first event", zap.Error(err))
		return
	}
	in.merge.mu.Lock()
	defer in.merge.mu.Unlock()
	for _, mp := range mps {
		if t, ok := last[tp{mp.topic, mp.id}]; ok && (!mp.hasProg || t > mp.prog) {
			mp.prog, mp.hasProg = t, true
		}
	}
}

// lastWatermarks returns, per input partition, the newest time among the
// watermark records in the last span records of repartition partition 0
// (every writer writes every watermark to every partition).
func lastWatermarks(ctx context.Context, s *Service, span int64) (map[tp]beacon.Time, error) {
	cl, err := kgo.NewClient(s.clientOpts("beacon-watermarks")...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, s.cfg.repartition)
	if err != nil {
		return nil, err
	}
	starts, err := adm.ListStartOffsets(ctx, s.cfg.repartition)
	if err != nil {
		return nil, err
	}
	end, start := int64(0), int64(0)
	if lo, ok := ends.Lookup(s.cfg.repartition, 0); ok && lo.Err == nil {
		end = lo.Offset
	}
	if lo, ok := starts.Lookup(s.cfg.repartition, 0); ok && lo.Err == nil {
		start = lo.Offset
	}
	out := make(map[tp]beacon.Time)
	from := max(start, end-span)
	if from >= end {
		return out, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{s.cfg.repartition: {0: kgo.NewOffset().At(from)}})
	var it item
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset+1 >= end {
				done = true
			}
			if r.Key != nil || len(r.Value) == 0 || r.Value[0] != kindWatermark || decodeItem(nil, r.Value, &it) != nil {
				return
			}
			for _, src := range it.sources {
				k := tp{src.topic, src.part}
				if t, ok := out[k]; src.flags&wmHasTime != 0 && (!ok || src.time > t) {
					out[k] = src.time
				}
			}
		})
		if done {
			return out, nil
		}
	}
}

// repartitioner puts a keyed record where Kafka's default partitioner
// (murmur2 of the key) does, and a record without a key (a watermark) in
// the partition it names.
type repartitioner struct{ keyed kgo.Partitioner }

func (p repartitioner) ForTopic(t string) kgo.TopicPartitioner {
	return repartTopic{p.keyed.ForTopic(t)}
}

type repartTopic struct{ keyed kgo.TopicPartitioner }

func (repartTopic) RequiresConsistency(*kgo.Record) bool { return true }

func (p repartTopic) Partition(r *kgo.Record, n int) int {
	if r.Key == nil {
		return int(r.Partition)
	}
	return p.keyed.Partition(r, n)
}

// filterFingerprint names the filters ingest applies before detection
// sees anything (Params.Connection): watermarks carry it, and a detector
// with other filters refuses the partition.
func filterFingerprint(profile string, p *beacon.Params) string {
	actions := slices.Compact(slices.Sorted(slices.Values(p.ActionTypes)))
	return "profile=" + profile + ";actions=" + strings.Join(actions, ",")
}

// produce sends the value at arena[start:] keyed by ip. Records are taken
// from a slice and values from an arena that are both reused once the
// poll's records are acknowledged, so steady state allocates little.
func (in *ingest) produce(ip string, start int, t beacon.Time) {
	if in.route != nil {
		in.route(ip, in.arena[start:], t)
		in.arena = in.arena[:start]
		return
	}
	end := len(in.arena)
	in.arena = append(in.arena, ip...)
	if cap(in.recs) == len(in.recs) {
		// Growing would move records that the client holds: start a new
		// backing array and leave the old one to the in-flight records.
		in.recs = make([]kgo.Record, 0, max(1024, 2*cap(in.recs)))
	}
	in.recs = append(in.recs, kgo.Record{
		Topic:     in.s.cfg.repartition,
		Key:       in.arena[end:len(in.arena):len(in.arena)],
		Value:     in.arena[start:end:end],
		Timestamp: recordTime(t, time.Now()),
	})
	in.cl.Produce(context.Background(), &in.recs[len(in.recs)-1], in.promise)
}

// maxFutureSkew bounds how far ahead of the wall clock a repartition
// record's Kafka timestamp may be. Brokers reject records stamped too far
// in the future (Kafka 4: log.message.timestamp.after.max.ms, 1 h), which
// would fail the produce and stop ingest on one sensor with a bad clock.
const maxFutureSkew = 30 * time.Minute

// recordTime is the Kafka timestamp of a repartition record: its event
// time, which rebuilds look offsets up by, kept within what a broker
// accepts (not before the epoch, not more than maxFutureSkew ahead of now).
// Detection reads event time from the value, never from this.
func recordTime(t beacon.Time, now time.Time) time.Time {
	ms := max(millis(t), 0)
	if lim := now.Add(maxFutureSkew).UnixMilli(); ms > lim {
		ms = lim
	}
	return time.UnixMilli(ms)
}
