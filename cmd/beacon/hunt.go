package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/mde"
)

const huntUsage = `hunt [flags] FILE...

Runs the seed query ("Suspicious Network Beacons", Cyb3rMonk) over
DeviceNetworkEvents exported from Advanced Hunting or captured from the
Defender Streaming API, and prints the beacons it finds, ordered like the
query (Jitter, then average sleep).

FILE is any shape Defender data comes in (see README "Hunting over a
file"): JSON lines of rows, of Streaming API records (a storage account's
files) or of Event Hubs envelopes; pretty-printed or concatenated JSON;
JSON arrays; Advanced Hunting API and Graph runHuntingQuery responses; a
CSV export with a header row; an Event Hubs Capture Avro file. gzip, a BOM,
CRLF and UTF-16 (Windows PowerShell's > and Out-File) are read
transparently; - reads stdin. Malformed lines are
reported as FILE:LINE and skipped (in an envelope, only its bad records
are). On stderr: the window used and the events in it.

Exit status: 0 when the input was read (beacons or none; skipped lines
are counted), 1 when no line decoded, the input is empty (no bytes) or
truncated, 2 for a bad command line.

Examples:
  beacon hunt testdata/sample.jsonl.gz
  beacon hunt --format jsonl --end 2024-05-02 testdata/sample.jsonl.gz
  beacon hunt --jitter-threshold 25 --sleep-min 675 --sleep-max 1125 export.csv.gz

Flags:`

func runHunt(ctx context.Context, args []string, s stdio) error {
	p := profileParams(args, huntProfile)
	fs := newFlags("hunt", huntUsage, s)
	end := fs.String("end", "", "the query's now: an ISO 8601 date or date-time (2024-05-02, 2024-05-02T10:00, …Z or +02:00; default: newest filtered Timestamp + 1s, the streaming detector's clock)")
	format := fs.String("format", "table", "output: table (for people), jsonl or csv (the query's columns)")
	workers := fs.Int("workers", 0, "JSON decoding goroutines, 0 to 1024 (0 = one per CPU)")
	quiet := fs.Bool("quiet", false, "no progress or bad-line reports on stderr (the count is still printed)")
	profile := addProfileFlags(fs, &p, huntProfile)
	allow := fs.String("allow", "", "suppress known-good rows after scoring: a file of `process|ip|port|domain|device VALUE` lines (docs/robust.md); the count goes to stderr")
	labels := fs.String("labels", "", "score the rows against this labels file ('beacon simulate --labels'); the scorecard goes to stderr")
	addParamFlags(fs, &p)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkProfile(&p, *profile); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("hunt: no input files (use - for stdin)")
	}
	if *workers < 0 || *workers > 1024 {
		return usagef("hunt: --workers must be in [0, 1024] (0 = one per CPU), got %d", *workers)
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
		if now, err = parseISO8601(*end); err != nil {
			return usagef("hunt: --end %q: %v", *end, err)
		}
	}

	defer huntGC()()
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
	var total mde.Stats
	for _, name := range fs.Args() {
		st, err := huntFile(ctx, name, s.in, opt, h, prog)
		if err != nil {
			return err
		}
		total.Lines += st.Lines
		total.Events += st.Events
		total.Bad += st.Bad
		total.Other += st.Other
	}
	prog.stop()
	if bad > 0 {
		fmt.Fprintf(s.errOut, "beacon hunt: skipped %d malformed line(s)\n", bad)
	}
	if total.Events == 0 && total.Bad > 0 {
		return fmt.Errorf("hunt: no line decoded (%d malformed): not DeviceNetworkEvents in a shape hunt reads (see 'beacon hunt --help')", total.Bad)
	}
	if total.Lines == 0 {
		// Not an empty result ([], {"Results":[]}, a CSV header): no bytes.
		return errors.New("hunt: the input is empty")
	}
	if now == 0 {
		if newest, ok := h.DefaultNow(); ok {
			now = newest
		} else {
			fmt.Fprintf(s.errOut, "beacon hunt: no event passed the query's filters in %d event(s)\n", h.Events())
		}
	}
	rows := h.Rows(now)
	if *allow != "" {
		if rows, err = applyAllowFile(*allow, rows, s.errOut); err != nil {
			return fmt.Errorf("hunt: --allow: %w", err)
		}
	}
	if *labels != "" {
		if err := writeHuntScore(s.errOut, *labels, &p, rows); err != nil {
			return fmt.Errorf("hunt: --labels: %w", err)
		}
	}
	if from, to, n := h.Window(now); now != 0 || n > 0 {
		fmt.Fprintf(s.errOut, "beacon hunt: window %s .. %s (now %s): %d of %d event(s) pass the filters in it; %d beacon(s)\n",
			from, to, now, n, h.Events(), len(rows))
	}
	return write(s.out, rows)
}

// parseISO8601 reads --end: an ISO 8601 date (midnight UTC) or date-time
// with minutes, seconds and fractions optional, and a zone of Z, ±hh:mm,
// ±hhmm or ±hh (none is UTC).
func parseISO8601(s string) (beacon.Time, error) {
	v := strings.TrimSpace(s)
	if len(v) == 10 {
		v += "T00:00:00"
	}
	if len(v) >= 16 && (v[10] == 'T' || v[10] == 't' || v[10] == ' ') {
		// Split off the zone, then pad the time to hh:mm:ss.
		clock, zone := v[11:], ""
		if i := strings.IndexAny(clock, "Zz+-"); i >= 0 {
			clock, zone = clock[:i], clock[i:]
		}
		if len(clock) == 5 {
			clock += ":00"
		}
		switch {
		case len(zone) == 3 && zone[0] != 'Z' && zone[0] != 'z':
			zone += ":00"
		case len(zone) == 5 && zone[0] != 'Z' && zone[0] != 'z' && !strings.Contains(zone, ":"):
			zone = zone[:3] + ":" + zone[3:]
		}
		v = v[:11] + clock + zone
	}
	t, err := beacon.ParseTime([]byte(v))
	if err != nil {
		return 0, errors.New("want an ISO 8601 date or date-time, e.g. 2024-05-02, 2024-05-02T10:00 or 2024-05-02T10:00:00.5+02:00")
	}
	return t, nil
}

func rowWriter(format string) (func(io.Writer, []beacon.Row) error, error) {
	switch format {
	case "table":
		return beacon.WriteTable, nil
	case "jsonl", "json": // json: the name some commands used
		return beacon.WriteJSONL, nil
	case "csv":
		return beacon.WriteCSV, nil
	}
	return nil, usagef("unknown format %q (want table, jsonl or csv)", format)
}

func huntFile(ctx context.Context, name string, stdin io.Reader, opt mde.Options, h *beacon.Hunt, prog *progress) (mde.Stats, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return mde.Stats{}, err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			prog.begin(name, fi.Size())
		}
		r = f
	} else {
		prog.begin("stdin", 0)
	}
	return mde.Read(ctx, r, name, opt, func(batch []beacon.Event) {
		h.AddBatch(batch)
		prog.events.Add(int64(len(batch)))
	})
}
