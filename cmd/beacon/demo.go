package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
	"github.com/beaconhunt/beacon/pkg/stream"
)

const demoUsage = `demo [flags]

Everything on this machine, no Kafka needed: an embedded Kafka broker on
127.0.0.1, a simulated fleet with hidden C2 implants (Cobalt Strike, Sliver,
Empire, Mythic) among browsing, fleet services and benign updaters, and the
streaming detector between them. The fleet's clock runs --speed times
faster than yours, so a one-hour window fills in seconds. Alerts are
printed as they fire; at the end a summary compares them with what was
planted. Ctrl-C ends it early, gracefully.

While it runs, any Kafka client can attach to the broker, e.g.
  kcat -b 127.0.0.1:PORT -t beacon.alerts -C
and the detector answers on HTTP: its address is the first line printed;
/ is a page of the current beacons (gap histograms, callback timelines),
and /beacons, /metrics, /healthz.

Examples:
  beacon demo
  beacon demo --duration 2m --devices 200
  beacon demo --port 9092 --data-dir /tmp/beacon-demo   # a fixed port; topics kept between runs
  beacon demo --start 2024-05-06T08:00Z                 # the same fleet hours whenever it runs

Flags:`

type demoConfig struct {
	duration       time.Duration
	speed          float64
	devices        int
	implants       int
	seed           int64
	port           int
	dataDir        string
	listen         string
	format         string
	partitions     int
	quiet          bool
	alertFormat    string
	alertLink      string
	start          time.Time // zero: --duration×--speed before now
	params         beacon.Params
	producedEvents atomic.Int64
}

func runDemo(ctx context.Context, args []string, s stdio) error {
	c := demoConfig{}
	c.params = profileParams(args, streamProfile)
	c.params.Lookback = time.Hour
	fs := newFlags("demo", demoUsage, s)
	fs.DurationVar(&c.duration, "duration", time.Minute, "how long to run (wall time)")
	fs.Float64Var(&c.speed, "speed", 1000, "fleet time per wall time: 1000 runs ~17 hours of fleet activity in a minute")
	fs.IntVar(&c.devices, "devices", 50, "devices in the simulated fleet")
	fs.IntVar(&c.implants, "implants", 5, "C2 implants to hide in it")
	fs.Int64Var(&c.seed, "seed", 1, "fleet seed: the same seed plants the same implants")
	fs.IntVar(&c.port, "port", 0, "port of the embedded broker on 127.0.0.1 (0: any free one)")
	fs.StringVar(&c.dataDir, "data-dir", "", "keep the broker's topics and the detector's state in this directory, across runs")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:0", "HTTP address of the page (/), /beacons, /metrics and /healthz (empty: none)")
	fs.StringVar(&c.format, "format", "envelope", "how the fleet writes events: envelope (Defender Streaming API), jsonl (flat) or avro")
	fs.IntVar(&c.partitions, "topic-partitions", 4, "partitions of the demo's topics")
	fs.IntVar(&c.partitions, "partitions", 4, "alias of --topic-partitions")
	fs.BoolVar(&c.quiet, "quiet", false, "print the summary only")
	fs.StringVar(&c.alertFormat, "alert-format", "json", "alert encoding on the alert topic: json, avro, ecs or ocsf (as run's)")
	fs.StringVar(&c.alertLink, "alert-link", "", "link rendered into every alert (as run's --alert-link)")
	startFlag := fs.String("start", "", "fleet time to begin at, an ISO 8601 date or date-time such as 2024-05-06T08:00Z (default: --duration×--speed before now, so the fleet ends about now); the same --start and --seed replay the same fleet hours")
	profile := addProfileFlags(fs, &c.params, streamProfile)
	addParamFlags(fs, &c.params)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkProfile(&c.params, *profile); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usagef("demo: unexpected arguments %q", fs.Args())
	case c.duration <= 0:
		return usagef("demo: --duration must be positive, got %s", c.duration)
	case c.speed <= 0:
		return usagef("demo: --speed must be positive, got %g", c.speed)
	case c.devices < 1: // the fleet holds the upper bound (fleet.Config.Validate)
		return usagef("demo: --devices must be in [1, %d], got %d", fleet.MaxDevices, c.devices)
	case c.partitions < 1:
		return usagef("demo: --topic-partitions must be at least 1, got %d", c.partitions)
	}
	if err := c.params.Validate(); err != nil {
		return usagef("demo: %v", err)
	}
	if *startFlag != "" {
		t, err := parseISO8601(*startFlag)
		if err != nil {
			return usagef("demo: --start: %v", err)
		}
		// The detector's clock is the events': a fleet ahead of the wall
		// clock would be ahead of every consumer's idea of now.
		span := time.Duration(float64(c.duration) * c.speed)
		if latest := time.Now().Add(-span); t.Go().After(latest) {
			return usagef("demo: --start must be at most --duration×--speed (%s) before now, at the latest %s; got %s",
				span, latest.UTC().Truncate(time.Second).Format(time.RFC3339), t.Go().UTC().Format(time.RFC3339))
		}
		c.start = t.Go().UTC()
	}
	format, err := fleet.ParseFormat(c.format)
	if err != nil || format == fleet.CSV {
		return usagef("demo: --format must be envelope, jsonl or avro")
	}
	af, err := stream.ParseAlertFormat(c.alertFormat)
	if err != nil {
		return usagef("demo: --alert-format: %v", err)
	}
	c.alertFormat = string(af)
	if err := stream.CheckAlertLink(c.alertLink); err != nil {
		return usagef("demo: --alert-link: %v", err)
	}
	return c.run(ctx, format, s)
}

