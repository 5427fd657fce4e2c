package beacon

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestRobustFastFold holds robustCandidate's shortcuts through the fold
// (the second fold skipped when the first left the period where it was,
// the gaps under 1.5 periods copied and those beyond MaxMissed periods
// judged by length, without asking multiple about each) to the analysis
// that asks multiple about every gap and folds twice: timers of every
// jitter with missed callbacks, pauses and odd gaps, a second period, and
// Poisson processes give the same answer and statistics both ways. Some
// cases fold gaps (Missed > 0), have pauses, and move the period with the
// first fold, so each shortcut is exercised where it could go wrong.
func TestRobustFastFold(t *testing.T) {
	p := Robust()
	rng := rand.New(rand.NewPCG(10, 13))
	var missed, paused, moved, kept, second int
	for i := range 6000 {
		n := 5 + rng.IntN(300)
		period := 5 + rng.Float64()*3000
		jitter := rng.Float64() * 0.8
		poisson := i%7 == 0
		period2 := 0.0
		if i%11 == 0 {
			period2 = period * (2 + 4*rng.Float64())
		}
		deltas := make([]int64, 0, n)
		for j := range n {
			per := period
			if period2 > 0 && j >= n/2 {
				per = period2
			}
			g := per * (1 + jitter*(2*rng.Float64()-1))
			if poisson {
				g = rng.ExpFloat64() * per
			}
			switch r := rng.Float64(); {
			case r < 0.08:
				g += per * float64(1+rng.IntN(5)) // missed callbacks, some beyond MaxMissed
			case r < 0.10:
				g += per * (4 + 6*rng.Float64()) // a pause, or an odd gap past MaxMissed periods
			case r < 0.13:
				g = float64(rng.IntN(3)) // a burst
			}
			deltas = append(deltas, max(0, int64(g))) // seconds
		}
		s := SummaryOf(deltas)
		distinct := int64(len(deltas) + 1)
		robustFastFold = true
		fast, okFast := p.Candidate(distinct, &s)
		robustFastFold = false
		plain, okPlain := p.Candidate(distinct, &s)
		robustFastFold = true
		if okFast != okPlain || !reflect.DeepEqual(fast, plain) {
			t.Fatalf("case %d (period %.0f s, jitter %.2f, poisson %v, period2 %.0f): fast %v %+v, plain %v %+v",
				i, period, jitter, poisson, period2, okFast, fast.R, okPlain, plain.R)
		}
		if !okPlain {
			continue
		}
		kept++
		if plain.R.Missed > 0 {
			missed++
		}
		if plain.R.Pauses > 0 {
			paused++
		}
		if plain.R.Period2 > 0 {
			second++
		}
		var raw []wbin
		var nGaps int64
		for _, b := range s.Hist {
			if b.Delta > p.Robust.BurstGap {
				raw = append(raw, wbin{float64(b.Delta), b.Count})
				nGaps += b.Count
			}
		}
		if weightedMedian(raw, nGaps) != plain.R.Period {
			moved++
		}
	}
	if kept < 500 || missed < 100 || paused < 100 || moved < 100 || second < 10 {
		t.Fatalf("candidates %d: with missed callbacks %d, pauses %d, a period the fold moved %d, a second period %d: draw more of each",
			kept, missed, paused, moved, second)
	}
}
