// Package stream is the streaming beacon detector: Kafka in, beacon alerts
// out, with the seed query's exact semantics (docs/streaming.md).
//
//	input topic(s) ─► ingest: decode, filter early, key by RemoteIP ─► repartition topic
//	repartition topic ─► detect: a worker per owned partition, state in Pebble ─► alert topic
//	records that do not decode ─► dead-letter topic, with the reason
//
// A Service runs either half or both; processes with the same group split
// the partitions. At every evaluation point the set of tuples a partition
// holds as beaconing is what `beacon hunt --end <stream time + 1s>` returns
// over the events of that partition, and a tuple entering it is published
// once per re-alert period under a deterministic ID.
//
// Replay runs a topic's history through the same ingest and detection code
// in one process, on scratch state, for backtests.
package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kzap"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Service is a detector process: ingest, detection, or both, and the HTTP
// endpoints. Create it with New and start it with Run.
type Service struct {
	cfg cfg
	log *zap.Logger
	reg *prometheus.Registry
	m   *metrics
	det atomic.Pointer[detector]
	in  atomic.Pointer[ingest]

	quiet      *zap.Logger // s.log for repeating warnings: a few per message per clientLogTick
	instanceID string      // static group membership; "" for dynamic
	health     health
	fatal      atomic.Pointer[error] // why the last Run ended, if it failed

	recent recentAlerts // the page's recent alerts (page.go)

	running      atomic.Bool
	crashed      atomic.Bool          // test hook: stop as a killed process would
	onSuppressed func(message string) // test hook: a log line suppressed
	// test hook: ingest committed these input offsets (called in its
	// poll loop, right after the commit, where a kill may strike)
	afterCommit func(committed map[string]map[int32]kgo.EpochOffset)
	// beforeCommit, when it returns true, kills ingest (tests) after a
	// poll's watermark was acknowledged and before its offsets are
	// committed: the window a real kill can hit.
	beforeCommit func(marks map[string]map[int32]kgo.EpochOffset) bool
}

// New checks the options and returns a service ready to Run.
func New(opts ...Opt) (*Service, error) {
	c := defaults()
	for _, o := range opts {
		o.apply(&c)
	}
	if len(c.brokers) == 0 {
		c.brokers = []string{"127.0.0.1:9092"}
	}
	if c.reAlert == 0 {
		c.reAlert = c.params.Lookback
	}
	switch {
	case c.warmup == 0:
		c.warmup = c.params.DefaultWarmup()
	case c.warmup < 0:
		c.warmup = 0
	}
	switch {
	case c.role != RoleAll && c.role != RoleIngest && c.role != RoleDetect:
		return nil, fmt.Errorf("stream: unknown role %q", c.role)
	case c.role != RoleIngest && c.stateDir == "":
		return nil, errors.New("stream: detection needs a state directory (StateDir)")
	case c.role != RoleDetect && len(c.inputTopics) == 0:
		return nil, errors.New("stream: ingest needs at least one input topic")
	case c.repartition == "" || c.alertTopic == "" || c.deadLetter == "" || c.group == "":
		return nil, errors.New("stream: topics and group must not be empty")
	case c.reAlert < time.Second:
		return nil, fmt.Errorf("stream: re-alert interval must be at least 1s, got %s", c.reAlert)
	case c.evalInterval < time.Second:
		return nil, fmt.Errorf("stream: evaluation interval must be at least 1s, got %s", c.evalInterval)
	case c.domainMargin < 0:
		return nil, fmt.Errorf("stream: domain margin must not be negative, got %s", c.domainMargin)
	case c.futureTolerance < 0:
		return nil, fmt.Errorf("stream: future tolerance must not be negative, got %s", c.futureTolerance)
	case c.maxHeld < 1:
		return nil, fmt.Errorf("stream: max held records must be at least 1, got %d", c.maxHeld)
	case c.commitInterval <= 0:
		return nil, fmt.Errorf("stream: commit interval must be positive, got %s", c.commitInterval)
	case c.memoryBudget != 0 && c.memoryBudget < 16<<20:
		return nil, fmt.Errorf("stream: memory budget must be at least 16 MiB, got %d bytes", c.memoryBudget)
	case c.maxRecord < 64:
		return nil, fmt.Errorf("stream: max record bytes must be at least 64, got %d", c.maxRecord)
	case c.watchInterval < 10*time.Millisecond:
		return nil, fmt.Errorf("stream: watch interval must be at least 10ms, got %s", c.watchInterval)
	case c.readyMaxLag < 0:
		return nil, fmt.Errorf("stream: ready max lag must not be negative, got %d", c.readyMaxLag)
	case c.profile != beacon.ProfileSeed && c.profile != beacon.ProfileRobust:
		return nil, fmt.Errorf("stream: unknown profile %q", c.profile)
	}
	if err := c.params.Validate(); err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	if _, err := newAlertCodec(c.alertFormat, c.alertSchemaID); err != nil {
		return nil, err
	}
	if err := CheckAlertLink(c.alertLink); err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	if _, err := newInputDecoder(c.inputFormat, c.inputSchemaID); err != nil {
		return nil, err
	}
	s := &Service{cfg: c, log: c.log, reg: c.registry}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	s.m = newMetrics(s.reg, c.stateDir)
	s.quiet = s.log.WithOptions(zap.WrapCore(s.limitRepeats))
	return s, nil
}

