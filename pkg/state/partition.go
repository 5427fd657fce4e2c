package state

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strings"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/cockroachdb/pebble/v2"
)

// Conn is one connection event: its tuple and Timestamp. The caller
// forwards only events that pass Params.Connection and have a RemotePort
// (HasPort) — the rows that form tuples in beacon.Hunt; the state does not
// filter them again. Strings may alias the caller's buffers; the state
// copies what it keeps.
type Conn struct {
	Tuple beacon.Tuple
	Time  beacon.Time
	// NoPort marks a connection whose RemotePort was null: it passes the
	// query's filters, so it moves stream time (evicting what leaves the
	// window), but it never forms a tuple (null == null is null in Kusto).
	// Sending it with the batch keeps stream time and offset in one write.
	NoPort bool
}

// DomainSeen is one domain observation: Domain (beacon.DomainOf of a
// RemoteUrl, possibly "") was seen for IP at Time, on any input row,
// whatever its ActionType.
type DomainSeen struct {
	IP, Domain string
	Time       beacon.Time
}

// ApplyStats counts what a batch did.
type ApplyStats struct {
	Applied   int // timestamps added to a tuple's set
	Duplicate int // timestamps the tuple already had (also within the batch)
	Late      int // connections older than the window start, dropped
	Evicted   int // timestamps that left the window as stream time moved
	Domains   int // (IP, domain) pairs added or seen at a newer time
}

// Partition is the state of one input partition: per tuple the distinct
// timestamps inside the window and their delta summary, per destination its
// tuples, per RemoteIP its domains, the stream time, the next offset to
// consume, and the caller's blob. Memory holds everything needed to decide
// (summaries) and a bounded cache of timestamp blocks; Pebble holds the
// truth, written in one atomic batch per commit (every Apply, unless
// WithCommitEvery).
//
// A Partition is not safe for concurrent use. After an error from Apply or
// AdvanceTo its memory may be ahead of Pebble: every later call returns the
// error, and Store.Partition reloads it.
type Partition struct {
	s   *Store
	id  int32
	p   *beacon.Params
	h   header
	err error

	meta      []byte
	metaDirty bool // meta changed since the last commit
	seed      maphash.Seed
	arena     tupleArena             // the tuples, by id (tuples.go)
	index     tupleIndex             // tuple ids by hash of the seven columns (tupleHashes.tuple)
	destIndex tupleIndex             // destAt's indexes by hash of the destination
	prinIndex tupleIndex             // prinAt's indexes by hash of the principal
	exts      []tupleExt             // what few tuples need: more blocks, a longer histogram
	extFree   []uint32               // free entries of exts
	pend      map[uint32]beacon.Time // oldest pending timestamp of the tuples with some (EndOffset > 1s)
	ntuples   int
	destAt    []*dest // by tuple.dest; 0 is nil, as are free entries (destFree)
	destFree  []uint32
	prinAt    []*principal // by tuple.prin; 0 is nil, as are free entries (prinFree)
	prinFree  []uint32
	ips       map[string]*ipState
	evictQ    timeHeap[uint32]     // tuples with a window, by first timestamp (stale: key ≠ first)
	pendQ     timeHeap[uint32]     // tuples with timestamps beyond the window end, by the oldest (stale: key ≠ pend[id])
	domainQ   timeHeap[*domain]    // domains, each once, by a time ≤ their newest
	dirty     []*dest              // marked dirty since the last Dirty (a deleted one's key still counts)
	dirtyOut  []beacon.Destination // what Dirty returned last: the next Dirty reuses it
	dirtyAt   []*dest              // dirtyOut[i]'s destination when it was one then, for MembersOf
	decideQ   []*dest              // MembersOf's
	decideGen uint32               // MembersOf's calls, to find a key given twice
	due       []*tuple
	work      []item
	touched   uint32 // touchTuples' sum of what it loaded (only kept)
	batch     *pebble.Batch
	from      beacon.Time // the window start at the current stream time

	// Timestamp blocks cached decoded (blocks.go): an LRU list (lru is its
	// sentinel) charged to the store's block budget; the changed ones are
	// written at the next commit.
	cache        map[blockKey]*block // the cached blocks not in tail
	tail         []*block            // by tuple id: a cached block of the tuple, the newest added (cachedBlock)
	lru          block
	cached       int64
	dirtyBlocks  []*block
	dirtyDomains []*domain // new or seen at a newer time since the last commit: written by it
	unwritten    []uint32  // ids of the tuples created since the last commit (writeTuples)
	uncommitted  int       // Applies and AdvanceTos since the last commit
	dirtyCharged int64     // what the changed blocks are charged in the cache

	key, val []byte
}

// dest is a destination (process, IP, port): the unit of the device cap.
// It knows which of its tuples are candidates and how many candidate tuples
// each device has, so that deciding it costs the tuples changed since the
// last evaluation, not all of them: a destination thousands of devices talk
// to is dirty after almost every batch.
type dest struct {
	key     beacon.Destination
	hash    uint64 // its tupleHashes.dest
	ipKey   uint64 // the first 8 bytes of key.RemoteIP (ipPrefix), for Dirty's sort
	ip      *ipState
	idx     uint32 // in Partition.destAt
	ntuples int32
	stale   []uint32 // tuples changed since the last evaluation (a deleted one's id may be reused)
	cands   []uint32 // candidate tuples as of the last evaluation
	// cs[i] is cands[i]'s columns and Params.Candidate's statistics, as
	// of its window's last change: what SelectDestination reads, kept so
	// that deciding copies nothing (SelectDestination may set fields of
	// them: robust's PeriodDevices).
	cs []beacon.Candidate
	// devs maps a DeviceId to its candidates among cands (the high 32
	// bits) and its number (the low 32) for SelectHinted: one entry, so
	// that a candidate's arrival or departure costs one lookup and one
	// store. A device has its number while it has candidates, candDev[i]
	// is cands[i]'s; a number freed goes to freeDev and is the next new
	// device's, so all stay below ndev, the most devices the destination
	// had at once.
	devs    map[string]uint64
	candDev []int32
	freeDev []int32
	ndev    int32
	dirty   bool
	// sel is SelectDestination's answer over cands and stats as of the
	// last decide, valid while selOK: it depends on the candidates and
	// their statistics alone, and most evaluations of a dirty destination
	// change neither (a non-candidate tuple moved, or the IP's domains).
	selOK bool
	sel   []selected
	selN  int64 // its device count
	// selHint is SelectHinted's, kept for the next selection (robust:
	// the candidates' order by period).
	selHint []int32

	decideGen uint32 // the MembersOf call that last queued it
	gone      bool   // deleted: no longer in Partition.destIndex
}

