package stream

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/state"
)

// Opt configures a Service.
type Opt interface{ apply(*cfg) }

type optFn func(*cfg)

func (f optFn) apply(c *cfg) { f(c) }

// Role says which halves of the pipeline a process runs.
type Role string

// Roles. A process that runs both (the default) is a complete detector;
// splitting them lets ingest scale with the input's partitions and
// detection with the repartition topic's.
const (
	RoleAll    Role = "all"
	RoleIngest Role = "ingest"
	RoleDetect Role = "detect"
)

// ParseRole accepts all, ingest and detect.
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(s)); r {
	case RoleAll, RoleIngest, RoleDetect:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q (want all, ingest or detect)", s)
}

// AlertFormat is the encoding of alert records.
type AlertFormat string

// Alert formats.
const (
	AlertJSON AlertFormat = "json" // one JSON object (Alert.AppendJSON)
	AlertAvro AlertFormat = "avro" // schemas/BeaconAlert.avsc, raw or Confluent framed
	AlertECS  AlertFormat = "ecs"  // an Elastic Common Schema alert document (Alert.AppendECS)
	AlertOCSF AlertFormat = "ocsf" // an OCSF Detection Finding, class 2004 (Alert.AppendOCSF)
)

// ParseAlertFormat accepts json, avro, ecs and ocsf.
func ParseAlertFormat(s string) (AlertFormat, error) {
	switch f := AlertFormat(strings.ToLower(s)); f {
	case AlertJSON, AlertAvro, AlertECS, AlertOCSF:
		return f, nil
	}
	return "", fmt.Errorf("unknown alert format %q (want json, avro, ecs or ocsf)", s)
}

type cfg struct {
	brokers     []string
	kopts       []kgo.Opt
	inputTopics []string
	repartition string
	alertTopic  string
	deadLetter  string
	group       string
	role        Role
	stateDir    string
	params      beacon.Params
	profile     string
	allow       *beacon.AllowList

	reAlert      time.Duration
	warmup       time.Duration
	evalInterval time.Duration
	// time (docs/streaming.md, "Time"): see FutureTolerance, MaxHeld
	futureTolerance time.Duration
	maxHeld         int
	domainMargin    time.Duration

	alertFormat   AlertFormat
	alertSchemaID int32
	alertLink     string
	inputFormat   InputFormat
	inputSchemaID int32
	maxRecord     int
	fromLatest    bool
	memoryBudget  int64 // state.WithMemoryBudget; 0: the state's defaults

	commitInterval time.Duration
	sessionTimeout time.Duration
	createTopics   bool
	partitions     int32
	replication    int16
	instanceID     string // "" derives one from the state directory; "none" for dynamic membership
	leaveOnStop    bool   // a graceful stop of a static member leaves the groups
	watchInterval  time.Duration
	readyMaxLag    int64

	log      *zap.Logger
	registry *prometheus.Registry
	listener net.Listener

	batchDelay time.Duration // tests: slow ingest and detection down to stop them mid-stream
}

func defaults() cfg {
	return cfg{
		inputTopics:     []string{"beacon.events"},
		repartition:     "beacon.repartition",
		alertTopic:      "beacon.alerts",
		deadLetter:      "beacon.deadletter",
		group:           "beacon",
		role:            RoleAll,
		params:          beacon.Seed(),
		profile:         "seed",
		evalInterval:    10 * time.Second,
		futureTolerance: time.Hour,
		maxHeld:         1 << 20,
		domainMargin:    time.Hour,
		alertFormat:     AlertJSON,
		alertSchemaID:   -1,
		inputFormat:     InputAuto,
		inputSchemaID:   -1,
		maxRecord:       1 << 20,
		commitInterval:  5 * time.Second,
		createTopics:    true,
		partitions:      -1,
		replication:     -1,
		watchInterval:   5 * time.Second,
		readyMaxLag:     100_000,
	}
}

// Brokers sets the seed brokers, host:port (default 127.0.0.1:9092).
func Brokers(addrs ...string) Opt { return optFn(func(c *cfg) { c.brokers = addrs }) }

