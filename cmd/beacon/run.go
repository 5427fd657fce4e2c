package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/yaml.v3"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/stream"
)

const runUsage = `run [flags]

The streaming detector. Ingest reads DeviceNetworkEvents from the input
topics (Defender Streaming API envelopes, flat JSON, Avro or Confluent
Avro), keeps what the seed query needs and re-keys it by RemoteIP into the
repartition topic; detection keeps each partition's window in Pebble and
publishes an alert to the alert topic when a tuple enters the beacon set —
the rows 'beacon hunt --end <stream time + 1s>' returns for the partition.
Records that do not decode go to the dead-letter topic. Processes with the
same --group split the partitions; SIGINT/SIGTERM shut down gracefully.

Every flag can also be set in the environment as BEACON_<FLAG> (upper
case, '-' as '_', e.g. BEACON_SASL_PASSWORD) or in the YAML file given by
--config (or BEACON_CONFIG), keyed by flag name. Precedence: flags, then
environment, then file, then defaults. Keep secrets out of flags.

HTTP (--listen): the page (/, the current beacons for people), /metrics
(Prometheus), /livez (the process works),
/readyz (broker reachable, input topics present, partitions owned, lag
within --ready-max-lag; JSON with the reasons; 'beacon health' asks it),
/healthz (an alias of /readyz), /beacons (the current beacon set, the
columns of 'hunt'; ?format=csv or table).

Examples:
  beacon run --brokers kafka:9092 --state-dir /var/lib/beacon
  beacon run --config beacon.yaml --role detect
  BEACON_SASL_PASSWORD="$EH_CONNECTION_STRING" beacon run \
      --brokers mynamespace.servicebus.windows.net:9093 --tls \
      --sasl-mechanism PLAIN --sasl-user '$ConnectionString' \
      --topic defender-events --compression none
  curl -s 127.0.0.1:9464/beacons?format=table

Flags:`

// runConfig is what the run flags fill.
type runConfig struct {
	kafkaConfig
	detectConfig
	inputTopics                     string
	repartition, alerts, deadLetter string
	group, role, stateDir           string
	createTopics                    bool
	partitions                      int
	replication                     int
	fromLatest                      bool
	sessionTimeout, commitInterval  time.Duration
	listen                          string
	instanceID                      string
	leaveOnStop                     bool
	readyMaxLag                     int64
	logLevel, logFormat             string
	config                          string
	memoryLimit                     memoryLimit
}

// kafkaConfig is how to reach the brokers; run and replay share its flags.
type kafkaConfig struct {
	brokers                               string
	saslMechanism, saslUser, saslPassword string
	tls                                   bool
	tlsCA, tlsCert, tlsKey, tlsServerName string
	tlsInsecure                           bool
	compression                           string
	noIdempotence                         bool
}

// detectConfig is what decides the alerts: how input is decoded, the
// detection parameters and the alerting rules. Run and replay share its
// flags, so that a replay with the same settings finds what run found.
type detectConfig struct {
	profile                       string
	profileFlag                   *string // --profile, checked in options
	inputFormat                   string
	inputSchemaID                 int
	maxRecordBytes                int
	alertFormat                   string
	alertSchemaID                 int
	alertLink                     string
	reAlert, warmup, evalInterval time.Duration
	domainMargin                  time.Duration
	futureTolerance               time.Duration
	allow                         string // --allow FILE
	params                        beacon.Params
}