// selected is a candidate SelectDestination kept: its tuple's id and the
// candidate as it left SelectDestination (which may set fields of it).
type selected struct {
	id uint32
	c  beacon.Candidate
}

// ipState groups the destinations and domains of a RemoteIP, so a change of
// its domain set reaches every destination that shows it.
type ipState struct {
	ip       string
	dests    []*dest
	domains  map[string]*domain
	domainIP bool // Params.DomainIP(ip), once an observation asked
}

type domain struct {
	ip    *ipState
	name  string
	time  beacon.Time // newest time seen
	dirty bool        // time changed since the last commit: in Partition.dirtyDomains
	gone  bool        // expired (its key deleted)
}

type item struct {
	tp *tuple
	t  beacon.Time
	id uint32 // tp.id, for sortWork
}

// sortWork sorts insert's work by tuple id, then time. A batch is mostly
// an evaluation point's connections, 16 to 64 in a replay of a simulated
// fleet: up to 64 are sorted by insertion, comparing keys held in the
// items (no call per comparison, no load through the tuple's pointer;
// 1.7x pdqsort's speed at 25 items, 1.3x at 64; the two are even at 100,
// so 64 keeps insertion where it still wins); a larger
// batch by pdqsort.
func sortWork(w []item) {
	less := func(a, b *item) bool { return a.id < b.id || a.id == b.id && a.t < b.t }
	if len(w) > 64 {
		slices.SortFunc(w, func(a, b item) int { return cmp.Or(cmp.Compare(a.id, b.id), cmp.Compare(a.t, b.t)) })
		return
	}
	for i := 1; i < len(w); i++ {
		x := w[i]
		j := i
		for ; j > 0 && less(&x, &w[j-1]); j-- {
			w[j] = w[j-1]
		}
		w[j] = x
	}
}

func newPartition(s *Store, id int32) *Partition {
	p := &Partition{
		s: s, id: id, p: &s.p,
		h:      header{offset: -1},
		seed:   maphash.MakeSeed(),
		destAt: []*dest{nil},
		prinAt: []*principal{nil},
		pend:   make(map[uint32]beacon.Time),
		ips:    make(map[string]*ipState),
		batch:  s.db.NewBatch(),
		cache:  make(map[blockKey]*block),
	}
	p.lru.next, p.lru.prev = &p.lru, &p.lru
	return p
}

// Offset is the recorded next offset to consume; ok is false before the
// first Apply that recorded one.
func (p *Partition) Offset() (offset int64, ok bool) { return p.h.offset, p.h.offset >= 0 }

// StreamTime is the newest Timestamp of a connection applied (or the time
// given to AdvanceTo, if later); ok is false while there is none. The window
// is that of `hunt --end <stream time + 1s>`.
func (p *Partition) StreamTime() (beacon.Time, bool) { return p.h.stream, p.h.hasStream }

// Meta is the blob last recorded by Apply (nil if none). It must not be
// modified, and the next Apply with a blob overwrites it: copy what is
// kept.
func (p *Partition) Meta() []byte { return p.meta }

// now is the query's now for the current stream time.
func (p *Partition) now() beacon.Time { return p.h.stream + beacon.Second }

// window is the inclusive window [from, to] at the current stream time.
func (p *Partition) window() (from, to beacon.Time) { return p.p.Window(p.now()) }

// setStream moves stream time to t.
func (p *Partition) setStream(t beacon.Time) {
	p.h.stream, p.h.hasStream = t, true
	p.from, _ = p.window()
}

// lookup finds the tuple with columns t and hash (tupleHashes.tuple; nil:
// none).
func (p *Partition) lookup(t *beacon.Tuple, hash uint64) *tuple {
	x := &p.index
	if len(x.slots) == 0 {
		return nil
	}
	h := uint32(hash)
	mask := len(x.slots) - 1
	for i := x.home(h); ; i = (i + 1) & mask {
		s := x.slots[i]
		if s == 0 {
			return nil
		}
		if uint32(s>>32) == h {
			if tp := p.arena.at(uint32(s) - 1); p.is(tp, t) {
				return tp
			}
		}
	}
}

func (p *Partition) tup(id uint32) *tuple   { return p.arena.at(id) }
func (p *Partition) destOf(tp *tuple) *dest { return p.destAt[tp.dest] }
func (p *Partition) prinOf(tp *tuple) *principal {
	return p.prinAt[tp.prin]
}

// principalKey is who a tuple is about: its device and account columns.
type principalKey struct{ deviceId, deviceName, accountName, accountDomain string }

// principal is a principalKey shared by every tuple that has it (a device
// talks to many destinations): a tuple holds its index, not four strings.
type principal struct {
	principalKey
	hash uint64 // its tupleHashes.prin
	idx  uint32 // in Partition.prinAt
	refs int32
}

// columns returns tp's seven columns.
func (p *Partition) columns(tp *tuple) beacon.Tuple {
	pr, d := &p.prinOf(tp).principalKey, &p.destOf(tp).key
	return beacon.Tuple{DeviceId: pr.deviceId, DeviceName: pr.deviceName, AccountName: pr.accountName,
		AccountDomain: pr.accountDomain, FileName: d.FileName, RemoteIP: d.RemoteIP, RemotePort: d.RemotePort}
}

func (p *Partition) is(tp *tuple, t *beacon.Tuple) bool {
	return p.prinOf(tp).is(t) && p.destOf(tp).key == t.Destination()
}

func (pr *principal) is(t *beacon.Tuple) bool {
	return pr.deviceId == t.DeviceId && pr.deviceName == t.DeviceName && pr.accountName == t.AccountName &&
		pr.accountDomain == t.AccountDomain
}

