package beacon

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestRobustEarlyExit holds robustCandidate's early rejection (a tuple
// whose Score cannot reach the floor even with full coverage) to the whole
// analysis: timers of every jitter, with and without missed callbacks and
// pauses, and Poisson processes, give the same answer and statistics both
// ways, and some of them score just above the floor (where a loose bound
// would reject what the Score keeps).
func TestRobustEarlyExit(t *testing.T) {
	p := Robust()
	rng := rand.New(rand.NewPCG(13, 10))
	var rejected, nearFloor int
	for i := range 4000 {
		n := 5 + rng.IntN(200)
		period := 30 + rng.Float64()*3000
		jitter := rng.Float64() * 1.2
		poisson := i%5 == 0
		deltas := make([]int64, 0, n)
		for range n {
			g := period * (1 + jitter*(2*rng.Float64()-1))
			if poisson {
				g = rng.ExpFloat64() * period
			}
			switch r := rng.Float64(); {
			case r < 0.05:
				g += period * float64(1+rng.IntN(4)) // missed callbacks
			case r < 0.07:
				g += period * 20 // a pause
			}
			deltas = append(deltas, max(1, int64(g))) // seconds
		}
		s := SummaryOf(deltas)
		distinct := int64(len(deltas) + 1)
		robustEarlyExit = true
		fast, okFast := p.Candidate(distinct, &s)
		robustEarlyExit = false
		whole, okWhole := p.Candidate(distinct, &s)
		robustEarlyExit = true
		if okFast != okWhole || !reflect.DeepEqual(fast, whole) {
			t.Fatalf("case %d (period %.0f s, jitter %.2f, poisson %v): early exit %v %+v, whole analysis %v %+v",
				i, period, jitter, poisson, okFast, fast.R, okWhole, whole.R)
		}
		switch {
		case !okWhole:
			rejected++
		case whole.R.Score < p.Robust.floor()+weightCoverage:
			nearFloor++
		}
	}
	if rejected < 100 || nearFloor < 20 {
		t.Fatalf("cases rejected %d, within the coverage weight above the floor %d: draw more of both", rejected, nearFloor)
	}
}