// Run runs the service until ctx is done, then shuts down gracefully:
// ingest sends what it holds back, waits for the acknowledgements and
// commits; every detection worker stops at its last evaluation point,
// whose alerts are published and acknowledged and whose state and offset
// are in Pebble, and commits that offset to Kafka. It returns the first
// error of any part; a clean shutdown returns nil.
//
// Every part (ingest, detection, the topic watch, HTTP) is built before
// any runs, so that a part that cannot be built (a state directory of
// other parameters, say) leaves nothing running. They then run as one
// group, as Prometheus' run groups do: the first to return ends them all,
// its error the cause, and Run returns once every one has.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("stream: service already running")
	}
	defer s.running.Store(false)
	s.fatal.Store(nil)
	built := false
	defer func() {
		if l := s.cfg.listener; l != nil && !built { // the HTTP part closes it once it runs
			l.Close()
		}
	}()
	if err := s.resolveInstanceID(); err != nil {
		return err
	}
	s.log.Info("beacon service starting", s.startFields()...)
	if s.cfg.createTopics {
		if err := s.ensureTopics(ctx); err != nil {
			return err
		}
	}
	actors, err := s.build()
	if err != nil {
		return err
	}
	built = true
	err = runGroup(ctx, actors)
	if s.crashed.Load() { // a test's kill: the parts stop without a word
		err = nil
	}
	if err != nil && errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	if err != nil {
		s.fatal.Store(&err)
	}
	return err
}

// startFields is the start-up line: what an operator checks first.
func (s *Service) startFields() []zap.Field {
	f := []zap.Field{zap.Strings("brokers", s.cfg.brokers), zap.String("role", string(s.cfg.role)),
		zap.String("group", s.cfg.group), zap.String("profile", s.cfg.profile)}
	if s.cfg.role != RoleDetect {
		f = append(f, zap.Strings("input_topics", s.cfg.inputTopics))
	}
	f = append(f, zap.String("repartition_topic", s.cfg.repartition))
	if s.cfg.role != RoleIngest {
		f = append(f, zap.String("alert_topic", s.cfg.alertTopic), zap.String("state_dir", s.cfg.stateDir))
	}
	f = append(f, zap.String("dead_letter_topic", s.cfg.deadLetter), zap.String("instance_id", s.instanceID),
		zap.Duration("lookback", s.cfg.params.Lookback), zap.Duration("warmup", s.cfg.warmup),
		zap.Duration("realert_interval", s.cfg.reAlert))
	return f
}