// findPrin returns the principal of t's columns, whose hash is h
// (tupleHashes.prin), nil when there is none.
func (p *Partition) findPrin(t *beacon.Tuple, h uint64) *principal {
	x := &p.prinIndex
	if len(x.slots) == 0 {
		return nil
	}
	mask := len(x.slots) - 1
	for i := x.home(uint32(h)); ; i = (i + 1) & mask {
		s := x.slots[i]
		if s == 0 {
			return nil
		}
		if uint32(s>>32) == uint32(h) {
			if pr := p.prinAt[uint32(s)-1]; pr.is(t) {
				return pr
			}
		}
	}
}

// findDest returns destination k, whose hash is h (tupleHashes.dest), nil
// when there is none.
func (p *Partition) findDest(k *beacon.Destination, h uint64) *dest {
	x := &p.destIndex
	if len(x.slots) == 0 {
		return nil
	}
	mask := len(x.slots) - 1
	for i := x.home(uint32(h)); ; i = (i + 1) & mask {
		s := x.slots[i]
		if s == 0 {
			return nil
		}
		if uint32(s>>32) == uint32(h) {
			if d := p.destAt[uint32(s)-1]; d.key == *k {
				return d
			}
		}
	}
}

// destByKey returns destination k, nil when there is none.
func (p *Partition) destByKey(k beacon.Destination) *dest {
	return p.findDest(&k, p.destHash(k.FileName, k.RemoteIP, k.RemotePort))
}

// slot returns a free index of a table whose entry 0 is unused.
func slot[T any](tab *[]T, free *[]uint32) uint32 {
	if k := len(*free); k > 0 {
		i := (*free)[k-1]
		*free = (*free)[:k-1]
		return i
	}
	var zero T
	*tab = append(*tab, zero)
	return uint32(len(*tab) - 1)
}

// addTuple links a tuple with columns t and hashes hs into the indexes
// (not the queues), sharing (or copying) the strings.
func (p *Partition) addTuple(tp *tuple, t *beacon.Tuple, hs *tupleHashes) {
	p.index.add(uint32(hs.tuple), tp.id)
	p.ntuples++
	pr := p.findPrin(t, hs.prin)
	if pr == nil {
		// One allocation for the four strings.
		all := t.DeviceId + t.DeviceName + t.AccountName + t.AccountDomain
		n0, n1, n2 := len(t.DeviceId), len(t.DeviceId)+len(t.DeviceName), len(t.DeviceId)+len(t.DeviceName)+len(t.AccountName)
		pr = &principal{principalKey: principalKey{all[:n0], all[n0:n1], all[n1:n2], all[n2:]}, hash: hs.prin}
		pr.idx = slot(&p.prinAt, &p.prinFree)
		p.prinAt[pr.idx] = pr
		p.prinIndex.add(uint32(hs.prin), pr.idx)
	}
	pr.refs++
	tp.prin = pr.idx
	dk := t.Destination()
	d := p.findDest(&dk, hs.dest)
	if d == nil {
		ip := p.ips[dk.RemoteIP]
		if ip == nil {
			ip = &ipState{ip: strings.Clone(dk.RemoteIP)}
			p.ips[ip.ip] = ip
		}
		d = &dest{key: beacon.Destination{FileName: strings.Clone(dk.FileName), RemoteIP: ip.ip, RemotePort: dk.RemotePort}, hash: hs.dest, ipKey: ipPrefix(dk.RemoteIP), ip: ip}
		ip.dests = append(ip.dests, d)
		d.idx = slot(&p.destAt, &p.destFree)
		p.destAt[d.idx] = d
		p.destIndex.add(uint32(hs.dest), d.idx)
	}
	tp.dest = d.idx
	d.ntuples++
	tp.stale = true // candidate or not: known at the next evaluation
	d.stale = append(d.stale, tp.id)
}

// newTuple creates a tuple; the commit writes its columns.
func (p *Partition) newTuple(t *beacon.Tuple, hs *tupleHashes) *tuple {
	tp := p.arena.alloc()
	tp.b0 = noBlock
	p.h.nextID = uint64(p.arena.n)
	p.growTail()
	p.addTuple(tp, t, hs)
	tp.unwritten = true
	p.unwritten = append(p.unwritten, tp.id)
	return tp
}

// writeTuples puts the columns of the tuples created since the last
// commit into the batch, as writeBlocks does their blocks: one that was
// deleted since is not written (deleteTuple deleted its key; its slot may
// be a newer tuple's, in the list too). Writing them at the commit rather
// than at their creation keeps a scratch state that never commits (replay)
// from copying every new tuple's columns into a batch it never writes.
func (p *Partition) writeTuples() {
	for _, id := range p.unwritten {
		tp := p.tup(id)
		if !tp.unwritten {
			continue
		}
		tp.unwritten = false
		cols := p.columns(tp)
		p.val = cols.AppendBinary(p.val[:0])
		p.batch.Set(idKey(p.key, p.id, kindTuple, uint64(tp.id)), p.val, nil)
	}
	p.unwritten = p.unwritten[:0]
	if cap(p.unwritten) > 1<<16 {
		p.unwritten = nil // a burst's: give it back
	}
}

// deleteTuple removes a tuple whose window and pending set are empty.
func (p *Partition) deleteTuple(tp *tuple) {
	p.batch.Delete(idKey(p.key, p.id, kindTuple, uint64(tp.id)), nil)
	for p.nblocks(tp) > 0 {
		p.dropBlock(tp, p.nblocks(tp)-1)
	}
	delete(p.pend, tp.id)
	d, pr := p.destOf(tp), p.prinOf(tp)
	p.index.remove(uint32(p.tupleHash(pr.hash, d.hash)), tp.id)
	p.markDirty(d)
	if tp.cand {
		p.setCand(d, tp, false, nil)
	}
	if pr.refs == 1 {
		p.prinIndex.remove(uint32(pr.hash), pr.idx)
		p.prinAt[pr.idx] = nil
		p.prinFree = append(p.prinFree, pr.idx)
	} else {
		pr.refs--
	}
	p.ntuples--
	if tp.ext != 0 {
		p.exts[tp.ext-1] = tupleExt{}
		p.dropExtIfEmpty(tp)
	}
	p.arena.release(tp) // dest.stale may still hold its id
	if d.ntuples--; d.ntuples > 0 {
		return
	}
	p.destIndex.remove(uint32(d.hash), d.idx)
	d.gone = true
	p.destAt[d.idx] = nil
	p.destFree = append(p.destFree, d.idx)
	ip := d.ip
	i := slices.Index(ip.dests, d)
	ip.dests = slices.Delete(ip.dests, i, i+1)
	p.dropIPIfEmpty(ip)
}

