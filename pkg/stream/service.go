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
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

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

	recent recentAlerts // the page's recent alerts (page.go)

	running atomic.Bool
	crashed atomic.Bool // test hook: stop as a killed process would
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
		c.warmup = c.params.Lookback
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
	case c.maxRecord < 64:
		return nil, fmt.Errorf("stream: max record bytes must be at least 64, got %d", c.maxRecord)
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
	return s, nil
}

// Run runs the service until ctx is done, then shuts down gracefully:
// ingest sends what it holds back, waits for the acknowledgements and
// commits; every detection worker stops at its last evaluation point,
// whose alerts are published and acknowledged and whose state and offset
// are in Pebble, and commits that offset to Kafka. It returns the first
// error of any part; a clean shutdown returns nil.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("stream: service already running")
	}
	defer s.running.Store(false)
	if s.cfg.createTopics {
		if err := s.ensureTopics(ctx); err != nil {
			return err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	if s.cfg.role != RoleDetect {
		in, err := newIngest(s)
		if err != nil {
			return err
		}
		g.Go(func() error { return in.run(gctx) })
	}
	if s.cfg.role != RoleIngest {
		d, err := newDetector(s)
		if err != nil {
			return err
		}
		s.det.Store(d)
		g.Go(func() error { return d.run(gctx) })
	}
	if l := s.cfg.listener; l != nil {
		srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	s.log.Info("beacon service started", zap.Strings("brokers", s.cfg.brokers), zap.String("role", string(s.cfg.role)),
		zap.String("group", s.cfg.group))
	err := g.Wait()
	if err != nil && errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	return err
}

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
		kgo.WithLogger(kgoLogger{s.log.With(zap.String("client", id))}),
	}
	if id == "beacon-ingest" || id == "beacon-detect" {
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics(namespace, kprom.Registerer(s.reg), kprom.Gatherer(s.reg), kprom.WithClientLabel())))
	}
	opts = append(opts, extra...)
	return append(opts, s.cfg.kopts...) // last, so that they win
}

// groupOpts are the options of the consumer groups.
func (s *Service) groupOpts() []kgo.Opt {
	if s.cfg.sessionTimeout <= 0 {
		return nil
	}
	return []kgo.Opt{kgo.SessionTimeout(s.cfg.sessionTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, max(s.cfg.sessionTimeout/10, 100*time.Millisecond)))}
}

// ensureTopics creates the topics the service writes and the repartition
// topic when they are missing. Input topics belong to the producer.
func (s *Service) ensureTopics(ctx context.Context) error {
	cl, err := kgo.NewClient(s.clientOpts("beacon-admin")...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topics := []string{s.cfg.repartition, s.cfg.deadLetter}
	if s.cfg.role != RoleIngest {
		topics = append(topics, s.cfg.alertTopic)
	}
	resp, err := adm.CreateTopics(ctx, s.cfg.partitions, s.cfg.replication, nil, topics...)
	if err != nil {
		return fmt.Errorf("creating topics: %w", err)
	}
	for _, r := range resp.Sorted() {
		switch {
		case r.Err == nil:
			s.log.Info("topic created", zap.String("topic", r.Topic), zap.Int32("partitions", r.NumPartitions))
		case errors.Is(r.Err, kerr.TopicAlreadyExists):
		default:
			// Some services (Event Hubs without management rights) refuse
			// creation; the topics may exist anyway.
			s.log.Warn("could not create topic", zap.String("topic", r.Topic), zap.Error(r.Err))
		}
	}
	return nil
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

// kgoLogger routes franz-go's logs to zap.
type kgoLogger struct{ l *zap.Logger }

func (k kgoLogger) Level() kgo.LogLevel {
	switch {
	case k.l.Core().Enabled(zap.DebugLevel):
		return kgo.LogLevelDebug
	case k.l.Core().Enabled(zap.InfoLevel):
		return kgo.LogLevelInfo
	case k.l.Core().Enabled(zap.WarnLevel):
		return kgo.LogLevelWarn
	}
	return kgo.LogLevelError
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := zap.DebugLevel
	switch level {
	case kgo.LogLevelError:
		lvl = zap.ErrorLevel
	case kgo.LogLevelWarn:
		lvl = zap.WarnLevel
	case kgo.LogLevelInfo:
		lvl = zap.InfoLevel
	}
	ce := k.l.Check(lvl, msg)
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		key, _ := keyvals[i].(string)
		fields = append(fields, zap.Any(key, keyvals[i+1]))
	}
	ce.Write(fields...)
}