// actor is one part of the service under the run group: run works until
// ctx is done (or it fails) and returns.
type actor struct {
	name string
	run  func(ctx context.Context) error
}

// build creates every part of the service, or none: on an error it closes
// what it built.
func (s *Service) build() ([]actor, error) {
	var actors []actor
	var closers []func()
	undo := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		s.in.Store(nil)
		s.det.Store(nil)
	}
	w, err := newWatch(s)
	if err != nil {
		return nil, err
	}
	closers = append(closers, w.close)
	actors = append(actors, actor{"topic watch", w.run})
	if s.cfg.role != RoleDetect {
		in, err := newIngest(s)
		if err != nil {
			undo()
			return nil, err
		}
		closers = append(closers, in.cl.Close)
		s.in.Store(in)
		actors = append(actors, actor{"ingest", in.run})
	}
	if s.cfg.role != RoleIngest {
		d, err := newDetector(s)
		if err != nil {
			undo()
			return nil, err
		}
		closers = append(closers, func() { d.cl.Close(); d.store.Close() })
		s.det.Store(d)
		actors = append(actors, actor{"detection", d.run})
	}
	if l := s.cfg.listener; l != nil {
		srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
		actors = append(actors, actor{"http", func(ctx context.Context) error {
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(l) }()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := srv.Shutdown(sctx)
			<-errc
			return err
		}})
	}
	return actors, nil
}

// runGroup runs the actors until the first returns, then cancels the
// others' context with its error as the cause (errActorStopped when it
// returned nil before ctx was done) and waits for all of them. It returns
// the first error, named by its actor.
func runGroup(ctx context.Context, actors []actor) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type result struct {
		name string
		err  error
	}
	done := make(chan result, len(actors))
	for _, a := range actors {
		go func() { done <- result{a.name, a.run(ctx)} }()
	}
	first := <-done
	var err error
	switch {
	case first.err != nil:
		err = fmt.Errorf("%s: %w", first.name, first.err)
	case ctx.Err() == nil:
		// A part that ends on its own ends the process: a detector without
		// ingest would look alive and never alert.
		err = fmt.Errorf("%s: %w", first.name, errActorStopped)
	}
	cancel(err)
	for range len(actors) - 1 {
		if r := <-done; err == nil && r.err != nil && !errors.Is(r.err, context.Canceled) {
			err = fmt.Errorf("%s: %w", r.name, r.err)
		}
	}
	return err
}

// errActorStopped is the cause when a part returned without an error
// while the others were meant to go on.
var errActorStopped = errors.New("stopped unexpectedly")

// crash makes the running service stop the way a killed process would:
// nothing more is published, applied or committed (tests).
func (s *Service) crash() { s.crashed.Store(true) }

// clientOpts returns the options every client of the service shares.
// The long-lived clients (ingest, detect) also report franz-go's metrics,
// under their client id; kprom wants one Metrics per client.
func (s *Service) clientOpts(id string, extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(s.cfg.brokers...),
		kgo.ClientID(id),
		kgo.WithLogger(s.clientLogger(id)),
	}
	if id == "beacon-ingest" || id == "beacon-detect" {
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics(namespace, kprom.Registerer(s.reg), kprom.Gatherer(s.reg), kprom.WithClientLabel())))
	}
	opts = append(opts, extra...)
	return append(opts, s.cfg.kopts...) // last, so that they win
}

// groupOpts are the options of the consumer groups.
func (s *Service) groupOpts() []kgo.Opt {
	var opts []kgo.Opt
	if s.instanceID != "" {
		opts = append(opts, kgo.InstanceID(s.instanceID))
	}
	if s.cfg.sessionTimeout <= 0 {
		return opts
	}
	return append(opts, kgo.SessionTimeout(s.cfg.sessionTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, max(s.cfg.sessionTimeout/10, 100*time.Millisecond))))
}

// closeWait bounds how long a graceful Close waits for the client's group
// management, once the process has committed what it will commit.
const closeWait = 5 * time.Second

