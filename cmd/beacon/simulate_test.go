package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

// smallFleet keeps the runs in tests to a few thousand events.
var smallFleet = []string{"simulate", "--devices", "10", "--hours", "3", "--start", "2024-05-01T08:00:00Z", "--implants", "3"}

func simArgs(extra ...string) []string { return append(append([]string(nil), smallFleet...), extra...) }

func TestSimulateHelp(t *testing.T) {
	errOut, _, err := runCmd(t, "simulate", "--help") // help goes to stdout
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	help := string(errOut)
	for _, want := range []string{"Usage: beacon simulate [flags]", "Examples:", "beacon simulate --out", "--brokers", "Labels"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	for _, f := range []string{"seed", "devices", "hours", "start", "implants", "updaters", "frameworks", "sleeps",
		"drop", "dup", "late", "max-late", "out", "format", "batch", "tenant", "labels", "brokers", "topic", "topic-format", "quiet"} {
		if !strings.Contains(help, "\n  -"+f+" ") && !strings.Contains(help, "\n  -"+f+"\n") {
			t.Errorf("help does not explain -%s", f)
		}
	}
}

func TestSimulateUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--devices", "0"},
		{"--hours", "-1"},
		{"--start", "yesterday"},
		{"--format", "xml"},
		{"--implants", "-2"},
		{"--drop", "1.5"},
		{"--sleeps", "5 parsecs"},
		{"--frameworks", "havoc"},
		{"--brokers", "127.0.0.1:1"},
		{"--topic", "x"},
		{"--brokers", "127.0.0.1:1", "--topic", "x", "--topic-format", "xml"},
		{"--out", "-", "--labels", "-"},
		{"extra-argument"},
	} {
		_, _, err := runCmd(t, append([]string{"simulate"}, args...)...)
		var u usageError
		if !errors.As(err, &u) {
			t.Errorf("%v: got %v, want a usage error", args, err)
		}
	}
}

