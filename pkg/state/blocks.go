package state

import (
	"encoding/binary"
	"math"
	"math/bits"
	"slices"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Timestamp blocks.
//
// A tuple's stored timestamps (window and pending, sorted, distinct) are cut
// into blocks by time: block i covers [start_i, start_{i+1}) and is one
// Pebble key. Its value:
//
//	+---------+-------------+--------+--------------------------------------+
//	| n       | first−start | format | n−1 deltas (ticks, each ≥ 1)          |
//	| uvarint | uvarint     | 1 byte | format 0: uvarint each                |
//	|         | (n > 0)     |        | format 1: uvarint min, 1 byte width w |
//	|         |             |        |   then (delta−min) in w bits each,    |
//	|         |             |        |   LSB first, ⌈(n−1)·w/8⌉ bytes         |
//	+---------+-------------+--------+--------------------------------------+
//
// Format 1 (frame of reference) is what a periodic tuple gets: its deltas
// differ by the jitter, so w is the jitter's bits, not the period's (a 60 s
// beacon with ±10 % jitter at 100 ns ticks: 27 bits). Format 0 is chosen
// when it is smaller (irregular tuples: mostly short gaps, a few long). The
// encoder picks the smaller; both are exact at 100 ns.
//
// A block that is partly before the window start is not rewritten when the
// window moves (eviction only reads it): timestamps before the window start
// are dead wherever they sit, and are dropped when the block is next written
// for another reason. A block all of whose timestamps are dead — the next
// block starts at or before the tuple's oldest live timestamp — is deleted
// whole. Appends go to the newest block (the tail) until it holds blockMax
// timestamps, then a new block starts; an out-of-order insert goes to the
// block covering it, which is split in two beyond 2·blockMax.
//
// Blocks are cached decoded in memory (an LRU bounded by the store's block
// budget). Apply changes cached blocks only; the changed ones are encoded and
// written in the batch of the commit, with the offset, and stay cached
// (clean). A block not in the cache is as last committed, so a miss reads
// Pebble's committed state.

// blockMax is the tail block's capacity. Larger blocks cost less key
// overhead on disk; smaller ones less to rewrite when a tuple gets one more
// timestamp per batch.
const blockMax = 48

// blockOverhead is what the cache charges a block beyond its timestamps: the
// struct, the map entry, the slice header.
const blockOverhead = 112

// block is one cached block of a tuple.
type block struct {
	start      beacon.Time
	ts         []beacon.Time // sorted, distinct; may hold dead timestamps
	prev, next *block        // the cache's list, newest (or last given a second chance) after the sentinel
	charged    int64
	id         uint32 // the tuple's
	dirty      bool   // changed since the last commit: in Partition.dirtyBlocks
	deleted    bool   // dropped (its key deleted in the batch)
	used       bool   // read since it was added or last given a second chance (shrinkCache)
}

type blockKey struct {
	id    uint32
	start beacon.Time
}

// appendBlock encodes ts (sorted, distinct, all ≥ start).
func appendBlock(b []byte, start beacon.Time, ts []beacon.Time) []byte {
	b = binary.AppendUvarint(b, uint64(len(ts)))
	if len(ts) == 0 {
		return b
	}
	b = binary.AppendUvarint(b, uint64(ts[0]-start))
	if len(ts) == 1 {
		return append(b, 0)
	}
	lo, hi := uint64(1<<63), uint64(0)
	vlen := 0
	for i := 1; i < len(ts); i++ {
		d := uint64(ts[i] - ts[i-1])
		lo, hi = min(lo, d), max(hi, d)
		vlen += uvarintLen(d)
	}
	w := bits.Len64(hi - lo)
	forLen := uvarintLen(lo) + 1 + ((len(ts)-1)*w+7)/8
	if vlen <= forLen {
		b = append(b, 0)
		for i := 1; i < len(ts); i++ {
			b = binary.AppendUvarint(b, uint64(ts[i]-ts[i-1]))
		}
		return b
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, lo)
	b = append(b, byte(w))
	var cur byte // bits not yet written, LSB first
	n := 0
	for i := 1; i < len(ts); i++ {
		v := uint64(ts[i]-ts[i-1]) - lo
		for k := 0; k < w; {
			take := min(8-n, w-k)
			cur |= byte(v>>k&(1<<take-1)) << n
			n += take
			k += take
			if n == 8 {
				b = append(b, cur)
				cur, n = 0, 0
			}
		}
	}
	if n > 0 {
		b = append(b, cur)
	}
	return b
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// decodeBlock decodes a block value into dst.
func decodeBlock(dst []beacon.Time, start beacon.Time, b []byte) ([]beacon.Time, error) {
	r := reader{b: b}
	n := r.uvarint()
	if r.err || n > uint64(len(b))*8+1 {
		return nil, errCorrupt
	}
	if n == 0 {
		return dst, r.done()
	}
	t := start + beacon.Time(r.uvarint())
	dst = append(dst, t)
	switch r.byte() {
	case 0:
		for i := uint64(1); i < n; i++ {
			d := r.uvarint()
			if d == 0 {
				return nil, errCorrupt
			}
			t += beacon.Time(d)
			dst = append(dst, t)
		}
	case 1:
		lo := r.uvarint()
		w := int(r.byte())
		if r.err || w > 64 || uint64(len(r.b)) != ((n-1)*uint64(w)+7)/8 {
			return nil, errCorrupt
		}
		pos := 0 // bit position in r.b
		for i := uint64(1); i < n; i++ {
			var v uint64
			for got := 0; got < w; {
				byt := uint64(r.b[(pos+got)/8]) >> ((pos + got) % 8)
				take := min(8-(pos+got)%8, w-got)
				v |= (byt & (1<<take - 1)) << got
				got += take
			}
			pos += w
			d := v + lo
			if d == 0 {
				return nil, errCorrupt
			}
			t += beacon.Time(d)
			dst = append(dst, t)
		}
		r.b = nil
	default:
		return nil, errCorrupt
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return dst, nil
}

// noBlock is tuple.b0 of a tuple without blocks.
const noBlock = beacon.Time(math.MinInt64)

// blockIndex is the index of the block of tp covering t, -1 when t is
// before the first block (or there is none).
// It is called for every connection and every eviction, so it is written
// out: most tuples have one block (b0 alone), and most times asked are in
// the newest block.
func (p *Partition) blockIndex(tp *tuple, t beacon.Time) int {
	if tp.b0 == noBlock || t < tp.b0 {
		return -1
	}
	if tp.ext == 0 {
		return 0
	}
	more := p.exts[tp.ext-1].more
	if len(more) == 0 || t >= more[len(more)-1] {
		return len(more)
	}
	// The number of more's starts ≤ t: block 0 is b0's.
	lo, hi := 0, len(more)-1
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if more[m] <= t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// block returns tp's i-th block, from the cache or from Pebble.
func (p *Partition) block(tp *tuple, i int) (*block, error) {
	k := blockKey{tp.id, p.blockAt(tp, i)}
	if b := p.cachedBlock(k); b != nil {
		b.used = true
		return b, nil
	}
	p.key = tsKey(p.key, p.id, uint64(tp.id), k.start)
	v, closer, err := p.s.db.Get(p.key)
	if err != nil {
		return nil, p.corruptErr(tp, "block missing", err)
	}
	ts, err := decodeBlock(nil, k.start, v)
	closer.Close()
	if err != nil {
		return nil, p.corruptErr(tp, "block", err)
	}
	b := &block{id: tp.id, start: k.start, ts: ts}
	p.cacheAdd(b)
	return b, nil
}

// Cached blocks are found by tuple id first: Partition.tail[id] holds one
// cached block of the tuple, the newest of those added (its tail block,
// where its connections go, unless the cache dropped it), and its other
// cached blocks are in Partition.cache. Most tuples have one block: for
// them a lookup is one load from a table indexed by id, and caching a
// block costs no map insert (hashing a block key and growing the map were
// most of what a new tuple cost the cache). A cached block is in exactly
// one of the two.

// cachedBlock returns the cached block of key k, nil when not cached.
func (p *Partition) cachedBlock(k blockKey) *block {
	if b := p.tail[k.id]; b != nil && b.start == k.start {
		return b
	}
	if len(p.cache) == 0 {
		return nil
	}
	return p.cache[k]
}

// growTail makes Partition.tail hold an entry for every tuple slot.
func (p *Partition) growTail() {
	n := int(p.arena.n)
	if n <= len(p.tail) {
		return
	}
	if n > cap(p.tail) {
		t := make([]*block, len(p.tail), max(2*cap(p.tail), n, 1024))
		copy(t, p.tail)
		p.tail = t
	}
	p.tail = p.tail[:n] // never shrunk: the entries beyond len are nil
}

func (p *Partition) cacheAdd(b *block) {
	p.shrinkCache(0)
	switch t := &p.tail[b.id]; {
	case *t == nil:
		*t = b
	case (*t).start < b.start: // a new tail: the old one moves to the map
		p.cache[blockKey{b.id, (*t).start}] = *t
		*t = b
	default:
		p.cache[blockKey{b.id, b.start}] = b
	}
	b.charged = blockOverhead + int64(cap(b.ts))*8
	p.cached += b.charged
	p.s.cached.Add(b.charged)
	b.next, b.prev = p.lru.next, &p.lru
	b.next.prev, p.lru.next = b, b
}

func (p *Partition) cacheDrop(b *block) {
	if t := &p.tail[b.id]; *t == b {
		*t = nil
	} else {
		delete(p.cache, blockKey{b.id, b.start})
	}
	b.prev.next, b.next.prev = b.next, b.prev
	b.prev, b.next = nil, nil
	p.cached -= b.charged
	p.s.cached.Add(-b.charged)
}

func (p *Partition) lruFront(b *block) {
	if p.lru.next == b {
		return
	}
	b.prev.next, b.next.prev = b.next, b.prev
	b.next, b.prev = p.lru.next, &p.lru
	b.next.prev, p.lru.next = b, b
}

// recharge updates the cache's account of a block whose slice grew.
func (p *Partition) recharge(b *block) {
	c := blockOverhead + int64(cap(b.ts))*8
	if b.dirty {
		p.dirtyCharged += c - b.charged
	}
	p.cached += c - b.charged
	p.s.cached.Add(c - b.charged)
	b.charged = c
}

// shrinkCache drops clean blocks, oldest first, while the store's cache is
// over budget (to leave room for need more bytes). It is a second-chance
// (CLOCK) approximation of LRU: a hit only sets the block's used flag
// instead of moving it in the list (three blocks' pointers written, two of
// them cache misses, on every hit), and an old block that was used since
// it was added or last spared moves to the front once, unused.
func (p *Partition) shrinkCache(need int64) {
	b := p.lru.prev
	for p.s.cached.Load()+need > p.s.blockBudget {
		for b != &p.lru && (b.dirty || b.used) {
			prev := b.prev
			if !b.dirty {
				b.used = false
				p.lruFront(b)
			}
			b = prev
		}
		if b == &p.lru {
			return
		}
		prev := b.prev
		p.cacheDrop(b)
		b = prev
	}
}

// releaseCache forgets every cached block (the partition failed or was
// dropped).
func (p *Partition) releaseCache() {
	p.s.cached.Add(-p.cached)
	p.cached = 0
	p.cache = nil
	clear(p.tail)
	p.lru.next, p.lru.prev = &p.lru, &p.lru
}

func (p *Partition) dirtyBlock(b *block) {
	if !b.dirty {
		b.dirty = true
		p.dirtyBlocks = append(p.dirtyBlocks, b)
		p.dirtyCharged += b.charged
	}
}

// newBlock adds a block at index i of tp's blocks.
func (p *Partition) newBlock(tp *tuple, i int, start beacon.Time, ts []beacon.Time) *block {
	if i == p.nblocks(tp) {
		p.appendBlockStart(tp, start)
	} else {
		p.setBlocks(tp, slices.Insert(p.blockStarts(tp), i, start))
	}
	b := &block{id: tp.id, start: start, ts: ts}
	p.cacheAdd(b)
	p.dirtyBlock(b)
	return b
}

// dropBlock deletes tp's i-th block.
func (p *Partition) dropBlock(tp *tuple, i int) {
	k := blockKey{tp.id, p.blockAt(tp, i)}
	if b := p.cachedBlock(k); b != nil {
		b.deleted = true
		p.cacheDrop(b)
	}
	p.batch.Delete(tsKey(p.key, p.id, uint64(tp.id), k.start), nil)
	p.setBlocks(tp, slices.Delete(p.blockStarts(tp), i, i+1))
}

// dead counts the block's timestamps before the window start.
func (p *Partition) dead(b *block) int {
	if !p.h.hasStream || len(b.ts) == 0 || b.ts[0] >= p.from {
		return 0
	}
	i, _ := slices.BinarySearch(b.ts, p.from)
	return i
}

// trim drops the dead timestamps (before the window start) of a block
// about to be written.
func (p *Partition) trim(b *block) {
	if i := p.dead(b); i > 0 {
		b.ts = append(b.ts[:0], b.ts[i:]...)
	}
}

// insertTS adds t (≥ the window start) to tp's stored set; added is false
// when it is there already.
func (p *Partition) insertTS(tp *tuple, t beacon.Time) (added bool, err error) {
	if p.nblocks(tp) == 0 {
		p.newBlock(tp, 0, t, []beacon.Time{t})
		return true, nil
	}
	i := p.blockIndex(tp, t)
	if i < 0 { // before every block: the first one now starts at t
		b, err := p.block(tp, 0)
		if err != nil {
			return false, err
		}
		p.batch.Delete(tsKey(p.key, p.id, uint64(tp.id), b.start), nil)
		if p.tail[tp.id] != b { // the tail block is found by tuple id, not start
			delete(p.cache, blockKey{tp.id, b.start})
			p.cache[blockKey{tp.id, t}] = b
		}
		b.start, tp.b0 = t, t
		i = 0
	}
	b, err := p.block(tp, i)
	if err != nil {
		return false, err
	}
	j, found := slices.BinarySearch(b.ts, t)
	if found {
		return false, nil
	}
	if j == len(b.ts) && i == p.nblocks(tp)-1 && len(b.ts)-p.dead(b) >= blockMax {
		// In order, the tail full: a new tail.
		p.newBlock(tp, i+1, t, append(make([]beacon.Time, 0, 4), t))
		return true, nil
	}
	p.dirtyBlock(b)
	p.trim(b)
	j, _ = slices.BinarySearch(b.ts, t)
	c := cap(b.ts)
	b.ts = slices.Insert(b.ts, j, t)
	if len(b.ts) > 2*blockMax {
		mid := len(b.ts) / 2
		rest := slices.Clone(b.ts[mid:])
		b.ts = slices.Clip(b.ts[:mid])
		p.recharge(b)
		p.newBlock(tp, i+1, rest[0], rest)
	} else if cap(b.ts) != c {
		p.recharge(b)
	}
	return true, nil
}

// appendTS adds t to tp's stored set, t newer than every timestamp stored
// (a tuple with a window and nothing pending, t after its last): the
// newest block takes it at its end, or a new one starts when that is full.
// It is insertTS for the case of most connections, without searching for
// the block or for t's place in it.
func (p *Partition) appendTS(tp *tuple, t beacon.Time) error {
	n := p.nblocks(tp)
	b, err := p.block(tp, n-1)
	if err != nil {
		return err
	}
	dead := p.dead(b)
	if len(b.ts)-dead >= blockMax {
		p.newBlock(tp, n, t, append(make([]beacon.Time, 0, 4), t))
		return nil
	}
	p.dirtyBlock(b)
	if dead > 0 {
		b.ts = append(b.ts[:0], b.ts[dead:]...) // trim
	}
	c := cap(b.ts)
	if b.ts = append(b.ts, t); cap(b.ts) != c {
		p.recharge(b)
	}
	return nil
}

// nextTS returns tp's smallest stored timestamp ≥ t.
func (p *Partition) nextTS(tp *tuple, t beacon.Time) (beacon.Time, bool, error) {
	for i := max(p.blockIndex(tp, t), 0); i < p.nblocks(tp); i++ {
		b, err := p.block(tp, i)
		if err != nil {
			return 0, false, err
		}
		if j, _ := slices.BinarySearch(b.ts, t); j < len(b.ts) {
			return b.ts[j], true, nil
		}
	}
	return 0, false, nil
}

// prevTS returns tp's largest stored timestamp < t (possibly dead).
func (p *Partition) prevTS(tp *tuple, t beacon.Time) (beacon.Time, bool, error) {
	for i := p.blockIndex(tp, t-1); i >= 0; i-- {
		b, err := p.block(tp, i)
		if err != nil {
			return 0, false, err
		}
		if j, _ := slices.BinarySearch(b.ts, t); j > 0 {
			return b.ts[j-1], true, nil
		}
	}
	return 0, false, nil
}

// rangeTS appends tp's stored timestamps in [lo, hi] to dst.
func (p *Partition) rangeTS(dst []beacon.Time, tp *tuple, lo, hi beacon.Time) ([]beacon.Time, error) {
	for i := max(p.blockIndex(tp, lo), 0); i < p.nblocks(tp) && p.blockAt(tp, i) <= hi; i++ {
		b, err := p.block(tp, i)
		if err != nil {
			return nil, err
		}
		j, _ := slices.BinarySearch(b.ts, lo)
		for _, t := range b.ts[j:] {
			if t > hi {
				break
			}
			dst = append(dst, t)
		}
	}
	return dst, nil
}

// dropDead deletes the blocks before the one holding tp's oldest live
// timestamp.
func (p *Partition) dropDead(tp *tuple) {
	low := tp.first
	if tp.distinct == 0 {
		low = p.pend[tp.id]
	}
	for p.nblocks(tp) > 1 && p.blockAt(tp, 1) <= low {
		p.dropBlock(tp, 0)
	}
}

// writeBlocks encodes the changed blocks into the batch.
func (p *Partition) writeBlocks() {
	for _, b := range p.dirtyBlocks {
		b.dirty = false
		if b.deleted {
			continue
		}
		p.trim(b)
		p.val = appendBlock(p.val[:0], b.start, b.ts)
		p.batch.Set(tsKey(p.key, p.id, uint64(b.id), b.start), p.val, nil)
	}
	clear(p.dirtyBlocks)
	p.dirtyBlocks = p.dirtyBlocks[:0]
	p.dirtyCharged = 0
	p.shrinkCache(0)
}
