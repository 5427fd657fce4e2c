package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
	"github.com/beaconhunt/beacon/pkg/stream"
)

const replayUsage = `replay --brokers HOST:PORT --topic NAME [flags]

Backtests detection settings on a topic's history. Replay runs the events
through the path of 'beacon run' — ingest's decoding, filters, event-time
merge and domain deduplication, then the detection worker with its
evaluation points, warm-up, re-alert periods and alert IDs — in this
process, on scratch state, in event time only. It changes nothing on the
cluster: no consumer group, no topic; it reads the input partitions
directly, from their beginning to the end offsets they have when it starts.

It writes the alerts that would have fired (--alerts FILE, --alerts-topic)
and, at the end, prints the beacon set with every partition evaluated at the
same stream time: by default the newest of any partition, which is exactly
what 'beacon hunt' prints over the same events with its default --end.
Records that do not decode are reported on stderr (topic/partition@offset)
and skipped. Two replays of the same range give the same bytes.

--labels scores the alerts against a ground truth ('beacon simulate
--labels'): per class how many tuples were detected and missed, precision
and recall over implants, and the time from each beacon's first callback to
its first alert — as a table on stderr, and as JSON in --score.

What is read:
  --from T, --to T   keep the events with T(from) <= Timestamp < T(to), RFC 3339
                     (connections and the domain observations of every row alike).
                     With --from, each partition is read from the first record whose
                     Kafka timestamp is at or after T - --from-slack.
  --from-offset, --to-offset
                     offsets to read per input partition, first inclusive, last
                     exclusive: N for every partition, or P:N,P:N for some.
  --end T            the query's now of the final beacon set ('hunt --end T'):
                     connections after T - 1s are not applied.

Alerts wait for the warm-up (--warmup; default a day under robust, the
profile replay runs unless told, and the lookback under seed) of each
partition, counted from its first connection: a replay of a single day
alerts nothing unless the warm-up is shorter (--warmup 1h, or -1s for
none). --workers routes events by RemoteIP to that many detection
partitions with Kafka's partitioner: give it the live repartition topic's
partition count to reproduce the live stream times and alerts (default 1:
one stream time for all events; more partitions also replay faster).
--shards splits each worker's destinations over that many goroutines
(default: the cores per worker, at most 8), each seeing the time of every
record, so that one worker runs on every core with the same output.

The connection and detection flags are those of 'beacon run' and can be
set the same ways: BEACON_<FLAG> in the environment or the YAML file of
--config (run's own file works: keys only run uses are ignored). The other
flags are taken from the command line only.

Examples:
  # what would have fired over the topic's history, and the beacons at the end
  beacon replay --brokers kafka:9092 --topic mde-network --alerts alerts.jsonl

  # compare two jitter thresholds on the same history
  beacon replay --brokers kafka:9092 --topic mde-network --warmup 1h \
      --alerts j50.csv --format csv > beacons-j50.csv
  beacon replay --brokers kafka:9092 --topic mde-network --warmup 1h \
      --jitter-threshold 30 --alerts j30.csv --format csv > beacons-j30.csv

  # score a simulated fleet against its ground truth
  beacon simulate --brokers 127.0.0.1:9092 --topic sim --hours 48 --labels labels.jsonl
  beacon replay --brokers 127.0.0.1:9092 --topic sim --labels labels.jsonl --score score.json

  # one day of an Event Hub, connected as run connects
  BEACON_SASL_PASSWORD="$EH_CONNECTION_STRING" beacon replay \
      --brokers mynamespace.servicebus.windows.net:9093 --tls \
      --sasl-mechanism PLAIN --sasl-user '$ConnectionString' --topic defender-events \
      --from 2024-05-01T00:00:00Z --to 2024-05-02T00:00:00Z --alerts day.jsonl

Flags:`

type replayConfig struct {
	kafkaConfig
	detectConfig
	config                   string
	topics                   string
	from, to, end            string
	fromOffset, toOffset     string
	fromSlack                time.Duration
	partitions               int
	shards                   int
	format, out              string
	alerts, alertsTopic      string
	labels, score            string
	stateDir                 string
	quiet                    bool
	logLevel                 string
	fromT, toT, endT         *beacon.Time
	startOffsets, endOffsets map[int32]int64
	memoryLimit              memoryLimit
}