const (
	demoInput  = "beacon.events"
	demoAlerts = "beacon.alerts"
)

func (c *demoConfig) run(ctx context.Context, format fleet.Format, s stdio) error {
	out := s.out
	if c.quiet {
		out = io.Discard
	}
	// The broker.
	kopts := []kfake.Opt{kfake.Ports(c.port), kfake.SeedTopics(int32(c.partitions), demoInput, "beacon.repartition", demoAlerts),
		kfake.SeedTopics(1, "beacon.deadletter")}
	stateDir := ""
	if c.dataDir != "" {
		kopts = append(kopts, kfake.DataDir(filepath.Join(c.dataDir, "kafka")))
		stateDir = filepath.Join(c.dataDir, "state")
	} else {
		tmp, err := os.MkdirTemp("", "beacon-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		stateDir = tmp
	}
	cluster, err := kfake.NewCluster(kopts...)
	if err != nil {
		return fmt.Errorf("demo: starting the embedded broker: %w", err)
	}
	defer cluster.Close()
	addr := cluster.ListenAddrs()[0]

	// The fleet: its period ends about now, or continues a kept one, or
	// begins at --start.
	span := time.Duration(float64(c.duration) * c.speed)
	start := time.Now().UTC().Add(-span).Truncate(time.Minute)
	saved, kept := c.loadClock()
	if kept && saved.After(start) {
		start = saved
	}
	if !c.start.IsZero() {
		if kept && c.start.Before(saved) {
			// Behind the kept state's clock, every event would be late.
			return usagef("demo: --start %s is before the fleet time --data-dir kept (%s): use a later --start, or another --data-dir",
				c.start.Format(time.RFC3339), saved.UTC().Format(time.RFC3339))
		}
		start = c.start
	}
	gen, err := fleet.New(fleet.Config{Seed: c.seed, Devices: c.devices, Implants: implantsOpt(c.implants), Start: start,
		Duration: span + time.Minute, Sleeps: []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute}})
	if err != nil {
		return usagef("demo: %v", err)
	}

	// The detector.
	log, err := newLogger("warn", "console", s)
	if err != nil {
		return err
	}
	// One alert per tuple and fleet day: the demo shows tuples entering the
	// set, not the hourly reminders a one-hour re-alert interval would give.
	opts := []stream.Opt{stream.Brokers(addr), stream.StateDir(stateDir), stream.Params(c.params), stream.Logger(log),
		stream.ReAlertInterval(24 * time.Hour), stream.WithAlertFormat(stream.AlertFormat(c.alertFormat)), stream.AlertLink(c.alertLink),
		stream.CommitInterval(time.Second), stream.SessionTimeout(6 * time.Second), stream.CreateTopics(true, int32(c.partitions), 1)}
	httpAddr := ""
	if c.listen != "" {
		l, err := net.Listen("tcp", c.listen)
		if err != nil {
			return fmt.Errorf("demo: --listen: %w", err)
		}
		httpAddr = l.Addr().String()
		opts = append(opts, stream.HTTPListener(l))
	}
	svc, err := stream.New(opts...)
	if err != nil {
		return err
	}

	if httpAddr != "" {
		// First, so that it can be opened while the rest scrolls by.
		fmt.Fprintf(out, "beacon demo: open http://%s/ to see the beacons\n", httpAddr)
	}
	fmt.Fprintf(out, "beacon demo: embedded Kafka on %s, a fleet of %d devices with %d hidden implants, fleet time ×%g\n",
		addr, c.devices, c.implants, c.speed)
	fmt.Fprintf(out, "  fleet time %s → %s, window %s (alerts start once a window is full)\n",
		start.Format(time.RFC3339), start.Add(span).Format(time.RFC3339), c.params.Lookback)
	fmt.Fprintf(out, "  watch the alerts with any Kafka client:  kcat -b %s -t %s -C\n", addr, demoAlerts)
	if httpAddr != "" {
		fmt.Fprintf(out, "  the current beacon set:                  curl -s 'http://%s/beacons?format=table'\n", httpAddr)
	}
	fmt.Fprintf(out, "  running for %s; Ctrl-C ends it early\n\n", c.duration)

	began := time.Now()
	runCtx, stopSvc := context.WithCancel(context.Background())
	defer stopSvc()
	prodCtx, stopProd := context.WithTimeout(ctx, c.duration)
	defer stopProd()

	var g errgroup.Group
	svcErr := make(chan error, 1)
	g.Go(func() error { err := svc.Run(runCtx); svcErr <- err; return err })
	labels := newLabelIndex(&c.params)
	printer := &alertPrinter{out: out, labels: labels, began: began, format: stream.AlertFormat(c.alertFormat)}
	readerCtx, stopReader := context.WithCancel(context.Background())
	defer stopReader()
	g.Go(func() error { return printer.read(readerCtx, addr, began) })

	var produceErr error
	last, err := c.produce(prodCtx, addr, gen, format, labels, svcErr)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		produceErr = err
	}
	// Let the last events through the pipeline, then stop gracefully.
	drain := time.NewTimer(2 * time.Second)
	select {
	case <-drain.C:
	case err := <-svcErr:
		svcErr <- err
	}
	stopSvc()
	time.Sleep(500 * time.Millisecond) // the printer reads the last alerts
	stopReader()
	werr := g.Wait()
	if c.dataDir != "" && last > 0 {
		c.saveClock(last.Go().Add(time.Minute))
	}
	c.summary(s.out, gen, printer, time.Since(began), addr)
	return errors.Join(produceErr, werr)
}

