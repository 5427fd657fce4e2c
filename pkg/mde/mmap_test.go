package mde

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"slices"
	"sync"
	"testing"
	"unicode/utf16"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// TestMappedFile reads files big enough to be mapped (JSON lines, with a
// BOM, bad lines and a line longer than a chunk; pretty-printed values)
// through an *os.File and through a plain reader of the same bytes, and
// holds the two to the same events, bad lines (their line numbers) and
// counts, in order and with Concurrent.
func TestMappedFile(t *testing.T) {
	dir := t.TempDir()
	row := func(i int) string {
		return fmt.Sprintf(`{"Timestamp":"2024-05-01T10:%02d:%02d.%07dZ","DeviceId":"d%d","DeviceName":"w%d","ActionType":"ConnectionSuccess","RemoteIP":"8.8.%d.%d","RemotePort":%d,"RemoteUrl":"u%d.example","RemoteIPType":"Public","InitiatingProcessFileName":"p.exe","InitiatingProcessAccountName":"a","InitiatingProcessAccountDomain":"b"}`,
			i/60%60, i%60, i, i%97, i%13, i%251, i%7, 440+i%5, i%11)
	}
	var lines, values bytes.Buffer
	lines.Write(utf8BOM)
	for i := 0; lines.Len() < mapMin+3*chunkSize; i++ {
		switch {
		case i%5000 == 17:
			lines.WriteString(`{"Timestamp":"broken"` + "\r\n")
		case i == 9000:
			// A line longer than a chunk, cut nowhere inside.
			lines.WriteString(`{"Skipped":"` + string(bytes.Repeat([]byte{'x'}, chunkSize+100)) + `",` + row(i)[1:] + "\n")
		default:
			lines.WriteString(row(i) + "\n")
		}
	}
	values.WriteString("[\n")
	for i := 0; values.Len() < mapMin+chunkSize; i++ {
		if i > 0 {
			values.WriteString(",\n")
		}
		if i%3000 == 5 {
			values.WriteString("  {\n    \"Timestamp\": null\n  }")
			continue
		}
		values.WriteString("  " + row(i))
	}
	values.WriteString("\n]\n")
	// An array of rows, four hundred to a line (the first line is longer
	// than Read's buffer); rows one to a line, then indented (files put
	// together); and the pretty values in UTF-16, as Windows PowerShell
	// writes them: all read as values, whole.
	var many, mixed bytes.Buffer
	many.WriteString("[")
	for i := 0; many.Len() < mapMin+chunkSize; i++ {
		if i > 0 {
			many.WriteString(",")
			if i%400 == 0 {
				many.WriteString("\n")
			}
		}
		if i%3000 == 5 {
			many.WriteString(`{"Timestamp":null}`)
			continue
		}
		many.WriteString(row(i))
	}
	many.WriteString("]\n")
	for i := 0; mixed.Len() < mapMin+chunkSize; i++ {
		switch {
		case i%3000 == 5:
			mixed.WriteString("{\n  \"Timestamp\": null\n}\n")
		case i < 100 || i%2 == 0:
			mixed.WriteString(row(i) + "\n")
		default:
			var b bytes.Buffer
			json.Indent(&b, []byte(row(i)), "", "  ")
			mixed.WriteString(b.String() + "\n")
		}
	}
	utf16le := []byte{0xff, 0xfe}
	for _, u := range utf16.Encode([]rune(values.String())) {
		utf16le = binary.LittleEndian.AppendUint16(utf16le, u)
	}

	for _, in := range []struct {
		name string
		data []byte
		want Shape
	}{
		{"lines.jsonl", lines.Bytes(), ShapeLines},
		{"values.json", values.Bytes(), ShapeValues},
		{"many-a-line.json", many.Bytes(), ShapeValues},
		{"mixed.json", mixed.Bytes(), ShapeValues},
		{"utf16.json", utf16le, ShapeValues},
	} {
		path := filepath.Join(dir, in.name)
		if err := os.WriteFile(path, in.data, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, concurrent := range []bool{false, true} {
			read := func(r io.Reader) ([]beacon.Event, []BadLine, Stats) {
				var evs []beacon.Event
				var bad []BadLine
				var mu sync.Mutex // with Concurrent, batches come from every worker at once
				st, err := Read(context.Background(), r, path, Options{Workers: 2, Concurrent: concurrent,
					OnBad: func(b BadLine) { bad = append(bad, b) }},
					func(b []beacon.Event) {
						mu.Lock()
						defer mu.Unlock()
						for i := range b {
							evs = append(evs, b[i].Clone())
						}
					})
				if err != nil {
					t.Fatalf("%s: %v", in.name, err)
				}
				return evs, bad, st
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			gotEvs, gotBad, gotSt := read(f)
			f.Close()
			wantEvs, wantBad, wantSt := read(struct{ io.Reader }{bytes.NewReader(in.data)}) // not an *os.File: read, not mapped
			if len(wantBad) == 0 || wantSt.Events < 10000 || wantSt.Shape != in.want {
				t.Fatalf("%s: read as %s (want %s), %d bad lines, %d events", in.name, wantSt.Shape, in.want, len(wantBad), wantSt.Events)
			}
			text := in.data
			if in.name == "utf16.json" {
				text = values.Bytes()
			}
			if rows := int64(bytes.Count(text, []byte(`"InitiatingProcessAccountDomain"`))); wantSt.Events != rows {
				t.Errorf("%s: %d events of %d rows", in.name, wantSt.Events, rows)
			}
			if concurrent {
				sortEvents(gotEvs)
				sortEvents(wantEvs)
			}
			if gotSt != wantSt || !reflect.DeepEqual(gotBad, wantBad) || !reflect.DeepEqual(gotEvs, wantEvs) {
				t.Errorf("%s (concurrent %v): mapped %+v, %d events, bad %v\nread %+v, %d events, bad %v",
					in.name, concurrent, gotSt, len(gotEvs), gotBad, wantSt, len(wantEvs), wantBad)
			}
		}
	}
}

// sortEvents orders events by time (the test's are all distinct).
func sortEvents(evs []beacon.Event) {
	slices.SortFunc(evs, func(a, b beacon.Event) int { return cmp.Compare(a.Timestamp, b.Timestamp) })
}

// TestMappedFileTruncated maps a file, truncates it, and reads a page
// that is gone: the fault is errFileChanged, not a crash.
func TestMappedFileTruncated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "day.jsonl")
	if err := os.WriteFile(path, bytes.Repeat([]byte("{}\n"), mapMin), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := mapFile(f, 3*mapMin)
	if err != nil {
		t.Skipf("no mmap here: %v", err) // not unix: Read reads the file instead
	}
	defer unmapFile(data)
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	var b byte
	err = catchFault(data, func() { b = data[len(data)-1] })
	if !errors.Is(err, errFileChanged) {
		t.Fatalf("reading a truncated mapping: %v (byte %q), want errFileChanged", err, b)
	}
	// A fault outside the mapping is not the file's: it goes on.
	defer func() {
		if r := recover(); r == nil {
			t.Error("a fault outside the mapping was caught")
		}
	}()
	catchFault(data[:1], func() { b = data[len(data)-1] })
}

// TestMappedFileTruncatedInCallback: a file truncated while Read hands
// its events over in order is an error (errFileChanged), not a crash,
// though the callback is what reads the strings that alias the vanished
// pages; no batch is handed over after the fault.
func TestMappedFileTruncatedInCallback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "day.jsonl")
	row := []byte(`{"Timestamp":"2024-05-01T10:00:00Z","DeviceId":"d1","DeviceName":"w1","ActionType":"ConnectionSuccess","RemoteIP":"8.8.8.8","RemotePort":443,"RemoteIPType":"Public","InitiatingProcessFileName":"p.exe"}` + "\n")
	if err := os.WriteFile(path, bytes.Repeat(row, 2*mapMin/len(row)), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	calls, after := 0, 0
	var sum byte
	_, err = Read(context.Background(), f, "day.jsonl", Options{}, func(evs []beacon.Event) {
		if calls++; calls == 1 {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		} else {
			after++
		}
		for i := range evs {
			for j := 0; j < len(evs[i].DeviceId); j++ {
				sum += evs[i].DeviceId[j] // a mapped page that is gone: a fault
			}
		}
	})
	if !errors.Is(err, errFileChanged) {
		t.Fatalf("Read of a file truncated under its callback: %v (%d calls), want errFileChanged", err, calls)
	}
	if after != 0 {
		t.Errorf("%d batches handed over after the fault", after)
	}
	_ = sum
}
