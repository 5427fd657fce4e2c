package state

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// TestTupleIndex: random adds and removes, with every hash in 8 values (long
// runs, wrap-around, backward shifts) and with full hashes; every live
// entry stays reachable from its home slot and nothing else is left.
func TestTupleIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, mask := range []uint32{7, 0xffffffff} {
		var x tupleIndex
		have := map[uint32]uint32{}
		for step := 0; step < 200000; step++ {
			if len(have) < 3000 && rng.IntN(2) == 0 {
				id := uint32(step)
				h := rng.Uint32() & mask
				x.add(h, id)
				have[id] = h
			} else {
				for id, h := range have {
					x.remove(h, id)
					delete(have, id)
					break
				}
			}
			if step%997 == 0 {
				n := 0
				for _, s := range x.slots {
					if s == 0 {
						continue
					}
					n++
					id := uint32(s) - 1
					if h, ok := have[id]; !ok || h != uint32(s>>32) {
						t.Fatalf("step %d: slot %x not live", step, s)
					}
				}
				// every live reachable
				for id, h := range have {
					want := slotOf(h, id)
					found := false
					for i := x.home(h); x.slots[i] != 0; i = (i + 1) & (len(x.slots) - 1) {
						if x.slots[i] == want {
							found = true
							break
						}
					}
					if !found {
						t.Fatalf("step %d: %d unreachable", step, id)
					}
				}
				if n != len(have) || x.n != n {
					t.Fatalf("count %d %d %d", n, len(have), x.n)
				}
			}
		}
	}
}

// TestSortWork: insert's order (tuple id, then time) for batches on both
// sides of sortWork's insertion-sort bound, with repeated ids and times
// (duplicates must end up adjacent) and inputs in time order.
func TestSortWork(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := range 150 {
		for _, inOrder := range []bool{false, true} {
			w := make([]item, n)
			for i := range w {
				w[i] = item{id: uint32(rng.IntN(8)), t: beacon.Time(rng.IntN(16))}
				if inOrder && i > 0 {
					w[i].t = w[i-1].t + beacon.Time(rng.IntN(2))
				}
			}
			want := slices.Clone(w)
			slices.SortStableFunc(want, func(a, b item) int {
				return cmp.Or(cmp.Compare(a.id, b.id), cmp.Compare(a.t, b.t))
			})
			sortWork(w)
			if !slices.Equal(w, want) {
				t.Fatalf("n=%d in order %v: sorted\n%v\nwant\n%v", n, inOrder, w, want)
			}
		}
	}
}