// produce writes the fleet's events to the input topic, paced so that
// fleet time runs --speed times faster than the clock. It returns the
// newest event time written.
func (c *demoConfig) produce(ctx context.Context, addr string, gen *fleet.Generator, format fleet.Format,
	labels *labelIndex, svcErr chan error) (beacon.Time, error) {
	enc, err := fleet.NewMessageEncoder(format, fleet.DefaultBatch, "")
	if err != nil {
		return 0, err
	}
	prod, err := fleet.NewProducer(ctx, addr, demoInput, enc)
	if err != nil {
		return 0, err
	}
	defer prod.Close()
	t0 := time.Now()
	first := gen.Start()
	var newest beacon.Time
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var next fleet.Record
	have, done := false, false
	for {
		elapsed := time.Since(t0)
		due := first + beacon.Time(float64(elapsed.Nanoseconds())*c.speed/100)
		var n int64
		for !done {
			if !have {
				if next, have = gen.NextRecord(); !have {
					done = true
					break
				}
			}
			if next.Reported > due {
				break
			}
			if err := prod.Write(&next); err != nil {
				return newest, err
			}
			n++
			if next.Timestamp > newest {
				newest = next.Timestamp
			}
			have = false
		}
		// Every event due is sent now, not when its device's envelope fills.
		if err := prod.Send(); err != nil {
			return newest, err
		}
		c.producedEvents.Add(n)
		labels.update(gen.Labels())
		if done {
			return newest, prod.Flush(context.Background())
		}
		select {
		case <-ctx.Done():
			prod.Flush(context.Background())
			return newest, ctx.Err()
		case err := <-svcErr:
			svcErr <- err
			return newest, fmt.Errorf("detector stopped: %w", err)
		case <-tick.C:
		}
	}
}

