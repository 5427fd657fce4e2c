package beacon

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// t0 is an arbitrary whole second; tests place events relative to it.
var t0 = mustTime("2024-05-01T00:00:00Z")

func mustTime(s string) Time {
	t, err := ParseTime([]byte(s))
	if err != nil {
		panic(err)
	}
	return t
}

// conn is a connection that passes every filter.
func conn(dev, proc, ip string, port int32, ts Time) Event {
	return Event{
		Timestamp: ts, DeviceId: dev, DeviceName: dev + ".contoso.local", ActionType: "ConnectionSuccess",
		RemoteIP: ip, RemoteIPType: "Public", RemotePort: port, HasPort: true,
		AccountName: "alice", AccountDomain: "contoso", FileName: proc,
	}
}

// series returns timestamps start, start+g0, start+g0+g1, …
func series(start Time, gaps ...Time) []Time {
	ts := []Time{start}
	for _, g := range gaps {
		start += g
		ts = append(ts, start)
	}
	return ts
}

// every returns n gaps of g.
func every(n int, g Time) []Time {
	gs := make([]Time, n)
	for i := range gs {
		gs[i] = g
	}
	return gs
}

func hunt(p Params, now Time, evs []Event) []Row {
	h := NewHunt(p)
	for i := range evs {
		h.Add(&evs[i])
	}
	if now == 0 {
		now, _ = h.DefaultNow()
	}
	return h.Rows(now)
}

func beaconEvents(dev, proc, ip string, port int32, ts []Time) []Event {
	evs := make([]Event, len(ts))
	for i, t := range ts {
		evs[i] = conn(dev, proc, ip, port, t)
	}
	return evs
}

func oneRow(t *testing.T, rows []Row) *Row {
	t.Helper()
	if len(rows) != 1 {
		t.Fatalf("got %d rows, want 1", len(rows))
	}
	return &rows[0]
}

// Window: Timestamp between (now-lookback .. now-1s), both ends inclusive.
func TestWindowBothEndsInclusive(t *testing.T) {
	p := Seed()
	now := t0.Add(24 * time.Hour)
	first := now.Add(-p.Lookback)
	last := now.Add(-time.Second)
	ts := series(first, every(15, 10*Second)...) // 16 timestamps from the window's start
	ts = append(ts, last)                        // and one at its end
	evs := beaconEvents("d1", "x.exe", "8.8.8.8", 443, ts)
	// Just outside: one tick before the start, one tick after the end.
	evs = append(evs, conn("d1", "x.exe", "8.8.8.8", 443, first-1), conn("d1", "x.exe", "8.8.8.8", 443, last+1))
	// A far-off gap makes the jitter huge, so relax it: this test is about the window.
	p.JitterThreshold = 1e9
	p.OutlierCountMax = 1e9
	r := oneRow(t, hunt(p, now, evs))
	if r.MinTimestamp != first {
		t.Errorf("min_Timestamp = %s, want the window's start %s", r.MinTimestamp, first)
	}
	if r.Count != 16 {
		t.Errorf("count_ = %d, want 16 (17 timestamps in the window)", r.Count)
	}
	if got := r.TimeDeltaList[len(r.TimeDeltaList)-1]; got != DatetimeDiffSeconds(last, ts[15]) {
		t.Errorf("last delta = %d, the window's end was not included", got)
	}
}

// Default now: newest Timestamp among rows passing the filters, + 1 s.
func TestDefaultNowIgnoresFilteredRows(t *testing.T) {
	h := NewHunt(Seed())
	e := conn("d1", "x.exe", "8.8.8.8", 443, t0)
	h.Add(&e)
	later := conn("d1", "x.exe", "10.0.0.1", 443, t0.Add(time.Hour)) // private: filtered
	h.Add(&later)
	failed := conn("d1", "x.exe", "8.8.8.8", 443, t0.Add(2*time.Hour))
	failed.ActionType = "ConnectionFailed"
	h.Add(&failed)
	nullPort := conn("d1", "x.exe", "8.8.8.8", 0, t0.Add(3*time.Second))
	nullPort.HasPort = false // passes the filters, so it moves now
	h.Add(&nullPort)
	now, ok := h.DefaultNow()
	if !ok || now != t0.Add(4*time.Second) {
		t.Fatalf("DefaultNow = %s, %v; want %s", now, ok, t0.Add(4*time.Second))
	}
}

