package beacon

import (
	"math"
	"math/bits"
	"slices"
	"sort"
)

// Bin is one entry of a delta histogram: Count deltas of Delta seconds.
type Bin struct {
	Delta int64
	Count int64
}

// Summary is the exact, incremental summary of a tuple's time deltas
// (TimeDeltaList): how many, their sum and sum of squares as integers, and a
// histogram sorted by delta. Deltas are whole seconds, so nothing here is
// rounded, and every column the query decides on can be computed from it
// (see Params.Stats) without the list itself.
//
// Σd² ≤ (Σd)² ≤ (lookback in seconds)², so int64 holds any window shorter
// than about 96 years.
type Summary struct {
	N     int64
	Sum   int64
	SumSq int64
	Hist  []Bin
}

// SummaryOf summarizes a list of deltas.
func SummaryOf(deltas []int64) Summary {
	s, _ := summaryOf(deltas, nil, nil)
	return s
}

// summaryOf is SummaryOf with a scratch slice to sort the deltas in, which
// it returns for reuse, and the histogram built in hist's array (hist is
// the Hist of a summary the caller is done with, or nil): the histogram
// is read off the sorted deltas in one pass, not built by inserting each
// (TestSummaryOfIsAdd).
func summaryOf(deltas, scratch []int64, hist []Bin) (Summary, []int64) {
	s := Summary{Hist: hist[:0]}
	if len(deltas) == 0 {
		return s, scratch
	}
	sorted := append(scratch[:0], deltas...)
	slices.Sort(sorted)
	for i := 0; i < len(sorted); {
		d := sorted[i]
		j := i + 1
		for j < len(sorted) && sorted[j] == d {
			j++
		}
		s.Hist = append(s.Hist, Bin{Delta: d, Count: int64(j - i)})
		i = j
	}
	for _, d := range deltas {
		s.Sum += d
		s.SumSq += d * d
	}
	s.N = int64(len(deltas))
	return s, sorted
}

// Add counts one more delta of d seconds.
func (s *Summary) Add(d int64) {
	s.N++
	s.Sum += d
	s.SumSq += d * d
	i := s.search(d)
	if i < len(s.Hist) && s.Hist[i].Delta == d {
		s.Hist[i].Count++
		return
	}
	s.Hist = append(s.Hist, Bin{})
	copy(s.Hist[i+1:], s.Hist[i:])
	s.Hist[i] = Bin{Delta: d, Count: 1}
}

// Remove uncounts one delta of d seconds. It reports false, and changes
// nothing, when the summary holds no such delta.
func (s *Summary) Remove(d int64) bool {
	i := s.search(d)
	if i == len(s.Hist) || s.Hist[i].Delta != d {
		return false
	}
	s.N--
	s.Sum -= d
	s.SumSq -= d * d
	if s.Hist[i].Count--; s.Hist[i].Count == 0 {
		s.Hist = append(s.Hist[:i], s.Hist[i+1:]...)
	}
	return true
}