func (p *Partition) dropIPIfEmpty(ip *ipState) {
	if len(ip.dests) == 0 && len(ip.domains) == 0 {
		delete(p.ips, ip.ip)
	}
}

func (p *Partition) markDirty(d *dest) {
	if !d.dirty {
		d.dirty = true
		p.dirty = append(p.dirty, d)
	}
}

// touch records that tp's window changed.
func (p *Partition) touch(tp *tuple) {
	d := p.destOf(tp)
	p.markDirty(d)
	if !tp.stale {
		tp.stale = true
		d.stale = append(d.stale, tp.id)
	}
}

// setCand records that tp, of d, became (or stopped being) a candidate,
// with st its statistics when it became one.
func (p *Partition) setCand(d *dest, tp *tuple, cand bool, st *beacon.Stats) {
	tp.cand = cand
	d.selOK = false
	dev := p.prinOf(tp).deviceId
	if cand {
		tp.candPos = int32(len(d.cands))
		d.cands = append(d.cands, tp.id)
		d.cs = append(d.cs, beacon.Candidate{Tuple: p.columns(tp), Stats: *st})
		if d.devs == nil {
			d.devs = make(map[string]uint64)
		}
		v, ok := d.devs[dev]
		if !ok {
			num := d.ndev
			if k := len(d.freeDev); k > 0 {
				num, d.freeDev = d.freeDev[k-1], d.freeDev[:k-1]
			} else {
				d.ndev++
			}
			v = uint64(uint32(num))
		}
		d.devs[dev] = v + 1<<32
		d.candDev = append(d.candDev, int32(uint32(v)))
		return
	}
	n := len(d.cands) - 1
	last := d.cands[n]
	d.cands[tp.candPos], d.cs[tp.candPos], d.candDev[tp.candPos] = last, d.cs[n], d.candDev[n]
	p.tup(last).candPos = tp.candPos
	d.cs[n] = beacon.Candidate{}
	d.cands, d.cs, d.candDev = d.cands[:n], d.cs[:n], d.candDev[:n]
	if v := d.devs[dev] - 1<<32; v>>32 > 0 {
		d.devs[dev] = v
	} else {
		delete(d.devs, dev)
		d.freeDev = append(d.freeDev, int32(uint32(v)))
		if len(d.devs) == 0 {
			d.freeDev, d.ndev = d.freeDev[:0], 0 // numbered afresh
		}
	}
}

// Dirty returns, sorted, every destination whose rows may have changed since
// the previous call: one of its tuples' windows changed, or its IP's domain
// set did. Evaluating only these keeps the caller's view exact. After a load
// every destination is dirty. The slice is the caller's until the next call
// of Dirty, which reuses its array (an evaluation point every few seconds
// of event time would otherwise grow a new one each time).
func (p *Partition) Dirty() []beacon.Destination {
	// The marked destinations are held by pointer, so clearing their
	// marks looks nothing up (a deleted destination is cleared too: the
	// one of its key, if any, was marked on its own), and MembersOf finds
	// the destinations of the keys returned without looking them up
	// (dirtyAt).
	ds := p.dirty
	slices.SortFunc(ds, func(a, b *dest) int {
		if a.ipKey != b.ipKey {
			return cmp.Compare(a.ipKey, b.ipKey)
		}
		return compareDest(a.key, b.key)
	})
	out := slices.Grow(p.dirtyOut[:0], len(ds))
	at := slices.Grow(p.dirtyAt[:0], len(ds))
	for i, d := range ds {
		d.dirty = false
		if d.gone {
			d = nil
		}
		if i > 0 && ds[i-1].key == ds[i].key { // a deleted destination and its key's new one
			if at[len(at)-1] == nil {
				at[len(at)-1] = d
			}
			continue
		}
		out = append(out, ds[i].key)
		at = append(at, d)
	}
	clear(ds)
	p.dirty = ds[:0]
	p.dirtyOut, p.dirtyAt = out, at
	return out
}

// destOfKey is destByKey(k), found without a lookup when k is the i-th key
// Dirty returned and its destination is still one.
func (p *Partition) destOfKey(i int, k beacon.Destination) *dest {
	if i < len(p.dirtyAt) {
		if d := p.dirtyAt[i]; d != nil && !d.gone && d.key == k {
			return d
		}
	}
	return p.destByKey(k)
}

// ipPrefix is the first 8 bytes of s, big-endian, padded with zeros:
// ipPrefix(a) < ipPrefix(b) implies a < b (a byte that differs decides, a
// string that ends first is padded below every byte but zero), so Dirty
// compares strings only when the prefixes are equal.
func ipPrefix(s string) uint64 {
	var b [8]byte
	copy(b[:], s)
	return binary.BigEndian.Uint64(b[:])
}

func compareDest(a, b beacon.Destination) int {
	if c := cmp.Compare(a.RemoteIP, b.RemoteIP); c != 0 {
		return c
	}
	if c := cmp.Compare(a.RemotePort, b.RemotePort); c != 0 {
		return c
	}
	return cmp.Compare(a.FileName, b.FileName)
}

// Apply applies a batch of inputs and records nextOffset (when ≥ 0) as the
// next offset to consume, in one atomic Pebble batch: after a crash the store
// holds either all of it or none. Stream time first moves to the newest
// connection of the batch (evicting), then every connection older than the
// window start is dropped as late, the others join their tuple's set.
// Domain observations are kept while newer than p.DomainsFrom(now). meta,
// when not nil, replaces the partition's blob in the same batch (use it for
// what the caller derived from the state, e.g. which tuples it alerted on).
//
// The result depends only on the set of inputs applied so far, not on
// their order or batching.
func (p *Partition) Apply(conns []Conn, domains []DomainSeen, nextOffset int64, meta []byte) (ApplyStats, error) {
	var st ApplyStats
	if p.err != nil {
		return st, p.err
	}
	if err := p.apply(conns, domains, &st); err != nil {
		return st, p.fail(err)
	}
	if nextOffset >= 0 {
		p.h.offset = nextOffset
	}
	if meta != nil {
		// Written with the commit that makes it durable, not per call:
		// with WithCommitEvery a blob set at every Apply would grow the
		// batch by its size each time. The commit writes the last one,
		// with the offset of the same Apply, so what a crash leaves is as
		// consistent as before.
		if p.meta == nil {
			p.meta = bytes.Clone(meta)
		} else {
			p.meta = append(p.meta[:0], meta...) // a blob per point, often tens of KiB: no garbage
		}
		p.metaDirty = true
	}
	return st, p.maybeCommit()
}

