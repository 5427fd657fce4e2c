package beacon

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

// A summary kept by Add and Remove equals the summary of the list, and so
// do the statistics computed from it, bit for bit.
func TestSummaryIncrementalEqualsList(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	p := Seed()
	var s Summary
	var list []int64
	for step := 0; step < 20000; step++ {
		if len(list) > 0 && r.IntN(3) == 0 {
			i := r.IntN(len(list))
			if !s.Remove(list[i]) {
				t.Fatalf("Remove(%d) of a present delta failed", list[i])
			}
			list = append(list[:i], list[i+1:]...)
		} else {
			d := int64(r.IntN(8)) * int64(1+r.IntN(40))
			s.Add(d)
			list = append(list, d)
		}
		want := SummaryOf(list)
		if !s.Equal(&want) {
			t.Fatalf("step %d: incremental %+v != list %+v", step, s, want)
		}
		if step%97 == 0 && len(list) > 0 {
			// Sprint, not DeepEqual: a NaN jitter (all deltas 0) must match too.
			if a, b := p.Stats(&s), p.Stats(&want); fmt.Sprint(a) != fmt.Sprint(b) {
				t.Fatalf("stats differ: %+v vs %+v", a, b)
			}
		}
	}
	if s.Remove(-5) {
		t.Fatal("Remove of an absent delta reported true")
	}
}

// Very large sums stay exact: nΣd² needs more than 64 bits here, so the
// 128-bit numerator is what keeps the answer right.
func TestSampleVarianceLarge(t *testing.T) {
	// 1e10 deltas, half 0 s and half 2 s: Σd = 1e10, Σd² = 2e10, and
	// nΣd² = 2e20 > 2⁶⁴. Variance = (2e20 − 1e20)/(1e10·(1e10 − 1)).
	n, sum, sumSq := int64(10_000_000_000), int64(10_000_000_000), int64(20_000_000_000)
	want := 1e20 / (1e10 * (1e10 - 1))
	if v := sampleVariance(n, sum, sumSq); math.Abs(v-want) > 1e-15 {
		t.Fatalf("variance = %v, want %v", v, want)
	}
	// All deltas equal: exactly 0, however large.
	if v := sampleVariance(n, 2*sum, 4*sum); v != 0 {
		t.Fatalf("variance of equal deltas = %v", v)
	}
}

// TestSummaryOfIsAdd holds SummaryOf (the histogram read off sorted
// deltas) to adding the deltas one by one.
func TestSummaryOfIsAdd(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var scratch []int64
	var hist []Bin
	for n := range 200 {
		deltas := make([]int64, n)
		for i := range deltas {
			deltas[i] = r.Int64N(int64(n/3 + 2)) // repeats, and 0
		}
		var want Summary
		for _, d := range deltas {
			want.Add(d)
		}
		var got Summary
		got, scratch = summaryOf(deltas, scratch, nil)
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(SummaryOf(deltas), want) {
			t.Fatalf("%v: %+v, want %+v", deltas, got, want)
		}
		// Built in the array of the last one's histogram (as Hunt.Rows
		// does): the same summary, whatever that array held.
		if n > 0 {
			got, scratch = summaryOf(deltas, scratch, hist)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%v, histogram reused: %+v, want %+v", deltas, got, want)
			}
			hist = got.Hist[:cap(got.Hist)]
		}
	}
}