func readMaybeGzip(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".gz") {
		z, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(z); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestSimulateDeterministic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name string) string { return filepath.Join(dir, name) }
	for _, name := range []string{"a", "b"} {
		_, errOut, err := runCmd(t, simArgs("--out", file(name+".jsonl.gz"), "--labels", file(name+".labels"))...)
		if err != nil {
			t.Fatal(err, string(errOut))
		}
		if !strings.Contains(errOut, "beacons planted") || !strings.Contains(errOut, "events/s") {
			t.Errorf("no summary on stderr: %s", errOut)
		}
	}
	if _, _, err := runCmd(t, simArgs("--seed", "2", "--out", file("c.jsonl.gz"))...); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(file(name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(read("a.jsonl.gz"), read("b.jsonl.gz")) || !bytes.Equal(read("a.labels"), read("b.labels")) {
		t.Error("same flags, different bytes")
	}
	if bytes.Equal(read("a.jsonl.gz"), read("c.jsonl.gz")) {
		t.Error("different seeds, same events")
	}

	// The labels agree with the events.
	events := readMaybeGzip(t, file("a.jsonl.gz"))
	counts := map[fleet.Tuple]int64{}
	sc := bufio.NewScanner(bytes.NewReader(events))
	sc.Buffer(nil, 1<<20)
	n := 0
	for ; sc.Scan(); n++ {
		var e beacon.Event
		var raw struct {
			Timestamp                      string
			DeviceId, DeviceName           string
			InitiatingProcessAccountName   string
			InitiatingProcessAccountDomain string
			InitiatingProcessFileName      string
			RemoteIP                       string
			RemotePort                     *int32
		}
		if err := json.Unmarshal(sc.Bytes(), &raw); err != nil {
			t.Fatalf("line %d: %v", n+1, err)
		}
		if _, err := beacon.ParseTime([]byte(raw.Timestamp)); err != nil {
			t.Fatalf("line %d: %v", n+1, err)
		}
		e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName, e.RemoteIP =
			raw.DeviceId, raw.DeviceName, raw.InitiatingProcessAccountName, raw.InitiatingProcessAccountDomain, raw.InitiatingProcessFileName, raw.RemoteIP
		if raw.RemotePort != nil {
			e.RemotePort = *raw.RemotePort
		}
		counts[e.Tuple()]++
	}
	if n < 2000 {
		t.Errorf("only %d events", n)
	}
	f, err := os.Open(file("a.labels"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	labels, err := fleet.ReadLabels(f)
	if err != nil {
		t.Fatal(err)
	}
	implants := 0
	for _, l := range labels {
		if l.Events != counts[l.Tuple] {
			t.Errorf("%s %s: label says %d events, file has %d", l.Class, l.Name, l.Events, counts[l.Tuple])
		}
		if l.Class == fleet.ClassImplant {
			implants++
			if l.Events == 0 {
				t.Errorf("implant without events: %+v", l)
			}
		}
	}
	if implants != 3 {
		t.Errorf("%d implants labelled, planted 3", implants)
	}
}

// TestSimulateFormats checks that every file format holds the same events.
func TestSimulateFormats(t *testing.T) {
	t.Parallel()
	jsonlOut, _, err := runCmd(t, simArgs("--quiet")...)
	if err != nil {
		t.Fatal(err)
	}
	var want []map[string]any
	dec := json.NewDecoder(strings.NewReader(jsonlOut))
	dec.UseNumber()
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		want = append(want, m)
	}
	str := func(v any) string {
		switch v := v.(type) {
		case nil:
			return ""
		case json.Number:
			return v.String()
		case string:
			return v
		}
		t.Fatalf("value %v of type %T", v, v)
		return ""
	}

	envOut, _, err := runCmd(t, simArgs("--quiet", "--format", "envelope", "--batch", "9")...)
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	dec = json.NewDecoder(strings.NewReader(envOut))
	dec.UseNumber()
	for {
		var msg struct {
			Records []struct{ Properties map[string]any }
		}
		if err := dec.Decode(&msg); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if len(msg.Records) > 9 {
			t.Fatalf("%d records in a batch of 9", len(msg.Records))
		}
		for _, r := range msg.Records {
			got = append(got, r.Properties)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("envelope has %d events, jsonl %d", len(got), len(want))
	}
	for i := range got {
		for _, c := range fleet.Columns {
			if str(got[i][c]) != str(want[i][c]) {
				t.Fatalf("event %d %s: envelope %v, jsonl %v", i, c, got[i][c], want[i][c])
			}
		}
	}

	csvOut, _, err := runCmd(t, simArgs("--quiet", "--format", "csv")...)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(csvOut)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rows[0], ",") != strings.Join(fleet.Columns, ",") || len(rows)-1 != len(want) {
		t.Fatalf("csv header %v, %d rows for %d events", rows[0], len(rows)-1, len(want))
	}
	for i, row := range rows[1:] {
		for j, c := range fleet.Columns {
			if row[j] != str(want[i][c]) {
				t.Fatalf("row %d %s: csv %q, jsonl %v", i+1, c, row[j], want[i][c])
			}
		}
	}
}

// TestSimulateHuntAgrees runs the seed query over the three text formats:
// the project's decoders must see the same events in each.
func TestSimulateHuntAgrees(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var first string
	for _, f := range []string{"jsonl", "envelope", "csv"} {
		path := filepath.Join(dir, "events."+f+".gz")
		if _, errOut, err := runCmd(t, "simulate", "--quiet", "--devices", "8", "--hours", "4", "--implants", "4",
			"--drop", "0", "--dup", "0", "--sleeps", "1m,2m,5m", "--format", f, "--out", path); err != nil {
			t.Fatal(err, string(errOut))
		}
		out, errOut, err := runCmd(t, "hunt", "--format", "jsonl", path)
		if err != nil {
			t.Fatalf("hunt %s: %v\n%s", f, err, errOut)
		}
		if first == "" {
			first = out
			if strings.Count(out, "\n") < 4 {
				t.Errorf("hunt found only\n%s", out)
			}
		} else if out != first {
			t.Errorf("hunt over %s differs from jsonl:\n%s\nvs\n%s", f, out, first)
		}
	}
}

func TestSimulateKafka(t *testing.T) {
	t.Parallel()
	c := testkit.NewCluster(t, testkit.Topics(3, "ev-json", "ev-envelope", "ev-avro"))
	addr := c.Addr
	enc, err := fleet.NewAvroEncoder()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, format := range []string{"json", "envelope", "avro"} {
		topic := "ev-" + format
		file := filepath.Join(dir, topic+".jsonl")
		// Produce, and write the same events to a file to count them.
		if _, errOut, err := runCmd(t, simArgs("--brokers", addr, "--topic", topic, "--topic-format", format, "--batch", "20", "--out", file)...); err != nil {
			t.Fatalf("%s: %v\n%s", format, err, errOut)
		}
		want := bytes.Count(readMaybeGzip(t, file), []byte("\n"))

		// Simulate returns once Kafka has acknowledged every message.
		events, messages := 0, 0
		for _, r := range testkit.ReadRecords(t, c, topic) {
			messages++
			var ids []string
			switch format {
			case "json":
				var m struct{ DeviceId, Timestamp string }
				if err := json.Unmarshal(r.Value, &m); err != nil {
					t.Fatalf("json message: %v", err)
				}
				ids = append(ids, m.DeviceId)
			case "envelope":
				var m struct {
					Records []struct{ Properties struct{ DeviceId string } }
				}
				if err := json.Unmarshal(r.Value, &m); err != nil {
					t.Fatalf("envelope message: %v", err)
				}
				if len(m.Records) == 0 || len(m.Records) > 20 {
					t.Errorf("envelope of %d records", len(m.Records))
				}
				for _, rec := range m.Records {
					ids = append(ids, rec.Properties.DeviceId)
				}
			case "avro":
				native, rest, err := enc.Codec().NativeFromBinary(r.Value)
				if err != nil || len(rest) != 0 {
					t.Fatalf("avro message: %v (%d bytes left)", err, len(rest))
				}
				id, _ := native.(map[string]any)["DeviceId"].(map[string]any)["string"].(string)
				ids = append(ids, id)
			}
			for _, id := range ids {
				if id != string(r.Key) {
					t.Errorf("%s: message keyed %q holds DeviceId %q", format, r.Key, id)
				}
			}
			events += len(ids)
		}
		if events != want {
			t.Errorf("%s: consumed %d events in %d messages, produced %d", format, events, messages, want)
		}
		if format == "envelope" && messages >= events {
			t.Errorf("envelope: %d messages for %d events: not batched", messages, events)
		}
	}
}

// TestSimulateKafkaUnreachable fails fast and clearly.
func TestSimulateKafkaUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var errOut bytes.Buffer
	err := run(ctx, simArgs("--brokers", "127.0.0.1:1", "--topic", "x"), stdio{nil, io.Discard, &errOut})
	if err == nil || !strings.Contains(err.Error(), "cannot reach Kafka") {
		t.Errorf("got %v", err)
	}
}