// Filters: RemoteIPType, RemoteIP empty or 0.0.0.0, ipv4_is_private (null
// for IPv6 drops the row), ActionType with the query's typos.
func TestFilters(t *testing.T) {
	p := Seed()
	cases := []struct {
		name string
		edit func(*Event)
		keep bool
	}{
		{"public IPv4", func(*Event) {}, true},
		{"RemoteIPType Reserved", func(e *Event) { e.RemoteIPType = "Reserved" }, false},
		{"RemoteIPType Private", func(e *Event) { e.RemoteIPType = "Private" }, false},
		{"RemoteIPType LinkLocal", func(e *Event) { e.RemoteIPType = "LinkLocal" }, false},
		{"RemoteIPType Loopback", func(e *Event) { e.RemoteIPType = "Loopback" }, false},
		{"RemoteIPType is case-sensitive", func(e *Event) { e.RemoteIPType = "private" }, true},
		{"RemoteIPType empty", func(e *Event) { e.RemoteIPType = "" }, true},
		{"RemoteIP empty", func(e *Event) { e.RemoteIP = "" }, false},
		{"RemoteIP 0.0.0.0", func(e *Event) { e.RemoteIP = "0.0.0.0" }, false},
		{"10/8", func(e *Event) { e.RemoteIP = "10.1.2.3" }, false},
		{"172.16/12", func(e *Event) { e.RemoteIP = "172.31.0.1" }, false},
		{"172.32 is public", func(e *Event) { e.RemoteIP = "172.32.0.1" }, true},
		{"192.168/16", func(e *Event) { e.RemoteIP = "192.168.0.1" }, false},
		{"127.0.0.1 typed Public passes ipv4_is_private", func(e *Event) { e.RemoteIP = "127.0.0.1" }, true},
		{"IPv6 is null in ipv4_is_private", func(e *Event) { e.RemoteIP = "2606:4700::1111" }, false},
		{"IPv4-mapped IPv6 too", func(e *Event) { e.RemoteIP = "::ffff:8.8.8.8" }, false},
		{"garbage IP", func(e *Event) { e.RemoteIP = "not an ip" }, false},
		{"ConnectionRequest (typo in the query)", func(e *Event) { e.ActionType = "ConnectionRequest" }, false},
		{"ConnectionFailed (typo in the query)", func(e *Event) { e.ActionType = "ConnectionFailed" }, false},
		{"the typo itself matches", func(e *Event) { e.ActionType = "CsonnectionRequest" }, true},
		{"ActionType is case-sensitive", func(e *Event) { e.ActionType = "connectionsuccess" }, false},
	}
	for _, c := range cases {
		e := conn("d", "x.exe", "8.8.8.8", 443, t0)
		c.edit(&e)
		if got := p.Connection(&e); got != c.keep {
			t.Errorf("%s: kept = %v, want %v", c.name, got, c.keep)
		}
	}
	// The set is a parameter.
	p.ActionTypes = []string{"ConnectionSuccess", "ConnectionRequest"}
	e := conn("d", "x.exe", "8.8.8.8", 443, t0)
	e.ActionType = "ConnectionRequest"
	if !p.Connection(&e) {
		t.Error("ActionTypes parameter not honoured")
	}
}

