package state

import (
	"hash/maphash"
	"math"
	"slices"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Tuple storage: there may be millions of tuples per partition, so a tuple
// is a fixed-size, pointer-free record in an arena of chunks, addressed by a
// 32-bit id, and everything that refers to one (the hash index, the
// eviction and pending heaps, a destination's lists, a cached block) holds
// that id. The id is also the tuple's Pebble key (`pid 'k' id`, `pid 't' id
// start`): a deleted tuple's id is reused by the next new tuple, so ids stay
// below the most tuples the partition ever held at once, and the arena is
// no larger than that.
//
// Chunks never move, so a *tuple taken from the arena stays valid while the
// partition runs; it must not be kept across the tuple's deletion (the slot
// is then another tuple's). Stored references are ids, checked on use:
// a heap entry whose key no longer matches, a destination's stale entry
// whose tuple now belongs elsewhere, are dropped.

// tuple is the in-memory state of one tuple (72 bytes). Its admitted
// timestamps (in the window) are [first, last] with distinct members;
// pending ones (only when EndOffset > 1s) are newer than the window end and
// wait for it. The timestamps themselves are in blocks (blocks.go): the
// first block starts at b0, the others' starts are in its ext record. A
// free slot has dest 0.
//
// The summary is the delta histogram alone (N, Σd and Σd² are derived from
// it when a decision needs them): up to two bins inline — a tuple with one
// or two distinct deltas, most of a fleet's, needs no allocation — and
// beyond that in the ext record.
type tuple struct {
	first     beacon.Time
	last      beacon.Time
	b0        beacon.Time // the first block's start (noBlock: none)
	bins      [2]bin      // the histogram, when it has at most two bins (count 0: unused), sorted by delta
	id        uint32      // its slot, and its Pebble id
	prin      uint32      // device and account: Partition.prinAt
	dest      uint32      // process, IP, port: Partition.destAt; 0: a free slot
	ext       uint32      // 1 + its index in Partition.exts; 0: none
	distinct  int32
	pending   int32
	candPos   int32 // in dest.cands, when cand
	cand      bool  // a candidate (Params.Candidate), as of the last evaluation
	stale     bool  // changed since: in dest.stale
	unwritten bool  // created since the last commit: in Partition.unwritten
}

// bin is an inline histogram bin: deltas are seconds within the lookback.
type bin struct{ delta, count int32 }

// tupleExt is what few tuples need: more than one block, or a histogram of
// more than two bins, kept with its sums (Summary.Add and Remove keep
// them): deciding such a tuple reads its summary whole, without a pass
// over the bins to sum them.
type tupleExt struct {
	more []beacon.Time  // the starts of the blocks after the first, ascending
	sum  beacon.Summary // the histogram, when not inline (Hist nil: inline)
}

const chunkBits = 12 // 4096 tuples (288 KiB) per chunk

type tupleArena struct {
	chunks []*[1 << chunkBits]tuple
	n      uint32   // slots handed out: ids are < n
	free   []uint32 // released slots, reused first
	live   int
}

func (a *tupleArena) at(id uint32) *tuple {
	return &a.chunks[id>>chunkBits][id&(1<<chunkBits-1)]
}

func (a *tupleArena) grow(n uint32) {
	for uint32(len(a.chunks))<<chunkBits < n {
		a.chunks = append(a.chunks, new([1 << chunkBits]tuple))
	}
	a.n = n
}

// alloc returns a zeroed slot.
func (a *tupleArena) alloc() *tuple {
	a.live++
	if k := len(a.free); k > 0 {
		id := a.free[k-1]
		a.free = a.free[:k-1]
		tp := a.at(id)
		tp.id = id // a slot a load skipped has none yet
		return tp
	}
	if a.n == math.MaxUint32 {
		panic("state: more than 2³²−1 tuples in a partition")
	}
	id := a.n
	a.grow(id + 1)
	tp := a.at(id)
	tp.id = id
	return tp
}

// allocAt takes slot id (ids come in increasing order, as a load reads
// them); the slots skipped become free.
func (a *tupleArena) allocAt(id uint32) *tuple {
	for x := a.n; x < id; x++ {
		a.free = append(a.free, x)
	}
	a.grow(max(a.n, id+1))
	a.live++
	tp := a.at(id)
	tp.id = id
	return tp
}

func (a *tupleArena) release(tp *tuple) {
	id := tp.id
	*tp = tuple{id: id}
	a.free = append(a.free, id)
	a.live--
}

// tupleIndex finds a tuple by its columns: an open-addressing hash table
// (linear probing, backward-shift deletion) of 8-byte slots, each the
// tuple's 32-bit hash beside its id + 1 (0: empty). The hash filters the
// probes, so columns are compared (a tuple, principal and destination
// read) only on a match; it also places the slot, so growing never
// rehashes columns. At most 3/4 full: 10–21 bytes per tuple. Principals
// and destinations are found by the same kind of table, of their indexes
// in Partition.prinAt and destAt.
type tupleIndex struct {
	slots []uint64
	n     int
}

func slotOf(h, id uint32) uint64 { return uint64(h)<<32 | uint64(id+1) }

func (x *tupleIndex) home(h uint32) int { return int(h) & (len(x.slots) - 1) }

func (x *tupleIndex) add(h, id uint32) {
	if (x.n+1)*4 > len(x.slots)*3 {
		x.resize(max(16, 2*len(x.slots)))
	}
	x.put(slotOf(h, id))
	x.n++
}

func (x *tupleIndex) put(s uint64) {
	mask := len(x.slots) - 1
	for i := x.home(uint32(s >> 32)); ; i = (i + 1) & mask {
		if x.slots[i] == 0 {
			x.slots[i] = s
			return
		}
	}
}

func (x *tupleIndex) resize(n int) {
	old := x.slots
	x.slots = make([]uint64, n)
	for _, s := range old {
		if s != 0 {
			x.put(s)
		}
	}
}

// remove deletes the slot of (h, id), which must be there.
func (x *tupleIndex) remove(h, id uint32) {
	want := slotOf(h, id)
	mask := len(x.slots) - 1
	i := x.home(h)
	for x.slots[i] != want {
		i = (i + 1) & mask
	}
	// Backward shift: move up every later entry of the run that may sit
	// at i (its home is not cyclically in (i, j]).
	for j := i; ; {
		x.slots[i] = 0
		for {
			j = (j + 1) & mask
			s := x.slots[j]
			if s == 0 {
				x.n--
				if len(x.slots) > 1024 && x.n*8 < len(x.slots) {
					x.resize(len(x.slots) / 2) // give back what a burst left
				}
				return
			}
			k := x.home(uint32(s >> 32))
			if i <= j && (i < k && k <= j) || i > j && (i < k || k <= j) {
				continue
			}
			x.slots[i] = s
			i = j
			break
		}
	}
}

// Histogram.

// summary is tp's delta summary, for Params.Candidate; an inline histogram
// is put in buf, which the summary then shares.
func (p *Partition) summary(tp *tuple, buf *[2]beacon.Bin) beacon.Summary {
	if e := p.extOf(tp); e != nil && e.sum.Hist != nil {
		return e.sum
	}
	var s beacon.Summary
	s.Hist = buf[:0]
	for _, b := range tp.bins {
		if b.count > 0 {
			s.Hist = append(s.Hist, beacon.Bin{Delta: int64(b.delta), Count: int64(b.count)})
		}
	}
	for _, b := range s.Hist {
		s.N += b.Count
		s.Sum += b.Count * b.Delta
		s.SumSq += b.Count * b.Delta * b.Delta
	}
	return s
}

func (p *Partition) extOf(tp *tuple) *tupleExt {
	if tp.ext == 0 {
		return nil
	}
	return &p.exts[tp.ext-1]
}

func (p *Partition) extHist(tp *tuple) []beacon.Bin {
	if e := p.extOf(tp); e != nil {
		return e.sum.Hist
	}
	return nil
}

func (p *Partition) addDelta(tp *tuple, d int64) {
	if e := p.extOf(tp); e != nil && e.sum.Hist != nil {
		e.sum.Add(d)
		return
	}
	if d >= 0 && d <= math.MaxInt32 {
		for i := range tp.bins {
			switch b := &tp.bins[i]; {
			case b.count > 0 && int64(b.delta) == d:
				b.count++
				return
			case b.count == 0:
				*b = bin{int32(d), 1}
				if i == 1 && tp.bins[0].delta > tp.bins[1].delta {
					tp.bins[0], tp.bins[1] = tp.bins[1], tp.bins[0]
				}
				return
			}
		}
	}
	// A third bin (or a delta too large to be inline): the histogram moves
	// to the ext record.
	var buf [2]beacon.Bin
	s := p.summary(tp, &buf)
	s.Hist = slices.Clone(s.Hist)
	s.Add(d)
	tp.bins = [2]bin{}
	p.ext(tp).sum = s
}

func (p *Partition) removeDelta(tp *tuple, d int64) bool {
	if e := p.extOf(tp); e != nil && e.sum.Hist != nil {
		if !e.sum.Remove(d) {
			return false
		}
		if h := e.sum.Hist; len(h) <= 1 && (len(h) == 0 || h[0].Delta <= math.MaxInt32) {
			tp.bins = [2]bin{}
			if len(h) == 1 {
				tp.bins[0] = bin{int32(h[0].Delta), int32(h[0].Count)}
			}
			e.sum = beacon.Summary{}
			p.dropExtIfEmpty(tp)
		}
		return true
	}
	for i := range tp.bins {
		if b := &tp.bins[i]; b.count > 0 && int64(b.delta) == d {
			if b.count--; b.count == 0 {
				if i == 0 {
					tp.bins[0] = tp.bins[1]
				}
				tp.bins[1] = bin{}
			}
			return true
		}
	}
	return false
}

// ext returns tp's ext record, creating it.
func (p *Partition) ext(tp *tuple) *tupleExt {
	if tp.ext == 0 {
		if k := len(p.extFree); k > 0 {
			tp.ext = p.extFree[k-1] + 1
			p.extFree = p.extFree[:k-1]
		} else {
			p.exts = append(p.exts, tupleExt{})
			tp.ext = uint32(len(p.exts))
		}
	}
	return &p.exts[tp.ext-1]
}

func (p *Partition) dropExtIfEmpty(tp *tuple) {
	if tp.ext == 0 {
		return
	}
	if e := &p.exts[tp.ext-1]; e.more == nil && e.sum.Hist == nil {
		p.extFree = append(p.extFree, tp.ext-1)
		tp.ext = 0
	}
}

// Block starts: b0, then ext.more. Most tuples have one block, which then
// costs no allocation.

func (p *Partition) nblocks(tp *tuple) int {
	switch {
	case tp.b0 == noBlock:
		return 0
	case tp.ext == 0:
		return 1
	}
	return 1 + len(p.exts[tp.ext-1].more)
}

func (p *Partition) blockAt(tp *tuple, i int) beacon.Time {
	if i == 0 {
		return tp.b0
	}
	return p.exts[tp.ext-1].more[i-1]
}

// blockStarts returns the starts of tp's blocks, ascending (a copy).
func (p *Partition) blockStarts(tp *tuple) []beacon.Time {
	n := p.nblocks(tp)
	out := make([]beacon.Time, n, n+1)
	for i := range out {
		out[i] = p.blockAt(tp, i)
	}
	return out
}

// appendBlockStart adds a block start after tp's last one: a new tail
// block, or the load path's next block. It appends to ext.more instead of
// copying the list twice (blockStarts, then setBlocks' clone), which made
// loading a tuple of n blocks quadratic in n.
func (p *Partition) appendBlockStart(tp *tuple, start beacon.Time) {
	if tp.b0 == noBlock {
		tp.b0 = start
		return
	}
	e := p.ext(tp)
	e.more = append(e.more, start)
}

func (p *Partition) setBlocks(tp *tuple, starts []beacon.Time) {
	tp.b0 = noBlock
	if len(starts) > 0 {
		tp.b0 = starts[0]
	}
	if len(starts) > 1 {
		p.ext(tp).more = slices.Clone(starts[1:])
		return
	}
	if tp.ext != 0 {
		p.exts[tp.ext-1].more = nil
		p.dropExtIfEmpty(tp)
	}
}

// tupleHashes are a tuple's hashes: of its principal (the four device and
// account columns), of its destination (process, IP, port), and of the
// tuple, mixed from those two. A connection's are computed once, and find
// its tuple, principal and destination: a new tuple costs no hashing of
// its columns beyond the lookup that found it missing, and deleting one
// recomputes its tuple hash from the two its principal and destination
// keep.
type tupleHashes struct{ tuple, prin, dest uint64 }

func (p *Partition) hashes(t *beacon.Tuple) tupleHashes {
	hp := p.prinHash(t)
	hd := p.destHash(t.FileName, t.RemoteIP, t.RemotePort)
	return tupleHashes{p.tupleHash(hp, hd), hp, hd}
}

// Each column is hashed alone (maphash, the partition's seed) and mixed
// into the hash of those before it, so moving a character between columns
// changes it. hashMask (the tests') makes hashes collide.
func (p *Partition) prinHash(t *beacon.Tuple) uint64 {
	h := maphash.String(p.seed, t.DeviceId)
	h = fmix(h) ^ maphash.String(p.seed, t.DeviceName)
	h = fmix(h) ^ maphash.String(p.seed, t.AccountName)
	h = fmix(h) ^ maphash.String(p.seed, t.AccountDomain)
	return fmix(h) & p.s.hashMask
}

func (p *Partition) destHash(fileName, ip string, port int32) uint64 {
	h := maphash.String(p.seed, fileName)
	h = fmix(h) ^ maphash.String(p.seed, ip)
	h = fmix(h) ^ uint64(uint32(port))
	return fmix(h) & p.s.hashMask
}

func (p *Partition) tupleHash(prin, dest uint64) uint64 {
	return fmix(fmix(prin)^dest) & p.s.hashMask
}

// fmix is MurmurHash3's 64-bit finalizer: every input bit reaches every
// output bit, so the low 32 bits the tables use are as good as any.
func fmix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
