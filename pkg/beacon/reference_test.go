package beacon

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
	"time"
)

// referenceQuery is the query written out step by step over lists, as the
// KQL reads, with none of Hunt's machinery (no summaries, histograms,
// hashing or counting sort). The property test below holds Hunt to it.
func referenceQuery(p Params, now Time, evs []Event) []Row {
	from, to := p.Window(now)
	// where … | summarize make_set(Timestamp) by tuple
	sets := map[Tuple]map[Time]bool{}
	for _, e := range evs {
		if e.Timestamp < from || e.Timestamp > to || !p.Connection(&e) || !e.HasPort {
			continue
		}
		t := e.Tuple()
		if sets[t] == nil {
			sets[t] = map[Time]bool{}
		}
		sets[t][e.Timestamp] = true
	}
	type cand struct {
		row Row
	}
	var cands []Row
	for t, set := range sets {
		n := int64(len(set))
		if !(n > p.TotalEventsThresholdMin && n < p.EventsMax()) {
			continue
		}
		var ts []Time
		for x := range set {
			ts = append(ts, x)
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		// mv-apply: rows with a next row
		var deltas []int64
		for i := 0; i+1 < len(ts); i++ {
			deltas = append(deltas, ts[i+1].Seconds()-ts[i].Seconds())
		}
		if len(deltas) == 0 {
			continue
		}
		r := Row{Tuple: t, MinTimestamp: ts[0], MaxTimestamp: ts[len(ts)-2], TimeDeltaList: deltas}
		r.Count = int64(len(deltas))
		r.Duration = r.MaxTimestamp.Seconds() - r.MinTimestamp.Seconds()
		sorted := append([]int64(nil), deltas...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
		for i, pc := range QueryPercentiles {
			rank := int(math.Ceil(pc / 100 * float64(len(sorted))))
			if rank < 1 {
				rank = 1
			}
			r.Percentiles[i] = sorted[rank-1]
		}
		// series_stats, two-pass
		r.Min, r.Max = deltas[0], deltas[0]
		var sum float64
		for i, d := range deltas {
			if d < r.Min {
				r.Min, r.MinIndex = d, i
			}
			if d > r.Max {
				r.Max, r.MaxIndex = d, i
			}
			sum += float64(d)
		}
		r.Avg = sum / float64(len(deltas))
		var ss float64
		for _, d := range deltas {
			ss += (float64(d) - r.Avg) * (float64(d) - r.Avg)
		}
		if len(deltas) > 1 {
			r.Variance = ss / float64(len(deltas)-1)
		}
		r.Stdev = math.Sqrt(r.Variance)
		r.Jitter = r.Stdev / r.Avg * 100
		if !(r.Jitter < p.JitterThreshold) {
			continue
		}
		// series_outliers over the list
		fl := make([]float64, len(deltas))
		for i, d := range deltas {
			fl[i] = float64(d)
		}
		for _, sc := range SeriesOutliers(fl) {
			if sc > p.OutlierThresholdMax || sc < -float64(p.OutlierCountMax) {
				r.Outliers++
			}
		}
		cands = append(cands, r)
	}
	// dcount(DeviceId) by process, IP, port over candidates
	devs := map[Destination]map[string]bool{}
	for _, r := range cands {
		d := r.Destination()
		if devs[d] == nil {
			devs[d] = map[string]bool{}
		}
		devs[d][r.DeviceId] = true
	}
	// Domains by RemoteIP over Timestamp > now - lookback - 1d
	domFrom := now.Add(-p.Lookback - 24*time.Hour)
	doms := map[string]map[string]bool{}
	for _, e := range evs {
		if e.Timestamp > domFrom {
			if doms[e.RemoteIP] == nil {
				doms[e.RemoteIP] = map[string]bool{}
			}
			doms[e.RemoteIP][DomainOf(e.RemoteUrl)] = true
		}
	}
	var rows []Row
	for _, r := range cands {
		r.DeviceCount = int64(len(devs[r.Destination()]))
		if r.DeviceCount > p.CompromisedDeviceCountMax || r.Outliers > p.OutlierCountMax {
			continue
		}
		for d := range doms[r.RemoteIP] {
			r.Domains = append(r.Domains, d)
		}
		sort.Strings(r.Domains)
		rows = append(rows, r)
	}
	SortRows(rows)
	return rows
}

// randomFleet makes events with the features that decide rows: beacons
// with jitter, near-duplicates, dropped callbacks, shared destinations
// (some over the device cap), filtered rows and domains.
func randomFleet(r *rand.Rand, start Time, span time.Duration) []Event {
	var evs []Event
	ips := []string{"45.77.1.10", "8.8.8.8", "172.32.0.9", "10.0.0.1", "2606:4700::1", "13.107.4.50", "0.0.0.0"}
	urls := []string{"", "c2.bad.example.com", "https://a.b.c.example.org/x", "login.live.com", "HTTP://Mixed.Case.Example.Net:8080/"}
	devices := 3 + r.IntN(14)
	for d := 0; d < devices; d++ {
		for k := 0; k < 1+r.IntN(3); k++ {
			ip := ips[r.IntN(len(ips))]
			port := int32([]int{443, 80, 8443}[r.IntN(3)])
			proc := []string{"rundll32.exe", "svchost.exe"}[r.IntN(2)]
			sleep := Time(5+r.IntN(120)) * Second
			jitter := r.Float64() * 0.6
			t := start + Time(r.Int64N(int64(sleep)))
			for t < start.Add(span) {
				e := conn(fmt.Sprintf("dev%02d", d), proc, ip, port, t)
				e.RemoteUrl = urls[r.IntN(len(urls))]
				switch x := r.IntN(40); {
				case x == 0:
					e.ActionType = "ConnectionFailed"
				case x == 1:
					e.RemoteIPType = "Private"
				case x == 2:
					e.HasPort = false
				}
				if r.IntN(10) > 0 { // 10% of callbacks never logged
					evs = append(evs, e)
				}
				if r.IntN(25) == 0 { // a duplicate or a near-duplicate
					e.Timestamp += Time(r.IntN(2)) * Time(r.IntN(3_000_000))
					evs = append(evs, e)
				}
				t += sleep + Time((r.Float64()*2-1)*jitter*float64(sleep))
			}
		}
	}
	r.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	return evs
}

func TestHuntMatchesReference(t *testing.T) {
	var rows, capped int
	for seed := uint64(0); seed < 60; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		p := Seed()
		p.Lookback = time.Duration(20+r.IntN(60)) * time.Minute
		p.JitterThreshold = []float64{50, 15, 80}[r.IntN(3)]
		p.CompromisedDeviceCountMax = int64(2 + r.IntN(10))
		evs := randomFleet(r, t0, 2*p.Lookback)
		h := NewHunt(p)
		for i := range evs {
			h.Add(&evs[i])
		}
		now, _ := h.DefaultNow()
		for _, at := range []Time{now, now.Add(-p.Lookback / 2), now.Add(p.Lookback / 3)} {
			got := h.Rows(at)
			want := referenceQuery(p, at, evs)
			rows += len(want)
			for _, r := range want {
				if r.DeviceCount > 1 {
					capped++
				}
			}
			if len(got) != len(want) {
				t.Fatalf("seed %d at %s: %d rows, reference %d", seed, at, len(got), len(want))
			}
			for i := range got {
				g, w := got[i], want[i]
				// Variance: exact integer formula vs two-pass; equal to rounding.
				if math.Abs(g.Variance-w.Variance) > 1e-9*math.Max(1, w.Variance) ||
					math.Abs(g.Jitter-w.Jitter) > 1e-9*math.Max(1, w.Jitter) {
					t.Fatalf("seed %d row %d: variance %v/%v jitter %v/%v", seed, i, g.Variance, w.Variance, g.Jitter, w.Jitter)
				}
				g.Variance, g.Stdev, g.Jitter = w.Variance, w.Stdev, w.Jitter
				g.P10, g.P90 = 0, 0 // the reference does not expose them
				// The explanation is a mapping of the columns (explain_test.go).
				g.explainSeed()
				w.explainSeed()
				if len(g.Domains) == 0 {
					g.Domains = nil
				}
				if !reflect.DeepEqual(g, w) {
					t.Fatalf("seed %d row %d:\n got %+v\nwant %+v", seed, i, g, w)
				}
			}
		}
	}
	// The comparison means something only if the fleets gave rows, some of
	// them on shared destinations.
	if rows < 100 || capped < 10 {
		t.Fatalf("only %d rows (%d on shared destinations): the random fleet is too tame", rows, capped)
	}
	t.Logf("%d rows compared, %d on shared destinations", rows, capped)
}
