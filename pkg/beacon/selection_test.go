package beacon

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// TestSameSelection holds SameSelection to SelectDestination, both
// profiles: over random destinations, one candidate's statistics are
// replaced by a variant, and whenever SameSelection says the answer
// stands, SelectDestination's kept indexes, device count and the fields
// it sets are the same as before. Variants are drawn near every threshold
// SelectDestination reads, so both answers occur often.
func TestSameSelection(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	robust, seed := Robust(), Seed()
	seed.SleepMin, seed.SleepMax = 30, 3600
	for _, p := range []*Params{&robust, &seed} {
		t.Run(cmp.Or(p.Profile, ProfileSeed), func(t *testing.T) {
			same, differ, changed := 0, 0, 0
			for n := range 20000 {
				cands := make([]Candidate, 1+rng.IntN(8))
				for i := range cands {
					cands[i] = Candidate{Tuple: Tuple{DeviceId: fmt.Sprintf("dev-%d", rng.IntN(5)), RemotePort: int32(i)}, Stats: randomStats(rng, p)}
				}
				j := rng.IntN(len(cands))
				b := cands[j].Stats
				switch rng.IntN(3) {
				case 0:
					b = randomStats(rng, p)
				case 1:
					b.Count++ // what every new gap changes, nothing read
				default: // one field of another draw
					o := randomStats(rng, p)
					switch rng.IntN(11) {
					case 0:
						b.R.Period = o.R.Period
					case 1:
						b.R.Score = o.R.Score
					case 2:
						b.R.Callbacks = o.R.Callbacks
					case 3:
						b.R.Dispersion = o.R.Dispersion
					case 4:
						b.R.Support = o.R.Support
					case 5:
						b.R.Coverage = o.R.Coverage
					case 6:
						b.Outliers = o.Outliers
					case 7:
						b.R.Span = o.R.Span
					case 8:
						b.R.Pauses = o.R.Pauses
					case 9:
						b.R.CountScore = o.R.CountScore
					default:
						b.Avg = o.Avg
					}
				}
				before := slices.Clone(cands)
				kept0, dev0 := p.SelectDestination(before)
				after := slices.Clone(cands)
				ok := p.SameSelection(&after[j].Stats, &b)
				after[j].Stats = b
				kept1, dev1 := p.SelectDestination(after)
				if !ok {
					differ++
					continue
				}
				same++
				for i := range after {
					if i != j && !reflect.DeepEqual(after[i], before[i]) {
						t.Fatalf("destination %d: candidate %d set to %+v, before %+v", n, i, after[i], before[i])
					}
				}
				if after[j].R.PeriodDevices != before[j].R.PeriodDevices || !slices.Equal(kept0, kept1) || dev0 != dev1 {
					t.Fatalf("destination %d: SameSelection(%+v, %+v), but kept %v on %d devices, before %v on %d", n, cands[j].Stats, b, kept1, dev1, kept0, dev0)
				}
				if len(kept0) > 0 {
					changed++
				}
			}
			if same < 500 || differ < 500 || changed < 100 {
				t.Fatalf("too tame: %d same, %d differ, %d with rows", same, differ, changed)
			}
		})
	}
}

// randomStats draws statistics around the thresholds p's SelectDestination
// reads.
func randomStats(rng *rand.Rand, p *Params) Stats {
	pick := func(vs ...float64) float64 { return vs[rng.IntN(len(vs))] }
	s := Stats{Count: 10 + rng.Int64N(100), Avg: pick(10, 29, 30, 31, 600, 3599, 3600, 3601), Outliers: rng.Int64N(p.OutlierCountMax + 2)}
	if p.Profile == ProfileRobust {
		r := &p.Robust
		s.R = RobustStats{On: true, Period: pick(60, 61, 75, 76, 300, 3600),
			Score:      pick(r.RareThreshold-0.01, r.RareThreshold, r.Threshold-0.01, r.Threshold, 0.9),
			Callbacks:  int64(pick(float64(r.MinCallbacks-1), float64(r.MinCallbacks), float64(r.RareCallbacks), 50)),
			Dispersion: pick(0.5, 0.8, 1), Support: pick(0.5, 0.8, 1), Coverage: pick(0.5, 1),
			Span:       pick(r.RareSpan.Seconds()-1, r.RareSpan.Seconds(), 2*r.RareSpan.Seconds()),
			Pauses:     int64(pick(0, 0, 1)),
			CountScore: pick(r.RareEvidence-0.01, r.RareEvidence, 1)}
	}
	return s
}