// ClientOpts adds franz-go options to every Kafka client the service
// creates: SASL (see SASL), TLS (kgo.DialTLSConfig), compression,
// timeouts. They are applied last and override the service's own choices
// (fetch sizes, linger), which is for tuning; options that change how
// offsets are committed break the service's guarantees.
func ClientOpts(opts ...kgo.Opt) Opt {
	return optFn(func(c *cfg) { c.kopts = append(c.kopts, opts...) })
}

// InputTopics sets the topics of DeviceNetworkEvents to ingest (default
// beacon.events). Ingest reads them all in one consumer group.
func InputTopics(topics ...string) Opt { return optFn(func(c *cfg) { c.inputTopics = topics }) }

// RepartitionTopic sets the topic between ingest and detection (default
// beacon.repartition). Its partition count is the detector's parallelism;
// its retention must cover lookback + 1 day (the Domains enrichment) so
// that a new owner can rebuild a partition from it.
func RepartitionTopic(t string) Opt { return optFn(func(c *cfg) { c.repartition = t }) }

// AlertTopic sets the output topic (default beacon.alerts).
func AlertTopic(t string) Opt { return optFn(func(c *cfg) { c.alertTopic = t }) }

// DeadLetterTopic sets where records that do not decode go (default
// beacon.deadletter), with the reason and origin in headers.
func DeadLetterTopic(t string) Opt { return optFn(func(c *cfg) { c.deadLetter = t }) }

// Group sets the consumer group prefix (default beacon): ingest consumes as
// GROUP.ingest, detection as GROUP.detect. Processes with the same group
// split the work.
func Group(g string) Opt { return optFn(func(c *cfg) { c.group = g }) }

// WithRole selects the halves of the pipeline to run (default RoleAll).
func WithRole(r Role) Opt { return optFn(func(c *cfg) { c.role = r }) }

// StateDir sets the Pebble directory of the detector (required for
// detection). Keep it across restarts: a partition whose state is on disk
// resumes from its recorded offset instead of being rebuilt.
func StateDir(dir string) Opt { return optFn(func(c *cfg) { c.stateDir = dir }) }

// Params sets the detection parameters (default beacon.Seed()).
func Params(p beacon.Params) Opt {
	return optFn(func(c *cfg) {
		c.params = p
		if p.Profile != "" {
			c.profile = p.Profile // the profile travels with its parameters
		}
	})
}

// Allow suppresses known-good rows (beacon.AllowList, `--allow FILE`):
// a beacon-set member the list matches is not alerted (it is counted in
// beacon_beacons_allowed_total, once per re-alert period, like an alert)
// and is left out of /beacons and of a replay's final rows. Use it for
// periodic software analysts have vetted; nil (the default) allows none.
func Allow(a *beacon.AllowList) Opt { return optFn(func(c *cfg) { c.allow = a }) }

// ReAlertInterval bounds repeats: a tuple is alerted at most once per
// period of this length of event time, periods aligned to the Unix epoch
// (default: the lookback). It is part of the alert ID.
func ReAlertInterval(d time.Duration) Opt { return optFn(func(c *cfg) { c.reAlert = d }) }

// Warmup delays alerts until a partition's stream time is this far past
// the first connection it saw (default: the profile's,
// Params.DefaultWarmup — seed's lookback, a day for robust; -1 for none). Before
// that the window is not full: a destination that many devices poll looks
// like a beacon while only a few of them have enough events for the device
// cap to see them, and the batch query, run over a day of history, never
// sees such a window. The beacon set and /beacons are exact all along; only
// alerts wait, and at the end of the warm-up every member is alerted.
func Warmup(d time.Duration) Opt { return optFn(func(c *cfg) { c.warmup = d }) }

// EvalInterval sets how often, in stream time, a partition that is catching
// up evaluates its beacon set (default 10s). Evaluation points are then a
// function of the records alone, so a replay finds the same alerts as the
// live run. A partition that has caught up with its topic also evaluates
// after every batch, which bounds the delay from an event to its alert.
func EvalInterval(d time.Duration) Opt { return optFn(func(c *cfg) { c.evalInterval = d }) }