// Timestamps are a set: duplicates count once, 100 ns apart do not.
func TestTimestampsAreASet(t *testing.T) {
	p := Seed()
	ts := series(t0, every(15, 60*Second)...) // 16 distinct: passes > 15
	evs := beaconEvents("d1", "x.exe", "8.8.8.8", 443, ts)
	evs = append(evs, beaconEvents("d1", "x.exe", "8.8.8.8", 443, ts[:5])...) // exact duplicates
	r := oneRow(t, hunt(p, 0, evs))
	if r.Count != 15 {
		t.Fatalf("count_ = %d, want 15: duplicates must count once", r.Count)
	}
	// 15 distinct timestamps do not pass, duplicates or not.
	evs = beaconEvents("d1", "x.exe", "8.8.8.8", 443, ts[:15])
	evs = append(evs, evs...)
	if rows := hunt(p, 0, evs); len(rows) != 0 {
		t.Fatalf("15 distinct timestamps gave %d rows; the test is > 15", len(rows))
	}
	// One tick apart is two timestamps (and a delta of 0).
	evs = beaconEvents("d1", "x.exe", "8.8.8.8", 443, ts[:15])
	evs = append(evs, conn("d1", "x.exe", "8.8.8.8", 443, ts[14]+Tick))
	p.OutlierCountMax = 100
	r = oneRow(t, hunt(p, 0, evs))
	if r.Count != 15 || r.TimeDeltaList[14] != 0 {
		t.Fatalf("count_ = %d, last delta %d; want 15 and 0", r.Count, r.TimeDeltaList[14])
	}
}

// Count filter: size > TotalEventsThresholdMin and < TotalEventsThresholdMax.
func TestCountFilter(t *testing.T) {
	p := Seed()
	if got := p.EventsMax(); got != 86_399_000 {
		t.Errorf("derived TotalEventsThresholdMax = %d, want (1d-1s)/1ms = 86399000", got)
	}
	p.TimeDeltaThresholdMin = 675 * time.Second
	if got := p.EventsMax(); got != 127 {
		t.Errorf("with TimeDeltaThresholdMin 675s, max = %d, want toint(86399/675) = 127", got)
	}
	p = Seed()
	p.TotalEventsThresholdMax = 20
	for n, want := range map[int]int{19: 1, 20: 0, 16: 1, 15: 0} {
		evs := beaconEvents("d1", "x.exe", "8.8.8.8", 443, series(t0, every(n-1, 30*Second)...))
		if got := len(hunt(p, 0, evs)); got != want {
			t.Errorf("%d timestamps with max 20: %d rows, want %d", n, got, want)
		}
	}
}

// Deltas: datetime_diff('second') counts whole-second boundaries.
func TestDeltasCountSecondBoundaries(t *testing.T) {
	ts := []Time{t0 + 9*Second/10, t0 + 11*Second/10, t0 + 19*Second/10, t0 + 31*Second/10}
	got := Deltas(ts, nil)
	want := []int64{1, 0, 2}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Deltas = %v, want %v", got, want)
	}
	// Before the epoch too: floor, not truncation toward zero.
	neg := []Time{-Second / 10, Second / 10}
	if d := DatetimeDiffSeconds(neg[1], neg[0]); d != 1 {
		t.Fatalf("across the epoch: %d, want 1", d)
	}
}

// count_, min/max_Timestamp and Duration come from rows that have a next
// row: max_Timestamp is the second-to-last timestamp.
func TestRowTimestamps(t *testing.T) {
	ts := series(t0+Second/2, every(19, 60*Second)...)
	ts[19] += 7 * Second // the last gap is 67 s: 67 is not an outlier here
	r := oneRow(t, hunt(Seed(), 0, beaconEvents("d1", "x.exe", "8.8.8.8", 443, ts)))
	if r.Count != 19 || r.MinTimestamp != ts[0] || r.MaxTimestamp != ts[18] {
		t.Fatalf("count_ %d min %s max %s; want 19, %s, %s", r.Count, r.MinTimestamp, r.MaxTimestamp, ts[0], ts[18])
	}
	if r.Duration != 18*60 {
		t.Fatalf("Duration = %d, want %d", r.Duration, 18*60)
	}
}

// Percentiles: nearest rank, sorted[ceil(P/100·n)].
func TestPercentilesNearestRank(t *testing.T) {
	// 20 deltas: 1..20. P5 → rank 1, P25 → 5, P50 → 10, P75 → 15, P95 → 19.
	var deltas []int64
	for i := int64(1); i <= 20; i++ {
		deltas = append(deltas, i)
	}
	s := SummaryOf(deltas)
	p := Seed()
	st := p.Stats(&s)
	if st.Percentiles != [5]int64{1, 5, 10, 15, 19} {
		t.Fatalf("percentiles = %v, want [1 5 10 15 19]", st.Percentiles)
	}
	if s.NearestRank(0) != 1 || s.NearestRank(100) != 20 {
		t.Fatal("P0 must be the minimum and P100 the maximum")
	}
}

