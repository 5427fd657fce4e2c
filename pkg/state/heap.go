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
type timeHeap[T any] struct{ a []heapEntry[T] }

type heapEntry[T any] struct {
	key beacon.Time
	x   T
}

func (h *timeHeap[T]) len() int           { return len(h.a) }
func (h *timeHeap[T]) top() *heapEntry[T] { return &h.a[0] }

func (h *timeHeap[T]) push(key beacon.Time, x T) {
	h.a = append(h.a, heapEntry[T]{key, x})
	j := len(h.a) - 1
	for j > 0 {
		i := (j - 1) / 2
		if h.a[i].key <= h.a[j].key {
			break
		}
		h.a[i], h.a[j] = h.a[j], h.a[i]
		j = i
	}
}

// pop removes and returns the top entry's item.
func (h *timeHeap[T]) pop() T {
	x := h.a[0].x
	n := len(h.a) - 1
	h.a[0] = h.a[n]
	var zero heapEntry[T]
	h.a[n] = zero // drop the reference
	h.a = h.a[:n]
	i := 0
	for {
		j := 2*i + 1
		if j >= n {
			break
		}
		if r := j + 1; r < n && h.a[r].key < h.a[j].key {
			j = r
		}
		if h.a[j].key >= h.a[i].key {
			break
		}
		h.a[i], h.a[j] = h.a[j], h.a[i]
		i = j
	}
	return x
}