// closeWithin closes cl, giving up on its group management after wait: a
// Close during a rebalance waits for the JoinGroup in flight, which the
// coordinator answers only once every member has rejoined or the
// rebalance timeout (a minute) has passed — longer than a container's
// stop grace period, and than the tests' stops. cancel cancels the
// client's context (kgo.WithContext), which fails what is in flight.
func closeWithin(cl *kgo.Client, cancel context.CancelFunc, wait time.Duration) {
	if wait <= 0 {
		cancel()
	}
	t := time.AfterFunc(wait, cancel)
	cl.CloseAllowingRebalance()
	t.Stop()
	cancel()
}

// leaveGroup removes this process's static member from group after its
// client closed (LeaveGroupOnStop): franz-go's Close does not, so that a
// restart keeps the partitions; this asks the coordinator by instance ID.
func (s *Service) leaveGroup(group string) {
	if !s.cfg.leaveOnStop || s.instanceID == "" || s.crashed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(s.clientOpts("beacon-leave")...)
	if err == nil {
		var resp kadm.LeaveGroupResponses
		resp, err = kadm.NewClient(cl).LeaveGroup(ctx, kadm.LeaveGroup(group).InstanceIDs(s.instanceID).Reason("beacon stopped"))
		if err == nil {
			err = resp.Error()
		}
		cl.Close()
	}
	if err != nil {
		s.log.Warn("leaving the group failed; its partitions move after the session timeout", zap.String("group", group), zap.Error(err))
		return
	}
	s.log.Info("left the group", zap.String("group", group), zap.String("instance_id", s.instanceID))
}

// instanceIDFile holds a process's static membership ID in its state
// directory (Pebble ignores files it does not know).
const instanceIDFile = "beacon-instance-id"

// resolveInstanceID decides the static membership ID: the configured one,
// none, or the one stored in the state directory, created at first start
// from the host name and random bits so that copies of one deployment
// (same path on many hosts) do not fence each other.
func (s *Service) resolveInstanceID() error {
	switch id := s.cfg.instanceID; {
	case id == "none":
		s.instanceID = ""
		return nil
	case id != "":
		s.instanceID = id
		return nil
	case s.cfg.role == RoleIngest || s.cfg.stateDir == "":
		s.instanceID = ""
		return nil
	}
	path := filepath.Join(s.cfg.stateDir, instanceIDFile)
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			s.instanceID = id
			return nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stream: reading the instance id: %w", err)
	}
	if err := os.MkdirAll(s.cfg.stateDir, 0o755); err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	host, _ := os.Hostname()
	var rnd [6]byte
	rand.Read(rnd[:])
	id := "beacon-" + host + "-" + hex.EncodeToString(rnd[:])
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return fmt.Errorf("stream: writing the instance id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("stream: writing the instance id: %w", err)
	}
	s.instanceID = id
	return nil
}

// ensureTopics creates the topics the service writes and the repartition
// topic when they are missing. Input topics belong to the producer.
func (s *Service) ensureTopics(ctx context.Context) error {
	cl, err := kgo.NewClient(s.clientOpts("beacon-admin")...)
	if err != nil {
		return err
	}
	defer cl.Close()
	topics := []string{s.cfg.repartition, s.cfg.deadLetter}
	if s.cfg.role != RoleIngest {
		topics = append(topics, s.cfg.alertTopic)
	}
	return s.createTopics(ctx, kadm.NewClient(cl), topics...)
}