// FutureTolerance sets how far after the Kafka record that carries it, or
// after the wall clock, an event may be dated (default 1 h). A record
// holding a later event is dead-lettered with reason "future": a sensor
// with a bad clock must not move stream time. Raise it only for producers
// that stamp records well before the events they carry.
func FutureTolerance(d time.Duration) Opt { return optFn(func(c *cfg) { c.futureTolerance = d }) }

// MaxHeld bounds, per detection partition, the records that wait for
// stream time to pass them (default 1 Mi, some 200 MB at most). At the
// bound the oldest is released as if every input partition had passed
// it: evaluation stays correct for what has arrived, but an input
// partition that lags further than that no longer holds the others back.
// Use it to cap memory when one input partition can lag far behind.
func MaxHeld(n int) Opt { return optFn(func(c *cfg) { c.maxHeld = n }) }

// DomainMargin sets how much newer a domain observation of an (IP, domain)
// pair must be than the last one ingest forwarded to be forwarded at once
// (default 1h); the newest one in between follows within the margin, so
// the detector always learns the pair's newest time.
func DomainMargin(d time.Duration) Opt { return optFn(func(c *cfg) { c.domainMargin = d }) }

// WithAlertFormat sets the encoding of alerts (default AlertJSON).
func WithAlertFormat(f AlertFormat) Opt { return optFn(func(c *cfg) { c.alertFormat = f }) }

// AlertLink sets a link template rendered into every alert (Alert.Link),
// e.g. the Defender device page
// https://security.microsoft.com/machines/v2/{DeviceId}/overview: Go
// text/template over LinkData, {Name} short for a query-escaped value.
// Use it to give analysts one click from the alert to their console.
func AlertLink(template string) Opt { return optFn(func(c *cfg) { c.alertLink = template }) }

// AlertSchemaID frames Avro alerts in the Confluent wire format with this
// schema-registry id (default: raw Avro binary).
func AlertSchemaID(id int32) Opt { return optFn(func(c *cfg) { c.alertSchemaID = id }) }

// WithInputFormat sets how input records are decoded (default InputAuto).
func WithInputFormat(f InputFormat) Opt { return optFn(func(c *cfg) { c.inputFormat = f }) }

// InputSchemaID makes ingest accept Confluent-framed Avro only with this
// schema id; others go to the dead-letter topic (default: any id).
func InputSchemaID(id int32) Opt { return optFn(func(c *cfg) { c.inputSchemaID = id }) }

// MaxRecordBytes sets the size above which an input record is dead-lettered
// unread (default 1 MiB, Event Hubs' largest message).
func MaxRecordBytes(n int) Opt { return optFn(func(c *cfg) { c.maxRecord = n }) }

// MemoryBudget sizes the detection state's caches (state.WithMemoryBudget:
// decoded timestamp blocks, Pebble's block cache and memtables) from one
// number of bytes, at least 16 MiB. Use it with debug.SetMemoryLimit to
// fit a process into a memory limit: `beacon run --memory-limit L` gives
// the state L/4 and leaves the rest to the tuple index, ingest's queues
// and the collector's slack (docs/performance.md, "Memory limit"). When
// the caches are full, blocks that are not hot are dropped and read back
// from Pebble on use; the tuple index is not bounded by it. Default: the
// state's own sizes (about 160 MiB).
func MemoryBudget(bytes int64) Opt { return optFn(func(c *cfg) { c.memoryBudget = bytes }) }

// FromLatest makes a new ingest group start at the end of the input topics
// instead of their beginning (the default, which backfills the window).
func FromLatest() Opt { return optFn(func(c *cfg) { c.fromLatest = true }) }

// CommitInterval sets how often consumed offsets are committed to Kafka
// (default 5s). The detector's own offsets live in its state; Kafka's are
// for other owners and for lag monitoring.
func CommitInterval(d time.Duration) Opt { return optFn(func(c *cfg) { c.commitInterval = d }) }

// SessionTimeout sets the consumer groups' session timeout (franz-go's
// default 45s): how long a process that died without leaving keeps its
// partitions.
func SessionTimeout(d time.Duration) Opt { return optFn(func(c *cfg) { c.sessionTimeout = d }) }

// CreateTopics sets whether missing topics are created at start (default
// true) and with how many partitions and replicas (-1: broker defaults).
// The input topics are never created.
func CreateTopics(create bool, partitions int32, replication int16) Opt {
	return optFn(func(c *cfg) { c.createTopics, c.partitions, c.replication = create, partitions, replication })
}

