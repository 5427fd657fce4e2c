package beacon

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// This file is an independent reading of the query (DESIGN §2, the KQL in
// seed-query.md), written step by step over plain lists, sharing nothing
// with the engine but the Event type it reads: its own window, filters,
// ipv4_is_private, parse_url and domain regex, nearest-rank percentiles,
// series_stats, series_outliers, prevalence, outlier removal and order. It
// calls no function or method of package beacon (not Window, Connection,
// IPv4IsPrivate, DomainOf, Tuple, Time.Seconds, SeriesOutliers, EventsMax
// or SortRows): a bug there cannot hide by being in both. Parameters are
// read as plain fields of Params. It is slow on purpose: clarity first.
//
// TestHuntMatchesReference holds Hunt to it over random fleets.

// refTicks is a Kusto datetime in 100 ns ticks, as Event.Timestamp holds it.
const refTicksPerSecond = 10_000_000

// refSecond is floor(ticks / 1 s): datetime_diff('second', a, b) is
// refSecond(a) − refSecond(b), the whole-second boundaries between them.
func refSecond(ticks int64) int64 {
	s := ticks / refTicksPerSecond
	if ticks%refTicksPerSecond < 0 {
		s--
	}
	return s
}

// refIPv4IsPrivate is ipv4_is_private(s): ok is false where Kusto returns
// null (anything but IPv4, with or without a /prefix; IPv6 included).
func refIPv4IsPrivate(s string) (private, ok bool) {
	var a netip.Addr
	if strings.Contains(s, "/") {
		pr, err := netip.ParsePrefix(s)
		if err != nil {
			return false, false
		}
		a = pr.Addr()
	} else {
		var err error
		if a, err = netip.ParseAddr(s); err != nil {
			return false, false
		}
	}
	if !a.Is4() {
		return false, false
	}
	for _, block := range refPrivate {
		if block.Contains(a) {
			return true, true
		}
	}
	return false, true
}

var refPrivate = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16")}

// refRowFilter is the query's where clauses other than time:
//
//	RemoteIPType !in ("Reserved", "Private", "LinkLocal", "Loopback")
//	isnotempty(RemoteIP) and RemoteIP !in ("0.0.0.0")
//	not(ipv4_is_private(RemoteIP))            // null drops the row
//	ActionType in (ActionTypes)               // case-sensitive
func refRowFilter(p *Params, e *Event) bool {
	for _, bad := range []string{"Reserved", "Private", "LinkLocal", "Loopback"} {
		if e.RemoteIPType == bad {
			return false
		}
	}
	if e.RemoteIP == "" || e.RemoteIP == "0.0.0.0" {
		return false
	}
	if priv, ok := refIPv4IsPrivate(e.RemoteIP); !ok || priv {
		return false
	}
	for _, a := range p.ActionTypes {
		if a == e.ActionType {
			return true
		}
	}
	return false
}

// refParseURLHost is tostring(parse_url(u).Host): u must be an absolute URL
// scheme://authority…, the scheme a letter then letters, digits, + - or .;
// the host is the authority without user info and port.
func refParseURLHost(u string) string {
	sep := strings.Index(u, "://")
	if sep < 1 {
		return ""
	}
	for i, c := range u[:sep] {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		other := c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'
		if !letter && !(i > 0 && other) {
			return ""
		}
	}
	rest := u[sep+3:]
	end := len(rest)
	for i, c := range rest {
		if c == '/' || c == '?' || c == '#' {
			end = i
			break
		}
	}
	auth := rest[:end]
	if at := strings.LastIndex(auth, "@"); at >= 0 {
		auth = auth[at+1:]
	}
	if strings.HasPrefix(auth, "[") { // an IPv6 literal keeps its brackets
		if close := strings.Index(auth, "]"); close >= 0 {
			return auth[:close+1]
		}
		return auth
	}
	if colon := strings.LastIndex(auth, ":"); colon >= 0 {
		auth = auth[:colon]
	}
	return auth
}

// refInAZ09 is the regex class [A-z0-9-]: A–z spans A-Z, [ \ ] ^ _ ` and a-z.
func refInAZ09(r rune) bool { return r >= 'A' && r <= 'z' || r >= '0' && r <= '9' || r == '-' }

