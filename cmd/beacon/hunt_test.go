package main

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// writeBeaconFile writes a JSON-lines export with one 60 s beacon (20
// callbacks), some browsing, and one malformed line (line 4).
func writeBeaconFile(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	start, _ := beacon.ParseTime([]byte("2024-05-01T10:00:00Z"))
	line := func(ts beacon.Time, ip, proc, url string) {
		fmt.Fprintf(&b, `{"Timestamp":"%s","DeviceId":"dev1","DeviceName":"wks-1","ActionType":"ConnectionSuccess",`+
			`"RemoteIP":"%s","RemotePort":443,"RemoteUrl":"%s","RemoteIPType":"Public","InitiatingProcessFileName":"%s",`+
			`"InitiatingProcessAccountName":"alice","InitiatingProcessAccountDomain":"contoso"}`+"\n", ts, ip, url, proc)
	}
	for i := 0; i < 20; i++ {
		line(start+beacon.Time(i)*60*beacon.Second+beacon.Time(i%3)*beacon.Second+beacon.Second/10, "45.77.1.10", "rundll32.exe", "cdn.a.evil.example.com")
		if i == 1 {
			b.WriteString("{\"Timestamp\":\"2024-05-01T10:\n")
		}
		line(start+beacon.Time(i*i)*7*beacon.Second, fmt.Sprintf("20.1.1.%d", i), "chrome.exe", "www.example.org")
	}
	path := filepath.Join(t.TempDir(), "export.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestHuntJSONL(t *testing.T) {
	path := writeBeaconFile(t)
	out, errOut, err := runCmd(t, "hunt", "--format", "jsonl", path)
	if err != nil {
		t.Fatal(err, errOut)
	}
	if !strings.Contains(errOut, path+":4: ") || !strings.Contains(errOut, "skipped 1 malformed line") {
		t.Fatalf("stderr does not name the bad line %s:4 and the count:\n%s", path, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one beacon, got:\n%s", out)
	}
	// Columns in the query's order.
	dec := json.NewDecoder(strings.NewReader(lines[0]))
	dec.UseNumber()
	var keys []string
	dec.Token() // the opening brace
	for dec.More() {
		k, _ := dec.Token()
		keys = append(keys, k.(string))
		var v any
		dec.Decode(&v)
	}
	if strings.Join(keys, ",") != strings.Join(beacon.OutputColumns, ",") {
		t.Fatalf("columns %v\nwant %v", keys, beacon.OutputColumns)
	}
	var row map[string]any
	json.Unmarshal([]byte(lines[0]), &row)
	if row["RemoteIP"] != "45.77.1.10" || row["count_"] != 19.0 || row["min_Timestamp"] != "2024-05-01T10:00:00.1Z" ||
		row["max_Timestamp"] != "2024-05-01T10:18:00.1Z" || row["Duration"] != 1080.0 || row["Timestamp"] != row["min_Timestamp"] {
		t.Fatalf("row: %v", row)
	}
	if d, _ := row["Domains"].([]any); len(d) != 1 || d[0] != "evil.example.com" {
		t.Fatalf("Domains = %v", row["Domains"])
	}
}

func TestHuntCSVAndTable(t *testing.T) {
	path := writeBeaconFile(t)
	out, _, err := runCmd(t, "hunt", "--format", "csv", "--quiet", path)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) != 2 || strings.Join(recs[0], ",") != strings.Join(beacon.OutputColumns, ",") {
		t.Fatalf("csv: %v %v", recs, err)
	}
	out, _, err = runCmd(t, "hunt", "--quiet", path)
	if err != nil || !strings.Contains(out, "rundll32.exe") || !strings.Contains(out, "1 beacon(s)") {
		t.Fatalf("table:\n%s %v", out, err)
	}
	// --end before the beacon's events: nothing.
	out, _, err = runCmd(t, "hunt", "--quiet", "--format", "jsonl", "--end", "2024-05-01T10:05:00Z", path)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("--end before the beacon: %q %v", out, err)
	}
	// Parameters are flags: a 0.5% jitter threshold drops the beacon (whole
	// second offsets make the gaps 58–61 s).
	out, _, err = runCmd(t, "hunt", "--quiet", "--format", "jsonl", "--jitter-threshold", "0.5", path)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("--jitter-threshold 0.5: %q %v", out, err)
	}
}

func TestHuntUsageErrors(t *testing.T) {
	path := writeBeaconFile(t)
	for _, args := range [][]string{
		{"hunt"},
		{"hunt", "--format", "xml", path},
		{"hunt", "--end", "tomorrow", path},
		{"hunt", "--lookback", "-1h", path},
		{"hunt", "--no-such-flag", path},
	} {
		_, _, err := runCmd(t, args...)
		var u usageError
		if !errors.As(err, &u) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
	if _, _, err := runCmd(t, "hunt", filepath.Join(t.TempDir(), "missing.jsonl")); err == nil {
		t.Error("a missing file must fail")
	}
	out, _, err := runCmd(t, "hunt", "--help") // help goes to stdout
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(out, "Examples:") || !strings.Contains(out, "-jitter-threshold") {
		t.Errorf("--help: %v\n%s", err, out)
	}
}

var update = flag.Bool("update", false, "rewrite golden files")

// The shipped sample (made by `beacon simulate --devices 20 --seed 7`)
// gives the rows in testdata/sample.hunt.jsonl: a regression check on every
// column, in the query's order. Regenerate with go test -run Golden -update.
func TestHuntSampleGolden(t *testing.T) {
	out, errOut, err := runCmd(t, "hunt", "--format", "jsonl", "../../testdata/sample.jsonl.gz")
	if err != nil {
		t.Fatal(err, errOut)
	}
	golden := "../../testdata/sample.hunt.jsonl"
	if *update {
		os.WriteFile(golden, []byte(out), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Fatalf("hunt on the sample differs from %s (go test -run Golden -update to accept):\n%s", golden, out)
	}
	if strings.Count(out, "\n") < 5 {
		t.Fatal("the sample should hold several beacons")
	}
}