func registerReplayFlags(fs *flag.FlagSet, c *replayConfig) {
	fs.StringVar(&c.config, "config", "", "YAML file of settings keyed by flag name, e.g. run's (env BEACON_CONFIG); only the connection and detection flags are read from it")
	registerKafkaFlags(fs, &c.kafkaConfig)
	registerDetectFlags(fs, &c.detectConfig)
	fs.StringVar(&c.topics, "topic", "", "input topic to replay (required; comma-separated for several, merged by event time as run's ingest merges them)")
	fs.StringVar(&c.from, "from", "", "keep events with Timestamp at or after this RFC 3339 time (default: all)")
	fs.StringVar(&c.to, "to", "", "keep events with Timestamp before this RFC 3339 time (default: all)")
	fs.StringVar(&c.end, "end", "", "the query's now of the final beacon set, RFC 3339: connections after it minus 1s are not applied (default: the newest stream time of any partition + 1s, as hunt's default)")
	fs.StringVar(&c.fromOffset, "from-offset", "", "first offset to read: N for every partition, or P:N,P:N (default: the log start, or where --from seeks)")
	fs.StringVar(&c.toOffset, "to-offset", "", "offset to stop before: N for every partition, or P:N,P:N (default: the high watermark when replay starts)")
	fs.DurationVar(&c.fromSlack, "from-slack", time.Hour, "with --from, read each partition from its first record timestamped at or after --from minus this (records must not be timestamped earlier than their events by more); -1s reads from the beginning")
	fs.IntVar(&c.partitions, "workers", 1, "in-process detection workers, one per partition of an emulated repartition topic; events are routed by RemoteIP with Kafka's partitioner, as to the repartition topic: its partition count reproduces live stream times")
	fs.IntVar(&c.partitions, "partitions", 1, "alias of --workers")
	fs.IntVar(&c.shards, "shards", 0, "split each worker's destinations over this many goroutines by RemoteIP, each seeing every record's time: the same output, on more cores (default 0: the cores per worker, at most 8; 1 to use one core per worker; needs the scratch state, no --state-dir)")
	fs.StringVar(&c.format, "format", "table", "beacon set at the end: table (for people), jsonl or csv (the query's columns, as hunt prints them)")
	fs.StringVar(&c.out, "out", "-", "write the beacon set to `PATH` (- is stdout; a name ending in .gz is gzipped, as simulate's --out)")
	fs.StringVar(&c.alerts, "alerts", "", "write the alerts that would have fired to `PATH` in --alert-format: JSON lines (json, ecs, ocsf) as on the alert topic, an Avro container file (avro), or CSV (the query's columns after AlertId, StreamTime, AlertEpoch) when it ends in .csv (or .csv.gz); - is stdout when --out is not; a name ending in .gz is gzipped")
	fs.StringVar(&c.alertsTopic, "alerts-topic", "", "also produce the alerts to this existing topic, as run does (--alert-format), at the end")
	fs.StringVar(&c.labels, "labels", "", "score the alerts against this labels file ('beacon simulate --labels'); the scorecard goes to stderr")
	fs.StringVar(&c.score, "score", "", "write the scorecard of --labels as JSON to `PATH`")
	fs.StringVar(&c.stateDir, "state-dir", "", "keep the replay's state in this new (empty) directory (default: a temporary directory, removed at the end)")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress bar, bad-record reports or summary on stderr")
	fs.StringVar(&c.logLevel, "log-level", "warn", "log level of warnings from the Kafka client and the state: debug, info, warn or error")
	c.memoryLimit.register(fs)
}

// replayLayered are the flags replay takes from the environment and the
// config file: those it shares with run.
func replayLayered() func(string) bool {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	registerKafkaFlags(fs, &kafkaConfig{})
	registerDetectFlags(fs, &detectConfig{})
	return func(name string) bool { return fs.Lookup(name) != nil }
}

// configKnown accepts the keys of run's and replay's flags.
func configKnown(replay *flag.FlagSet) func(string) bool {
	runFS := flag.NewFlagSet("", flag.ContinueOnError)
	registerRunFlags(runFS, &runConfig{})
	return func(name string) bool { return replay.Lookup(name) != nil || runFS.Lookup(name) != nil }
}