// refReplaceThreeLabels is replace(@'([A-z0-9-]+\.[A-z0-9-]+\.[A-z0-9-]+)\..*', @'\1', s),
// matched by hand: the leftmost position where three labels, each followed
// by a dot, start; the match runs to the end of the line, and is replaced
// by the three labels.
func refReplaceThreeLabels(s string) string {
	rs := []rune(s)
	for start := 0; start < len(rs); start++ {
		i, ok := start, true
		for label := 0; label < 3 && ok; label++ {
			j := i
			for j < len(rs) && refInAZ09(rs[j]) {
				j++
			}
			ok = j > i && j < len(rs) && rs[j] == '.'
			if label < 2 {
				i = j + 1
			} else if ok {
				i = j // the dot after the third label
			}
		}
		if !ok {
			continue
		}
		groupEnd := i
		lineEnd := i + 1 // `.*` stops at a newline
		for lineEnd < len(rs) && rs[lineEnd] != '\n' {
			lineEnd++
		}
		return string(rs[:start]) + string(rs[start:groupEnd]) + refReplaceThreeLabels(string(rs[lineEnd:]))
	}
	return s
}

func refReverse(s string) string {
	rs := make([]rune, 0, utf8.RuneCountInString(s))
	for _, r := range s {
		rs = append(rs, r)
	}
	for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
		rs[i], rs[j] = rs[j], rs[i]
	}
	return string(rs)
}

// refDomain is the query's
//
//	Host = tostring(parse_url(iif(RemoteUrl !startswith "http", strcat("http://", RemoteUrl), RemoteUrl)).Host)
//	domain = reverse(replace(regex, @'\1', reverse(Host)))
//
// startswith being case-insensitive.
func refDomain(url string) string {
	u := url
	if !(len(u) >= 4 && strings.ToLower(u[:4]) == "http") {
		u = "http://" + u
	}
	return refReverse(refReplaceThreeLabels(refReverse(refParseURLHost(u))))
}

// refKey is the summarize key; hasPort false is a null RemotePort.
type refKey struct {
	DeviceId, DeviceName, AccountName, AccountDomain, FileName, RemoteIP string
	RemotePort                                                           int32
	HasPort                                                              bool
}

type refDest struct {
	FileName, RemoteIP string
	RemotePort         int32
}

// refRow holds the query's output columns, plus P10/P90 and the outlier
// count of series_outliers, which Hunt exposes in Stats.
type refRow struct {
	Key                        refKey
	Count                      int64
	MinTimestamp, MaxTimestamp int64
	Duration                   int64
	Percentiles                [5]int64
	TimeDeltaList              []int64
	Min, Max                   int64
	MinIndex, MaxIndex         int
	Avg, Stdev, Variance       float64
	Jitter                     float64
	P10, P90                   float64
	Outliers                   int64
	Domains                    []string
	DeviceCount                int64
}

// refDefaultNow is now when none is given: the newest Timestamp among rows
// that pass the row filters, + 1 s.
func refDefaultNow(p *Params, evs []Event) (int64, bool) {
	var newest int64
	found := false
	for i := range evs {
		if refRowFilter(p, &evs[i]) && (!found || int64(evs[i].Timestamp) > newest) {
			newest, found = int64(evs[i].Timestamp), true
		}
	}
	return newest + refTicksPerSecond, found
}

