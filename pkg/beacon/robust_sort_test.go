package beacon

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSortWbins holds robustCandidate's sort (merging ascending runs) and
// its deviations (merging the two sides of the centre) to a plain sort of
// the same values, on lists of 1 to 12 runs with ties.
func TestSortWbins(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var tmp, dev []wbin
	merged := 0
	for n := range 3000 {
		var vs []wbin
		runs := 1 + rng.IntN(12)
		for range runs {
			v := float64(rng.IntN(50))
			for range rng.IntN(20) {
				v += float64(rng.IntN(4)) // ties too
				vs = append(vs, wbin{v, 1 + rng.Int64N(3)})
			}
		}
		want := slices.Clone(vs)
		slices.SortFunc(want, func(a, b wbin) int { return cmp.Compare(a.v, b.v) })
		got := slices.Clone(vs)
		tmp = sortWbins(got, tmp)
		if !sameValues(got, want) {
			t.Fatalf("list %d: sortWbins(%v) = %v, want %v", n, vs, got, want)
		}
		if runs > 1 && runs <= maxRuns {
			merged++
		}
		if len(want) == 0 {
			continue
		}
		center := want[rng.IntN(len(want))].v + float64(rng.IntN(3)-1)*0.5
		dev = absDeviations(dev[:0], want, center)
		var brute []wbin
		for _, b := range want {
			brute = append(brute, wbin{math.Abs(b.v - center), b.c})
		}
		slices.SortFunc(brute, func(a, b wbin) int { return cmp.Compare(a.v, b.v) })
		if !sameValues(dev, brute) {
			t.Fatalf("list %d: absDeviations(%v, %g) = %v, want %v", n, want, center, dev, brute)
		}
	}
	if merged < 1000 {
		t.Fatalf("only %d lists merged", merged)
	}
}

// sameValues compares sorted weighted lists as weightedAt reads them:
// the same value at every rank.
func sameValues(a, b []wbin) bool {
	var na, nb int64
	for _, x := range a {
		na += x.c
	}
	for _, x := range b {
		nb += x.c
	}
	if na != nb || len(a) != len(b) {
		return false
	}
	for k := range na {
		if weightedAt(a, k) != weightedAt(b, k) {
			return false
		}
	}
	return true
}

// TestFoldedScan holds robustCandidate's one pass over the sorted folded
// gaps (foldedScan: the gaps on time and supported, and the interdecile
// range) and its median deviation (medianDeviation, which stops at the
// median's rank) to the plain loops, weightedQuantile and
// weightedMedian(absDeviations), on lists of every length from one gap,
// where the quantiles' ranks coincide, with ties.
func TestFoldedScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var dev []wbin
	for n := range 5000 {
		var vs []wbin
		v := float64(1 + rng.IntN(20))
		for range 1 + rng.IntN(1+n%40) {
			vs = append(vs, wbin{v, 1 + rng.Int64N(3)})
			v += float64(rng.IntN(8)) * 0.5 // ties too
		}
		var total int64
		for _, b := range vs {
			total += b.c
		}
		period := vs[rng.IntN(len(vs))].v + float64(rng.IntN(5)-2)*0.25
		tol := 0.1 + 0.3*rng.Float64()
		onTime, supported, idr := foldedScan(vs, total, period, tol)
		var wantOn, wantSup int64
		for _, b := range vs {
			d := math.Abs(b.v - period)
			if d <= tol*period {
				wantOn += b.c
			}
			if d <= jitterBand*period {
				wantSup += b.c
			}
		}
		wantIDR := weightedQuantile(vs, total, 0.9) - weightedQuantile(vs, total, 0.1)
		if onTime != wantOn || supported != wantSup || idr != wantIDR {
			t.Fatalf("list %d %v (period %g): foldedScan = %d, %d, %g, want %d, %d, %g", n, vs, period, onTime, supported, idr, wantOn, wantSup, wantIDR)
		}
		dev = absDeviations(dev[:0], vs, period)
		if got, want := medianDeviation(vs, total, period), weightedMedian(dev, total); got != want {
			t.Fatalf("list %d %v (centre %g): medianDeviation = %g, want %g", n, vs, period, got, want)
		}
	}
}
