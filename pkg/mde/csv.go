package mde

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// RequiredColumns are the columns a CSV export must have: the query
// filters on them or groups by them, so without one its answer would be
// silently wrong. RemoteIPType and RemoteUrl may be left out (no filter on
// the type, no domains).
var RequiredColumns = []string{
	"Timestamp", "DeviceId", "DeviceName", "ActionType", "RemoteIP", "RemotePort",
	"InitiatingProcessFileName", "InitiatingProcessAccountName", "InitiatingProcessAccountDomain",
}

// knownColumns tell a CSV header: columns of DeviceNetworkEvents.
var knownColumns = map[string]bool{
	"Timestamp": true, "DeviceId": true, "DeviceName": true, "ActionType": true, "RemoteIP": true,
	"RemotePort": true, "RemoteUrl": true, "RemoteIPType": true, "LocalIP": true, "LocalPort": true,
	"Protocol": true, "LocalIPType": true, "InitiatingProcessFileName": true, "InitiatingProcessAccountName": true,
	"InitiatingProcessAccountDomain": true, "InitiatingProcessId": true, "ReportId": true, "AdditionalFields": true,
	"InitiatingProcessSHA256": true, "InitiatingProcessSHA1": true, "InitiatingProcessFolderPath": true,
	"InitiatingProcessCommandLine": true,
}

// isCSV tells a CSV export by its first line: not JSON, and at least two
// fields that are column names of DeviceNetworkEvents. Anything else is
// read as JSON lines, so that a garbled first line is reported as a bad
// line rather than failing the file.
func isCSV(head []byte) bool {
	if i := bytes.IndexByte(head, '\n'); i >= 0 {
		head = head[:i]
	}
	head = bytes.TrimSpace(head)
	if len(head) == 0 || head[0] == '{' || head[0] == '[' {
		return false
	}
	known := 0
	for _, f := range bytes.Split(head, []byte{','}) {
		if knownColumns[string(bytes.Trim(bytes.TrimSpace(f), `"`))] {
			known++
		}
	}
	return known >= 2
}

// MissingColumnsError is a CSV header without columns the query needs.
type MissingColumnsError struct{ Columns []string }

func (e *MissingColumnsError) Error() string {
	return fmt.Sprintf("CSV header lacks %s (an Advanced Hunting export of DeviceNetworkEvents has them: project them in the query)",
		strings.Join(e.Columns, ", "))
}

