package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

const simulateUsage = `simulate [flags]

Generate a simulated fleet's Microsoft Defender DeviceNetworkEvents — web
browsing, fleet services every device polls (Windows Update, Defender,
Teams, OneDrive), a few benign updaters, and hidden C2 implants (Cobalt
Strike, Sliver, Empire, Mythic sleep/jitter rules) — seen through a sensor
that misses, duplicates and delays events. Write them to a file (JSON lines,
Streaming API envelopes, CSV or Avro) and/or produce them to a Kafka topic,
with the ground truth in a labels file. The same flags give the same bytes.

Flags:`

const simulateExamples = `
Examples:
  # a day of 200 devices as JSON lines, with the ground truth
  beacon simulate --out events.jsonl.gz --labels labels.jsonl

  # a week of 50 devices with 12 implants, as Defender Streaming API messages
  beacon simulate --devices 50 --hours 168 --implants 12 --format envelope --out week.json

  # into Kafka, keyed by DeviceId
  beacon simulate --brokers localhost:9092 --topic mde-network --topic-format envelope

  # a clean sensor, long sleeps only
  beacon simulate --drop 0 --dup 0 --late 0 --sleeps 15m,30m,1h --out clean.csv --format csv

Labels (--labels) are JSON lines, one per tuple that calls home on a timer:
  {"class":"implant","name":"cobaltstrike","framework":"cobaltstrike","sleep_s":60,
   "jitter":0.2,"gap_min_s":48,"gap_max_s":60,"first_event":"2024-05-01T04:17:16.0977486Z",
   "work_hours_only":false,"DeviceId":"…","DeviceName":"wks-0031.contoso.local",
   "InitiatingProcessAccountName":"…","InitiatingProcessAccountDomain":"contoso",
   "InitiatingProcessFileName":"…","RemoteIP":"…","RemotePort":443,"RemoteUrl":"…",
   "callbacks":1183,"events":1174}
class is implant, updater or fleet-service. See docs/simulate.md.
`

