package mde

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// The fuzz targets below are one per shape family. Each is seeded from the
// real-shaped fixtures of that family (testdata/shapes) and from a stored
// corpus (testdata/fuzz/<target>, written by TestGoldenShapes -update);
// go test runs the seeds, go test -fuzz=<target> explores from them.

// checkRead reads data whole: no panic; every bad line is named with a
// line inside the input, in input order; the counts add up.
func checkRead(t *testing.T, data []byte) {
	lines := int64(bytes.Count(data, []byte{'\n'}) + 1)
	var last, bad, events int64
	st, err := Read(context.Background(), bytes.NewReader(data), "fuzz", Options{Workers: 2,
		OnBad: func(b BadLine) {
			if b.Source != "fuzz" || b.Err == nil || b.Err.Error() == "" {
				t.Fatalf("bad line without a name or an error: %#v", b)
			}
			if st := b.Line; st < 1 || (st > lines && !bytes.HasPrefix(data, []byte("Obj\x01"))) || st < last {
				t.Fatalf("bad line %v out of range or order (input has %d lines, last %d)", b, lines, last)
			}
			last = b.Line
			bad++
		}}, func(b []beacon.Event) {
		events += int64(len(b))
	})
	if err != nil {
		if err.Error() == "" {
			t.Fatal("empty error")
		}
		return
	}
	if st.Bad != bad || st.Events != events {
		t.Fatalf("stats %+v, reported %d bad and %d events", st, bad, events)
	}
}

func seedShapes(f *testing.F, names ...string) {
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join("testdata/shapes", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

func FuzzReadJSONLines(f *testing.F) {
	seedShapes(f, "rows.jsonl", "bom-crlf.jsonl", "storage-account.json", "envelope.jsonl", "records-array.json")
	f.Add([]byte("{\"Timestamp\":\"2024-05-01T10:00:00Z\"}\nbroken\n\n{\"records\":[]}\nnull\n[]\n"))
	f.Fuzz(checkRead)
}

func FuzzReadJSONValues(f *testing.F) {
	seedShapes(f, "pretty.json", "rows-array.json", "advanced-hunting-api.json", "graph-hunting.json")
	f.Add([]byte("{\n\"Timestamp\":\"2024-05-01T10:00:00Z\"\n}\n{\n\"Timestamp\": 1\n}\n{\n\"x\": [\n"))
	f.Fuzz(checkRead)
}

func FuzzReadCSV(f *testing.F) {
	seedShapes(f, "export.csv")
	f.Add([]byte("Timestamp,RemotePort\n2024-05-01T10:00:00Z,1\n\"unterminated\n"))
	f.Fuzz(checkRead)
}

func FuzzReadAvro(f *testing.F) {
	seedShapes(f, "capture.avro")
	f.Fuzz(checkRead)
}

func FuzzReadGzip(f *testing.F) {
	seedShapes(f, "rows.jsonl.gz")
	f.Add([]byte("\x1f\x8b"))
	f.Fuzz(checkRead)
}

// writeFuzzCorpus stores the fixtures as the targets' seed corpus.
func writeFuzzCorpus(t *testing.T) {
	for target, names := range map[string][]string{
		"FuzzReadJSONLines":  {"rows.jsonl", "bom-crlf.jsonl", "storage-account.json", "envelope.jsonl", "records-array.json", "splunk-body.json"},
		"FuzzReadJSONValues": {"pretty.json", "rows-array.json", "advanced-hunting-api.json", "graph-hunting.json", "rows-many-a-line.json", "compact-then-pretty.json", "powershell-utf16.json"},
		"FuzzReadCSV":        {"export.csv", "powershell.csv"},
		"FuzzReadAvro":       {"capture.avro"},
		"FuzzReadGzip":       {"rows.jsonl.gz"},
		"FuzzDecode":         {"storage-account.json", "envelope.jsonl", "records-array.json", "pretty.json", "advanced-hunting-api.json"},
	} {
		dir := filepath.Join("testdata/fuzz", target)
		os.MkdirAll(dir, 0o755)
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join("testdata/shapes", n))
			if err != nil {
				t.Fatal(err)
			}
			if target == "FuzzDecode" {
				b = bytes.SplitN(b, []byte("\n"), 2)[0] // one message
			}
			if err := os.WriteFile(filepath.Join(dir, n), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