func runReplay(ctx context.Context, args []string, s stdio) error {
	var c replayConfig
	c.params = profileParams(args, streamProfile)
	started := c.params.Profile
	fs := newFlags("replay", replayUsage, s)
	registerReplayFlags(fs, &c)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("replay: unexpected arguments %q", fs.Args())
	}
	if err := layerConfigOf(fs, c.config, os.LookupEnv, replayLayered(), configKnown(fs)); err != nil {
		return usagef("replay: %v", err)
	}
	if again, ok := reprofile(args, started, *c.profileFlag); ok {
		return runReplay(ctx, again, s) // profile: in the config file or env
	}
	if err := c.check(); err != nil {
		return err
	}
	write, err := rowWriter(c.format)
	if err != nil {
		return err
	}
	log, err := newLogger(c.logLevel, "console", s)
	if err != nil {
		return usagef("replay: %v", err)
	}
	defer log.Sync()
	detect, err := c.detectConfig.options()
	if err != nil {
		return usagef("replay: %v", err)
	}
	kopts, err := c.kafkaOpts()
	if err != nil {
		return usagef("replay: %v", err)
	}
	var labels []fleet.Label
	if c.labels != "" {
		f, err := os.Open(c.labels)
		if err != nil {
			return err
		}
		labels, err = fleet.ReadLabels(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("replay: %s: %w", c.labels, err)
		}
	}
	opts := append([]stream.Opt{
		stream.Brokers(splitList(c.brokers)...),
		stream.ClientOpts(kopts...),
		stream.InputTopics(splitList(c.topics)...),
		stream.Logger(log),
	}, detect...)
	if c.stateDir != "" {
		opts = append(opts, stream.StateDir(c.stateDir))
	}
	opts = append(opts, c.memoryLimit.apply()...)

	// A bar on a terminal only: replay's summary says the same at the end.
	var progress atomic.Pointer[stream.ReplayProgress]
	bar := startProgress(s.errOut, !c.quiet && isTerminal(s.errOut), 250*time.Millisecond, 0, func(el time.Duration) string {
		if p := progress.Load(); p != nil {
			return barLine(p, el)
		}
		return ""
	})
	var bad atomic.Int64
	ro := stream.ReplayOptions{
		Partitions: c.partitions,
		Shards:     c.shards,
		From:       c.fromT, To: c.toT, End: c.endT,
		FromSlack:    c.fromSlack,
		StartOffsets: c.startOffsets, EndOffsets: c.endOffsets,
		AlertTopic: c.alertsTopic,
		OnBad: func(b stream.BadRecord) {
			if n := bad.Add(1); !c.quiet && n <= 20 {
				bar.printf("beacon replay: skipped %v\n", b)
			}
		},
		OnProgress: func(p stream.ReplayProgress) { progress.Store(&p) },
	}
	restoreGC := replayGC()
	res, err := stream.Replay(ctx, ro, opts...)
	restoreGC()
	bar.stop()
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}

	if err := writeTo(c.out, s.out, func(w io.Writer) error { return write(w, res.Rows) }); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	if c.alerts != "" {
		alertFmt, _ := stream.ParseAlertFormat(c.alertFormat) // checked by options
		writeAlerts := func(w io.Writer, as []stream.Alert) error { return stream.WriteAlerts(w, alertFmt, as) }
		if strings.HasSuffix(strings.TrimSuffix(strings.ToLower(c.alerts), ".gz"), ".csv") {
			writeAlerts = stream.WriteAlertsCSV
		}
		if err := writeTo(c.alerts, s.out, func(w io.Writer) error { return writeAlerts(w, res.Alerts) }); err != nil {
			return fmt.Errorf("replay: alerts: %w", err)
		}
	}
	if !c.quiet {
		printReplaySummary(s.errOut, &c, res)
	}
	if c.labels != "" {
		det := make([]fleet.Detection, len(res.Alerts))
		for i := range res.Alerts {
			det[i] = fleet.Detection{Tuple: res.Alerts[i].Row.Tuple, FirstAlert: res.Alerts[i].StreamTime}
		}
		sc := fleet.Score(profileLabels(&c.params, labels), det)
		fmt.Fprintln(s.errOut)
		if err := sc.WriteTable(s.errOut); err != nil {
			return err
		}
		if c.score != "" {
			b, err := json.MarshalIndent(&sc, "", "  ")
			if err != nil {
				return err
			}
			if err := os.WriteFile(c.score, append(b, '\n'), 0o644); err != nil {
				return fmt.Errorf("replay: --score: %w", err)
			}
		}
	}
	return nil
}