// AdvanceTo moves stream time to t when t is later, without an event, and
// evicts what left the window, in one batch (replay uses it to look at
// every partition at the same time). It keeps the recorded offset.
func (p *Partition) AdvanceTo(t beacon.Time) error {
	if p.err != nil {
		return p.err
	}
	if p.h.hasStream && t <= p.h.stream {
		return nil
	}
	var st ApplyStats
	if err := p.advance(t, &st); err != nil {
		return p.fail(err)
	}
	return p.maybeCommit()
}

// fail poisons the partition: its memory may be ahead of Pebble, and the
// half-built batch is dropped.
func (p *Partition) fail(err error) error {
	p.err = err
	if p.batch != nil {
		p.batch.Close()
		p.batch = nil
	}
	p.releaseCache()
	return err
}

func (p *Partition) apply(conns []Conn, domains []DomainSeen, st *ApplyStats) error {
	newest, has := p.h.stream, p.h.hasStream
	for i := range conns {
		if !has || conns[i].Time > newest {
			newest, has = conns[i].Time, true
		}
	}
	if has {
		if err := p.advance(newest, st); err != nil {
			return err
		}
	}
	if err := p.insert(conns, st); err != nil {
		return err
	}
	p.domains(domains, st)
	return nil
}

// advance moves stream time to t (> current) and brings every tuple and
// domain to the new window: pending timestamps now inside it are admitted,
// timestamps before its start are evicted, domains at or before the domain
// bound are forgotten.
func (p *Partition) advance(t beacon.Time, st *ApplyStats) error {
	if p.h.hasStream && t <= p.h.stream {
		return nil
	}
	p.setStream(t)
	from, to := p.window()
	// Tuples are visited in key order (by id), not in queue order: the
	// blocks missing from the cache are then read in key order.
	due := p.due[:0]
	for p.pendQ.len() > 0 && p.pendQ.topKey() <= to {
		key := p.pendQ.topKey()
		tp := p.tup(p.pendQ.pop())
		if tp.dest != 0 && tp.pending > 0 && key == p.pend[tp.id] {
			due = append(due, tp)
		}
	}
	slices.SortFunc(due, byID)
	for i, tp := range due {
		if i > 0 && due[i-1] == tp {
			continue // queued twice
		}
		if err := p.admit(tp, to); err != nil {
			return err
		}
	}
	due = due[:0]
	for p.evictQ.len() > 0 && p.evictQ.topKey() < from {
		key := p.evictQ.topKey()
		tp := p.tup(p.evictQ.pop())
		if tp.dest != 0 && tp.distinct > 0 && key == tp.first {
			due = append(due, tp)
		}
	}
	slices.SortFunc(due, byID)
	for i, tp := range due {
		if i > 0 && due[i-1] == tp {
			continue // queued twice
		}
		if err := p.evict(tp, from, st); err != nil {
			return err
		}
	}
	clear(due)
	p.due = due[:0]
	bound := p.p.DomainsFrom(p.now())
	for p.domainQ.len() > 0 && p.domainQ.topKey() <= bound {
		d := p.domainQ.pop()
		if d.time > bound { // seen again since it was queued
			p.domainQ.push(d.time, d)
			continue
		}
		delete(d.ip.domains, d.name)
		d.gone = true
		p.batch.Delete(domainKey(p.key, p.id, d.ip.ip, d.name), nil)
		for _, x := range d.ip.dests {
			p.markDirty(x)
		}
		p.dropIPIfEmpty(d.ip)
	}
	return nil
}

func byID(a, b *tuple) int { return cmp.Compare(a.id, b.id) }

func (p *Partition) corrupt(tp *tuple, what string) error {
	return fmt.Errorf("state: partition %d tuple %d: %s: %w", p.id, tp.id, what, errCorrupt)
}

func (p *Partition) corruptErr(tp *tuple, what string, err error) error {
	if errors.Is(err, pebble.ErrNotFound) {
		err = errCorrupt
	}
	return fmt.Errorf("state: partition %d tuple %d: %s: %w", p.id, tp.id, what, err)
}

// admit moves the tuple's pending timestamps up to to into its window; they
// are all newer than its last, so each adds one delta. It goes back to
// pendQ if some remain pending.
func (p *Partition) admit(tp *tuple, to beacon.Time) error {
	t := p.pend[tp.id]
	for {
		p.addLast(tp, t)
		tp.pending--
		if tp.pending == 0 {
			delete(p.pend, tp.id)
			break
		}
		next, ok, err := p.nextTS(tp, t+1)
		if err != nil {
			return err
		}
		if !ok {
			return p.corrupt(tp, "pending count")
		}
		if t = next; t > to {
			p.pend[tp.id] = t
			p.pendQ.push(t, tp.id)
			break
		}
	}
	p.touch(tp)
	return nil
}

// addLast counts a timestamp newer than every one in the window.
func (p *Partition) addLast(tp *tuple, t beacon.Time) {
	if tp.distinct == 0 {
		tp.first, tp.last, tp.distinct = t, t, 1
		p.evictQ.push(t, tp.id)
		return
	}
	p.addDelta(tp, beacon.DatetimeDiffSeconds(t, tp.last))
	tp.last = t
	tp.distinct++
}