func readCSV(ctx context.Context, br *bufio.Reader, source string, opt Options, counted *countingReader, fn func([]beacon.Event)) (Stats, error) {
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	cr.LazyQuotes = false
	st := Stats{Shape: ShapeCSV}
	header, err := cr.Read()
	if err != nil {
		return st, fmt.Errorf("%s: reading CSV header: %w", source, err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.TrimPrefix(strings.TrimSpace(h), "\ufeff")
		if _, dup := col[h]; !dup {
			col[h] = i
		}
	}
	var missing []string
	for _, c := range RequiredColumns {
		if _, ok := col[c]; !ok {
			missing = append(missing, c)
		}
	}
	if missing != nil {
		return st, fmt.Errorf("%s:1: %w", source, &MissingColumnsError{missing})
	}
	idx := func(name string) int {
		if i, ok := col[name]; ok {
			return i
		}
		return -1
	}
	cols := csvColumns{
		ts: idx("Timestamp"), port: idx("RemotePort"), typ: idx("Type"), addl: idx("AdditionalFields"),
		pid: idx("InitiatingProcessId"), rid: idx("ReportId"),
	}
	for i, name := range []string{"DeviceId", "DeviceName", "ActionType", "RemoteIP", "RemoteIPType", "RemoteUrl",
		"InitiatingProcessAccountName", "InitiatingProcessAccountDomain", "InitiatingProcessFileName",
		"InitiatingProcessSHA256", "InitiatingProcessSHA1", "InitiatingProcessFolderPath", "InitiatingProcessCommandLine"} {
		cols.str[i] = idx(name)
	}
	st.Lines = 1
	batch := make([]beacon.Event, 0, 4096)
	arena := make([]byte, 0, 1<<20)
	flush := func() {
		if len(batch) > 0 {
			fn(batch)
			batch, arena = batch[:0], arena[:0]
		}
		if opt.OnProgress != nil {
			opt.OnProgress(counted.n)
		}
	}
	report := func(line int, err error) {
		st.Bad++
		if opt.OnBad != nil {
			opt.OnBad(BadLine{source, int64(line), err})
		}
	}
	for ctx.Err() == nil {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		st.Lines++
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return st, fmt.Errorf("%s: %w", source, err)
			}
			report(pe.StartLine, pe.Err)
			continue
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != len(header) {
			report(line, fmt.Errorf("%d fields, header has %d", len(rec), len(header)))
			continue
		}
		if cols.typ >= 0 && !isNetworkCategory([]byte(rec[cols.typ])) {
			st.Other++
			continue
		}
		if cap(arena)-len(arena) < 4096 && len(batch) > 0 {
			flush() // events alias the arena: hand them over before it fills
		}
		var ev beacon.Event
		if arena, err = cols.event(rec, &ev, arena, opt.QueryOnly); err != nil {
			report(line, err)
			continue
		}
		st.Events++
		batch = append(batch, ev)
		if len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	return st, nil
}

type csvColumns struct {
	ts, port, typ, addl, pid, rid int
	str                           [13]int
}

func (c *csvColumns) event(rec []string, ev *beacon.Event, arena []byte, queryOnly bool) ([]byte, error) {
	ts := strings.TrimSpace(rec[c.ts])
	if ts == "" {
		return arena, errors.New("no Timestamp")
	}
	t, err := beacon.ParseTime([]byte(ts))
	if err != nil {
		return arena, fmt.Errorf("Timestamp %q: %w", ts, err)
	}
	ev.Timestamp = t
	if p := strings.TrimSpace(rec[c.port]); p != "" {
		if ev.RemotePort, err = ParsePort([]byte(p)); err != nil {
			return arena, err
		}
		ev.HasPort = true
	}
	dsts := [13]*string{&ev.DeviceId, &ev.DeviceName, &ev.ActionType, &ev.RemoteIP, &ev.RemoteIPType, &ev.RemoteUrl,
		&ev.AccountName, &ev.AccountDomain, &ev.FileName, &ev.SHA256, &ev.SHA1, &ev.FolderPath, &ev.CommandLine}
	n := len(dsts)
	if queryOnly {
		n = 9
	}
	for i := range n {
		if j := c.str[i]; j >= 0 && rec[j] != "" {
			// rec is reused by the CSV reader: keep a copy in the arena,
			// which is not written again before fn has seen the event.
			if cap(arena)-len(arena) < len(rec[j]) {
				*dsts[i] = strings.Clone(rec[j])
				continue
			}
			start := len(arena)
			arena = append(arena, rec[j]...)
			*dsts[i] = bytesString(arena[start:])
		}
	}
	if !queryOnly {
		for _, f := range []struct {
			i   int
			dst *int64
			n   string
		}{{c.pid, &ev.ProcessId, "InitiatingProcessId"}, {c.rid, &ev.ReportId, "ReportId"}} {
			if f.i >= 0 {
				if v := strings.TrimSpace(rec[f.i]); v != "" {
					if *f.dst, err = parseInt([]byte(v)); err != nil {
						return arena, fmt.Errorf("%s %q is not an integer", f.n, v)
					}
				}
			}
		}
	}
	if c.addl >= 0 && hasSuffix(ev.ActionType, "AggregatedReport") {
		if ev.AggregatedCount, err = aggregatedCount(&row{addl: []byte(rec[c.addl]), addlStr: true}); err != nil {
			return arena, err
		}
	}
	return arena, nil
}
