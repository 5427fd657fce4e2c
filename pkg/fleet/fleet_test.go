package fleet

import (
	"bytes"
	"crypto/sha256"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// small is a fleet that generates in milliseconds.
func small(seed int64) Config {
	return Config{Seed: seed, Devices: 20, Duration: 6 * time.Hour, Start: time.Date(2024, 5, 1, 6, 0, 0, 0, time.UTC)}
}

func generate(t testing.TB, cfg Config) ([]Record, *Generator) {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var rs []Record
	for r := range g.All() {
		rs = append(rs, r)
	}
	return rs, g
}

func jsonl(t testing.TB, cfg Config) []byte {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, JSONL, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for r, ok := g.NextRecord(); ok; r, ok = g.NextRecord() {
		if err := w.Write(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := WriteLabels(&buf, g.Labels()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDeterministic(t *testing.T) {
	a := jsonl(t, small(7))
	b := jsonl(t, small(7))
	if !bytes.Equal(a, b) {
		t.Fatalf("same seed, different output (%d vs %d bytes)", len(a), len(b))
	}
	c := jsonl(t, small(8))
	if bytes.Equal(a, c) {
		t.Fatal("different seeds, same output")
	}
	if len(a) < 1<<20 {
		t.Errorf("only %d bytes for 20 devices over 6h", len(a))
	}
	t.Logf("seed 7: %d bytes, sha256 %x", len(a), sha256.Sum256(a))
}

func TestDefaultsAndValidation(t *testing.T) {
	g, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := g.Config()
	if c.Devices != 200 || c.Duration != 24*time.Hour || !c.Start.Equal(DefaultStart) || c.Implants != 5 {
		t.Errorf("defaults not applied: %+v", c)
	}
	if g.End()-g.Start() != 24*3600*beacon.Second {
		t.Errorf("period %v..%v", g.Start(), g.End())
	}
	none, err := New(Config{Implants: -1, Updaters: -1, DropRate: -1, DupRate: -1, LateRate: -1, Devices: 5, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range none.Labels() {
		if l.Class != ClassFleetService {
			t.Errorf("negative counts still planted %+v", l)
		}
	}
	for _, bad := range []Config{
		{Devices: -3},
		{Duration: time.Millisecond},
		{Frameworks: []string{"havoc"}},
		{Sleeps: []time.Duration{time.Millisecond}},
		{DropRate: 1},
		{DupRate: 1},
		{LateRate: 1.5},
		{Devices: MaxDevices + 1},
		{Duration: MaxDuration + time.Hour},
		{Implants: MaxImplants + 1},
		{Updaters: 1000},
	} {
		_, err := New(bad)
		if err == nil {
			t.Errorf("New(%+v) accepted", bad)
			continue
		}
		// A range is named ("in [1, 1000000]", "at least 1s") or the valid
		// names are listed.
		if m := err.Error(); !strings.Contains(m, " in [") && !strings.Contains(m, "at least") && !strings.Contains(m, "want one of") {
			t.Errorf("New(%+v): %q does not name the valid range", bad, m)
		}
	}
	for _, edge := range []Config{{Devices: MaxDevices, Duration: time.Second}, {Duration: MaxDuration, Devices: 1}, {DropRate: 0.999}} {
		if err := edge.Validate(); err != nil {
			t.Errorf("Validate(%+v) at the edge of its range: %v", edge, err)
		}
	}
}

func TestOrderAndPeriod(t *testing.T) {
	cfg := small(3)
	cfg.LateRate = 0.05
	rs, g := generate(t, cfg)
	var late, outOfOrder int
	for i, r := range rs {
		if r.Timestamp < g.Start() || r.Timestamp >= g.End() {
			t.Fatalf("record %d at %v outside %v..%v", i, r.Timestamp, g.Start(), g.End())
		}
		if r.Reported < r.Timestamp || r.Reported-r.Timestamp > ticks(g.Config().MaxLate) {
			t.Fatalf("record %d reported %v for timestamp %v", i, r.Reported, r.Timestamp)
		}
		if r.Reported > r.Timestamp {
			late++
		}
		if i > 0 {
			if r.Reported < rs[i-1].Reported {
				t.Fatalf("record %d reported at %v before record %d at %v", i, r.Reported, i-1, rs[i-1].Reported)
			}
			if r.Timestamp < rs[i-1].Timestamp {
				outOfOrder++
			}
		}
	}
	if st := g.Stats(); st.Emitted != int64(len(rs)) || st.Late != int64(late) {
		t.Errorf("stats %+v; %d records, %d late", st, len(rs), late)
	}
	if outOfOrder == 0 {
		t.Error("no out-of-order events")
	}
}

// TestRealism checks that the fleet has the features detectors trip on.
func TestRealism(t *testing.T) {
	rs, g := generate(t, Config{Seed: 11, Devices: 30, Duration: 24 * time.Hour})
	count := map[string]int{}
	seen := map[string]bool{}
	ips := map[string]bool{}
	urls := map[string]bool{}
	for i, r := range rs {
		count["action:"+r.ActionType]++
		count["type:"+r.RemoteIPType]++
		switch {
		case strings.HasPrefix(r.RemoteIP, "10."), strings.HasPrefix(r.RemoteIP, "172."), strings.HasPrefix(r.RemoteIP, "192.168."):
			count["private"]++
			if r.RemoteIPType != "Private" {
				t.Errorf("%s typed %q", r.RemoteIP, r.RemoteIPType)
			}
		case r.RemoteIP == "127.0.0.1" || r.RemoteIP == "::1":
			count["loopback"]++
		case strings.HasPrefix(r.RemoteIP, "169.254.") || strings.HasPrefix(r.RemoteIP, "fe80:"):
			count["linklocal"]++
		case strings.Contains(r.RemoteIP, ":") && r.RemoteIPType == "Public":
			count["ipv6"]++
		}
		if r.RemoteIPType == "Public" {
			ips[r.RemoteIP] = true
		}
		if r.RemoteUrl == "" {
			count["nourl"]++
		} else {
			urls[r.RemoteUrl] = true
			h := strings.TrimPrefix(r.RemoteUrl, "http://")
			if i := strings.IndexByte(h, '/'); i >= 0 {
				h = h[:i]
			}
			if n := strings.Count(h, ".") + 1; n < 2 || n > 5 {
				t.Errorf("RemoteUrl %q has %d labels", r.RemoteUrl, n)
			}
		}
		if !r.HasPort {
			count["noport"]++
		}
		if len(r.DeviceId) != 40 || strings.Trim(r.DeviceId, "0123456789abcdef") != "" {
			t.Fatalf("DeviceId %q", r.DeviceId)
		}
		if !strings.HasSuffix(r.DeviceName, ".contoso.local") {
			t.Fatalf("DeviceName %q", r.DeviceName)
		}
		k := r.DeviceId + r.FileName + r.RemoteIP + beacon.FormatPort(r.RemotePort) + r.Timestamp.String()
		if seen[k] {
			count["dup"]++
		}
		seen[k] = true
		if i > 0 && r.Timestamp-rs[i-1].Timestamp < 500_000 && r.Timestamp != rs[i-1].Timestamp &&
			r.Event.Tuple() == rs[i-1].Event.Tuple() {
			count["near-dup"]++
		}
		count["file:"+r.FileName]++
	}
	for _, k := range []string{
		"action:ConnectionSuccess", "action:ConnectionFailed", "action:ConnectionRequest",
		"action:InboundConnectionAccepted", "action:ListeningConnectionCreated",
		"type:Public", "type:Private", "type:Loopback", "type:LinkLocal",
		"private", "loopback", "linklocal", "ipv6", "nourl", "noport", "dup",
		"file:chrome.exe", "file:msedge.exe", "file:svchost.exe", "file:MsMpEng.exe", "file:Teams.exe", "file:OneDrive.exe",
	} {
		if count[k] == 0 {
			t.Errorf("no %s events", k)
		}
	}
	if len(ips) < 1000 || len(urls) < 400 {
		t.Errorf("%d public IPs and %d RemoteUrls: browsing is not varied enough", len(ips), len(urls))
	}
	st := g.Stats()
	if st.Dropped == 0 || st.Duplicated == 0 || st.Late == 0 {
		t.Errorf("sensor imperfections missing: %+v", st)
	}
	t.Logf("%d records, %d public IPs, %d urls, stats %+v", len(rs), len(ips), len(urls), st)
}

// TestLabelsMatchEvents checks every label against the records.
func TestLabelsMatchEvents(t *testing.T) {
	rs, g := generate(t, small(5))
	byTuple := map[Tuple]int64{}
	first := map[Tuple]beacon.Time{}
	for _, r := range rs {
		tu := r.Event.Tuple()
		byTuple[tu]++
		if f, ok := first[tu]; !ok || r.Timestamp < f {
			first[tu] = r.Timestamp
		}
	}
	classes := map[string]int{}
	seen := map[Tuple]bool{}
	for _, l := range g.Labels() {
		classes[l.Class]++
		if seen[l.Tuple] {
			t.Errorf("tuple labelled twice: %+v", l.Tuple)
		}
		seen[l.Tuple] = true
		if l.Events != byTuple[l.Tuple] {
			t.Errorf("%s %s: label says %d events, output has %d", l.Class, l.Name, l.Events, byTuple[l.Tuple])
		}
		if l.Callbacks == 0 || l.Class == ClassImplant && l.Events == 0 {
			t.Errorf("%s %s: %d callbacks, %d events", l.Class, l.Name, l.Callbacks, l.Events)
		}
		if l.Events > 0 && first[l.Tuple] < l.FirstEvent {
			t.Errorf("%s %s: event at %v before first_event %v", l.Class, l.Name, first[l.Tuple], l.FirstEvent)
		}
		if l.Class == ClassImplant && l.Framework == "" || l.Class != ClassImplant && l.Framework != "" {
			t.Errorf("class %s with framework %q", l.Class, l.Framework)
		}
	}
	if classes[ClassImplant] != 5 || classes[ClassUpdater] < 4 || classes[ClassFleetService] < 20 {
		t.Errorf("labels by class: %v", classes)
	}
}

// TestImplantGaps checks the frameworks' sleep/jitter rules on a clean
// sensor.
func TestImplantGaps(t *testing.T) {
	cfg := Config{Seed: 9, Devices: 20, Duration: 6 * time.Hour, Implants: 40,
		Sleeps:   []time.Duration{5 * time.Second, 17 * time.Second, time.Minute, 5 * time.Minute},
		DropRate: -1, DupRate: -1, LateRate: -1}
	rs, g := generate(t, cfg)
	times := map[Tuple][]beacon.Time{}
	for _, r := range rs {
		tu := r.Event.Tuple()
		times[tu] = append(times[tu], r.Timestamp)
	}
	frameworks := map[string]int{}
	for _, l := range g.Labels() {
		if l.Class != ClassImplant {
			continue
		}
		frameworks[l.Framework]++
		sleep, lo, hi := ticks(l.Sleep), ticks(l.GapMin), ticks(l.GapMax)
		// The rules, from the framework's settings.
		var wantLo, wantHi beacon.Time
		switch l.Framework {
		case CobaltStrike:
			wantLo, wantHi = sleep-beacon.Time(l.Jitter*float64(sleep)), sleep
		case Sliver:
			wantLo, wantHi = sleep, sleep+beacon.Time(l.Jitter*float64(beacon.Second))
		case Empire, Mythic:
			j := beacon.Time(l.Jitter * float64(sleep))
			wantLo, wantHi = sleep-j, sleep+j
		default:
			t.Fatalf("framework %q", l.Framework)
		}
		if lo != wantLo || hi != wantHi {
			t.Errorf("%s sleep %v jitter %v: gaps [%v, %v], rule says [%v, %v]", l.Framework, l.Sleep, l.Jitter, lo, hi, wantLo, wantHi)
		}
		ts := times[l.Tuple]
		if int64(len(ts)) != l.Callbacks {
			t.Errorf("%s: %d events, %d callbacks with a perfect sensor", l.Framework, len(ts), l.Callbacks)
		}
		if len(ts) < 2 {
			t.Errorf("%s sleep %v: only %d events", l.Framework, l.Sleep, len(ts))
			continue
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		if ts[0] != l.FirstEvent {
			t.Errorf("first event %v, label says %v", ts[0], l.FirstEvent)
		}
		gmin, gmax := ts[1]-ts[0], ts[1]-ts[0]
		for i := 1; i < len(ts); i++ {
			d := ts[i] - ts[i-1]
			gmin, gmax = min(gmin, d), max(gmax, d)
		}
		if gmin < lo || gmax > hi {
			t.Errorf("%s sleep %v jitter %v: gaps %v..%v outside [%v, %v]", l.Framework, l.Sleep, l.Jitter, gmin, gmax, lo, hi)
		}
		// Jitter actually spreads the gaps (the rule's range is used).
		if hi-lo > 10*beacon.Second && len(ts) > 50 && gmax-gmin < (hi-lo)/2 {
			t.Errorf("%s sleep %v jitter %v: gaps only span %v..%v of [%v, %v]", l.Framework, l.Sleep, l.Jitter, gmin, gmax, lo, hi)
		}
	}
	for _, f := range Frameworks {
		if frameworks[f] == 0 {
			t.Errorf("no %s implant among 40", f)
		}
	}
}

// TestFleetServicesWidespread checks that each fleet-service destination
// is polled by more devices than the query's device cap.
func TestFleetServicesWidespread(t *testing.T) {
	g, err := New(Config{Seed: 2, Devices: 200})
	if err != nil {
		t.Fatal(err)
	}
	type dest struct {
		file, ip string
		port     int32
	}
	devices := map[dest]map[string]bool{}
	updaters := map[dest]map[string]bool{}
	for _, l := range g.Labels() {
		d := dest{l.FileName, l.RemoteIP, l.RemotePort}
		m := devices
		if l.Class == ClassUpdater {
			m = updaters
		} else if l.Class != ClassFleetService {
			continue
		}
		if m[d] == nil {
			m[d] = map[string]bool{}
		}
		m[d][l.DeviceId] = true
	}
	if len(devices) < 8 {
		t.Errorf("only %d fleet-service destinations", len(devices))
	}
	for d, devs := range devices {
		if len(devs) <= 10 {
			t.Errorf("fleet service %v on only %d devices", d, len(devs))
		}
	}
	for d, devs := range updaters {
		if len(devs) > 10 {
			t.Errorf("updater %v on %d devices: the device cap would hide it", d, len(devs))
		}
	}
}

func TestLabelsRoundTrip(t *testing.T) {
	_, g := generate(t, small(4))
	var buf bytes.Buffer
	if err := WriteLabels(&buf, g.Labels()); err != nil {
		t.Fatal(err)
	}
	got, err := ReadLabels(&buf)
	if err != nil {
		t.Fatal(err)
	}
	want := g.Labels()
	if len(got) != len(want) {
		t.Fatalf("%d labels back, wrote %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("label %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}