// series_stats: min/max index is the first occurrence; sample variance.
func TestSeriesStatsIndexes(t *testing.T) {
	p := Seed()
	st, minI, maxI := p.SeriesStats([]int64{5, 3, 9, 3, 9, 4})
	if minI != 1 || maxI != 2 {
		t.Fatalf("indexes = %d, %d; want 1, 2 (first occurrences)", minI, maxI)
	}
	// mean 5.5, sample variance = Σ(x-m)²/(n-1) = 39.5/5 = 7.9
	if math.Abs(st.Variance-7.9) > 1e-12 || st.Avg != 5.5 {
		t.Fatalf("avg %v variance %v, want 5.5 and 7.9", st.Avg, st.Variance)
	}
}

// Jitter < JitterThreshold; avg 0 gives NaN and fails.
func TestJitter(t *testing.T) {
	p := Seed()
	// All 16 timestamps inside one second: every delta is 0, avg 0, NaN.
	ts := series(t0, every(15, Second/100)...)
	if rows := hunt(p, 0, beaconEvents("d1", "x.exe", "8.8.8.8", 443, ts)); len(rows) != 0 {
		t.Fatalf("avg 0 (NaN jitter) gave %d rows", len(rows))
	}
	// Alternating 10/30: avg 20, sample stdev 10.35 → jitter 51.7 > 50: dropped.
	var gaps []Time
	for i := 0; i < 16; i++ {
		gaps = append(gaps, Time(10+20*(i%2))*Second)
	}
	if rows := hunt(p, 0, beaconEvents("d1", "x.exe", "8.8.8.8", 443, series(t0, gaps...))); len(rows) != 0 {
		t.Fatalf("jitter above 50 kept: %+v", rows[0].Stats)
	}
	p.JitterThreshold = 52
	r := oneRow(t, hunt(p, 0, beaconEvents("d1", "x.exe", "8.8.8.8", 443, series(t0, gaps...))))
	if r.Jitter < 51 || r.Jitter > 52 || r.SleepMin() != r.Avg-r.Stdev || r.SleepMax() != r.Avg+r.Stdev {
		t.Fatalf("jitter %v sleep %v..%v", r.Jitter, r.SleepMin(), r.SleepMax())
	}
}