// labelIndex is the ground truth by tuple, refreshed while the fleet runs.
type labelIndex struct {
	mu sync.Mutex
	p  *beacon.Params // tuples as the profile forms them
	m  map[beacon.Tuple]fleet.Label
	ls []fleet.Label
}

func newLabelIndex(p *beacon.Params) *labelIndex {
	return &labelIndex{p: p, m: make(map[beacon.Tuple]fleet.Label)}
}

func (x *labelIndex) update(ls []fleet.Label) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.ls = ls
	for _, l := range ls {
		x.m[profileLabels(x.p, []fleet.Label{l})[0].Tuple] = l
	}
}

func (x *labelIndex) get(t beacon.Tuple) (fleet.Label, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	l, ok := x.m[t]
	return l, ok
}

// alertPrinter reads the alert topic as a SIEM would and prints one line
// per alert.
//
// Alerts already on the topic (from earlier runs with --data-dir) are
// counted, not printed: a tuple alerted earlier in its re-alert period is
// not alerted again.
type alertPrinter struct {
	out     io.Writer
	format  stream.AlertFormat
	labels  *labelIndex
	began   time.Time
	mu      sync.Mutex
	alerts  []stream.Alert
	earlier []stream.Alert
}

func (p *alertPrinter) read(ctx context.Context, addr string, since time.Time) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(demoAlerts),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fs.EachRecord(func(r *kgo.Record) {
			a, err := stream.DecodeAlert(p.format, r.Value)
			if err != nil {
				fmt.Fprintf(p.out, "unreadable alert at %d/%d: %v\n", r.Partition, r.Offset, err)
				return
			}
			p.mu.Lock()
			if r.Timestamp.Before(since) {
				p.earlier = append(p.earlier, a)
				p.mu.Unlock()
				return
			}
			p.alerts = append(p.alerts, a)
			p.mu.Unlock()
			p.print(&a)
		})
	}
}

func (p *alertPrinter) print(a *stream.Alert) {
	r := &a.Row
	acct := r.Account()
	dom := ""
	for _, d := range r.Domains {
		if d != "" {
			dom = " " + d
			break
		}
	}
	truth := "not a planted timer"
	if l, ok := p.labels.get(r.Tuple); ok {
		switch l.Class {
		case fleet.ClassImplant:
			truth = "planted " + l.Framework + " implant"
		case fleet.ClassUpdater:
			truth = "benign updater (" + l.Name + ")"
		case fleet.ClassFleetService:
			truth = "fleet service (" + l.Name + ")"
		}
	}
	var techs []string
	for _, t := range a.Techniques() {
		techs = append(techs, t.ID)
	}
	timer := fmt.Sprintf("every %.0fs ±%.0f%% (%d calls)", r.Avg, r.Jitter, r.Count+1)
	if r.R.On { // a robust row carries its period, callbacks and score instead
		timer = fmt.Sprintf("every %.0fs score %.2f (%d callbacks)", r.PeriodSeconds, r.Score, r.Callbacks)
	}
	fmt.Fprintf(p.out, "+%-5s ALERT %-8s %s  %s %s %s → %s:%d%s  %s  %s  %s  [%s]\n",
		time.Since(p.began).Round(time.Second).String(), r.Severity, a.StreamTime.Go().Format("Jan 02 15:04:05"),
		shortHost(r.DeviceName), acct, r.FileName, r.RemoteIP, r.RemotePort, dom,
		timer, strings.Join(techs, ","), a.ID[:12], truth)
}

func shortHost(h string) string {
	if i := strings.IndexByte(h, '.'); i > 0 {
		return h[:i]
	}
	return h
}

