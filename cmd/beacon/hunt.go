package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/mde"
)

const huntUsage = `hunt [flags] FILE...

Runs the seed query ("Suspicious Network Beacons", Cyb3rMonk) over
DeviceNetworkEvents exported from Advanced Hunting or captured from the
Defender Streaming API, and prints the beacons it finds, ordered like the
query (Jitter, then average sleep).

FILE is JSON lines (flat objects or Streaming API envelopes), or a CSV
export with a header row; gzip is read transparently; - reads stdin.
Malformed lines are reported as FILE:LINE and skipped (in an envelope,
only its bad records are).

Examples:
  beacon hunt testdata/sample.jsonl
  beacon hunt --format jsonl --end 2024-05-02T00:00:00Z export.csv.gz > beacons.jsonl
  beacon hunt --jitter-threshold 25 --sleep-min 675 --sleep-max 1125 events.jsonl

Flags:`

func runHunt(ctx context.Context, args []string, s stdio) error {
	p := beacon.Seed()
	fs := newFlags("hunt", huntUsage, s)
	end := fs.String("end", "", "the query's now, RFC 3339 (default: newest filtered Timestamp + 1s, the streaming detector's clock)")
	format := fs.String("format", "table", "output: table (for people), jsonl or csv (the query's columns)")
	workers := fs.Int("workers", 0, "JSON decoding goroutines (0 = one per CPU)")
	quiet := fs.Bool("quiet", false, "no progress or bad-line reports on stderr (the count is still printed)")
	profile := fs.String("profile", "seed", "detection profile: seed (the query, quirks included)")
	addParamFlags(fs, &p)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *profile != "seed" {
		return usagef("unknown profile %q (have: seed)", *profile)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return usagef("hunt: no input files (use - for stdin)")
	}
	if err := p.Validate(); err != nil {
		return usagef("hunt: %v", err)
	}
	write, err := rowWriter(*format)
	if err != nil {
		return err
	}
	var now beacon.Time
	if *end != "" {
		if now, err = beacon.ParseTime([]byte(*end)); err != nil {
			return usagef("hunt: --end %q: %v", *end, err)
		}
	}

	h := beacon.NewHunt(p)
	prog := newProgress(s.errOut, *quiet)
	defer prog.stop()
	var bad int64
	opt := mde.Options{
		Workers:    *workers,
		QueryOnly:  true, // the seed query reads only its own columns
		Concurrent: true, // Hunt.AddBatch takes chunks from every decoder at once
		OnBad: func(b mde.BadLine) {
			bad++
			if !*quiet && bad <= 20 {
				fmt.Fprintf(s.errOut, "beacon hunt: skipped %v\n", b)
			}
		},
		OnProgress: func(n int64) { prog.read.Store(n) },
	}
	for _, name := range fs.Args() {
		if err := huntFile(ctx, name, s.in, opt, h, prog); err != nil {
			return err
		}
	}
	prog.stop()
	if bad > 0 {
		fmt.Fprintf(s.errOut, "beacon hunt: skipped %d malformed line(s)\n", bad)
	}
	if now == 0 {
		var ok bool
		if now, ok = h.DefaultNow(); !ok {
			fmt.Fprintf(s.errOut, "beacon hunt: no event passed the query's filters in %d event(s)\n", h.Events())
		}
	}
	rows := h.Rows(now)
	return write(s.out, rows)
}

func rowWriter(format string) (func(io.Writer, []beacon.Row) error, error) {
	switch format {
	case "table":
		return beacon.WriteTable, nil
	case "jsonl":
		return beacon.WriteJSONL, nil
	case "csv":
		return beacon.WriteCSV, nil
	}
	return nil, usagef("unknown format %q (want table, jsonl or csv)", format)
}

func huntFile(ctx context.Context, name string, stdin io.Reader, opt mde.Options, h *beacon.Hunt, prog *progress) error {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			prog.begin(name, fi.Size())
		}
		r = f
	} else {
		prog.begin("stdin", 0)
	}
	_, err := mde.Read(ctx, r, name, opt, func(batch []beacon.Event) {
		h.AddBatch(batch)
		prog.events.Add(int64(len(batch)))
	})
	return err
}

// progress reports reading progress on stderr once a second, starting only
// after two seconds so that short runs stay quiet.
type progress struct {
	w      io.Writer
	off    bool
	read   atomic.Int64
	events atomic.Int64
	name   atomic.Pointer[string]
	size   atomic.Int64
	done   chan struct{}
	exited chan struct{}
	shown  bool // written by loop only; read after exited
}

func newProgress(w io.Writer, off bool) *progress {
	p := &progress{w: w, off: off, done: make(chan struct{}), exited: make(chan struct{})}
	if !off {
		go p.loop()
	}
	return p
}

func (p *progress) begin(name string, size int64) {
	p.name.Store(&name)
	p.size.Store(size)
	p.read.Store(0)
}

func (p *progress) loop() {
	defer close(p.exited)
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case now := <-t.C:
			el := now.Sub(start)
			if el < 2*time.Second {
				continue
			}
			name := ""
			if n := p.name.Load(); n != nil {
				name = *n
			}
			ev := p.events.Load()
			rate := float64(ev) / el.Seconds()
			if size := p.size.Load(); size > 0 {
				fmt.Fprintf(p.w, "\rbeacon hunt: %s %3.0f%%  %d events  %.0f events/s ", name,
					100*float64(p.read.Load())/float64(size), ev, rate)
			} else {
				fmt.Fprintf(p.w, "\rbeacon hunt: %s  %d events  %.0f events/s ", name, ev, rate)
			}
			p.shown = true
		}
	}
}

func (p *progress) stop() {
	if p.off {
		return
	}
	select {
	case <-p.done:
	default:
		close(p.done)
		<-p.exited
		if p.shown {
			fmt.Fprintln(p.w)
		}
	}
}