// evict uncounts the tuple's timestamps before from, each removing the
// first delta; the blocks left with dead timestamps only are deleted. The
// tuple goes back to evictQ if its window is not empty.
func (p *Partition) evict(tp *tuple, from beacon.Time, st *ApplyStats) error {
	for {
		t0 := tp.first
		tp.distinct--
		st.Evicted++
		if tp.distinct == 0 {
			break
		}
		t1, ok, err := p.nextTS(tp, t0+1)
		if err != nil {
			return err
		}
		if !ok || t1 > tp.last {
			return p.corrupt(tp, "window shorter than its count")
		}
		if !p.removeDelta(tp, beacon.DatetimeDiffSeconds(t1, t0)) {
			return p.corrupt(tp, "delta missing from summary")
		}
		tp.first = t1
		if t1 >= from {
			break
		}
	}
	p.touch(tp)
	switch {
	case tp.distinct > 0:
		p.evictQ.push(tp.first, tp.id)
		p.dropDead(tp)
	case tp.pending == 0:
		p.deleteTuple(tp)
	default:
		p.dropDead(tp)
	}
	return nil
}

// insert adds the batch's connections, sorted by tuple and time: a tuple's
// blocks are then visited together, and its in-order timestamps append.
func (p *Partition) insert(conns []Conn, st *ApplyStats) error {
	if len(conns) == 0 {
		return nil
	}
	from, to := p.window()
	p.work = p.work[:0]
	var hs [touchBatch]tupleHashes
	for base := 0; base < len(conns); base += touchBatch {
		batch := conns[base:min(base+touchBatch, len(conns))]
		p.touchTuples(batch, from, &hs)
		for i := range batch {
			c := &batch[i]
			if c.NoPort {
				continue // it moved stream time in apply; nothing to keep
			}
			if c.Time < from {
				st.Late++
				continue
			}
			tp := p.lookup(&c.Tuple, hs[i].tuple)
			if tp == nil {
				tp = p.newTuple(&c.Tuple, &hs[i])
			}
			p.work = append(p.work, item{tp, c.Time, tp.id})
		}
	}
	sortWork(p.work)
	for i := range p.work {
		if i%touchBatch == 0 {
			p.touchBlocks(p.work[i:min(i+touchBatch, len(p.work))])
		}
		tp, t := p.work[i].tp, p.work[i].t
		if i > 0 && p.work[i-1].tp == tp && p.work[i-1].t == t {
			st.Duplicate++
			continue
		}
		added, err := p.insertOne(tp, t, to)
		if err != nil {
			return err
		}
		if !added {
			st.Duplicate++
			continue
		}
		st.Applied++
		p.touch(tp)
	}
	return nil
}

// touchBatch is how many connections insert looks ahead at.
const touchBatch = 16

// touchTuples computes the hash of each connection of batch that insert
// keeps into hs, and loads the index slot, tuple and destination each
// leads to (a new tuple's: the destination index's slot and destination),
// then the destination's strings and dirty mark: lookups over a state
// larger than the caches wait on a miss at each, and loads with no
// dependence on one another are waited on together. The lookups that
// follow find them in the cache.
// What is loaded is only summed (p.touched), so a stale slot (a tuple the
// batch adds first) costs nothing but the load.
func (p *Partition) touchTuples(batch []Conn, from beacon.Time, hs *[touchBatch]tupleHashes) {
	for i := range batch {
		if c := &batch[i]; !c.NoPort && c.Time >= from {
			hs[i] = p.hashes(&c.Tuple)
		}
	}
	x := &p.index
	if len(x.slots) == 0 {
		return
	}
	var slot [touchBatch]uint64
	for i := range batch {
		slot[i] = x.slots[x.home(uint32(hs[i].tuple))]
	}
	var tps [touchBatch]*tuple
	for i := range batch {
		if s := slot[i]; s != 0 && uint32(s>>32) == uint32(hs[i].tuple) {
			tps[i] = p.arena.at(uint32(s) - 1)
		}
	}
	// A connection whose home slot is empty is a new tuple's: its
	// destination is looked up next (addTuple), often one of the
	// partition's already.
	var dslot [touchBatch]uint64
	if y := &p.destIndex; len(y.slots) > 0 {
		for i := range batch {
			if slot[i] == 0 {
				dslot[i] = y.slots[y.home(uint32(hs[i].dest))]
			}
		}
	}
	var ds [touchBatch]*dest
	for i, tp := range tps[:len(batch)] {
		switch s := dslot[i]; {
		case tp != nil && tp.dest != 0:
			ds[i] = p.destAt[tp.dest]
		case s != 0 && uint32(s>>32) == uint32(hs[i].dest):
			ds[i] = p.destAt[uint32(s)-1]
		}
	}
	// Then what the lookups compare (the destination's strings) and what
	// touch reads (its dirty mark).
	var sink uint32
	for _, d := range ds[:len(batch)] {
		if d != nil {
			sink += uint32(len(d.key.RemoteIP))
		}
	}
	for _, d := range ds[:len(batch)] {
		if d == nil {
			continue
		}
		if k := &d.key; len(k.FileName) > 0 && len(k.RemoteIP) > 0 {
			sink += uint32(k.FileName[0]) + uint32(k.RemoteIP[0])
		}
		if d.dirty {
			sink++
		}
	}
	p.touched += sink
}

// touchBlocks looks up the cached block each item of work goes to (the
// tail table's entry first), and loads its first and last timestamps and
// the first probes of the tuple's histogram, as touchTuples does for the
// tuples: the lookups insertOne makes next find them in the cache. A
// block not cached is left to insertOne to read.
func (p *Partition) touchBlocks(work []item) {
	// The histograms of the tuples that have more than two bins (in their
	// ext record), and the newest cached block of each tuple, first: the
	// insert's binary search over a histogram is a miss at the record and
	// at its bins otherwise, and finding the block one at the table entry
	// and one at the block.
	var hs [touchBatch][]beacon.Bin
	var tails [touchBatch]*block
	for i := range work {
		tp := work[i].tp
		if tp.ext != 0 {
			hs[i] = p.exts[tp.ext-1].sum.Hist
		}
		if tp.b0 != noBlock && (i == 0 || work[i-1].tp != tp) {
			tails[i] = p.tail[tp.id]
		}
	}
	var sink uint32
	for _, h := range hs[:len(work)] {
		if n := len(h); n > 0 {
			// The search's first probes.
			sink += uint32(h[n/2].Delta + h[n/4].Delta + h[3*n/4].Delta)
		}
	}
	var bs [touchBatch]*block
	for i := range work {
		tp, t := work[i].tp, work[i].t
		if tp.b0 == noBlock || i > 0 && work[i-1].tp == tp {
			continue
		}
		k := blockKey{tp.id, p.blockAt(tp, max(p.blockIndex(tp, t), 0))}
		if b := tails[i]; b != nil && b.start == k.start {
			bs[i] = b
		} else if len(p.cache) > 0 {
			bs[i] = p.cache[k]
		}
	}
	// Then the block's first timestamp (dead reads it) and its last.
	for _, b := range bs[:len(work)] {
		if b != nil && len(b.ts) > 0 {
			sink += uint32(b.ts[0] + b.ts[len(b.ts)-1])
		}
	}
	p.touched += sink
}

