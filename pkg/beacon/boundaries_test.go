package beacon

import (
	"math"
	"testing"
	"time"
)

// Boundaries: every comparison of the query, hit exactly, so that turning
// a < into <= (or > into >=) fails a test. Other boundaries live with
// their rule: the window's two ends (TestWindowBothEndsInclusive), the
// count at TotalEventsThresholdMin and TotalEventsThresholdMax
// (TestCountFilter), the device count at the cap (TestDeviceCap), the
// outlier count at OutlierCountMax (TestOutliersDropPerfectTimerWithOddGaps),
// the Domains bound (TestDomainsEnrichment); the table in docs/testing.md
// lists them.

// gapsOf expands (count, gap in seconds) pairs.
func gapsOf(pairs ...int) []Time {
	var gs []Time
	for i := 0; i+1 < len(pairs); i += 2 {
		for range pairs[i] {
			gs = append(gs, Time(pairs[i+1])*Second)
		}
	}
	return gs
}

// Jitter < JitterThreshold: a jitter exactly at the threshold is dropped.
// Deltas 6 × 15 s and 10 × 55 s: avg 40, sample variance 400, stdev 20,
// jitter exactly 50 in float64, the seed's threshold.
func TestJitterExactlyAtThreshold(t *testing.T) {
	gaps := gapsOf(3, 15, 5, 55, 3, 15, 5, 55)
	evs := beaconEvents("d1", "x.exe", "8.8.8.8", 443, series(t0, gaps...))
	p := Seed()
	if p.JitterThreshold != 50 {
		t.Fatalf("seed JitterThreshold %v, the case is built for 50", p.JitterThreshold)
	}
	if rows := hunt(p, 0, evs); len(rows) != 0 {
		t.Fatalf("jitter %v exactly at the threshold %v was kept", rows[0].Jitter, p.JitterThreshold)
	}
	p.JitterThreshold = math.Nextafter(50, math.Inf(1))
	r := oneRow(t, hunt(p, 0, evs))
	if r.Jitter != 50 || r.Avg != 40 || r.Variance != 400 {
		t.Fatalf("jitter %v avg %v variance %v: the case no longer sits on the boundary", r.Jitter, r.Avg, r.Variance)
	}
}

// An outlier is a score > OutlierThresholdMax or < the low bound: a score
// exactly at either bound is not an outlier. The score is computed by the
// reference (refSeriesOutliers), not by the engine.
func TestOutlierScoreExactlyAtBounds(t *testing.T) {
	// 22 deltas: 20, 55…74, 100. P10 = 56.1, P90 = 72.9.
	var deltas []int64
	deltas = append(deltas, 20)
	for d := int64(55); d <= 74; d++ {
		deltas = append(deltas, d)
	}
	deltas = append(deltas, 100)
	gaps := make([]Time, len(deltas))
	for i, d := range deltas {
		gaps[i] = Time(d) * Second
	}
	evs := beaconEvents("d1", "x.exe", "8.8.8.8", 443, series(t0, gaps...))
	scores, _, _ := refSeriesOutliers(deltas)
	high, low := scores[len(scores)-1], scores[0]
	if !(high > 2 && low < -3) {
		t.Fatalf("scores of 100 and 20 are %v and %v; the case needs them outside (−3, 2)", high, low)
	}
	kept := func(p Params) bool { return len(hunt(p, 0, evs)) == 1 }
	p := Seed()
	p.OutlierCountMax = 0 // a single outlier drops the tuple
	wide := -1e9
	p.OutlierThresholdLow = &wide
	p.OutlierThresholdMax = high
	if !kept(p) {
		t.Error("a score exactly at OutlierThresholdMax counted as an outlier")
	}
	p.OutlierThresholdMax = math.Nextafter(high, math.Inf(-1))
	if kept(p) {
		t.Error("a score just above OutlierThresholdMax is no outlier")
	}
	p.OutlierThresholdMax = 1e9
	p.OutlierThresholdLow = &low
	if !kept(p) {
		t.Error("a score exactly at the low bound counted as an outlier")
	}
	below := math.Nextafter(low, math.Inf(1))
	p.OutlierThresholdLow = &below
	if kept(p) {
		t.Error("a score just below the low bound is no outlier")
	}
}

// The window is [now − lookback, now − 1 s]: a tuple whose 16th timestamp
// is exactly at either end is a row, and one a tick outside is not.
func TestWindowEndsDecideTheCount(t *testing.T) {
	p := Seed()
	now := t0.Add(48 * time.Hour)
	from, to := now.Add(-24*time.Hour), now.Add(-time.Second)
	inner := series(from.Add(time.Hour), every(14, 60*Second)...) // 15 timestamps inside
	for _, c := range []struct {
		name string
		at   Time
		want int
	}{
		{"at the start", from, 1},
		{"a tick before the start", from - Tick, 0},
		{"at the end", to, 1},
		{"a tick after the end", to + Tick, 0},
	} {
		ts := append(append([]Time(nil), inner...), c.at)
		p.JitterThreshold, p.OutlierCountMax = 1e9, 1e9 // only the count decides
		if got := len(hunt(p, now, beaconEvents("d1", "x.exe", "8.8.8.8", 443, ts))); got != c.want {
			t.Errorf("16th timestamp %s: %d rows, want %d", c.name, got, c.want)
		}
	}
}