// TestRobustSelectSmall holds robustSelect's numbering of devices by
// comparison (smallSelect candidates or fewer) to the map it uses for
// more: over random destinations of up to twice smallSelect candidates
// on a few devices each, near every threshold, the kept indexes, the
// device count and every candidate's PeriodDevices are the same.
func TestRobustSelectSmall(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 17))
	p := Robust()
	p.CompromisedDeviceCountMax = 3 // groups over the cap occur
	small := smallSelect
	defer func() { smallSelect = small }()
	var kept, capped int
	for range 20000 {
		cands := make([]Candidate, 2+rng.IntN(2*small))
		devs := 1 + rng.IntN(len(cands))
		for i := range cands {
			cands[i] = Candidate{Tuple: Tuple{DeviceId: fmt.Sprintf("dev-%d", rng.IntN(devs)), RemotePort: int32(i)}, Stats: randomStats(rng, &p)}
		}
		ref := slices.Clone(cands)
		smallSelect = small
		k0, d0 := p.SelectDestination(cands)
		smallSelect = 0
		k1, d1 := p.SelectDestination(ref)
		if !slices.Equal(k0, k1) || d0 != d1 || !reflect.DeepEqual(cands, ref) {
			t.Fatalf("%d candidates on %d devices: by comparison kept %v of %d devices, by map %v of %d", len(cands), devs, k0, d0, k1, d1)
		}
		if len(cands) <= small && len(k0) > 0 {
			kept++
		}
		for i := range cands {
			if cands[i].R.PeriodDevices > p.CompromisedDeviceCountMax && len(cands) <= small {
				capped++
				break
			}
		}
	}
	if kept < 1000 || capped < 1000 {
		t.Fatalf("small destinations with a kept candidate %d, with a group over the cap %d: draw more", kept, capped)
	}
}

// TestSelectNumbered holds SelectNumbered to SelectDestination, both
// profiles: over random destinations of up to twice smallSelect
// candidates on a few devices, numbered at random (numbers skipped, as a
// stream's freed ones are), near every threshold, the kept indexes, the
// device count and every field SelectDestination sets are the same.
func TestSelectNumbered(t *testing.T) {
	rng := rand.New(rand.NewPCG(18, 19))
	robust, seed := Robust(), Seed()
	robust.CompromisedDeviceCountMax, seed.CompromisedDeviceCountMax = 3, 3 // over the cap occurs
	seed.SleepMin, seed.SleepMax = 30, 3600
	for _, p := range []*Params{&robust, &seed} {
		t.Run(p.Profile, func(t *testing.T) {
			var kept, capped int
			for range 20000 {
				cands := make([]Candidate, 1+rng.IntN(2*smallSelect))
				devs := 1 + rng.IntN(len(cands))
				nums := rng.Perm(devs + rng.IntN(4))
				dev := make([]int32, len(cands))
				for i := range cands {
					d := rng.IntN(devs)
					cands[i] = Candidate{Tuple: Tuple{DeviceId: fmt.Sprintf("dev-%d", d), RemotePort: int32(i)}, Stats: randomStats(rng, p)}
					dev[i] = int32(nums[d])
				}
				ref := slices.Clone(cands)
				k0, d0 := p.SelectNumbered(cands, dev, len(nums))
				k1, d1 := p.SelectDestination(ref)
				if !slices.Equal(k0, k1) || d0 != d1 || !reflect.DeepEqual(cands, ref) {
					t.Fatalf("%d candidates on %d devices: numbered kept %v of %d devices, SelectDestination %v of %d", len(cands), devs, k0, d0, k1, d1)
				}
				if len(k0) > 0 {
					kept++
				}
				if d0 > p.CompromisedDeviceCountMax {
					capped++
				}
			}
			if kept < 1000 || capped < 1000 {
				t.Fatalf("destinations with a kept candidate %d, over the device cap %d: draw more", kept, capped)
			}
		})
	}
}