// registerRunFlags defines the flags of run; demo reuses the parameter
// flags only.
func registerRunFlags(fs *flag.FlagSet, c *runConfig) {
	fs.StringVar(&c.config, "config", "", "YAML file of settings keyed by flag name (env BEACON_CONFIG)")
	registerKafkaFlags(fs, &c.kafkaConfig)
	registerDetectFlags(fs, &c.detectConfig)
	fs.StringVar(&c.inputTopics, "topic", "beacon.events", "comma-separated input topics of DeviceNetworkEvents to ingest (as replay's and simulate's --topic)")
	fs.StringVar(&c.inputTopics, "input-topics", "beacon.events", "alias of --topic")
	fs.StringVar(&c.repartition, "repartition-topic", "beacon.repartition", "topic between ingest and detection, keyed by RemoteIP; its partitions are the detector's parallelism, its retention must cover lookback + 1 day")
	fs.StringVar(&c.alerts, "alert-topic", "beacon.alerts", "topic alerts are published to, keyed by tuple")
	fs.StringVar(&c.deadLetter, "dead-letter-topic", "beacon.deadletter", "topic of records that do not decode, with the reason in headers")
	fs.StringVar(&c.group, "group", "beacon", "consumer group prefix: ingest uses GROUP.ingest, detection GROUP.detect")
	fs.StringVar(&c.role, "role", "all", "what this process runs: all, ingest or detect")
	fs.StringVar(&c.stateDir, "state-dir", "beacon-state", "directory of the detector's Pebble state; keep it across restarts")
	fs.BoolVar(&c.createTopics, "create-topics", true, "create the repartition, alert and dead-letter topics when missing")
	fs.IntVar(&c.partitions, "topic-partitions", -1, "partitions of created topics (-1: broker default)")
	fs.IntVar(&c.partitions, "partitions", -1, "alias of --topic-partitions")
	fs.IntVar(&c.replication, "replication", -1, "replication factor of created topics (-1: broker default)")
	fs.BoolVar(&c.fromLatest, "from-latest", false, "a new ingest group starts at the end of the input topics instead of backfilling from their beginning")
	fs.DurationVar(&c.sessionTimeout, "session-timeout", 45*time.Second, "consumer group session timeout: how long a dead process keeps its partitions")
	fs.DurationVar(&c.commitInterval, "commit-interval", 5*time.Second, "how often consumed offsets are committed to Kafka")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:9464", "HTTP address of the page (/), /beacons, /metrics, /livez, /readyz and /healthz (empty: none)")
	fs.StringVar(&c.instanceID, "instance-id", "", "static group membership ID, so that a restarted process takes its partitions back at once (default: one stored in --state-dir; none: dynamic membership)")
	fs.BoolVar(&c.leaveOnStop, "leave-group-on-stop", false, "a graceful stop leaves the groups, so that the partitions move at once (a process stopped for good; restarts keep them without)")
	fs.Int64Var(&c.readyMaxLag, "ready-max-lag", 100_000, "/readyz fails while an owned partition is more records than this behind (0: no bound)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or console")
	c.memoryLimit.register(fs)
}

// registerKafkaFlags defines the connection flags of run and replay.
func registerKafkaFlags(fs *flag.FlagSet, c *kafkaConfig) {
	fs.StringVar(&c.brokers, "brokers", "127.0.0.1:9092", "Kafka seed brokers, comma-separated host:port")
	fs.StringVar(&c.saslMechanism, "sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL)")
	fs.StringVar(&c.saslUser, "sasl-user", "", "SASL user ($ConnectionString for Azure Event Hubs)")
	fs.StringVar(&c.saslPassword, "sasl-password", "", "SASL password (Event Hubs: the connection string); prefer BEACON_SASL_PASSWORD")
	fs.BoolVar(&c.tls, "tls", false, "connect to the brokers over TLS (implied by --tls-ca, --tls-cert)")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM file of CA certificates to trust (default: the system's)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM client certificate, for mutual TLS")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&c.tlsServerName, "tls-server-name", "", "server name to verify (default: the broker's host)")
	fs.BoolVar(&c.tlsInsecure, "tls-insecure-skip-verify", false, "do not verify the brokers' certificates (testing only)")
	fs.StringVar(&c.compression, "compression", "snappy", "compression of produced batches: none, gzip, snappy, lz4 or zstd")
	fs.BoolVar(&c.noIdempotence, "disable-idempotent-write", false, "produce without idempotence, for brokers that do not support it")
}