// search is sort.Search for the first bin with Delta ≥ d, written out: a
// stream adds and removes a delta per connection, and sort.Search's
// closure call per probe was most of Add's time.
func (s *Summary) search(d int64) int {
	lo, hi := 0, len(s.Hist)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.Hist[m].Delta < d {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Equal reports whether two summaries count the same deltas.
func (s *Summary) Equal(o *Summary) bool {
	if s.N != o.N || s.Sum != o.Sum || s.SumSq != o.SumSq || len(s.Hist) != len(o.Hist) {
		return false
	}
	for i := range s.Hist {
		if s.Hist[i] != o.Hist[i] {
			return false
		}
	}
	return true
}

// at returns the k-th smallest delta (0-based).
func (s *Summary) at(k int64) int64 {
	for _, b := range s.Hist {
		if k < b.Count {
			return b.Delta
		}
		k -= b.Count
	}
	return s.Hist[len(s.Hist)-1].Delta
}

// Stats are the columns of one tuple that the query computes from its
// deltas, plus the outlier analysis it filters on.
type Stats struct {
	Count       int64    // count_: number of deltas
	Min, Max    int64    // TimeDeltaInSeconds_min, _max
	Avg         float64  // TimeDeltaInSeconds_avg
	Stdev       float64  // TimeDeltaInSeconds_stdev (sample)
	Variance    float64  // TimeDeltaInSeconds_variance (sample)
	Jitter      float64  // Stdev/Avg*100
	Percentiles [5]int64 // percentile_TimeDeltaInSeconds_5, 25, 50, 75, 95
	P10, P90    float64  // series_outliers' interpolated bounds
	Outliers    int64    // deltas scoring > OutlierThresholdMax or < low bound
	// R is the robust profile's analysis (R.On); zero for seed.
	R RobustStats
}

// QueryPercentiles are the percents of the query's percentiles() call.
var QueryPercentiles = [5]float64{5, 25, 50, 75, 95}

// tukeyScale is series_outliers' constant for kind ctukey.
const tukeyScale = 2.772605605507915

// Stats computes every delta statistic of the query from a summary. It
// never reads the timestamp list. s.N must be at least 1.
func (p *Params) Stats(s *Summary) Stats {
	st := Stats{Count: s.N, Min: s.Hist[0].Delta, Max: s.Hist[len(s.Hist)-1].Delta}
	st.Avg = float64(s.Sum) / float64(s.N)
	st.Variance = sampleVariance(s.N, s.Sum, s.SumSq)
	st.Stdev = math.Sqrt(st.Variance)
	st.Jitter = (st.Stdev / st.Avg) * 100
	for i, pc := range QueryPercentiles {
		st.Percentiles[i] = s.NearestRank(pc)
	}
	st.P10 = s.interpolated(10)
	st.P90 = s.interpolated(90)
	low := p.lowBound()
	for _, b := range s.Hist {
		sc := outlierScore(float64(b.Delta), st.P10, st.P90)
		if sc > p.OutlierThresholdMax || sc < low {
			st.Outliers += b.Count
		}
	}
	return st
}

// sampleVariance is (nΣd² − (Σd)²) / (n(n−1)), with the numerator exact in
// 128 bits; 0 for fewer than two values.
func sampleVariance(n, sum, sumSq int64) float64 {
	if n < 2 {
		return 0
	}
	ah, al := bits.Mul64(uint64(n), uint64(sumSq))
	bh, bl := bits.Mul64(uint64(sum), uint64(sum))
	if sum < 0 { // deltas are never negative; keep the arithmetic honest anyway
		bh, bl = bits.Mul64(uint64(-sum), uint64(-sum))
	}
	lo, borrow := bits.Sub64(al, bl, 0)
	hi, _ := bits.Sub64(ah, bh, borrow)
	num := float64(lo)
	if hi != 0 {
		num = float64(hi)*0x1p64 + float64(lo)
	}
	return num / (float64(n) * float64(n-1))
}

// NearestRank is Kusto's percentile: the value at 1-based rank
// ceil(P/100·n) of the sorted deltas; P = 0 gives the minimum.
func (s *Summary) NearestRank(pc float64) int64 {
	r := int64(math.Ceil(pc * float64(s.N) / 100))
	if r < 1 {
		r = 1
	}
	if r > s.N {
		r = s.N
	}
	return s.at(r - 1)
}

// interpolated is the pc-th percentile with linear interpolation between
// closest ranks, at 0-based index pc·(n−1)/100, computed in integers so no
// index is misplaced by rounding.
func (s *Summary) interpolated(pc int64) float64 {
	k := (s.N - 1) * pc / 100
	rem := (s.N - 1) * pc % 100
	lo := float64(s.at(k))
	if rem == 0 {
		return lo
	}
	return interpolate(lo, float64(s.at(k+1)), float64(rem)/100)
}

func interpolate(lo, hi, frac float64) float64 { return lo + frac*(hi-lo) }

// outlierScore is series_outliers' ctukey score of x: 0 inside [p10, p90],
// else the distance to the nearer bound over the spread, scaled. A zero
// spread scores ±Inf outside the bounds, as Kusto does.
func outlierScore(x, p10, p90 float64) float64 {
	switch {
	case x > p90:
		return (x - p90) / (p90 - p10) * tukeyScale
	case x < p10:
		return (x - p10) / (p90 - p10) * tukeyScale
	}
	return 0
}

// SeriesOutliers is series_outliers(x) with the default kind ctukey and
// percentiles 10 and 90, for any real series.
func SeriesOutliers(x []float64) []float64 {
	out := make([]float64, len(x))
	if len(x) == 0 {
		return out
	}
	sorted := append([]float64(nil), x...)
	sort.Float64s(sorted)
	p10 := interpolatedSorted(sorted, 10)
	p90 := interpolatedSorted(sorted, 90)
	for i, v := range x {
		out[i] = outlierScore(v, p10, p90)
	}
	return out
}

func interpolatedSorted(sorted []float64, pc int) float64 {
	n := len(sorted)
	k := (n - 1) * pc / 100
	rem := (n - 1) * pc % 100
	if rem == 0 {
		return sorted[k]
	}
	return interpolate(sorted[k], sorted[k+1], float64(rem)/100)
}

// SeriesStats is series_stats over a list of deltas: the Stats columns plus
// the 0-based index of the first minimum and first maximum, which depend on
// order and so need the list.
func (p *Params) SeriesStats(deltas []int64) (st Stats, minIndex, maxIndex int) {
	s := SummaryOf(deltas)
	st = p.Stats(&s)
	minIndex, maxIndex = MinMaxIndex(deltas)
	return st, minIndex, maxIndex
}

// MinMaxIndex returns the index of the first minimum and first maximum.
func MinMaxIndex(deltas []int64) (minIndex, maxIndex int) {
	for i, d := range deltas {
		if d < deltas[minIndex] {
			minIndex = i
		}
		if d > deltas[maxIndex] {
			maxIndex = i
		}
	}
	return minIndex, maxIndex
}