// check validates the replay-specific flags and parses times and offsets.
func (c *replayConfig) check() error {
	if len(splitList(c.topics)) == 0 {
		return usagef("replay: --topic is required")
	}
	parse := func(name, v string) (*beacon.Time, error) {
		if v == "" {
			return nil, nil
		}
		t, err := parseISO8601(v) // as hunt's --end: any ISO 8601 date or date-time
		if err != nil {
			return nil, usagef("replay: --%s %q: %v", name, v, err)
		}
		return &t, nil
	}
	var err error
	if c.fromT, err = parse("from", c.from); err != nil {
		return err
	}
	if c.toT, err = parse("to", c.to); err != nil {
		return err
	}
	if c.endT, err = parse("end", c.end); err != nil {
		return err
	}
	if c.fromT != nil && c.toT != nil && *c.toT <= *c.fromT {
		return usagef("replay: --to %s is not after --from %s", c.to, c.from)
	}
	if c.startOffsets, err = parseOffsets(c.fromOffset); err != nil {
		return usagef("replay: --from-offset: %v", err)
	}
	if c.endOffsets, err = parseOffsets(c.toOffset); err != nil {
		return usagef("replay: --to-offset: %v", err)
	}
	if c.partitions < 1 || c.partitions > 1<<16 {
		return usagef("replay: --workers must be in [1, 65536], got %d", c.partitions)
	}
	if c.shards < 0 || c.shards > 64 {
		return usagef("replay: --shards must be in [0, 64], got %d", c.shards)
	}
	if c.shards > 1 && c.stateDir != "" {
		return usagef("replay: --shards %d needs the scratch state: a --state-dir keeps the repartition topic's partitions, one worker each", c.shards)
	}
	if c.alerts == "-" && c.out == "-" {
		return usagef("replay: --alerts - and the beacon set would both go to stdout (set --out)")
	}
	if c.score != "" && c.labels == "" {
		return usagef("replay: --score needs --labels")
	}
	return nil
}

// parseOffsets reads N (every partition) or P:N[,P:N…].
func parseOffsets(s string) (map[int32]int64, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := make(map[int32]int64)
	for _, part := range splitList(s) {
		p, n := "-1", part
		if i := strings.IndexByte(part, ':'); i >= 0 {
			p, n = part[:i], part[i+1:]
		}
		pv, err := strconv.ParseInt(p, 10, 32)
		if err != nil || pv < -1 {
			return nil, fmt.Errorf("bad partition in %q (want N or P:N,P:N)", part)
		}
		nv, err := strconv.ParseInt(n, 10, 64)
		if err != nil || nv < 0 {
			return nil, fmt.Errorf("bad offset in %q (want N or P:N,P:N)", part)
		}
		out[int32(pv)] = nv
	}
	return out, nil
}

func printReplaySummary(w io.Writer, c *replayConfig, res *stream.ReplayResult) {
	secs := res.Elapsed.Seconds()
	fmt.Fprintf(w, "beacon replay: %d events from %d records of %s in %s (%.0f events/s)",
		res.Events, res.Records, c.topics, res.Elapsed.Round(time.Millisecond), float64(res.Events)/max(secs, 1e-9))
	if res.Bad > 0 {
		fmt.Fprintf(w, ", %d record(s) skipped", res.Bad)
	}
	if res.OutOfRange > 0 {
		fmt.Fprintf(w, ", %d event(s) outside --from/--to", res.OutOfRange)
	}
	if res.Late > 0 {
		fmt.Fprintf(w, ", %d connection(s) too late for their window", res.Late)
	}
	fmt.Fprintf(w, "\nbeacon replay: %d alert(s); ", len(res.Alerts))
	if res.HasNow {
		fmt.Fprintf(w, "%d beacon(s) at now = %s\n", len(res.Rows), res.Now)
	} else {
		fmt.Fprintf(w, "no event passed the query's filters\n")
	}
	if res.HasNow && res.WarmPartitions == 0 {
		warm := c.warmup
		if warm == 0 {
			warm = c.params.DefaultWarmup()
		}
		fmt.Fprintf(w, "beacon replay: no partition saw its warm-up of %s of event time, so nothing could alert (see --warmup)\n", warm)
	}
}

// barLine renders progress: bar, percent, records, rate and ETA.
func barLine(p *stream.ReplayProgress, elapsed time.Duration) string {
	const width = 30
	frac := 1.0
	if p.Total > 0 {
		frac = min(1, float64(p.Records)/float64(p.Total))
	}
	filled := int(frac * width)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	rate := float64(p.Events) / max(elapsed.Seconds(), 1e-9)
	eta := "?"
	if p.Records > 0 && p.Total >= p.Records {
		left := time.Duration(float64(elapsed) * float64(p.Total-p.Records) / float64(p.Records))
		eta = left.Round(time.Second).String()
	}
	return fmt.Sprintf("beacon replay [%s] %3.0f%%  %d/%d records  %.0f events/s  ETA %s",
		bar, 100*frac, p.Records, p.Total, rate, eta)
}