// registerDetectFlags defines the decoding, detection and alerting flags of
// run and replay.
func registerDetectFlags(fs *flag.FlagSet, c *detectConfig) {
	if c.params.Lookback == 0 { // the zero value: start from the default profile's
		c.params, _ = beacon.ProfileParams(streamProfile)
	}
	c.profile = c.params.Profile
	profile := addProfileFlags(fs, &c.params, streamProfile)
	c.profileFlag = profile
	fs.StringVar(&c.inputFormat, "input-format", "auto", "input encoding: auto (per record), jsonl (any JSON shape; json is an alias), avro (raw binary) or confluent (schema-registry framed Avro)")
	fs.IntVar(&c.inputSchemaID, "input-schema-id", -1, "accept Confluent-framed records with this schema id only (-1: any)")
	fs.IntVar(&c.maxRecordBytes, "max-record-bytes", 1<<20, "input records larger than this are not decoded: run dead-letters them, replay reports them")
	fs.StringVar(&c.alertFormat, "alert-format", "json", "alert encoding: json (every output column of the query plus alert fields), avro (schemas/BeaconAlert.avsc), ecs (an Elastic Common Schema alert document) or ocsf (an OCSF Detection Finding, class 2004)")
	fs.StringVar(&c.alertLink, "alert-link", "", "link rendered into every alert, Go text/template or {Field} placeholders, e.g. https://security.microsoft.com/machines/v2/{DeviceId}/overview (fields: stream.LinkData)")
	fs.IntVar(&c.alertSchemaID, "alert-schema-id", -1, "frame Avro alerts in the Confluent wire format with this schema id (-1: raw Avro)")
	fs.DurationVar(&c.reAlert, "realert-interval", 0, "alert a tuple at most once per period of this length of event time, aligned to the Unix epoch (default: the lookback)")
	fs.DurationVar(&c.warmup, "warmup", 0, "no alerts until a partition has seen this much event time, so that its window is full (default: the lookback for seed, a day for robust; -1s: none)")
	fs.DurationVar(&c.evalInterval, "eval-interval", 10*time.Second, "evaluation points are the ends of intervals of this much stream time that hold a connection (and, live, the moment every input partition is idle)")
	fs.DurationVar(&c.futureTolerance, "future-tolerance", time.Hour, "an event dated more than this after its Kafka record or the clock is a bad record (reason future): run dead-letters it, replay reports it")
	fs.DurationVar(&c.domainMargin, "domain-margin", time.Hour, "ingest forwards a domain observation at once only when newer than the last forwarded by this much; the newest in between follows within the margin")
	fs.StringVar(&c.allow, "allow", "", "suppress known-good beacons: a file of `process|ip|port|domain|device VALUE` lines (docs/robust.md); they are not alerted, not in /beacons or replay's rows, and counted in beacon_beacons_allowed_total")
	addParamFlags(fs, &c.params)
}

func runRun(ctx context.Context, args []string, s stdio) error {
	var c runConfig
	c.params = profileParams(args, streamProfile)
	started := c.params.Profile
	fs := newFlags("run", runUsage, s)
	registerRunFlags(fs, &c)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("run: unexpected arguments %q", fs.Args())
	}
	if err := layerConfig(fs, c.config, os.LookupEnv); err != nil {
		return usagef("run: %v", err)
	}
	if again, ok := reprofile(args, started, *c.profileFlag); ok {
		return runRun(ctx, again, s) // profile: in the config file or env
	}
	log, err := newLogger(c.logLevel, c.logFormat, s)
	if err != nil {
		return usagef("run: %v", err)
	}
	defer log.Sync()
	opts, err := c.options(log)
	if err != nil {
		return usagef("run: %v", err)
	}
	opts = append(opts, c.memoryLimit.apply()...)
	if c.listen != "" {
		l, err := net.Listen("tcp", c.listen)
		if err != nil {
			return fmt.Errorf("run: --listen: %w", err)
		}
		log.Info("http listening", zap.String("addr", l.Addr().String()))
		opts = append(opts, stream.HTTPListener(l))
	}
	svc, err := stream.New(opts...)
	if err != nil {
		return usagef("run: %v", err)
	}
	return svc.Run(ctx)
}

// options turns the configuration into service options.
func (c *runConfig) options(log *zap.Logger) ([]stream.Opt, error) {
	detect, err := c.detectConfig.options()
	if err != nil {
		return nil, err
	}
	role, err := stream.ParseRole(c.role)
	if err != nil {
		return nil, err
	}
	kopts, err := c.kafkaOpts()
	if err != nil {
		return nil, err
	}
	opts := []stream.Opt{
		stream.Brokers(splitList(c.brokers)...),
		stream.ClientOpts(kopts...),
		stream.InputTopics(splitList(c.inputTopics)...),
		stream.RepartitionTopic(c.repartition),
		stream.AlertTopic(c.alerts),
		stream.DeadLetterTopic(c.deadLetter),
		stream.Group(c.group),
		stream.WithRole(role),
		stream.StateDir(c.stateDir),
		stream.CreateTopics(c.createTopics, int32(c.partitions), int16(c.replication)),
		stream.SessionTimeout(c.sessionTimeout),
		stream.CommitInterval(c.commitInterval),
		stream.InstanceID(c.instanceID),
		stream.LeaveGroupOnStop(c.leaveOnStop),
		stream.ReadyMaxLag(c.readyMaxLag),
		stream.Logger(log),
	}
	opts = append(opts, detect...)
	if c.fromLatest {
		opts = append(opts, stream.FromLatest())
	}
	return opts, nil
}