// refNearestRank is percentile P of sorted values: sorted[ceil(P/100·n)]
// (1-based), P = 0 giving the minimum.
func refNearestRank(sorted []int64, pc float64) int64 {
	rank := int(math.Ceil(pc / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

// refLinear is the pc-th percentile of sorted values by linear interpolation
// at the 0-based index pc·(n−1)/100, the index computed exactly.
func refLinear(sorted []int64, pc int) float64 {
	num := pc * (len(sorted) - 1)
	k, rem := num/100, num%100
	lo := float64(sorted[k])
	if rem == 0 {
		return lo
	}
	return lo + float64(rem)/100*(float64(sorted[k+1])-lo)
}

// refSeriesOutliers is series_outliers(list) with kind ctukey and the
// default percentiles 10 and 90: 0 inside [P10, P90], otherwise
// (x − P)/(P90 − P10)·2.772605605507915 with P the nearer bound, computed in
// that order (a zero spread gives ±Inf).
func refSeriesOutliers(list []int64) (scores []float64, p10, p90 float64) {
	sorted := append([]int64(nil), list...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	p10, p90 = refLinear(sorted, 10), refLinear(sorted, 90)
	for _, d := range list {
		x := float64(d)
		switch {
		case x > p90:
			scores = append(scores, (x-p90)/(p90-p10)*2.772605605507915)
		case x < p10:
			scores = append(scores, (x-p10)/(p90-p10)*2.772605605507915)
		default:
			scores = append(scores, 0)
		}
	}
	return scores, p10, p90
}

// refSampleVariance is Σ(x − mean)²/(n − 1), exactly: with S = Σx and
// Q = Σx², Σ(x − S/n)² = Q − S²/n, so the variance is the rational
// (nQ − S²)/(n(n − 1)) in big integers, rounded once to float64; 0 for a
// single value.
func refSampleVariance(list []int64) float64 {
	n := int64(len(list))
	if n < 2 {
		return 0
	}
	sum, sumSq := new(big.Int), new(big.Int)
	for _, d := range list {
		x := big.NewInt(d)
		sum.Add(sum, x)
		sumSq.Add(sumSq, x.Mul(x, x))
	}
	num := new(big.Int).Sub(new(big.Int).Mul(big.NewInt(n), sumSq), new(big.Int).Mul(sum, sum))
	v, _ := new(big.Rat).SetFrac(num, big.NewInt(n*(n-1))).Float64()
	return v
}

// referenceQuery runs the query at now (ticks) over evs.
func referenceQuery(p Params, now int64, evs []Event) []refRow {
	// where Timestamp between (ago(starttime) .. ago(endtime)), both inclusive
	from := now - int64(p.Lookback/100)
	to := now - int64(p.EndOffset/100)
	// summarize make_set(Timestamp) by the seven columns
	sets := map[refKey]map[int64]bool{}
	for i := range evs {
		e := &evs[i]
		ts := int64(e.Timestamp)
		if ts < from || ts > to || !refRowFilter(&p, e) {
			continue
		}
		k := refKey{e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName, e.RemoteIP, e.RemotePort, e.HasPort}
		if !e.HasPort {
			k.RemotePort = 0 // null
		}
		if sets[k] == nil {
			sets[k] = map[int64]bool{}
		}
		sets[k][ts] = true
	}
	// TotalEventsThresholdMax = toint((starttime − endtime)/TimeDeltaThresholdMin)
	eventsMax := int64((p.Lookback - p.EndOffset) / p.TimeDeltaThresholdMin)
	if p.TotalEventsThresholdMax != 0 {
		eventsMax = p.TotalEventsThresholdMax
	}
	var candidates []refRow
	for k, set := range sets {
		n := int64(len(set))
		if !(n > p.TotalEventsThresholdMin && n < eventsMax) {
			continue
		}
		var ts []int64
		for x := range set {
			ts = append(ts, x)
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		// mv-apply: each row gets next(…); rows whose next row has equal
		// columns survive. A null port equals nothing, not even null.
		type mvRow struct{ ts, delta int64 }
		var rows []mvRow
		for i := range ts {
			if i+1 >= len(ts) || !k.HasPort {
				continue
			}
			rows = append(rows, mvRow{ts[i], refSecond(ts[i+1]) - refSecond(ts[i])})
		}
		if len(rows) == 0 {
			continue
		}
		r := refRow{Key: k, Count: int64(len(rows)), MinTimestamp: rows[0].ts, MaxTimestamp: rows[0].ts}
		for _, x := range rows {
			r.MinTimestamp = min(r.MinTimestamp, x.ts)
			r.MaxTimestamp = max(r.MaxTimestamp, x.ts)
			r.TimeDeltaList = append(r.TimeDeltaList, x.delta)
		}
		r.Duration = refSecond(r.MaxTimestamp) - refSecond(r.MinTimestamp)
		sorted := append([]int64(nil), r.TimeDeltaList...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
		for i, pc := range []float64{5, 25, 50, 75, 95} {
			r.Percentiles[i] = refNearestRank(sorted, pc)
		}
		// series_stats: min, min_index, max, max_index (first occurrences),
		// avg, sample stdev and variance.
		r.Min, r.Max = r.TimeDeltaList[0], r.TimeDeltaList[0]
		var sum int64
		for i, d := range r.TimeDeltaList {
			if d < r.Min {
				r.Min, r.MinIndex = d, i
			}
			if d > r.Max {
				r.Max, r.MaxIndex = d, i
			}
			sum += d
		}
		r.Avg, _ = new(big.Rat).SetFrac64(sum, r.Count).Float64()
		r.Variance = refSampleVariance(r.TimeDeltaList)
		r.Stdev = math.Sqrt(r.Variance)
		r.Jitter = (r.Stdev / r.Avg) * 100
		if !(r.Jitter < p.JitterThreshold) { // NaN fails
			continue
		}
		candidates = append(candidates, r)
	}
	// Domains: every event with Timestamp > ago(starttime+1d), no other filter.
	domFrom := now - int64((p.Lookback+24*time.Hour)/100)
	domains := map[string]map[string]bool{}
	domainOf := map[string]string{} // refDomain is a function of the URL alone: computed once per URL
	for i := range evs {
		if int64(evs[i].Timestamp) > domFrom {
			ip, url := evs[i].RemoteIP, evs[i].RemoteUrl
			if domains[ip] == nil {
				domains[ip] = map[string]bool{}
			}
			d, ok := domainOf[url]
			if !ok {
				d = refDomain(url)
				domainOf[url] = d
			}
			domains[ip][d] = true
		}
	}
	// PotentialBeacons: dcount(DeviceId) by process, IP, port over the
	// candidates; keep destinations with at most CompromisedDeviceCountMax.
	devices := map[refDest]map[string]bool{}
	for _, r := range candidates {
		d := refDest{r.Key.FileName, r.Key.RemoteIP, r.Key.RemotePort}
		if devices[d] == nil {
			devices[d] = map[string]bool{}
		}
		devices[d][r.Key.DeviceId] = true
	}
	low := -1 * float64(p.OutlierCountMax)
	if p.OutlierThresholdLow != nil {
		low = *p.OutlierThresholdLow
	}
	var out []refRow
	for _, r := range candidates {
		r.DeviceCount = int64(len(devices[refDest{r.Key.FileName, r.Key.RemoteIP, r.Key.RemotePort}]))
		if r.DeviceCount > p.CompromisedDeviceCountMax {
			continue
		}
		// ImpossibleBeaconsByTimeDelta: more than OutlierCountMax outliers.
		scores, p10, p90 := refSeriesOutliers(r.TimeDeltaList)
		r.P10, r.P90 = p10, p90
		for _, s := range scores {
			if s > p.OutlierThresholdMax || s < low {
				r.Outliers++
			}
		}
		if r.Outliers > p.OutlierCountMax {
			continue
		}
		// The README's optional sleep bounds, on the average gap.
		if (p.SleepMin != 0 && r.Avg < p.SleepMin) || (p.SleepMax != 0 && r.Avg > p.SleepMax) {
			continue
		}
		for d := range domains[r.Key.RemoteIP] {
			r.Domains = append(r.Domains, d)
		}
		sort.Strings(r.Domains)
		out = append(out, r)
	}
	// order by Jitter asc, TimeDeltaInSeconds_avg asc, then the seven
	// columns asc (the project's tie-break).
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Jitter != b.Jitter {
			return a.Jitter < b.Jitter
		}
		if a.Avg != b.Avg {
			return a.Avg < b.Avg
		}
		x, y := a.Key, b.Key
		for _, c := range [][2]string{{x.DeviceId, y.DeviceId}, {x.DeviceName, y.DeviceName}, {x.AccountName, y.AccountName},
			{x.AccountDomain, y.AccountDomain}, {x.FileName, y.FileName}, {x.RemoteIP, y.RemoteIP}} {
			if c[0] != c[1] {
				return c[0] < c[1]
			}
		}
		return x.RemotePort < y.RemotePort
	})
	return out
}

// asRef reads a Hunt row into the reference's shape, field by field (new
// fields of Row are not the query's columns and are left out).
func asRef(r *Row) refRow {
	return refRow{
		Key:   refKey{r.DeviceId, r.DeviceName, r.AccountName, r.AccountDomain, r.FileName, r.RemoteIP, r.RemotePort, true},
		Count: r.Count, MinTimestamp: int64(r.MinTimestamp), MaxTimestamp: int64(r.MaxTimestamp), Duration: r.Duration,
		Percentiles: r.Percentiles, TimeDeltaList: r.TimeDeltaList, Min: r.Min, Max: r.Max, MinIndex: r.MinIndex,
		MaxIndex: r.MaxIndex, Avg: r.Avg, Stdev: r.Stdev, Variance: r.Variance, Jitter: r.Jitter, P10: r.P10, P90: r.P90,
		Outliers: r.Outliers, Domains: r.Domains, DeviceCount: r.DeviceCount,
	}
}

// closeFloat: Hunt's variance comes from integer sums, the reference's from
// exact rationals; both round to float64, Hunt's once more.
func closeFloat(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-12*math.Max(math.Abs(a), math.Abs(b))
}

// diffRef names the first column where two rows differ ("" if none).
func diffRef(g, w refRow) string {
	switch {
	case g.Key != w.Key:
		return fmt.Sprintf("tuple %+v, want %+v", g.Key, w.Key)
	case g.Count != w.Count || g.MinTimestamp != w.MinTimestamp || g.MaxTimestamp != w.MaxTimestamp || g.Duration != w.Duration:
		return fmt.Sprintf("count_/min/max/Duration %d %d %d %d, want %d %d %d %d", g.Count, g.MinTimestamp, g.MaxTimestamp,
			g.Duration, w.Count, w.MinTimestamp, w.MaxTimestamp, w.Duration)
	case g.Percentiles != w.Percentiles:
		return fmt.Sprintf("percentiles %v, want %v", g.Percentiles, w.Percentiles)
	case fmt.Sprint(g.TimeDeltaList) != fmt.Sprint(w.TimeDeltaList):
		return fmt.Sprintf("TimeDeltaList %v, want %v", g.TimeDeltaList, w.TimeDeltaList)
	case g.Min != w.Min || g.Max != w.Max || g.MinIndex != w.MinIndex || g.MaxIndex != w.MaxIndex:
		return fmt.Sprintf("min/max/indexes %d %d %d %d, want %d %d %d %d", g.Min, g.Max, g.MinIndex, g.MaxIndex,
			w.Min, w.Max, w.MinIndex, w.MaxIndex)
	case g.Avg != w.Avg:
		return fmt.Sprintf("avg %v, want %v", g.Avg, w.Avg)
	case !closeFloat(g.Variance, w.Variance) || !closeFloat(g.Stdev, w.Stdev) || !closeFloat(g.Jitter, w.Jitter):
		return fmt.Sprintf("variance/stdev/jitter %v %v %v, want %v %v %v", g.Variance, g.Stdev, g.Jitter, w.Variance, w.Stdev, w.Jitter)
	case g.P10 != w.P10 || g.P90 != w.P90 || g.Outliers != w.Outliers:
		return fmt.Sprintf("P10/P90/outliers %v %v %d, want %v %v %d", g.P10, g.P90, g.Outliers, w.P10, w.P90, w.Outliers)
	case fmt.Sprintf("%q", g.Domains) != fmt.Sprintf("%q", w.Domains) && !(len(g.Domains) == 0 && len(w.Domains) == 0):
		return fmt.Sprintf("Domains %q, want %q", g.Domains, w.Domains)
	case g.DeviceCount != w.DeviceCount:
		return fmt.Sprintf("dcount_DeviceId %d, want %d", g.DeviceCount, w.DeviceCount)
	}
	return ""
}

// fleetSpec says what a random fleet must contain.
type fleetSpec struct {
	start  Time
	span   time.Duration
	cap    int           // CompromisedDeviceCountMax: shared destinations get cap and cap+1 devices
	before time.Duration // URL-only rows reach this far before start
}

// randomFleet makes events with the features that decide rows: beacons
// with jitter, near-duplicates and exact duplicates, dropped callbacks,
// late callbacks (outliers), shared destinations with exactly the device
// cap and one more, clones that tie on Jitter and avg and differ in one
// tuple column, filtered rows (action, IP type, private, IPv6, 0.0.0.0),
// null ports, and rows of other kinds carrying URLs to the implants' IPs
// from a day before the window to after it.
func randomFleet(r *rand.Rand, fs fleetSpec) []Event {
	var evs []Event
	ips := []string{"45.77.1.10", "8.8.8.8", "172.32.0.9", "10.0.0.1", "2606:4700::1", "13.107.4.50", "0.0.0.0",
		"192.168.1.1/24", "127.0.0.1", "185.199.108.153"}
	urls := []string{"", "c2.bad.example.com", "https://a.b.c.example.org/x", "login.live.com",
		"HTTP://Mixed.Case.Example.Net:8080/", "httpbin.org", "ftp://files.example.com", "x.y_z.a.example.com",
		"http://user:pw@deep.sub.host.example.co.uk:443/p?q", "a.b*c.example.com", "http://[2001:db8::1]:80/"}
	end := fs.start.Add(fs.span)
	// beacon appends one tuple's callbacks: sleep ± jitter, some dropped,
	// some duplicated, some late, a few filtered or portless.
	beacon := func(dev, proc, ip string, port int32, sleep Time, jitter float64, noise bool, edit func(*Event)) {
		t := fs.start + Time(r.Int64N(int64(sleep)))
		for t < end {
			e := conn(dev, proc, ip, port, t)
			e.RemoteUrl = urls[r.IntN(len(urls))]
			if edit != nil {
				edit(&e)
			}
			if noise {
				switch x := r.IntN(60); {
				case x == 0:
					e.ActionType = "ConnectionFailed"
				case x == 1:
					e.RemoteIPType = "Private"
				case x == 2:
					e.HasPort = false
				}
			}
			if !noise || r.IntN(12) > 0 { // some callbacks never logged
				evs = append(evs, e)
			}
			if noise && r.IntN(20) == 0 { // an exact duplicate or a near-duplicate
				e.Timestamp += Time(r.IntN(2)) * Time(r.IntN(3_000_000))
				evs = append(evs, e)
			}
			step := sleep + Time((r.Float64()*2-1)*jitter*float64(sleep))
			if noise && r.IntN(30) == 0 {
				step += sleep * Time(1+r.IntN(3)) // a late callback: an outlier
			}
			t += step
		}
	}
	// Random tuples.
	devices := 3 + r.IntN(12)
	for d := 0; d < devices; d++ {
		for k := 0; k < 1+r.IntN(3); k++ {
			ip := ips[r.IntN(len(ips))]
			port := int32([]int{443, 80, 8443}[r.IntN(3)])
			proc := []string{"rundll32.exe", "svchost.exe"}[r.IntN(2)]
			sleep := Time(5+r.IntN(120)) * Second
			beacon(fmt.Sprintf("dev%02d", d), proc, ip, port, sleep, r.Float64()*0.6, true, nil)
		}
	}
	// Shared destinations: exactly cap devices, and cap + 1.
	for i, n := range []int{fs.cap, fs.cap + 1} {
		ip := fmt.Sprintf("52.%d.0.%d", 10+i, 1+r.IntN(200))
		sleep := Time(20+r.IntN(40)) * Second
		for d := 0; d < n; d++ {
			beacon(fmt.Sprintf("shared%d-%02d", i, d), "updater.exe", ip, 443, sleep, 0.05, false, nil)
		}
	}
	// Clones: perfect timers with the same sleep tie on Jitter (0) and avg;
	// each differs from the first in one of the seven columns.
	sleep := Time(10+r.IntN(50)) * Second
	phase := Time(r.Int64N(int64(sleep)))
	edits := []func(*Event){
		nil,
		func(e *Event) { e.DeviceId = "clone-b" },
		func(e *Event) { e.DeviceName = "clone-b.contoso.local" },
		func(e *Event) { e.AccountName = "bob" },
		func(e *Event) { e.AccountDomain = "fabrikam" },
		func(e *Event) { e.FileName = "b.exe" },
		func(e *Event) { e.RemoteIP = "93.184.216.35" },
		func(e *Event) { e.RemotePort = 444 },
	}
	for _, edit := range edits {
		for t := fs.start + phase; t < end; t += sleep {
			e := conn("clone-a", "a.exe", "93.184.216.34", 443, t)
			if edit != nil {
				edit(&e)
			}
			evs = append(evs, e)
		}
	}
	// Rows of other kinds (failed, inspected, private-typed, portless)
	// carrying URLs to the beacons' IPs, from a day before to after the span.
	// Those that may pass the filters stay within the span, so that they
	// do not move the default now past the beacons; inspections (never an
	// ActionType that passes) also come after it: Domains has no upper bound.
	others := []string{"ConnectionFailed", "DnsConnectionInspected", "HttpConnectionInspected", "ConnectionSuccess"}
	for i := 0; i < 150; i++ {
		at := fs.start.Add(-fs.before) + Time(r.Int64N(int64(fs.span+fs.before)/100))
		action := others[r.IntN(len(others))]
		if strings.HasSuffix(action, "Inspected") && r.IntN(4) == 0 {
			at = end + Time(r.Int64N(int64(time.Hour/100)))
		}
		ip := ips[r.IntN(len(ips))]
		if i%3 == 0 {
			ip = "93.184.216.34"
		}
		e := conn("dns", "", ip, 53, at)
		e.ActionType = action
		e.RemoteUrl = urls[r.IntN(len(urls))] + fmt.Sprintf(".%d.extra.example", r.IntN(5))
		if r.IntN(2) == 0 {
			e.RemoteIPType = "Private"
		}
		e.HasPort = r.IntN(3) > 0
		evs = append(evs, e)
	}
	r.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	return evs
}

// atDomainsBound adds, for every IP of evs, one URL row exactly at the
// Domains bound now − lookback − 1 d (excluded: the bound is strict) and
// one a tick after it (included).
func atDomainsBound(p Params, now int64, evs []Event) []Event {
	bound := Time(now - int64((p.Lookback+24*time.Hour)/100))
	seen := map[string]bool{}
	out := append([]Event(nil), evs...)
	for _, e := range evs {
		if seen[e.RemoteIP] {
			continue
		}
		seen[e.RemoteIP] = true
		at := conn("bound", "b.exe", e.RemoteIP, 80, bound)
		at.RemoteUrl, at.ActionType = "at-bound.example.org", "DnsConnectionInspected"
		after := conn("bound", "b.exe", e.RemoteIP, 80, bound+Tick)
		after.RemoteUrl, after.ActionType = "after-bound.example.org", "DnsConnectionInspected"
		out = append(out, at, after)
	}
	return out
}

func TestHuntMatchesReference(t *testing.T) {
	var rows, shared, ties, domainRows, atCap, outliers int
	for seed := uint64(0); seed < 60; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		p := Seed()
		p.Lookback = time.Duration(20+r.IntN(60)) * time.Minute
		p.JitterThreshold = []float64{50, 15, 80}[r.IntN(3)]
		p.CompromisedDeviceCountMax = int64(2 + r.IntN(10))
		switch seed % 6 { // other parameters now and then
		case 1:
			p.TotalEventsThresholdMin = int64(5 + r.IntN(20))
		case 2:
			low := -2.0
			p.OutlierThresholdLow = &low
			p.OutlierCountMax = int64(r.IntN(5))
		case 3:
			p.SleepMin, p.SleepMax = float64(10+r.IntN(30)), float64(60+r.IntN(60))
		case 4:
			p.TotalEventsThresholdMax = int64(30 + r.IntN(100))
		case 5:
			p.ActionTypes = []string{"ConnectionSuccess", "ConnectionFailed"}
		}
		evs := randomFleet(r, fleetSpec{start: t0, span: 2 * p.Lookback, cap: int(p.CompromisedDeviceCountMax), before: 26 * time.Hour})
		wantNow, ok := refDefaultNow(&p, evs)
		if !ok {
			t.Fatalf("seed %d: no event passes the filters", seed)
		}
		for _, at := range []int64{wantNow, wantNow - int64(p.Lookback/200), wantNow + int64(p.Lookback/300)} {
			fleet := atDomainsBound(p, at, evs)
			h := NewHunt(p)
			for i := range fleet {
				h.Add(&fleet[i])
			}
			if now, _ := h.DefaultNow(); at == wantNow && int64(now) != wantNow {
				t.Fatalf("seed %d: DefaultNow %d, reference %d", seed, now, wantNow)
			}
			got := h.Rows(Time(at))
			want := referenceQuery(p, at, fleet)
			rows += len(want)
			for i, w := range want {
				if w.DeviceCount > 1 {
					shared++
				}
				if w.DeviceCount == p.CompromisedDeviceCountMax {
					atCap++
				}
				if w.Outliers > 0 {
					outliers++
				}
				if i > 0 && w.Jitter == want[i-1].Jitter && w.Avg == want[i-1].Avg {
					ties++
				}
				for _, d := range w.Domains {
					if d == "at-bound.example.org" {
						t.Fatalf("seed %d: the reference kept a domain seen exactly at the bound", seed)
					}
					if d == "after-bound.example.org" {
						domainRows++
					}
				}
			}
			if len(got) != len(want) {
				t.Fatalf("seed %d at %d: %d rows, reference %d", seed, at, len(got), len(want))
			}
			for i := range got {
				if d := diffRef(asRef(&got[i]), want[i]); d != "" {
					t.Fatalf("seed %d at %d row %d (%+v): %s", seed, at, i, want[i].Key, d)
				}
			}
		}
	}
	// The comparison means something only if the fleets gave rows, some on
	// shared destinations, some tied on Jitter and avg, some with a domain
	// seen just after the bound.
	if rows < 300 || shared < 30 || ties < 100 || domainRows < 100 || atCap < 30 || outliers < 30 {
		t.Fatalf("%d rows, %d on shared destinations, %d at the device cap, %d with outliers, %d ties, %d with the bound's domain: "+
			"the random fleet is too tame", rows, shared, atCap, outliers, ties, domainRows)
	}
	t.Logf("%d rows compared, %d on shared destinations, %d at the device cap, %d with outliers, %d ties on Jitter and avg, %d with the bound's domain",
		rows, shared, atCap, outliers, ties, domainRows)
}

// The reference's own pieces against the cases DESIGN §2 and the Kusto
// documentation state, so that it is not merely equal to Hunt.
func TestReferencePieces(t *testing.T) {
	for in, want := range map[string]string{
		"":                                       "",
		"a.b.www.example.com":                    "www.example.com",
		"https://a.b.example.co.uk/x?y":          "example.co.uk",
		"HTTPS://Login.Live.com:443/":            "Login.Live.com",
		"http://user:pw@host.example.org:8080/p": "host.example.org",
		"httpbin.org":                            "",
		"ftp://files.example.com":                "ftp",
		"x.y_z.example.com":                      "y_z.example.com",
		"a.b*c.example.com":                      "a.b*c.example.com",
	} {
		if got := refDomain(in); got != want {
			t.Errorf("refDomain(%q) = %q, want %q", in, got, want)
		}
	}
	v := loadVectors(t)
	for _, c := range v.IPv4IsPrivate {
		priv, ok := refIPv4IsPrivate(c.Input)
		if (c.Output == nil) != !ok || (c.Output != nil && priv != *c.Output) {
			t.Errorf("refIPv4IsPrivate(%q) = %v, %v", c.Input, priv, ok)
		}
	}
	for _, c := range v.SeriesOutliers {
		// The vector's input is real; scale by 10 to integers and back:
		// the scores are scale-free.
		var list []int64
		integral := true
		for _, x := range c.Input {
			list = append(list, int64(math.Round(x*10)))
			integral = integral && math.Abs(math.Round(x*10)-x*10) < 1e-9
		}
		if !integral {
			continue
		}
		scores, p10, p90 := refSeriesOutliers(list)
		if math.Abs(p10/10-c.P10) > 1e-12 || math.Abs(p90/10-c.P90) > 1e-12 {
			t.Errorf("reference P10/P90 %v %v, Kusto %v %v", p10/10, p90/10, c.P10, c.P90)
		}
		for i := range scores {
			if math.Abs(scores[i]-c.Output[i]) > 1e-12 {
				t.Errorf("reference score[%d] %v, Kusto %v", i, scores[i], c.Output[i])
			}
		}
	}
	if refSecond(-1) != -1 || refSecond(refTicksPerSecond) != 1 {
		t.Error("refSecond is not floor")
	}
	if refNearestRank([]int64{1, 2, 3, 4}, 0) != 1 || refNearestRank([]int64{1, 2, 3, 4}, 50) != 2 {
		t.Error("refNearestRank")
	}
}