func runSimulate(ctx context.Context, args []string, s stdio) error {
	def := fleet.DefaultConfig()
	fs := newFlags("simulate", simulateUsage, s)
	base := fs.Usage
	fs.Usage = func() { base(); fmt.Fprint(s.out, simulateExamples) }

	seed := fs.Int64("seed", def.Seed, "selects the fleet; the same flags and seed give byte-identical output")
	devices := fs.Int("devices", def.Devices, "devices in the fleet (about 5% are servers, which do not browse)")
	hours := fs.Float64("hours", def.Duration.Hours(), "length of the simulated period, in hours (fractions allowed)")
	start := fs.String("start", def.Start.Format(time.RFC3339), "start of the period, RFC 3339; fixed by default so output is reproducible")
	implants := fs.Int("implants", def.Implants, "C2 implants to plant, each on a random device calling its own server")
	updaters := fs.Int("updaters", def.Updaters, "benign periodic products (TeamViewer, Google Update…) to install, each on 1-5 devices")
	frameworks := fs.String("frameworks", strings.Join(def.Frameworks, ","), "implant frameworks, drawn round robin: cobaltstrike (sleep − U(0, jitter·sleep)), sliver (sleep + U(0, jitter s)), empire and mythic (sleep + U(−jitter·sleep, +jitter·sleep))")
	traits := fs.String("traits", "", "implant traits, dealt round robin (comma-separated, or all): "+strings.Join(fleet.Traits, ", ")+"; docs/robust.md")
	traitFlags := map[string]*bool{}
	for _, t := range fleet.Traits {
		traitFlags[t] = fs.Bool(t, false, "add the "+t+" implant trait (as --traits "+t+")")
	}
	sleeps := fs.String("sleeps", joinDurations(def.Sleeps), "implant sleeps, drawn round robin (Go durations, at least 1s)")
	drop := fs.Float64("drop", def.DropRate, "probability that the sensor never logs a connection (0 = none)")
	dup := fs.Float64("dup", def.DupRate, "probability that the sensor logs a connection twice, same timestamp or a few ms later (0 = none)")
	late := fs.Float64("late", def.LateRate, "probability that an event is emitted late, out of order (0 = none)")
	maxLate := fs.Duration("max-late", def.MaxLate, "how late a late event can be")
	out := fs.String("out", "", "write events to `PATH`; - is stdout, a name ending in .gz is gzipped (default - unless --brokers is given)")
	format := fs.String("format", "jsonl", "file format: jsonl (flat JSON per line), envelope (Defender Streaming API messages), csv (header row, RFC 4180) or avro (Avro container file)")
	batch := fs.Int("batch", fleet.DefaultBatch, "records per envelope message (--format envelope, --topic-format envelope)")
	tenant := fs.String("tenant", fleet.DefaultTenant, "tenantId of envelope records")
	labels := fs.String("labels", "", "write the ground truth, one JSON object per labelled tuple, to `PATH` (- is stdout when --out is not)")
	brokers := fs.String("brokers", "", "produce to Kafka at `HOST:PORT`[,HOST:PORT…], keyed by DeviceId")
	topic := fs.String("topic", "", "Kafka topic to produce to (with --brokers)")
	topicFormat := fs.String("topic-format", "jsonl", "message format: jsonl (one flat JSON object per event; json is an alias), envelope (Streaming API message of up to --batch events of one device) or avro (raw Avro binary per event, schemas/DeviceNetworkEvent.avsc, no registry header)")
	quiet := fs.Bool("quiet", false, "print neither progress nor the summary on stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("simulate: unexpected argument %q", fs.Arg(0))
	}

	// fleet.Config.Validate holds the ranges. Checked here is only what
	// the mapping to a Config would hide: there a zero means the default
	// and a negative count or rate none, here 0 means none.
	cfg := fleet.Config{Seed: *seed, Devices: *devices, MaxLate: *maxLate}
	if *hours <= 0 {
		return usagef("simulate: --hours must be in (0, %g], got %v", fleet.MaxDuration.Hours(), *hours)
	}
	cfg.Duration = time.Duration(*hours * float64(time.Hour))
	t, err := time.Parse(time.RFC3339Nano, *start)
	if err != nil {
		return usagef("simulate: --start: %v", err)
	}
	cfg.Start = t.UTC()
	if *devices < 1 {
		return usagef("simulate: --devices must be in [1, %d], got %d", fleet.MaxDevices, *devices)
	}
	if *implants < 0 || *updaters < 0 {
		return usagef("simulate: --implants and --updaters cannot be negative (0: none)")
	}
	cfg.Implants, cfg.Updaters = orNone(*implants), orNone(*updaters)
	for _, r := range []struct {
		name string
		v    float64
		dst  *float64
	}{{"drop", *drop, &cfg.DropRate}, {"dup", *dup, &cfg.DupRate}, {"late", *late, &cfg.LateRate}} {
		if r.v < 0 {
			return usagef("simulate: --%s must be in [0, 1), got %v", r.name, r.v)
		}
		*r.dst = r.v
		if r.v == 0 {
			*r.dst = -1
		}
	}
	for _, f := range strings.Split(*frameworks, ",") {
		if f = strings.TrimSpace(strings.ToLower(f)); f != "" {
			cfg.Frameworks = append(cfg.Frameworks, f)
		}
	}
	if strings.TrimSpace(*traits) == "all" {
		cfg.Traits = append(cfg.Traits, fleet.Traits...)
	} else {
		for _, t := range strings.Split(*traits, ",") {
			if t = strings.TrimSpace(t); t != "" {
				cfg.Traits = append(cfg.Traits, t)
			}
		}
	}
	for _, t := range fleet.Traits {
		if *traitFlags[t] && !slices.Contains(cfg.Traits, t) {
			cfg.Traits = append(cfg.Traits, t)
		}
	}
	for _, d := range strings.Split(*sleeps, ",") {
		if d = strings.TrimSpace(d); d == "" {
			continue
		}
		v, err := time.ParseDuration(d)
		if err != nil {
			return usagef("simulate: --sleeps: %v", err)
		}
		cfg.Sleeps = append(cfg.Sleeps, v)
	}
	if err := cfg.Validate(); err != nil {
		return usagef("simulate: %v", err) // names the range
	}
	ff, err := fleet.ParseFormat(*format)
	if err != nil {
		return usagef("simulate: --format: %v", err)
	}
	if *batch < 1 {
		return usagef("simulate: --batch must be at least 1, got %d", *batch)
	}
	if *out == "" && *brokers == "" {
		*out = "-"
	}
	if *brokers != "" && *topic == "" {
		return usagef("simulate: --brokers needs --topic")
	}
	if *topic != "" && *brokers == "" {
		return usagef("simulate: --topic needs --brokers")
	}
	if *labels == "-" && *out == "-" {
		return usagef("simulate: --labels - and --out - would both write to stdout")
	}
	var enc fleet.MessageEncoder
	if *brokers != "" {
		tf, err := fleet.ParseFormat(*topicFormat)
		if err == nil {
			enc, err = fleet.NewMessageEncoder(tf, *batch, *tenant)
		}
		if err != nil {
			return usagef("simulate: --topic-format must be json, envelope or avro, got %q", *topicFormat)
		}
	}

	g, err := fleet.New(cfg)
	if err != nil {
		return err
	}
	began := time.Now()

	var sinks []func(*fleet.Record) error
	var closers []func() error
	if *brokers != "" { // first: it fails fast when Kafka is not there
		prod, err := fleet.NewProducer(ctx, *brokers, *topic, enc)
		if err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		defer prod.Close()
		sinks = append(sinks, prod.Write)
		closers = append(closers, func() error { return prod.Flush(ctx) })
	}
	if *out != "" {
		w, closeOut, err := createOutput(*out, s.out)
		if err != nil {
			return err
		}
		fw, err := fleet.NewWriter(w, ff, fleet.WriterOptions{Batch: *batch, Tenant: *tenant, Seed: *seed})
		if err != nil {
			closeOut()
			return err
		}
		sinks = append(sinks, fw.Write)
		closers = append(closers, func() error { return errors.Join(fw.Close(), closeOut()) })
	}
	closeAll := func() error {
		var errs []error
		for _, c := range closers {
			errs = append(errs, c())
		}
		return errors.Join(errs...)
	}

	var n int64
	var shownN, shownAt atomic.Int64 // every 4096 records, for the progress line
	period := float64(g.End() - g.Start())
	prog := startProgress(s.errOut, !*quiet, time.Second, time.Second, func(el time.Duration) string {
		n := shownN.Load()
		if n == 0 {
			return ""
		}
		return fmt.Sprintf("simulate: %3.0f%% of the period, %d events, %s events/s",
			100*float64(beacon.Time(shownAt.Load())-g.Start())/period, n, rate(n, el))
	})
	defer prog.stop()
	for r, ok := g.NextRecord(); ok; r, ok = g.NextRecord() {
		for _, sink := range sinks {
			if err := sink(&r); err != nil {
				closeAll()
				return fmt.Errorf("simulate: %w", err)
			}
		}
		n++
		if n&4095 != 0 {
			continue
		}
		shownN.Store(n)
		shownAt.Store(int64(r.Timestamp))
		if err := ctx.Err(); err != nil {
			closeAll()
			return err
		}
	}
	prog.stop()
	if err := closeAll(); err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	if *labels != "" {
		if err := writeTo(*labels, s.out, func(w io.Writer) error { return fleet.WriteLabels(w, g.Labels()) }); err != nil {
			return fmt.Errorf("simulate: labels: %w", err)
		}
	}
	if !*quiet {
		elapsed := time.Since(began)
		classes := map[string]int{}
		for _, l := range g.Labels() {
			classes[l.Class]++
		}
		st := g.Stats()
		fmt.Fprintf(s.errOut, "simulate: %d events, %d beacons planted (%d implants, %d updater installs; %d fleet-service tuples), "+
			"%d dropped/%d duplicated/%d late by the sensor, %s, %s events/s\n",
			n, classes[fleet.ClassImplant]+classes[fleet.ClassUpdater], classes[fleet.ClassImplant], classes[fleet.ClassUpdater],
			classes[fleet.ClassFleetService], st.Dropped, st.Duplicated, st.Late, elapsed.Round(time.Millisecond), rate(n, elapsed))
	}
	return nil
}

func orNone(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

func joinDurations(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		switch {
		case d%time.Hour == 0:
			s = append(s, fmt.Sprintf("%dh", d/time.Hour))
		case d%time.Minute == 0:
			s = append(s, fmt.Sprintf("%dm", d/time.Minute))
		case d%time.Second == 0:
			s = append(s, fmt.Sprintf("%ds", d/time.Second))
		default:
			s = append(s, d.String())
		}
	}
	return strings.Join(s, ",")
}

func rate(n int64, d time.Duration) string {
	r := float64(n) / max(d.Seconds(), 1e-9)
	switch {
	case r >= 1e6:
		return fmt.Sprintf("%.2fM", r/1e6)
	case r >= 1e3:
		return fmt.Sprintf("%.0fk", r/1e3)
	}
	return fmt.Sprintf("%.0f", r)
}