// options turns the detection settings into service options.
func (c *detectConfig) options() ([]stream.Opt, error) {
	if c.profileFlag != nil {
		if err := checkProfile(&c.params, *c.profileFlag); err != nil {
			return nil, err
		}
	}
	c.profile = c.params.Profile
	if err := c.params.Validate(); err != nil {
		return nil, err
	}
	inFmt, err := stream.ParseInputFormat(c.inputFormat)
	if err != nil {
		return nil, err
	}
	alertFmt, err := stream.ParseAlertFormat(c.alertFormat)
	if err != nil {
		return nil, err
	}
	opts := []stream.Opt{
		stream.Params(c.params),
		stream.WithInputFormat(inFmt),
		stream.InputSchemaID(int32(c.inputSchemaID)),
		stream.MaxRecordBytes(c.maxRecordBytes),
		stream.WithAlertFormat(alertFmt),
		stream.AlertSchemaID(int32(c.alertSchemaID)),
		stream.AlertLink(c.alertLink),
		stream.EvalInterval(c.evalInterval),
		stream.DomainMargin(c.domainMargin),
		stream.FutureTolerance(c.futureTolerance),
	}
	if c.reAlert != 0 {
		opts = append(opts, stream.ReAlertInterval(c.reAlert))
	}
	if c.warmup != 0 {
		opts = append(opts, stream.Warmup(c.warmup))
	}
	if c.allow != "" {
		a, err := readAllowFile(c.allow)
		if err != nil {
			return nil, fmt.Errorf("--allow: %w", err)
		}
		opts = append(opts, stream.Allow(a))
	}
	return opts, nil
}

// kafkaOpts builds the security and producer options of every client.
func (c *kafkaConfig) kafkaOpts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if c.saslMechanism != "" {
		o, err := stream.SASL(c.saslMechanism, c.saslUser, c.saslPassword)
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	}
	if c.tls || c.tlsCA != "" || c.tlsCert != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.tlsServerName, InsecureSkipVerify: c.tlsInsecure}
		if c.tlsCA != "" {
			pem, err := os.ReadFile(c.tlsCA)
			if err != nil {
				return nil, fmt.Errorf("--tls-ca: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s: no PEM certificate", c.tlsCA)
			}
		}
		if c.tlsCert != "" || c.tlsKey != "" {
			cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
			if err != nil {
				return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, stream.TLS(cfg))
	}
	codec, err := compression(c.compression)
	if err != nil {
		return nil, err
	}
	opts = append(opts, kgo.ProducerBatchCompression(codec))
	if c.noIdempotence {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	return opts, nil
}

