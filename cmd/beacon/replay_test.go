package main

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/stream"
)

// simulateDay writes a simulated fleet to topic and to a file, the same
// records, and returns the file.
func simulateDay(t *testing.T, addr, topic, format string, devices int, hours string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), topic+".jsonl.gz")
	cmdRun(t, "simulate", "--quiet", "--devices", fmt.Sprint(devices), "--hours", hours, "--sleeps", "30s,1m,5m",
		"--brokers", addr, "--topic", topic, "--topic-format", format, "--out", file)
	return file
}

// TestReplayEqualsHunt: at the end of a replay of a topic holding a
// simulated day, the beacon set is byte for byte what hunt prints over the
// same events — for flat JSON and Streaming API envelopes, with the seed
// parameters and others, with one or several detection partitions; with
// --end as hunt's --end; with --from/--to as hunt over the events of that
// range. (The evaluation interval changes alerts, never the final set: the
// variants use a long one to keep the test short under the race detector.)
func TestReplayEqualsHunt(t *testing.T) {
	t.Parallel()
	devices, envDevices := 60, 20
	if raceEnabled {
		devices, envDevices = 24, 8
	}
	addr := testkit.NewCluster(t, testkit.Topics(3, "day-json", "day-envelope")).Addr
	jsonFile := simulateDay(t, addr, "day-json", "json", devices, "24")
	envFile := simulateDay(t, addr, "day-envelope", "envelope", envDevices, "24")

	check := func(name, file, topic string, params []string, replayOnly ...string) string {
		t.Helper()
		want, _ := cmdRun(t, append([]string{"hunt", "--quiet", "--format", "jsonl"}, append(params, file)...)...)
		args := append([]string{"replay", "--profile", "seed", "--quiet", "--brokers", addr, "--topic", topic, "--format", "jsonl"}, params...)
		got, _ := cmdRun(t, append(args, replayOnly...)...)
		if got != want {
			t.Errorf("%s: replay differs from hunt:\n%s", name, firstDiff(got, want))
		}
		if strings.Count(want, "\n") < 3 {
			t.Errorf("%s: hunt finds only %d beacons: the test fleet is too easy to pass", name, strings.Count(want, "\n"))
		}
		return want
	}
	fast := []string{"--eval-interval", "10m"}
	seed := check("json, seed", jsonFile, "day-json", nil)
	j10 := check("json, --jitter-threshold 10, 3 partitions", jsonFile, "day-json", []string{"--jitter-threshold", "10"},
		append(fast, "--partitions", "3")...)
	if seed == j10 {
		t.Errorf("--jitter-threshold 10 changes nothing: a weak check")
	}
	check("json, --lookback 2h --total-events-threshold-min 10", jsonFile, "day-json",
		[]string{"--lookback", "2h", "--total-events-threshold-min", "10"}, fast...)
	check("envelope, seed", envFile, "day-envelope", nil, fast...)
	check("json, --end, 5 partitions", jsonFile, "day-json", []string{"--lookback", "3h", "--end", "2024-05-01T15:00:00Z"},
		append(fast, "--partitions", "5")...)

	// --from/--to: hunt over the events of the range.
	from, _ := beacon.ParseTime([]byte("2024-05-01T06:00:00Z"))
	to, _ := beacon.ParseTime([]byte("2024-05-01T12:30:00Z"))
	ranged := filepath.Join(t.TempDir(), "range.jsonl")
	n := filterEvents(t, jsonFile, ranged, func(ts beacon.Time) bool { return ts >= from && ts < to })
	hunt, _ := cmdRun(t, "hunt", "--quiet", "--format", "jsonl", "--lookback", "2h", ranged)
	got, errOut := cmdRun(t, append([]string{"replay", "--profile", "seed", "--brokers", addr, "--topic", "day-json", "--format", "jsonl", "--lookback", "2h",
		"--from", from.String(), "--to", to.String()}, fast...)...)
	if got != hunt || strings.Count(hunt, "\n") < 3 {
		t.Errorf("--from/--to: replay differs from hunt over the %d events in range (%d rows):\n%s", n, strings.Count(hunt, "\n"), firstDiff(got, hunt))
	}
	if !strings.Contains(errOut, "outside --from/--to") {
		t.Errorf("the summary does not count the events out of range:\n%s", errOut)
	}
}