// summary scores the alerts against the planted ground truth with
// fleet.Score, as 'replay --labels' does, and prints it for people.
func (c *demoConfig) summary(w io.Writer, gen *fleet.Generator, p *alertPrinter, took time.Duration, addr string) {
	p.mu.Lock()
	alerts := append([]stream.Alert(nil), p.alerts...)
	earlier := append([]stream.Alert(nil), p.earlier...)
	p.mu.Unlock()
	var dets []fleet.Detection
	now := make(map[beacon.Tuple]bool)
	for _, a := range alerts {
		now[a.Row.Tuple] = true
		dets = append(dets, fleet.Detection{Tuple: a.Row.Tuple, FirstAlert: a.StreamTime})
	}
	for _, a := range earlier {
		dets = append(dets, fleet.Detection{Tuple: a.Row.Tuple, FirstAlert: a.StreamTime})
	}
	labels := profileLabels(&c.params, gen.Labels())
	sc := fleet.Score(labels, dets)
	fmt.Fprintf(w, "\nSummary after %s: %d events produced, %d alerts on %d tuples\n",
		took.Round(time.Second), c.producedEvents.Load(), len(alerts), len(now))
	if len(earlier) > 0 {
		fmt.Fprintf(w, "(and %d alerts from earlier runs on the topic: a tuple is alerted once per %s re-alert period)\n",
			len(earlier), 24*time.Hour)
	}
	var lines []string
	for _, b := range sc.Beacons {
		l := &b.Label
		if l.Class != fleet.ClassImplant {
			continue
		}
		mark, why := "✗", c.missReason(*l)
		switch {
		case now[l.Tuple]:
			mark, why = "✓", "alerted"
		case b.Detected:
			mark, why = "✓", "alerted in an earlier run"
		}
		lines = append(lines, fmt.Sprintf("  %s %-12s %s %s → %s:%d  sleep %s: %s", mark, l.Framework,
			shortHost(l.DeviceName), l.FileName, l.RemoteIP, l.RemotePort, l.Sleep, why))
	}
	fmt.Fprintf(w, "Planted implants alerted: %d of %d\n", sc.TruePositives, sc.TruePositives+sc.FalseNegatives)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	// Which benign timers were alerted, by product: the scorecard counts
	// tuples, the names say which products they are.
	alerted := make(map[beacon.Tuple]bool)
	for _, d := range dets {
		alerted[d.Tuple] = true
	}
	names := func(class string) string {
		var n []string
		for _, l := range labels {
			if l.Class == class && alerted[l.Tuple] {
				n = append(n, l.Name)
			}
		}
		if len(n) == 0 {
			return "0"
		}
		sort.Strings(n)
		return fmt.Sprintf("%d (%s)", len(n), strings.Join(slices.Compact(n), ", "))
	}
	fmt.Fprintf(w, "Benign updaters alerted: %s — periodic by design; the query flags them and an analyst dismisses them\n", names(fleet.ClassUpdater))
	fmt.Fprintf(w, "Fleet services alerted: %s — the device cap (%d) keeps what many devices poll out\n",
		names(fleet.ClassFleetService), c.params.CompromisedDeviceCountMax)
	other := 0
	for _, cl := range sc.Classes {
		if cl.Class == fleet.ClassUnlabelled {
			other = cl.Detected
		}
	}
	fmt.Fprintf(w, "Other tuples alerted: %d\n", other)
	if c.dataDir != "" {
		fmt.Fprintf(w, "Topics kept in %s; run again with --data-dir to continue.\n", c.dataDir)
	}
}

// missReason says why the query cannot have found an implant yet.
func (c *demoConfig) missReason(l fleet.Label) string {
	need := c.params.TotalEventsThresholdMin + 1 // seed: more than TotalEventsThresholdMin
	if c.params.Profile == beacon.ProfileRobust {
		need = c.params.Robust.MinCallbacks // robust reports from MinCallbacks
	}
	switch {
	case l.Events < need:
		return fmt.Sprintf("only %d callbacks logged so far; the profile needs %d", l.Events, need)
	case time.Duration(need)*l.GapMin > c.params.Lookback:
		return fmt.Sprintf("%d callbacks do not fit in the %s window", need, c.params.Lookback)
	}
	if c.params.Profile == beacon.ProfileRobust {
		return "never scored as a beacon (see its sub-scores with hunt --profile robust --threshold 0; docs/robust.md)"
	}
	return "never in the query's set (a missed or doubled callback makes a near-perfect timer's gaps outliers; see docs/streaming.md)"
}

func (c *demoConfig) loadClock() (time.Time, bool) {
	if c.dataDir == "" {
		return time.Time{}, false
	}
	b, err := os.ReadFile(filepath.Join(c.dataDir, "fleet-clock"))
	if err != nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	return t, err == nil
}

func (c *demoConfig) saveClock(t time.Time) {
	os.WriteFile(filepath.Join(c.dataDir, "fleet-clock"), []byte(t.UTC().Format(time.RFC3339Nano)+"\n"), 0o644)
}

// implantsOpt maps --implants to fleet.Config.Implants, where 0 means the
// default and a negative count none.
func implantsOpt(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}