func compression(name string) (kgo.CompressionCodec, error) {
	switch strings.ToLower(name) {
	case "none", "":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("unknown compression %q (want none, gzip, snappy, lz4 or zstd)", name)
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// envName is the environment variable of a flag: BEACON_ and the name in
// upper case with '-' as '_'.
func envName(flag string) string {
	return "BEACON_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// layerConfig fills every flag not given on the command line from the
// environment, then from the YAML file (path from --config, else
// BEACON_CONFIG): flags > environment > file > defaults. File keys are flag
// names; a list is joined with commas; an unknown key is an error, so that
// a typo does not silently leave a default in place.
func layerConfig(fs *flag.FlagSet, path string, lookup func(string) (string, bool)) error {
	all := func(string) bool { return true }
	return layerConfigOf(fs, path, lookup, all, func(name string) bool { return fs.Lookup(name) != nil })
}

// layerConfigOf is layerConfig for the flags that layered accepts; the
// others are taken from the command line only. A file key that is no flag
// of fs but known (another command's setting) is ignored.
func layerConfigOf(fs *flag.FlagSet, path string, lookup func(string) (string, bool), layered, known func(string) bool) error {
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// A flag and its alias ("alias of --topic") are one setting: the
	// command line's value of either wins over the file's of the other.
	fs.VisitAll(func(f *flag.Flag) {
		if target, ok := strings.CutPrefix(f.Usage, "alias of --"); ok && (set[f.Name] || set[target]) {
			set[f.Name], set[target] = true, true
		}
	})
	if path == "" {
		if v, ok := lookup("BEACON_CONFIG"); ok {
			path = v
		}
	}
	file := map[string]string{}
	if path != "" {
		var err error
		if file, err = readConfigFile(path, known); err != nil {
			return err
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == "config" || !layered(f.Name) {
			return
		}
		if v, ok := lookup(envName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", envName(f.Name), err))
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: %w", path, f.Name, err))
			}
		}
	})
	return errors.Join(errs...)
}

// readConfigFile reads a YAML mapping of flag names to values; a key known
// does not accept is an error.
func readConfigFile(path string, known func(string) bool) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	var unknown []string
	for k, v := range raw {
		if !known(k) || k == "config" {
			unknown = append(unknown, k)
			continue
		}
		switch x := v.(type) {
		case nil:
			out[k] = ""
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			out[k] = strings.Join(parts, ",")
		case map[string]any:
			return nil, fmt.Errorf("%s: %s: want a value or a list, not a mapping", path, k)
		default:
			out[k] = fmt.Sprint(x)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("%s: unknown settings %s (keys are flag names, see beacon run --help)", path, strings.Join(unknown, ", "))
	}
	return out, nil
}

func newLogger(level, format string, s stdio) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("--log-format %q: want json or console", format)
	}
	raw := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(s.errOut)), lvl)
	// Sampling keeps a flood of identical lines (bad records) from
	// drowning the log: the first 10 per second of each message, then
	// every 100th. Alerts are never sampled: every member is alerted at
	// once when a warm-up or a re-alert period ends, and each line matters.
	sampled := zapcore.NewSamplerWithOptions(raw, time.Second, 10, 100)
	return zap.New(unsampledAlerts{Core: sampled, raw: raw}), nil
}

// unsampledAlerts sends alert lines around the sampler.
type unsampledAlerts struct {
	zapcore.Core // sampled
	raw          zapcore.Core
}

func (c unsampledAlerts) With(f []zapcore.Field) zapcore.Core {
	return unsampledAlerts{Core: c.Core.With(f), raw: c.raw.With(f)}
}

func (c unsampledAlerts) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Message == stream.AlertLogMessage {
		return c.raw.Check(e, ce)
	}
	return c.Core.Check(e, ce)
}

// memoryLimit is --memory-limit of run and replay: the Go memory limit of
// the process (debug.SetMemoryLimit), of which a quarter sizes the
// detection state's caches (stream.MemoryBudget); the rest is for the
// tuple index, ingest's queues and the collector's slack. At the limit the
// collector runs more often and the caches drop cold blocks, which are
// read back from Pebble: slower, not out of memory (docs/performance.md,
// "Memory limit"). It takes GOMEMLIMIT's syntax: bytes, or a number with
// KiB, MiB, GiB or TiB (KB, MB, GB and TB are powers of 1000).
type memoryLimit int64

// minMemoryLimit leaves the state's caches their floor of 16 MiB.
const minMemoryLimit = 64 << 20

func (m *memoryLimit) register(fs *flag.FlagSet) {
	fs.Var(m, "memory-limit", "Go memory limit of the process, e.g. 2GiB; a quarter of it sizes the state's caches (default: none, GOMEMLIMIT applies)")
}

func (m *memoryLimit) String() string {
	if *m == 0 {
		return ""
	}
	return strconv.FormatInt(int64(*m), 10)
}

func (m *memoryLimit) Set(s string) error {
	v, err := parseBytes(s)
	if err != nil {
		return err
	}
	if v != 0 && v < minMemoryLimit {
		return errors.New("below the least limit, 64MiB (the state's caches take a quarter, at least 16MiB)")
	}
	*m = memoryLimit(v)
	return nil
}

// apply sets the process's memory limit and returns the options that size
// the state from it (none without a limit).
func (m memoryLimit) apply() []stream.Opt {
	if m == 0 {
		return nil
	}
	debug.SetMemoryLimit(int64(m))
	return []stream.Opt{stream.MemoryBudget(int64(m) / 4)}
}

// parseBytes reads a size in GOMEMLIMIT's syntax (and decimal KB…TB).
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	num := strings.TrimRightFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.TrimSpace(t[len(num):])
	mult := map[string]int64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || mult == 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size (want bytes, or a number with KiB, MiB, GiB, TiB, KB, MB, GB or TB, e.g. 2GiB)", s)
	}
	return n * mult, nil
}