// filterEvents copies the JSON lines of src whose Timestamp keep accepts
// to dst and returns how many.
func filterEvents(t *testing.T, src, dst string, keep func(beacon.Time) bool) int {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		var e struct{ Timestamp beacon.Time }
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if keep(e.Timestamp) {
			out.Write(sc.Bytes())
			out.WriteByte('\n')
			n++
		}
	}
	if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d (of %d vs %d):\n  replay %.400s\n  hunt   %.400s", i+1, len(al), len(bl), x, y)
		}
	}
	return "(equal)"
}

// TestReplayDeterministic: two replays of the same range give the same
// bytes — beacon set, alerts file (JSON lines and gzipped CSV) — and --alerts-topic
// receives the same alerts in the same order.
func TestReplayDeterministic(t *testing.T) {
	t.Parallel()
	c := testkit.NewCluster(t, testkit.Topics(3, "det", "det-alerts"))
	addr := c.Addr
	devices := 30
	if raceEnabled {
		devices = 10
	}
	simulateDay(t, addr, "det", "json", devices, "12")
	dir := t.TempDir()
	args := func(i int, ext string, extra ...string) []string {
		return append([]string{"replay", "--quiet", "--brokers", addr, "--topic", "det", "--format", "csv",
			"--lookback", "2h", "--warmup", "2h", "--partitions", "3", "--alerts", filepath.Join(dir, fmt.Sprintf("alerts%d.%s", i, ext))}, extra...)
	}
	out1, _ := cmdRun(t, args(1, "jsonl")...)
	out2, _ := cmdRun(t, args(2, "jsonl", "--alerts-topic", "det-alerts")...)
	out3, _ := cmdRun(t, args(3, "csv.gz")...) // CSV, gzipped
	if out1 != out2 || out1 != out3 {
		t.Errorf("beacon sets differ between replays:\n%s", firstDiff(out1, out2))
	}
	a1, _ := os.ReadFile(filepath.Join(dir, "alerts1.jsonl"))
	a2, _ := os.ReadFile(filepath.Join(dir, "alerts2.jsonl"))
	if !bytes.Equal(a1, a2) {
		t.Errorf("alerts differ between replays:\n%s", firstDiff(string(a1), string(a2)))
	}
	lines := strings.Split(strings.TrimSpace(string(a1)), "\n")
	if len(lines) < 5 {
		t.Fatalf("only %d alerts: a weak check", len(lines))
	}
	var ids []string
	var last beacon.Time
	for _, l := range lines {
		a, err := stream.ParseAlert([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		if a.StreamTime < last {
			t.Errorf("alerts not in stream-time order: %s after %s", a.StreamTime, last)
		}
		last = a.StreamTime
		ids = append(ids, a.ID)
	}
	// CSV: the same alerts, the alert's columns first, then the query's.
	recs, err := csv.NewReader(bytes.NewReader(readMaybeGzip(t, filepath.Join(dir, "alerts3.csv.gz")))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	cols := beacon.OutputColumns // replay's default profile's
	if streamProfile == beacon.ProfileRobust {
		cols = beacon.RobustColumns
	}
	if len(recs) != len(ids)+1 || strings.Join(recs[0], ",") != "AlertId,StreamTime,AlertEpoch,"+strings.Join(cols, ",") {
		t.Fatalf("alerts CSV: %d records, header %v", len(recs), recs[0])
	}
	for i, id := range ids {
		if recs[i+1][0] != id {
			t.Errorf("CSV alert %d is %s, JSON %s", i, recs[i+1][0], id)
		}
	}
	// The alert topic got the same alerts, keyed by tuple, in this order
	// within each partition.
	// (replay returns once the topic has acknowledged them).
	byPart := map[int32][]string{}
	for _, r := range testkit.ReadRecords(t, c, "det-alerts") {
		a, err := stream.ParseAlert(r.Value)
		if err != nil || string(r.Key) != string(a.Key()) {
			t.Errorf("alert record %d/%d: %v, key %s", r.Partition, r.Offset, err, r.Key)
		}
		byPart[r.Partition] = append(byPart[r.Partition], a.ID)
	}
	pos := map[string]int{}
	for i, id := range ids {
		pos[id] = i
	}
	total := 0
	for p, got := range byPart {
		total += len(got)
		for i := 1; i < len(got); i++ {
			if pos[got[i]] < pos[got[i-1]] {
				t.Errorf("alert topic partition %d out of order", p)
			}
		}
	}
	if total != len(ids) {
		t.Errorf("alert topic holds %d alerts, the file %d", total, len(ids))
	}
}

// TestReplayLabels: a hand-made history whose score is counted by hand.
//
// Lookback 1h, no warm-up, evaluation every 10 s of stream time, one
// partition; timers with perfect gaps from T0 = 10:00:00 (every gap equal:
// jitter 0, no outlier). A tuple enters the beacon set with its 16th
// timestamp (the query wants more than 15), and is alerted at the next
// evaluation point, which is at that stream time when the next event falls
// in another 10 s:
//
//	implant  A  d1 implant.exe 45.1.1.1:443   every 60 s  from T0,      30 callbacks  16th at T0+900s  → alerted at T0+900s
//	implant  B  d2 svc.exe     45.2.2.2:8443  every 60 s  from T0+5s,   10 callbacks  never 16         → missed
//	updater  U  d3 updater.exe 45.3.3.3:443   every 120 s from T0+10s,  20 callbacks  16th at T0+1810s → alerted at T0+1810s
//	service  F  d4 teams.exe   52.4.4.4:443   every 60 s  from T0+15s,   5 callbacks  never 16         → missed
//	(none)   N  d5 chrome.exe  45.5.5.5:443   every 90 s  from T0+20s,  25 callbacks  16th at T0+1370s → alerted at T0+1370s
//
// Implants are the positives: TP = 1 (A), FN = 1 (B), FP = 2 (U and the
// unlabelled N); precision 1/3, recall 1/2. Time to first alert: A 900 s,
// U 1800 s (its first callback is at T0+10s), B none.
func TestReplayLabels(t *testing.T) {
	t.Parallel()
	c := testkit.NewCluster(t, testkit.Topics(3, "hand"))
	addr := c.Addr
	t0, _ := beacon.ParseTime([]byte("2024-05-01T10:00:00Z"))
	type timer struct {
		class, name, dev, proc, ip string
		port                       int
		every, offset, n           int // seconds, seconds, callbacks
	}
	timers := []timer{
		{"implant", "A", "d1", "implant.exe", "45.1.1.1", 443, 60, 0, 30},
		{"implant", "B", "d2", "svc.exe", "45.2.2.2", 8443, 60, 5, 10},
		{"updater", "U", "d3", "updater.exe", "45.3.3.3", 443, 120, 10, 20},
		{"fleet-service", "F", "d4", "teams.exe", "52.4.4.4", 443, 60, 15, 5},
		{"", "N", "d5", "chrome.exe", "45.5.5.5", 443, 90, 20, 25},
	}
	dir := t.TempDir()
	var labels bytes.Buffer
	type event struct {
		ts beacon.Time
		v  string
	}
	var events []event
	for _, tm := range timers {
		first := t0 + beacon.Time(tm.offset)*beacon.Second
		if tm.class != "" {
			fmt.Fprintf(&labels, `{"class":%q,"name":%q,"sleep_s":%d,"jitter":0,"first_event":%q,"DeviceId":%q,"DeviceName":%q,`+
				`"InitiatingProcessAccountName":"user","InitiatingProcessAccountDomain":"corp","InitiatingProcessFileName":%q,`+
				`"RemoteIP":%q,"RemotePort":%d}`+"\n", tm.class, tm.name, tm.every, first, tm.dev, tm.dev, tm.proc, tm.ip, tm.port)
		}
		for k := 0; k < tm.n; k++ {
			ts := first + beacon.Time(k*tm.every)*beacon.Second
			v := fmt.Sprintf(`{"Timestamp":%q,"DeviceId":%q,"DeviceName":%q,"ActionType":"ConnectionSuccess","RemoteIP":%q,`+
				`"RemotePort":%d,"RemoteIPType":"Public","InitiatingProcessFileName":%q,"InitiatingProcessAccountName":"user",`+
				`"InitiatingProcessAccountDomain":"corp"}`, ts, tm.dev, tm.dev, tm.ip, tm.port, tm.proc)
			events = append(events, event{ts, v})
		}
	}
	// Each partition in event-time order, as a sensor's topic is.
	slices.SortStableFunc(events, func(a, b event) int { return cmp.Compare(a.ts, b.ts) })
	var recs []*kgo.Record
	for i, e := range events {
		recs = append(recs, &kgo.Record{Topic: "hand", Partition: int32(i % 3), Value: []byte(e.v)})
	}
	labelsFile := filepath.Join(dir, "labels.jsonl")
	os.WriteFile(labelsFile, labels.Bytes(), 0o644)
	c.ProducePinned(t, recs...)

	scoreFile := filepath.Join(dir, "score.json")
	alertsFile := filepath.Join(dir, "alerts.jsonl")
	out, errOut := cmdRun(t, "replay", "--profile", "seed", "--brokers", addr, "--topic", "hand", "--lookback", "1h", "--warmup", "-1s",
		"--labels", labelsFile, "--score", scoreFile, "--alerts", alertsFile, "--format", "jsonl")
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("beacon set of %d rows, want A, U and N:\n%s", n, out)
	}
	for _, want := range []string{"implants: 1 detected, 1 missed; 2 false positive(s); precision 0.333, recall 0.500",
		"CLASS", "implant", "updater", "fleet-service", "unlabelled", "15m0s", "30m0s"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("scorecard on stderr lacks %q:\n%s", want, errOut)
		}
	}

	// The alerts, by hand.
	b, _ := os.ReadFile(alertsFile)
	wantAlerts := map[string]beacon.Time{"d1": t0 + 900*beacon.Second, "d5": t0 + 1370*beacon.Second, "d3": t0 + 1810*beacon.Second}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != len(wantAlerts) {
		t.Fatalf("%d alerts, want 3:\n%s", len(lines), b)
	}
	for _, l := range lines {
		a, err := stream.ParseAlert([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		if want, ok := wantAlerts[a.Row.DeviceId]; !ok || a.StreamTime != want {
			t.Errorf("alert for %s at %s, want %s", a.Row.DeviceId, a.StreamTime, want)
		}
	}

	// --alerts - with the beacon set elsewhere: the same alerts on stdout.
	setFile := filepath.Join(dir, "set.jsonl")
	stdout, _ := cmdRun(t, "replay", "--profile", "seed", "--quiet", "--brokers", addr, "--topic", "hand", "--lookback", "1h", "--warmup", "-1s",
		"--alerts", "-", "--out", setFile, "--format", "jsonl")
	if set, _ := os.ReadFile(setFile); stdout != string(b) || string(set) != out {
		t.Errorf("--alerts - --out FILE: stdout\n%s\nwant the alerts\n%s", stdout, b)
	}

	// The JSON scorecard, by hand.
	var sc struct {
		Classes []struct {
			Class                      string
			Labelled, Detected, Missed int
		}
		Beacons []struct {
			Label struct {
				Name string `json:"name"`
			}
			Detected bool
			TTF      float64 `json:"time_to_first_alert_s"`
		}
		TP        int     `json:"true_positives"`
		FP        int     `json:"false_positives"`
		FN        int     `json:"false_negatives"`
		Precision float64 `json:"precision"`
		Recall    float64 `json:"recall"`
	}
	b, err := os.ReadFile(scoreFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sc); err != nil {
		t.Fatalf("score file: %v\n%s", err, b)
	}
	if sc.TP != 1 || sc.FP != 2 || sc.FN != 1 || math.Abs(sc.Precision-1.0/3) > 1e-12 || sc.Recall != 0.5 {
		t.Errorf("TP %d FP %d FN %d precision %v recall %v, want 1 2 1 1/3 1/2", sc.TP, sc.FP, sc.FN, sc.Precision, sc.Recall)
	}
	classes := map[string][3]int{}
	for _, c := range sc.Classes {
		classes[c.Class] = [3]int{c.Labelled, c.Detected, c.Missed}
	}
	wantClasses := map[string][3]int{"implant": {2, 1, 1}, "updater": {1, 1, 0}, "fleet-service": {1, 0, 1}, "unlabelled": {0, 1, 0}}
	if fmt.Sprint(classes) != fmt.Sprint(wantClasses) {
		t.Errorf("classes %v, want %v", classes, wantClasses)
	}
	ttf := map[string]float64{}
	for _, bs := range sc.Beacons {
		ttf[bs.Label.Name] = bs.TTF
		if bs.Detected != (bs.Label.Name != "B") {
			t.Errorf("beacon %s detected %v", bs.Label.Name, bs.Detected)
		}
	}
	if want := map[string]float64{"A": 900, "B": 0, "U": 1800}; fmt.Sprint(ttf) != fmt.Sprint(want) {
		t.Errorf("time to first alert %v, want %v", ttf, want)
	}
}

// TestReplayBadRecords: records that do not decode are reported with
// topic, partition and offset, counted, and skipped; the beacon set is
// still hunt's over the good events.
func TestReplayBadRecords(t *testing.T) {
	t.Parallel()
	c := testkit.NewCluster(t, testkit.Topics(3, "src", "mixed"))
	addr := c.Addr
	file := simulateDay(t, addr, "src", "json", 10, "6")
	// Copy the events in order, one per record, with bad records mixed in.
	f, _ := os.Open(file)
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 1<<20)
	var recs []*kgo.Record
	bad := map[int]string{
		100: "not json at all", 2000: `{"Timestamp":"2024-05-01T`, 3000: `{"Timestamp":"yesterday","RemoteIP":"1.2.3.4"}`,
		4000: "", 5000: `{"records":[]}`,
	}
	for i := 0; sc.Scan(); i++ {
		if v, ok := bad[i]; ok {
			recs = append(recs, &kgo.Record{Topic: "mixed", Partition: int32(i % 3), Value: []byte(v)})
		}
		recs = append(recs, &kgo.Record{Topic: "mixed", Partition: int32(i % 3), Value: bytes.Clone(sc.Bytes())})
	}
	f.Close()
	c.ProducePinned(t, recs...)

	want, _ := cmdRun(t, "hunt", "--quiet", "--format", "jsonl", "--lookback", "2h", file)
	got, errOut := cmdRun(t, "replay", "--profile", "seed", "--brokers", addr, "--topic", "mixed", "--format", "jsonl", "--lookback", "2h", "--eval-interval", "10m")
	if got != want || strings.Count(want, "\n") < 2 {
		t.Errorf("replay with bad records differs from hunt (%d rows):\n%s", strings.Count(want, "\n"), firstDiff(got, want))
	}
	for _, r := range recs {
		if _, isBad := map[string]bool{"not json at all": true, `{"Timestamp":"2024-05-01T`: true,
			`{"Timestamp":"yesterday","RemoteIP":"1.2.3.4"}`: true, "": true, `{"records":[]}`: true}[string(r.Value)]; !isBad {
			continue
		}
		where := fmt.Sprintf("skipped mixed/%d@%d: ", r.Partition, r.Offset)
		if !strings.Contains(errOut, where) {
			t.Errorf("stderr does not report %q:\n%s", where, errOut)
		}
	}
	if !strings.Contains(errOut, fmt.Sprintf("%d record(s) skipped", len(bad))) {
		t.Errorf("stderr does not count %d skipped records:\n%s", len(bad), errOut)
	}
}

// TestReplayFlags: --help teaches; the connection and detection flags come
// from the environment and run's config file, the others do not; bad
// values are usage errors.
func TestReplayFlags(t *testing.T) {
	t.Parallel()
	errOut, _, err := runCmd(t, "replay", "--help") // help goes to stdout
	if err != flag.ErrHelp {
		t.Fatalf("err %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"Usage: beacon replay", "Examples:", "--jitter-threshold 30", "beacon hunt", "-brokers",
		"-sasl-mechanism", "-tls-ca", "-topic", "-from", "-to-offset", "-end", "-partitions", "-alerts", "-alerts-topic",
		"-labels", "-score", "-state-dir", "-format", "-warmup", "-realert-interval", "-lookback", "-input-format"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("replay --help does not mention %q", want)
		}
	}

	file := filepath.Join(t.TempDir(), "beacon.yaml")
	os.WriteFile(file, []byte("brokers: file:9092\njitter-threshold: 25\ngroup: run-only\nlisten: ''\npartitions: 8\n"), 0o644)
	var c replayConfig
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	registerReplayFlags(fs, &c)
	if err := fs.Parse([]string{"--config", file, "--topic", "x"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"BEACON_SASL_USER": "env-user", "BEACON_TOPIC": "from-env", "BEACON_FORMAT": "csv"}
	if err := layerConfigOf(fs, c.config, func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		replayLayered(), configKnown(fs)); err != nil {
		t.Fatal(err)
	}
	if c.brokers != "file:9092" || c.params.JitterThreshold != 25 || c.saslUser != "env-user" {
		t.Errorf("shared flags not layered: brokers %q jitter %v sasl-user %q", c.brokers, c.params.JitterThreshold, c.saslUser)
	}
	if c.topics != "x" || c.format != "table" || c.partitions != 1 {
		t.Errorf("replay's own flags layered: topic %q format %q partitions %d", c.topics, c.format, c.partitions)
	}
	os.WriteFile(file, []byte("no-such-setting: 1\n"), 0o644)
	if err := layerConfigOf(fs, file, func(string) (string, bool) { return "", false }, replayLayered(), configKnown(fs)); err == nil ||
		!strings.Contains(err.Error(), "no-such-setting") {
		t.Errorf("unknown key: %v", err)
	}

	for _, args := range [][]string{
		{"replay"},
		{"replay", "--topic", "t", "--from", "yesterday"},
		{"replay", "--topic", "t", "--from", "2024-05-02T00:00:00Z", "--to", "2024-05-01T00:00:00Z"},
		{"replay", "--topic", "t", "--from-offset", "1:x"},
		{"replay", "--topic", "t", "--partitions", "0"},
		{"replay", "--topic", "t", "--alerts", "-"},
		{"replay", "--topic", "t", "--format", "xml"},
		{"replay", "--topic", "t", "--lookback", "0s"},
		{"replay", "--topic", "t", "--score", "s.json"},
	} {
		_, _, err := runCmd(t, args...)
		var u usageError
		if !errors.As(err, &u) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	if m, err := parseOffsets("0:10, 2:7"); err != nil || m[0] != 10 || m[2] != 7 || len(m) != 2 {
		t.Errorf("parseOffsets: %v %v", m, err)
	}
	if m, err := parseOffsets("42"); err != nil || m[-1] != 42 {
		t.Errorf("parseOffsets: %v %v", m, err)
	}
}

// TestReplayOffsets: --from-offset/--to-offset bound what is read; a
// missing topic is an error that names it; a state directory that is not
// empty is refused.
func TestReplayOffsets(t *testing.T) {
	t.Parallel()
	c := testkit.NewCluster(t, testkit.Topics(3, "off"))
	addr := c.Addr
	t0, _ := beacon.ParseTime([]byte("2024-05-01T10:00:00Z"))
	var recs []*kgo.Record
	for k := 0; k < 60; k++ {
		v := fmt.Sprintf(`{"Timestamp":%q,"DeviceId":"d","DeviceName":"d","ActionType":"ConnectionSuccess","RemoteIP":"45.1.1.1",`+
			`"RemotePort":443,"RemoteIPType":"Public","InitiatingProcessFileName":"x.exe"}`, t0+beacon.Time(k*60)*beacon.Second)
		recs = append(recs, &kgo.Record{Topic: "off", Partition: 0, Value: []byte(v)})
	}
	c.ProducePinned(t, recs...)
	_, errOut := cmdRun(t, "replay", "--brokers", addr, "--topic", "off", "--from-offset", "0:10", "--to-offset", "0:40")
	if !strings.Contains(errOut, "30 events from 30 records") {
		t.Errorf("offsets 10..40 of partition 0: %s", errOut)
	}
	// --from seeks by record timestamp (here: when produced, after the
	// events), then filters by event time: the same set.
	out, errOut := cmdRun(t, "replay", "--brokers", addr, "--topic", "off", "--from", "2024-05-01T10:30:00Z", "--format", "jsonl")
	if !strings.Contains(errOut, "30 event(s) outside --from/--to") || strings.Count(out, "\n") != 1 {
		t.Errorf("--from: %s\n%s", out, errOut)
	}

	ctx := context.Background()
	var buf bytes.Buffer
	err := run(ctx, []string{"replay", "--brokers", addr, "--topic", "nope"}, stdio{nil, &buf, &buf})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing topic: %v", err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), nil, 0o644)
	err = run(ctx, []string{"replay", "--brokers", addr, "--topic", "off", "--state-dir", dir}, stdio{nil, &buf, &buf})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("state dir not empty: %v", err)
	}
	kept := filepath.Join(t.TempDir(), "state")
	cmdRun(t, "replay", "--quiet", "--brokers", addr, "--topic", "off", "--state-dir", kept)
	if ents, err := os.ReadDir(kept); err != nil || len(ents) == 0 {
		t.Errorf("--state-dir not kept: %v", err)
	}
}