// insertOne adds t (≥ window start) to the tuple.
func (p *Partition) insertOne(tp *tuple, t, to beacon.Time) (bool, error) {
	if t > to { // only when EndOffset > 1s: wait until the window reaches it
		added, err := p.insertTS(tp, t)
		if !added || err != nil {
			return false, err
		}
		tp.pending++
		if tp.pending == 1 || t < p.pend[tp.id] {
			p.pend[tp.id] = t
			p.pendQ.push(t, tp.id) // an older entry, if any, is now stale
		}
		return true, nil
	}
	if tp.distinct > 0 && tp.pending == 0 && t > tp.last {
		// In order, what most connections are: t is newer than every
		// stored timestamp (the dead ones are older than the window).
		if err := p.appendTS(tp, t); err != nil {
			return false, err
		}
		p.addLast(tp, t)
		return true, nil
	}
	if tp.distinct > 0 && (t == tp.last || t == tp.first) {
		return false, nil
	}
	added, err := p.insertTS(tp, t)
	if !added || err != nil {
		return false, err
	}
	switch {
	case tp.distinct == 0 || t > tp.last: // in order: one more delta
		p.addLast(tp, t)
	case t < tp.first: // new first: one more delta, at the front
		p.addDelta(tp, beacon.DatetimeDiffSeconds(tp.first, t))
		tp.first = t
		tp.distinct++
		p.evictQ.push(t, tp.id) // the older entry is now stale
	default: // inside: split the delta between its neighbours
		prev, ok1, err := p.prevTS(tp, t)
		if err != nil {
			return false, err
		}
		next, ok2, err := p.nextTS(tp, t+1)
		if err != nil {
			return false, err
		}
		if !ok1 || !ok2 || prev < tp.first || next > tp.last {
			return false, p.corrupt(tp, "neighbours missing")
		}
		if err := p.splitSummary(tp, prev, t, next); err != nil {
			return false, err
		}
	}
	return true, nil
}

// splitSummary replaces the delta prev→next with prev→t→next.
func (p *Partition) splitSummary(tp *tuple, prev, t, next beacon.Time) error {
	if !p.removeDelta(tp, beacon.DatetimeDiffSeconds(next, prev)) {
		return p.corrupt(tp, "split delta missing from summary")
	}
	p.addDelta(tp, beacon.DatetimeDiffSeconds(t, prev))
	p.addDelta(tp, beacon.DatetimeDiffSeconds(next, t))
	tp.distinct++
	return nil
}

// domains records domain observations, deduplicated per (IP, domain) to the
// newest time. Only IPs that can be a beacon's (Params.DomainIP) are kept: the
// Domains join is on RemoteIP.
func (p *Partition) domains(obs []DomainSeen, st *ApplyStats) {
	var bound beacon.Time
	if p.h.hasStream {
		bound = p.p.DomainsFrom(p.now())
	}
	for i := range obs {
		o := &obs[i]
		if p.h.hasStream && o.Time <= bound {
			continue
		}
		// An IP is asked DomainIP once: most observations are of IPs seen
		// before.
		ip := p.ips[o.IP]
		if ip == nil || !ip.domainIP {
			if !p.p.DomainIP(o.IP) {
				continue
			}
			if ip == nil {
				ip = &ipState{ip: string([]byte(o.IP))}
				p.ips[ip.ip] = ip
			}
			ip.domainIP = true
		}
		d := ip.domains[o.Domain]
		switch {
		case d == nil:
			if ip.domains == nil {
				ip.domains = make(map[string]*domain)
			}
			d = &domain{ip: ip, name: string([]byte(o.Domain)), time: o.Time}
			ip.domains[d.name] = d
			p.domainQ.push(d.time, d)
			for _, x := range ip.dests {
				p.markDirty(x)
			}
		case o.Time > d.time:
			d.time = o.Time // domainQ catches up lazily
		default:
			continue
		}
		st.Domains++
		// Written by the commit, as changed blocks are: an IP's domain is
		// seen again at a newer time on most of its rows, and one write
		// per commit carries the newest.
		if !d.dirty {
			d.dirty = true
			p.dirtyDomains = append(p.dirtyDomains, d)
		}
	}
}

// writeDomains puts the domains changed since the last commit into the
// batch; those expired since were deleted from it.
func (p *Partition) writeDomains() {
	for _, d := range p.dirtyDomains {
		d.dirty = false
		if d.gone {
			continue
		}
		p.val = appendTime(p.val[:0], d.time)
		p.batch.Set(domainKey(p.key, p.id, d.ip.ip, d.name), p.val, nil)
	}
	clear(p.dirtyDomains)
	p.dirtyDomains = p.dirtyDomains[:0]
}

// maxUncommitted bounds what a partition holds back between commits with
// WithCommitEvery: the batch's size (with the domain and tuple writes the
// commit will add, at domainWriteBytes and tupleWriteBytes each), and the
// changed blocks (which the cache cannot evict until they are written).
const maxUncommitted = 32 << 20

// domainWriteBytes is about what a changed domain adds to the commit's
// batch: its key (prefix, partition, IP, name), its time, and the batch
// record's framing; tupleWriteBytes what a new tuple adds (its key and
// seven columns).
const (
	domainWriteBytes = 64
	tupleWriteBytes  = 128
)

