package state

import "github.com/beaconhunt/beacon/pkg/beacon"

// timeHeap is a min-heap of items by a time: the time-ordered index that
// makes eviction cost O(log n) per tuple that has something to evict,
// instead of a scan of every tuple when stream time moves.
//
// It is lazy: the key is stored beside the item, so sifting never touches
// the items (with a million tuples, reading their fields would be a cache
// miss per step), and an item whose key changes is pushed again rather than
// moved. An entry whose key no longer matches its item is stale; whoever
// pops it checks that and drops it. Keys only ever decrease between pops
// (an out-of-order timestamp before a tuple's first), so stale entries are
// few and leave the heap as soon as the window passes them.
//
// Keys and items are two parallel slices, not a slice of pairs: a tuple's
// entry is then 12 bytes (an 8-byte time, a 4-byte tuple id) instead of a
// pair padded to 16.
type timeHeap[T any] struct {
	keys []beacon.Time
	xs   []T
}

func (h *timeHeap[T]) len() int            { return len(h.keys) }
func (h *timeHeap[T]) topKey() beacon.Time { return h.keys[0] }
func (h *timeHeap[T]) swap(i, j int) {
	h.keys[i], h.keys[j] = h.keys[j], h.keys[i]
	h.xs[i], h.xs[j] = h.xs[j], h.xs[i]
}
func (h *timeHeap[T]) less(i, j int) bool { return h.keys[i] < h.keys[j] }

func (h *timeHeap[T]) push(key beacon.Time, x T) {
	h.keys = append(h.keys, key)
	h.xs = append(h.xs, x)
	j := len(h.keys) - 1
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

// pop removes and returns the top entry's item.
func (h *timeHeap[T]) pop() T {
	x := h.xs[0]
	n := len(h.keys) - 1
	h.keys[0], h.xs[0] = h.keys[n], h.xs[n]
	var zero T
	h.xs[n] = zero // drop the reference
	h.keys, h.xs = h.keys[:n], h.xs[:n]
	i := 0
	for {
		j := 2*i + 1
		if j >= n {
			break
		}
		if r := j + 1; r < n && h.less(r, j) {
			j = r
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	if cap(h.keys) > 1024 && n < cap(h.keys)/4 {
		// Give back what a burst left (a load, a mass expiry).
		h.keys, h.xs = append([]beacon.Time(nil), h.keys...), append([]T(nil), h.xs...)
	}
	return x
}