// Domains: Host of RemoteUrl, reduced to its last three labels.
func TestDomainOf(t *testing.T) {
	cases := map[string]string{
		"":                                       "",
		"example.com":                            "example.com",
		"www.example.com":                        "www.example.com",
		"a.b.www.example.com":                    "www.example.com",
		"https://a.b.example.co.uk/x?y":          "example.co.uk",
		"HTTPS://Login.Live.com:443/":            "Login.Live.com",
		"http://user:pw@host.example.org:8080/p": "host.example.org",
		"httpbin.org":                            "",    // starts with "http", so no scheme is added and it does not parse
		"ftp://files.example.com":                "ftp", // gets http:// prepended: "http://ftp://…" has host "ftp"
		"cdn.a.b.c.d.example.net":                "d.example.net",
		"x.y_z.example.com":                      "y_z.example.com",   // [A-z] spans '_'
		"a.b*c.example.com":                      "a.b*c.example.com", // '*' breaks the labels: no match at the end
	}
	for in, want := range cases {
		if got := DomainOf(in); got != want {
			t.Errorf("DomainOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// Domains: make_set(domain) by RemoteIP over every event (any ActionType,
// any port) with Timestamp > now-lookback-1d, no upper bound.
func TestDomainsEnrichment(t *testing.T) {
	p := Seed()
	ts := series(t0.Add(30*time.Hour), every(15, 60*Second)...)
	evs := beaconEvents("d1", "x.exe", "8.8.8.8", 443, ts)
	evs[0].RemoteUrl = "c2.evil.example.com" // also yields the empty domain from the others
	now := ts[15] + Second
	domainFrom := now.Add(-48 * time.Hour)
	extra := func(url string, at Time, action string) {
		e := conn("other", "y.exe", "8.8.8.8", 80, at)
		e.RemoteUrl, e.ActionType = url, action
		evs = append(evs, e)
	}
	extra("https://in.window.example.org/", domainFrom+1, "ConnectionFailed") // just inside
	extra("at.bound.example.org", domainFrom, "ConnectionSuccess")            // excluded: the bound is strict
	extra("future.example.org", now.Add(time.Hour), "ConnectionSuccess")      // no upper bound
	r := oneRow(t, hunt(p, now, evs))
	want := fmt.Sprint([]string{"", "evil.example.com", "future.example.org", "window.example.org"})
	if got := fmt.Sprint(r.Domains); got != want {
		t.Fatalf("Domains = %s, want %s", got, want)
	}
}

// Prevalence: dcount(DeviceId) over candidates by process, IP, port; keep
// destinations with at most CompromisedDeviceCountMax devices.
func TestDeviceCap(t *testing.T) {
	p := Seed()
	ts := series(t0, every(15, 60*Second)...)
	var evs []Event
	for d := 0; d < 10; d++ {
		evs = append(evs, beaconEvents(fmt.Sprintf("dev%02d", d), "x.exe", "8.8.8.8", 443, ts)...)
	}
	// Device 0 also beacons under a second account: still one device.
	more := beaconEvents("dev00", "x.exe", "8.8.8.8", 443, ts)
	for i := range more {
		more[i].AccountName = "bob"
	}
	evs = append(evs, more...)
	rows := hunt(p, 0, evs)
	if len(rows) != 11 || rows[0].DeviceCount != 10 {
		t.Fatalf("10 devices (11 tuples): %d rows, dcount %d; want 11 rows, 10", len(rows), rows[0].DeviceCount)
	}
	// An eleventh device drops the destination for all of them...
	evs = append(evs, beaconEvents("dev10", "x.exe", "8.8.8.8", 443, ts)...)
	// ...but not another port or process to the same IP.
	evs = append(evs, beaconEvents("dev10", "x.exe", "8.8.8.8", 8443, ts)...)
	rows = hunt(p, 0, evs)
	if len(rows) != 1 || rows[0].RemotePort != 8443 || rows[0].DeviceCount != 1 {
		t.Fatalf("11 devices: got %d rows, want only the 8443 tuple", len(rows))
	}
	// A device whose tuple fails the jitter test is not counted.
	noisy := beaconEvents("dev10", "x.exe", "8.8.8.8", 443, series(t0, 1*Second, 500*Second, 2*Second, 900*Second,
		3*Second, 700*Second, 1*Second, 1000*Second, 2*Second, 800*Second, 1*Second, 600*Second, 4*Second, 999*Second, 1*Second))
	evs = append(evs[:len(evs)-32], noisy...)
	rows = hunt(p, 0, evs)
	if len(rows) != 11 {
		t.Fatalf("a non-candidate device counted toward the cap: %d rows", len(rows))
	}
}

// Outliers: P10/P90 interpolated; a perfect timer has P10 = P90, so every
// odd gap scores ±Inf; more than OutlierCountMax outliers drop the tuple.
func TestOutliersDropPerfectTimerWithOddGaps(t *testing.T) {
	p := Seed()
	for late, keep := range map[int]bool{3: true, 4: false} {
		gaps := every(100, 60*Second)
		for i := 0; i < late; i++ {
			gaps[10*i+5] = 61 * Second // a late callback: +Inf against a perfect timer
		}
		ts := series(t0, gaps...)
		s := SummaryOf(Deltas(ts, nil))
		st := p.Stats(&s)
		if st.P10 != 60 || st.P90 != 60 {
			t.Fatalf("P10 %v P90 %v, want 60 60", st.P10, st.P90)
		}
		if st.Outliers != int64(late) {
			t.Fatalf("%d late gaps: %d outliers", late, st.Outliers)
		}
		if sc := outlierScore(61, 60, 60); !math.IsInf(sc, 1) {
			t.Fatalf("score of 61 against P10 = P90 = 60 is %v, want +Inf", sc)
		}
		rows := hunt(p, 0, beaconEvents("d1", "x.exe", "8.8.8.8", 443, ts))
		if got := len(rows) == 1; got != keep {
			t.Fatalf("%d outliers: kept %v, want %v", late, got, keep)
		}
	}
}

// The low bound is −OutlierCountMax (−3), not −OutlierThresholdMax (−2).
func TestOutlierLowBoundIsCountMax(t *testing.T) {
	p := Seed()
	// 41 deltas: P10 = sorted[4] = 10, P90 = sorted[36] = 20, so each 1
	// scores (1−10)/10·2.77 = −2.495: between −3 and −2.
	var deltas []int64
	for _, b := range []Bin{{1, 4}, {10, 16}, {15, 13}, {20, 8}} {
		for i := int64(0); i < b.Count; i++ {
			deltas = append(deltas, b.Delta)
		}
	}
	s := SummaryOf(deltas)
	st := p.Stats(&s)
	if st.P10 != 10 || st.P90 != 20 {
		t.Fatalf("P10 %v P90 %v, want 10 20", st.P10, st.P90)
	}
	if sc := outlierScore(1, 10, 20); sc >= -2 || sc <= -3 {
		t.Fatalf("score of 1 = %v, want in (−3, −2)", sc)
	}
	if st.Outliers != 0 {
		t.Fatalf("scores in (−3, −2) counted as outliers in seed: %d", st.Outliers)
	}
	two := -2.0
	p.OutlierThresholdLow = &two
	if st = p.Stats(&s); st.Outliers != 4 {
		t.Fatalf("with a −2 low bound: %d outliers, want 4", st.Outliers)
	}
}

// Order: Jitter asc, TimeDeltaInSeconds_avg asc, then the seven tuple
// columns asc (ordinal; ports as numbers). The rows are made so that every
// key disagrees with the ones after it: the lowest jitter has the highest
// avg and the last tuple; rows tied on Jitter and avg differ first in one
// column and then, the other way round, in the next, so that dropping any
// one key from CompareRows reorders them. The expected order is written
// out by hand, not computed.
func TestOrder(t *testing.T) {
	type spec struct {
		tu   Tuple
		gaps []Time // gap pattern, repeated to 20 gaps
	}
	alt := func(a, b int) []Time { return []Time{Time(a) * Second, Time(b) * Second} }
	perfect := func(g int) []Time { return []Time{Time(g) * Second} }
	// (The rows of other keys go to another IP, to stay under the device cap.)
	base := Tuple{"c", "n", "u", "d", "f.exe", "100.0.0.1", 443}
	with := func(edit func(*Tuple)) Tuple { x := base; edit(&x); return x }
	// In the expected order:
	want := []spec{
		// Jitter 0, avg 30: first, though its tuple sorts last.
		{with(func(x *Tuple) { x.DeviceId, x.RemoteIP = "zz-fast", "100.0.1.1" }), perfect(30)},
		// Jitter 0, avg 60: ties on both keys, broken column by column.
		{with(func(x *Tuple) { x.DeviceId = "Zed" }), perfect(60)}, // ordinal: 'Z' < 'a'
		{with(func(x *Tuple) { x.DeviceId = "c0a"; x.DeviceName = "z" }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c0b"; x.DeviceName = "a" }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c1"; x.DeviceName = "a"; x.AccountName = "z" }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c1"; x.DeviceName = "b"; x.AccountName = "a" }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c2"; x.AccountName = "a"; x.AccountDomain = "z" }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c2"; x.AccountName = "b"; x.AccountDomain = "a" }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c3"; x.AccountDomain = "a"; x.FileName = "z.exe" }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c3"; x.AccountDomain = "b"; x.FileName = "a.exe" }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c4"; x.FileName = "a.exe"; x.RemoteIP = "100.0.0.9" }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c4"; x.FileName = "b.exe"; x.RemoteIP = "100.0.0.1" }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c5"; x.RemoteIP = "100.0.0.1"; x.RemotePort = 9000 }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c5"; x.RemoteIP = "100.0.0.2"; x.RemotePort = 80 }), perfect(60)},
		// Only the port differs: numeric order, not text ("1000" < "443").
		{with(func(x *Tuple) { x.DeviceId = "c6"; x.RemotePort = 7 }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c6"; x.RemotePort = 9 }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c6"; x.RemotePort = 80 }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c6"; x.RemotePort = 443 }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c6"; x.RemotePort = 1000 }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c6"; x.RemotePort = 8080 }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c6"; x.RemotePort = 8443 }), perfect(60)},
		{with(func(x *Tuple) { x.DeviceId = "c6"; x.RemotePort = 65535 }), perfect(60)},
		// Jitter 0, avg 90: after every avg 60, though its tuple sorts first.
		{with(func(x *Tuple) { x.DeviceId, x.RemoteIP = "a-slow", "100.0.1.1" }), perfect(90)},
		// Jitter ≈ 8.6 (avg 60), ≈ 17 (avg 120), ≈ 34 (avg 60): jitter
		// decides against avg and against the tuple.
		{with(func(x *Tuple) { x.DeviceId, x.RemoteIP = "y", "100.0.1.1" }), alt(55, 65)},
		{with(func(x *Tuple) { x.DeviceId, x.RemoteIP = "b", "100.0.1.1" }), alt(100, 140)},
		{with(func(x *Tuple) { x.DeviceId, x.RemoteIP = "a", "100.0.1.1" }), alt(40, 80)},
	}
	var evs []Event
	for _, s := range want {
		var gaps []Time
		for len(gaps) < 20 {
			gaps = append(gaps, s.gaps...)
		}
		for _, ts := range series(t0, gaps...) {
			e := conn(s.tu.DeviceId, s.tu.FileName, s.tu.RemoteIP, s.tu.RemotePort, ts)
			e.DeviceName, e.AccountName, e.AccountDomain = s.tu.DeviceName, s.tu.AccountName, s.tu.AccountDomain
			evs = append(evs, e)
		}
	}
	// Feed the events newest tuple first, so arrival order cannot pass for
	// the answer.
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	for run := 0; run < 5; run++ { // Hunt's map order differs from run to run
		rows := hunt(Seed(), 0, evs)
		if len(rows) != len(want) {
			t.Fatalf("%d rows, want %d", len(rows), len(want))
		}
		for i := range want {
			if rows[i].Tuple != want[i].tu {
				t.Fatalf("row %d is %+v (jitter %v avg %v), want %+v", i, rows[i].Tuple, rows[i].Jitter, rows[i].Avg, want[i].tu)
			}
		}
		// The keys really disagree: jitter ascends while avg does not.
		if !(rows[len(rows)-3].Jitter < rows[len(rows)-2].Jitter && rows[len(rows)-2].Avg > rows[len(rows)-1].Avg) {
			t.Fatal("the test rows no longer make Jitter and avg disagree")
		}
	}
}

// A null RemotePort never pairs with the next row (null == null is null),
// so the tuple yields no row.
func TestNullPortFormsNoTuple(t *testing.T) {
	evs := beaconEvents("d1", "x.exe", "8.8.8.8", 0, series(t0, every(20, 60*Second)...))
	for i := range evs {
		evs[i].HasPort = false
	}
	if rows := hunt(Seed(), 0, evs); len(rows) != 0 {
		t.Fatalf("null-port tuple gave %d rows", len(rows))
	}
}

// Sleep bounds (the README's optional filter) are off in seed.
func TestSleepBounds(t *testing.T) {
	evs := beaconEvents("d1", "x.exe", "8.8.8.8", 443, series(t0, every(20, 900*Second)...))
	p := Seed()
	if len(hunt(p, 0, evs)) != 1 {
		t.Fatal("seed must not filter on sleep")
	}
	p.SleepMin, p.SleepMax = 675, 1125
	if len(hunt(p, 0, evs)) != 1 {
		t.Fatal("900 s is within 675..1125")
	}
	p.SleepMin = 901
	if len(hunt(p, 0, evs)) != 0 {
		t.Fatal("900 s is below a 901 s minimum")
	}
}