// maybeCommit commits after every Apply or AdvanceTo, or every
// Store.commitEvery of them, or when what is held back grows too large.
func (p *Partition) maybeCommit() error {
	p.uncommitted++
	if n := p.s.commitEvery; n == 1 || n > 1 && p.uncommitted >= n ||
		len(p.batch.Repr())+len(p.dirtyDomains)*domainWriteBytes+len(p.unwritten)*tupleWriteBytes > maxUncommitted || p.dirtyCharged > min(maxUncommitted, p.s.blockBudget/2) ||
		p.dirtyCharged > 0 && p.s.cached.Load() > p.s.blockBudget { // over budget: make this partition's blocks evictable
		return p.commit()
	}
	return nil
}

// Flush commits what Apply and AdvanceTo held back (WithCommitEvery): after
// it returns, a crash loses nothing applied before. Without
// WithCommitEvery there is nothing to flush.
func (p *Partition) Flush() error {
	if p.err != nil {
		return p.err
	}
	if p.uncommitted == 0 {
		return nil
	}
	return p.commit()
}

// commit writes the changed blocks and the header, then the batch.
func (p *Partition) commit() error {
	p.uncommitted = 0
	p.writeTuples()
	p.writeBlocks()
	p.writeDomains()
	p.val = p.h.append(p.val[:0])
	p.batch.Set(kindKey(p.key, p.id, kindHeader), p.val, nil)
	if p.metaDirty {
		p.batch.Set(kindKey(p.key, p.id, kindMeta), p.meta, nil)
		p.metaDirty = false
	}
	if err := p.batch.Commit(p.s.wo); err != nil {
		return p.fail(err)
	}
	p.batch.Reset()
	return nil
}

// loadPartition reads a partition's state: header, meta, tuples, domains,
// and every block, from which each tuple's window, pending set and summary
// are recomputed (summaries are not stored: they are a function of the
// window's timestamps).
func loadPartition(s *Store, id int32) (*Partition, error) {
	p := newPartition(s, id)
	lo, hi := partitionSpan(id)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	bad := func(k []byte, err error) error {
		return fmt.Errorf("state: partition %d key %x: %w", id, k, err)
	}
	// Kinds sort d < h < k < m < t: domains create the IPs that tuples
	// then join, the header (window) comes before the blocks, and every
	// tuple's columns before its blocks, which are in time order.
	byID := make(map[uint32]*tuple)
	var from, to beacon.Time
	var cur *tuple
	var ts []beacon.Time
	finish := func() error {
		if cur == nil {
			return nil
		}
		tp := cur
		cur = nil
		if tp.distinct == 0 && tp.pending == 0 {
			return p.corrupt(tp, "no live timestamp")
		}
		// addTuple linked it when its columns were read, addLast queued it
		// for eviction.
		if tp.pending > 0 {
			p.pendQ.push(p.pend[tp.id], tp.id)
		}
		return nil
	}
	for valid := it.First(); valid; valid = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) <= pidLen {
			return nil, bad(k, errCorrupt)
		}
		switch k[pidLen] {
		case kindHeader:
			if err := p.h.decode(v); err != nil {
				return nil, bad(k, err)
			}
			if p.h.hasStream {
				p.setStream(p.h.stream)
				from, to = p.window()
			}
		case kindMeta:
			p.meta = bytes.Clone(v)
		case kindTuple:
			if len(k) != tupleLen {
				return nil, bad(k, errCorrupt)
			}
			t, n, err := beacon.DecodeTuple(v)
			if err != nil || n != len(v) {
				return nil, bad(k, errCorrupt)
			}
			id := binary.BigEndian.Uint64(k[pidLen+1:])
			if id >= math.MaxUint32 || uint32(id) < p.arena.n {
				return nil, bad(k, errCorrupt) // ids are 32-bit, and keys come in order
			}
			tp := p.arena.allocAt(uint32(id))
			tp.b0 = noBlock
			p.growTail()
			hs := p.hashes(&t)
			p.addTuple(tp, &t, &hs) // linked now: the columns are shared at once
			byID[tp.id] = tp
		case kindBlock:
			if len(k) != tsKeyLen {
				return nil, bad(k, errCorrupt)
			}
			tid64 := binary.BigEndian.Uint64(k[pidLen+1:])
			tid := uint32(tid64)
			if cur == nil || uint64(cur.id) != tid64 {
				if err := finish(); err != nil {
					return nil, err
				}
				if cur = byID[tid]; cur == nil {
					return nil, bad(k, errors.New("block without tuple"))
				}
				delete(byID, tid)
			}
			start := decodeTime(k[tupleLen:])
			if ts, err = decodeBlock(ts[:0], start, v); err != nil {
				return nil, bad(k, err)
			}
			if len(ts) == 0 || !p.h.hasStream || ts[0] < start || (p.nblocks(cur) > 0 && start <= p.blockAt(cur, p.nblocks(cur)-1)) {
				return nil, bad(k, errCorrupt)
			}
			p.appendBlockStart(cur, start)
			for _, t := range ts {
				switch {
				case t < from: // dead: left in a block the window moved into
				case t <= to:
					if cur.pending > 0 || (cur.distinct > 0 && t <= cur.last) {
						return nil, bad(k, errCorrupt)
					}
					p.addLast(cur, t)
				default:
					if cur.pending == 0 {
						p.pend[cur.id] = t
					}
					cur.pending++
				}
			}
		case kindDomain:
			rest := k[pidLen+1:]
			i := bytes.IndexByte(rest, 0)
			if i < 0 || len(v) != 8 {
				return nil, bad(k, errCorrupt)
			}
			ipStr := string(rest[:i])
			ip := p.ips[ipStr]
			if ip == nil {
				ip = &ipState{ip: ipStr, domains: make(map[string]*domain)}
				p.ips[ipStr] = ip
			} else if ip.domains == nil {
				ip.domains = make(map[string]*domain)
			}
			t := decodeTime(v)
			d := &domain{ip: ip, name: string(rest[i+1:]), time: t}
			ip.domains[d.name] = d
			p.domainQ.push(t, d)
		default:
			return nil, bad(k, errCorrupt)
		}
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if err := finish(); err != nil {
		return nil, err
	}
	if len(byID) != 0 {
		return nil, fmt.Errorf("state: partition %d: %d tuples without timestamps: %w", id, len(byID), errCorrupt)
	}
	p.h.nextID = uint64(p.arena.n)
	for _, d := range p.destAt {
		if d != nil {
			p.markDirty(d)
		}
	}
	return p, nil
}