// TestSelectHinted holds SelectHinted to SelectDestination whatever the
// hint holds: none, the last call's over candidates some of which changed
// period, came or went (robust's insertion sort from it, and its bound
// when periods moved far), or indexes out of range and repeated. The
// kept indexes, the device count and every candidate's PeriodDevices
// are the same, and the hint is robust's sorted order after the call.
func TestSelectHinted(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 21))
	robust, seed := Robust(), Seed()
	robust.CompromisedDeviceCountMax, seed.CompromisedDeviceCountMax = 3, 3
	robust.Robust.PeriodTolerance = 0.05 // more groups to tell apart
	periods := []float64{60, 61, 63, 64, 66, 70, 75, 76, 300, 310, 3600}
	for _, p := range []*Params{&robust, &seed} {
		t.Run(p.Profile, func(t *testing.T) {
			var hint []int32
			var cands []Candidate
			var dev []int32
			ndev, bounded := 8, 0
			for step := range 6000 {
				switch r := rng.IntN(10); {
				case step%150 == 0:
					cands, dev, hint = nil, nil, nil // a new destination
				case r < 4 && len(cands) > 0: // a candidate leaves: the last takes its place
					i := rng.IntN(len(cands))
					cands[i], dev[i] = cands[len(cands)-1], dev[len(dev)-1]
					cands, dev = cands[:len(cands)-1], dev[:len(dev)-1]
				case r == 4:
					hint = append(hint, -1, int32(rng.IntN(100)), 0, 0) // garbage
				}
				for range rng.IntN(3) { // candidates arrive
					d := rng.IntN(ndev)
					cands = append(cands, Candidate{Tuple: Tuple{DeviceId: fmt.Sprintf("dev-%d", d), RemotePort: int32(len(cands))}, Stats: randomStats(rng, p)})
					dev = append(dev, int32(d))
				}
				moves := rng.IntN(3)
				if rng.IntN(20) == 0 {
					moves = len(cands) // every period moves: the insertion sort gives up
				}
				for range moves {
					if len(cands) > 0 {
						cands[rng.IntN(len(cands))].R.Period = periods[rng.IntN(len(periods))] * (1 + 0.001*float64(rng.IntN(3)))
					}
				}
				ref := slices.Clone(cands)
				k0, d0 := p.SelectHinted(cands, dev, ndev, &hint)
				k1, d1 := p.SelectDestination(ref)
				if !slices.Equal(k0, k1) || d0 != d1 || !reflect.DeepEqual(cands, ref) {
					t.Fatalf("step %d, %d candidates: hinted kept %v of %d devices, SelectDestination %v of %d", step, len(cands), k0, d0, k1, d1)
				}
				if p.Profile != ProfileRobust || len(cands) < 2 {
					continue
				}
				if len(hint) != len(cands) {
					t.Fatalf("step %d: hint %v for %d candidates", step, hint, len(cands))
				}
				for i := 1; i < len(hint); i++ {
					if cands[hint[i]].R.Period < cands[hint[i-1]].R.Period {
						t.Fatalf("step %d: hint %v not in period order", step, hint)
					}
				}
				if moves == len(cands) && len(cands) > 8 {
					bounded++
				}
			}
			if p.Profile == ProfileRobust && bounded < 100 {
				t.Fatalf("only %d selections after every period moved", bounded)
			}
		})
	}
}