// deadLetter sends a record that does not decode to the dead-letter topic,
// keeping its key, value and headers, with the reason and origin in
// beacon.* headers, and logs where it came from. Values over 64 KiB are
// truncated (beacon.truncated holds the original size) so that an oversized
// record cannot also be too large for the dead-letter topic.
func (s *Service) deadLetter(cl *kgo.Client, r *kgo.Record, reason string, err error) {
	s.m.dropped.WithLabelValues(reason).Inc()
	s.log.Warn("record dead-lettered", zap.String("topic", r.Topic), zap.Int32("partition", r.Partition),
		zap.Int64("offset", r.Offset), zap.String("reason", reason), zap.Error(err))
	if cl == nil { // a replay: nothing is produced
		return
	}
	value := r.Value
	headers := append([]kgo.RecordHeader(nil), r.Headers...)
	const maxDead = 64 << 10
	if len(value) > maxDead {
		headers = append(headers, kgo.RecordHeader{Key: "beacon.truncated", Value: []byte(strconv.Itoa(len(value)))})
		value = value[:maxDead]
	}
	msg := err.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	headers = append(headers,
		kgo.RecordHeader{Key: "beacon.reason", Value: []byte(reason)},
		kgo.RecordHeader{Key: "beacon.error", Value: []byte(msg)},
		kgo.RecordHeader{Key: "beacon.topic", Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: "beacon.partition", Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: "beacon.offset", Value: []byte(strconv.FormatInt(r.Offset, 10))},
	)
	dl := &kgo.Record{Topic: s.cfg.deadLetter, Key: r.Key, Value: value, Headers: headers, Timestamp: r.Timestamp}
	cl.Produce(context.Background(), dl, func(_ *kgo.Record, err error) {
		if err != nil {
			s.log.Error("dead-letter write failed", zap.String("topic", r.Topic), zap.Int32("partition", r.Partition),
				zap.Int64("offset", r.Offset), zap.Error(err))
		}
	})
}

// Beacons returns the current beacon set of the partitions this process
// owns, in the query's output order: each partition's rows at its own
// stream time, as `beacon hunt --end <stream time + 1s>` over its events.
func (s *Service) Beacons() ([]beacon.Row, error) {
	d := s.det.Load()
	if d == nil {
		return nil, nil
	}
	return d.beacons()
}

// clientLogger is franz-go's logger: its chatter (connections, joins,
// flushes: info and debug) shows with --log-level debug only; its warnings
// and errors always do, each message at most clientLogBurst times per
// clientLogTick, so that a broker outage or a stalled topic, which make
// the client repeat itself many times a second, cannot flood the log.
// Suppressed lines are counted in beacon_log_lines_suppressed_total.
func (s *Service) clientLogger(id string) kgo.Logger {
	l := s.log.With(zap.String("client", id)).WithOptions(zap.WrapCore(s.limitRepeats))
	debug := s.log.Core().Enabled(zap.DebugLevel)
	return kzap.New(l, kzap.LevelFn(func() kgo.LogLevel {
		if debug {
			return kgo.LogLevelDebug
		}
		return kgo.LogLevelWarn
	}))
}

// limitRepeats lets through clientLogBurst warnings (and errors) of each
// message per clientLogTick and counts the others; debug and info lines
// pass (asked for with --log-level debug, they should all show).
func (s *Service) limitRepeats(c zapcore.Core) zapcore.Core {
	return warnLimit{Core: c, limited: zapcore.NewSamplerWithOptions(c, clientLogTick, clientLogBurst, 0,
		zapcore.SamplerHook(func(e zapcore.Entry, d zapcore.SamplingDecision) {
			if d&zapcore.LogDropped != 0 {
				s.m.suppressed.Inc()
				if h := s.onSuppressed; h != nil {
					h(e.Message)
				}
			}
		}))}
}

// warnLimit sends warnings and errors through a sampler, the rest around it.
type warnLimit struct {
	zapcore.Core // all lines
	limited      zapcore.Core
}

func (c warnLimit) With(f []zapcore.Field) zapcore.Core {
	return warnLimit{Core: c.Core.With(f), limited: c.limited.With(f)}
}

func (c warnLimit) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Level >= zapcore.WarnLevel {
		return c.limited.Check(e, ce)
	}
	return c.Core.Check(e, ce)
}

const (
	clientLogTick  = 30 * time.Second
	clientLogBurst = 3
)