// InstanceID sets the static group membership ID of this process (KIP-345)
// in the ingest and detection groups. A restarted process with the same ID
// takes its partitions back at once, without a rebalance and without
// waiting out the session timeout of the member it replaces. By default a
// process with a state directory uses the ID stored in it (created at
// first start, so that two processes never share one); one without (an
// ingest-only process) is a dynamic member. "none" makes any process a
// dynamic member: use it when instances come and go often, since a static
// member that stops for good keeps its partitions until the session
// timeout expires (it does not leave the group when it shuts down).
func InstanceID(id string) Opt { return optFn(func(c *cfg) { c.instanceID = id }) }

// LeaveGroupOnStop makes a graceful stop of a static member leave both
// consumer groups at once, by its instance ID (the removal of KIP-345,
// which franz-go's Close does not send for a static member), so that its
// partitions move to the other members immediately. Use it when a process
// stops for good (scaling in). Leave it off (the default) for restarts: a
// static member that comes back within the session timeout keeps its
// partitions without a rebalance, while one that left makes the others
// take its partitions over (resuming or rebuilding their states) and hand
// them back when it returns. A kill never leaves; a dynamic member always
// does.
func LeaveGroupOnStop(leave bool) Opt { return optFn(func(c *cfg) { c.leaveOnStop = leave }) }

// WatchInterval sets how often the service checks the cluster (default
// 5s): broker reachable, input topics present (and recreated ones
// subscribed again), own topics present (created again with CreateTopics),
// the repartition topic's end offsets for /readyz's lag.
func WatchInterval(d time.Duration) Opt { return optFn(func(c *cfg) { c.watchInterval = d }) }

// ReadyMaxLag sets how many records an owned repartition partition may be
// behind its end with /readyz still ready (default 100000; 0: no bound).
// A process catching up on a backlog is not ready: its /beacons is not
// yet the window's.
func ReadyMaxLag(n int64) Opt { return optFn(func(c *cfg) { c.readyMaxLag = n }) }

// Logger sets the logger (default: none).
func Logger(l *zap.Logger) Opt { return optFn(func(c *cfg) { c.log = l }) }

// Registry sets the Prometheus registry that the service's metrics and
// franz-go's (kprom) are registered in (default: a new one, served on
// /metrics).
func Registry(r *prometheus.Registry) Opt { return optFn(func(c *cfg) { c.registry = r }) }

// HTTPListener makes Run serve /metrics, /livez, /readyz, /healthz and
// /beacons on l, and close it at shutdown.
func HTTPListener(l net.Listener) Opt { return optFn(func(c *cfg) { c.listener = l }) }

// SASL returns the franz-go option for a SASL mechanism: PLAIN,
// SCRAM-SHA-256 or SCRAM-SHA-512. For Azure Event Hubs use PLAIN with user
// $ConnectionString and the namespace's connection string as password,
// over TLS.
func SASL(mechanism, user, password string) (kgo.Opt, error) {
	switch strings.ToUpper(mechanism) {
	case "PLAIN":
		return kgo.SASL(plain.Auth{User: user, Pass: password}.AsMechanism()), nil
	case "SCRAM-SHA-256":
		return kgo.SASL(scram.Auth{User: user, Pass: password}.AsSha256Mechanism()), nil
	case "SCRAM-SHA-512":
		return kgo.SASL(scram.Auth{User: user, Pass: password}.AsSha512Mechanism()), nil
	}
	return nil, fmt.Errorf("unknown SASL mechanism %q (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", mechanism)
}

// TLS returns the franz-go option that dials brokers over TLS; nil config
// means the system roots and no client certificate.
func TLS(c *tls.Config) kgo.Opt {
	if c == nil {
		c = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return kgo.DialTLSConfig(c)
}

// stateOpts are the options of the detection state's store.
func (s *Service) stateOpts() []state.Option {
	opts := []state.Option{state.WithLogger(s.log.Named("state"))}
	if s.cfg.memoryBudget > 0 {
		opts = append(opts, state.WithMemoryBudget(s.cfg.memoryBudget))
	}
	return opts
}
