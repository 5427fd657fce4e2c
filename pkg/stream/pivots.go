package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
	"math/rand/v2"
	"time"
	"unique"
	"unsafe"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Pivots travel with the connection records of the repartition topic, in an
// optional trailing section (docs/streaming.md, "Repartition format"):
//
//	pivots   byte flags |
//	         flags&pvFull:   5 × (uvarint len, bytes): TenantId, SHA256,
//	                         SHA1, FolderPath, CommandLine | varint ProcessId
//	         flags&pvSame:   4 bytes, big endian: pivotSum of those six
//	         flags&pvReport: varint ReportId
//
// A record without the section (every record written before pivots
// existed, and events with no pivot at all) says nothing about them. The
// six process fields take about 220 bytes, and they rarely change for a
// tuple, so ingest writes them in full only when they differ from what it
// last wrote for the tuple, or pivotRefresh of event time after it last
// wrote them in full (so that a restarted detector, or one that several
// ingest members write the same tuple to, learns them again); otherwise it
// writes their checksum (pvSame), which a detector applies only when it
// equals the checksum of the pivots it holds. Pivots without a string (a
// process id alone) go in full always: a few bytes more than a checksum.
// ReportId differs per event and goes with every record that has one.
const (
	pvFull   byte = 1 << 0
	pvSame   byte = 1 << 1
	pvReport byte = 1 << 2
)

// pivotRefresh is how much event time after writing a tuple's pivots in
// full ingest writes them in full again even though they did not change.
const pivotRefresh = 15 * 60 * beacon.Second

// staleWrite is the time of a writer's entry whose checksum no longer
// says what was last written: older than any event by more than
// pivotRefresh (no overflow: event times are within ±2^62 ticks), and
// dead to a rebuild.
const staleWrite = beacon.Time(math.MinInt64 / 2)

// maxPivots bounds the tuples an ingest member remembers what it wrote
// of (pivotWriter): when it holds twice as many and more than maxPivots
// of them are of the last pivotRefresh, it forgets them all, and each
// tuple's next record goes in full (what a detection partition holds is
// unchanged by it). At most 2·maxPivots entries of 24 bytes, in at most
// 2^19 slots at the default maxPivots (a power of two, ≤ ¾ full): 12.6 MB.
var maxPivots = 100_000 // a variable for tests only

// pivotItem is the pivots section of a decoded connection record. Strings
// alias the record value. sum is the checksum a pvSame section carries; a
// pvFull section's is computed only when the pivots are kept
// (pivotStore.observe), not for every decode.
type pivotItem struct {
	flags byte
	sum   uint32
	Pivots
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// pivotSum is the checksum of a pivots' process fields and tenant (not
// ReportId). Ingest and detectors compute it alike, in any process. buf is
// scratch space, returned for reuse (what crc32 reads escapes).
func pivotSum(p *Pivots, buf []byte) (uint32, []byte) {
	b := buf[:0]
	for _, s := range [...]string{p.TenantId, p.SHA256, p.SHA1, p.FolderPath, p.CommandLine} {
		b = appendString(b, s)
	}
	b = binary.AppendVarint(b, p.ProcessId)
	return crc32.Checksum(b, castagnoli), b
}

// eventPivots are an event's pivots.
func eventPivots(e *beacon.Event) Pivots {
	return Pivots{TenantId: e.TenantId, SHA256: e.SHA256, SHA1: e.SHA1, FolderPath: e.FolderPath,
		CommandLine: e.CommandLine, ProcessId: e.ProcessId, ReportId: e.ReportId}
}

// appendPivots appends a pivots section with the process fields in full
// (full) or as their checksum sum.
func appendPivots(b []byte, p *Pivots, sum uint32, full bool) []byte {
	flags := pvSame
	if full {
		flags = pvFull
	}
	if p.ReportId != 0 {
		flags |= pvReport
	}
	b = append(b, flags)
	if full {
		for _, s := range [...]string{p.TenantId, p.SHA256, p.SHA1, p.FolderPath, p.CommandLine} {
			b = appendString(b, s)
		}
		b = binary.AppendVarint(b, p.ProcessId)
	} else {
		b = binary.BigEndian.AppendUint32(b, sum)
	}
	if p.ReportId != 0 {
		b = binary.AppendVarint(b, p.ReportId)
	}
	return b
}

// decodePivots parses a pivots section; it returns what follows it.
func decodePivots(b []byte, pv *pivotItem) ([]byte, error) {
	if len(b) == 0 {
		return nil, errShort
	}
	pv.flags, b = b[0], b[1:]
	if k := pv.flags & (pvFull | pvSame); pv.flags&^(pvFull|pvSame|pvReport) != 0 || k != pvFull && k != pvSame {
		return nil, fmt.Errorf("pivots: bad flags %#x", pv.flags)
	}
	var err error
	switch {
	case pv.flags&pvFull != 0:
		for _, dst := range [...]*string{&pv.TenantId, &pv.SHA256, &pv.SHA1, &pv.FolderPath, &pv.CommandLine} {
			if *dst, b, err = readString(b); err != nil {
				return nil, fmt.Errorf("pivots: %w", err)
			}
		}
		id, n := binary.Varint(b)
		if n <= 0 {
			return nil, errors.New("pivots: bad process id")
		}
		pv.ProcessId, b = id, b[n:]
	case pv.flags&pvSame != 0:
		if len(b) < 4 {
			return nil, fmt.Errorf("pivots: %w", errShort)
		}
		pv.sum, b = binary.BigEndian.Uint32(b), b[4:]
	}
	if pv.flags&pvReport != 0 {
		id, n := binary.Varint(b)
		if n <= 0 || id == 0 {
			return nil, errors.New("pivots: bad report id")
		}
		pv.ReportId, b = id, b[n:]
	}
	return b, nil
}

// tupleSeed seeds tupleHash; the pivot caches live in one process.
// tupleSecret is what each word is mixed with: were it a constant, a
// column word equal to it would zero the product and wipe every column
// hashed before it, whatever the seed (a collision anyone could write
// into a file name); random, no input can aim at it.
var (
	tupleSeed   = rand.Uint64() | 1
	tupleSecret = rand.Uint64() | 1
)

// tupleHash hashes a tuple for the pivot caches, its columns eight bytes a
// step through a multiply-fold mixer (wyhash's), each column's length
// mixed after it. A collision only mixes two tuples' pivots. It is called
// twice per connection (ingest's writer, the partition's store): a
// maphash per column, or Tuple.Hash's buffered maphash.Hash, cost several
// times as much.
func tupleHash(t *beacon.Tuple) uint64 {
	h := tupleSeed ^ uint64(uint32(t.RemotePort))
	h = strMix(h, t.DeviceId)
	h = strMix(h, t.DeviceName)
	h = strMix(h, t.AccountName)
	h = strMix(h, t.AccountDomain)
	h = strMix(h, t.FileName)
	return strMix(h, t.RemoteIP)
}

const mixK0 = 0xa0761d6478bd642f

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// strMix mixes s into h: its words, the last one overlapping the one
// before it, or a short string's bytes read as wyhash reads them.
func strMix(h uint64, s string) uint64 {
	n := len(s)
	p := unsafe.Pointer(unsafe.StringData(s))
	var w uint64
	switch {
	case n > 8:
		for ; n > 8; n -= 8 {
			h = mix(h^mixK0, *(*uint64)(p)^tupleSecret)
			p = unsafe.Add(p, 8)
		}
		w = *(*uint64)(unsafe.Add(p, n-8))
	case n == 8:
		w = *(*uint64)(p)
	case n >= 4:
		w = uint64(*(*uint32)(p))<<32 | uint64(*(*uint32)(unsafe.Add(p, n-4)))
	case n > 0:
		w = uint64(*(*byte)(p))<<16 | uint64(*(*byte)(unsafe.Add(p, n>>1)))<<8 | uint64(*(*byte)(unsafe.Add(p, n-1)))
	}
	return mix(h^mixK0^uint64(len(s)), w^tupleSecret)
}

// timedTable is the pivot tables' map: keyed by tuple hash (tupleHash;
// 0 is stored as 1, a collision that only mixes two tuples' pivots), each
// entry with a time that says when it stops counting (an entry whose
// time is before the owner's horizon is dead: the owner treats it as
// absent). The entries live by value in one open addressing table
// (linear probing, at most ¾ of the slots used), so a lookup is one probe
// into one array, and there is no deletion: dead entries are dropped when
// the table is rebuilt, which happens when an insert would fill it past
// ¾, into a table sized for the live entries alone (2 to 4 slots each, so
// that the next rebuild is at least half as many inserts away). What the
// table answers is the same whether a dead entry was dropped yet or not:
// the rebuild is not observable to the pivot store, only its memory is
// (to the writer, a dead entry dropped only sends a late record's pivots
// in full rather than as a checksum: a cost, not a different answer).
type timedTable[V any] struct {
	slots []timedSlot[V]
	used  int // slots with a key, dead ones included
}

type timedSlot[V any] struct {
	key uint64 // 0: empty
	t   beacon.Time
	v   V
}

// tableKey is a tuple hash as the table stores it (never 0).
func tableKey(h uint64) uint64 {
	if h == 0 {
		return 1
	}
	return h
}

// find returns k's slot, or the empty one where k would go (key 0). The
// table must have slots.
func (c *timedTable[V]) find(k uint64) *timedSlot[V] {
	mask := uint64(len(c.slots) - 1)
	for i := k & mask; ; i = (i + 1) & mask {
		if s := &c.slots[i]; s.key == k || s.key == 0 {
			return s
		}
	}
}

// lookup returns k's slot, live or dead, or nil when it has none.
func (c *timedTable[V]) lookup(k uint64) *timedSlot[V] {
	if len(c.slots) == 0 {
		return nil
	}
	if s := c.find(k); s.key == k {
		return s
	}
	return nil
}

// add returns a new slot for k, which is not in the table, its key set:
// the caller fills it. When the table would be more than ¾ used, or
// holds 2·max entries (max 0: no bound), it is rebuilt first with only
// the entries at or after horizon — none when more than max are.
func (c *timedTable[V]) add(k uint64, horizon beacon.Time, max int) *timedSlot[V] {
	if 4*(c.used+1) > 3*len(c.slots) || max > 0 && c.used >= 2*max {
		c.rebuild(horizon, max)
	}
	s := c.find(k)
	s.key = k
	c.used++
	return s
}

// rebuild moves the live entries (at or after horizon) into a new table of
// 2 to 4 slots per entry (16 at least).
func (c *timedTable[V]) rebuild(horizon beacon.Time, max int) {
	live := 0
	for i := range c.slots {
		if s := &c.slots[i]; s.key != 0 && s.t >= horizon {
			live++
		}
	}
	if max > 0 && live > max {
		live = 0 // forget them all (pivotWriter)
		clear(c.slots)
	}
	n := 16
	for n < 2*(live+1) {
		n *= 2
	}
	next := make([]timedSlot[V], n)
	mask := uint64(n - 1)
	for i := range c.slots {
		s := &c.slots[i]
		if s.key == 0 || s.t < horizon {
			continue
		}
		j := s.key & mask
		for next[j].key != 0 {
			j = (j + 1) & mask
		}
		next[j] = *s
	}
	c.slots, c.used = next, live
}

// pivotWriter decides, per connection, whether ingest writes the pivots
// in full. It remembers, per tuple, the checksum and event time of the
// last record it wrote them in full with: a tuple not written in full for
// pivotRefresh of event time goes in full anyway, so the entries older
// than that before the newest event it saw are dead (timedTable), and
// what it holds is bounded by the tuples of the last pivotRefresh (and by
// maxPivots). One goroutine uses it.
type pivotWriter struct {
	sent  timedTable[uint32] // time: of the last full write; value: the checksum
	clock beacon.Time        // the newest event time seen
	buf   []byte             // pivotSum's
}

// append appends the pivots section of a connection event; nothing when
// it has no pivot at all.
func (pw *pivotWriter) append(b []byte, e *beacon.Event) []byte {
	p, sum, full, ok := pw.decide(e)
	if !ok {
		return b
	}
	return appendPivots(b, &p, sum, full)
}

// decide returns an event's pivots, their checksum, and whether they go in
// full; ok is false when the event has none.
func (pw *pivotWriter) decide(e *beacon.Event) (p Pivots, sum uint32, full, ok bool) {
	p = eventPivots(e)
	if p == (Pivots{}) {
		return p, 0, false, false
	}
	if p.TenantId == "" && p.SHA256 == "" && p.SHA1 == "" && p.FolderPath == "" && p.CommandLine == "" {
		// A process id alone: in full it takes 2 to 6 bytes more than
		// its checksum, which would cost a lookup per connection here.
		// What the table says was last written in full for the tuple is
		// no longer what a detector holds: its next pivots with strings
		// must go in full too, not as a checksum the detector would
		// ignore (TestPivotsProcessIdAloneBetween).
		if pw.sent.used > 0 {
			t := e.Tuple()
			if s := pw.sent.lookup(tableKey(tupleHash(&t))); s != nil {
				s.t = staleWrite
			}
		}
		return p, 0, true, true
	}
	t := e.Tuple()
	k := tableKey(tupleHash(&t))
	pw.clock = max(pw.clock, e.Timestamp)
	s := pw.sent.lookup(k)
	// The checksum after the lookup: its work goes on while the table's
	// slot is fetched (a miss, often).
	sum, pw.buf = pivotSum(&p, pw.buf)
	full = s == nil || s.v != sum || e.Timestamp-s.t >= pivotRefresh
	if full {
		if s == nil {
			s = pw.sent.add(k, pw.clock-pivotRefresh, maxPivots)
		}
		s.t, s.v = e.Timestamp, sum
	}
	return p, sum, full, true
}

// heldPivots are a tuple's pivots as a detection partition knows them
// (the entry's time is their event's): the process fields, which rarely
// change and which many tuples share, behind a pointer (pivotStore.procOf),
// so that a table slot takes 32 bytes.
type heldPivots struct {
	report int64 // ReportId
	proc   *procPivots
}

// procPivots are the pivots' process fields and tenant, and their
// checksum.
type procPivots struct {
	TenantId, SHA256, SHA1, FolderPath, CommandLine string
	ProcessId                                       int64
	sum                                             uint32
}

// pivotStore is a detection partition's pivots per tuple: those of the
// tuple's newest event (the greatest Timestamp) that carried them, for as
// long as that event is in the window — the lookback before the newest
// connection the partition has taken (its own or, in a replay shard,
// another shard's shadow: advance). A tuple's pivots are thus a function
// of its own records and of the partition's connection times alone, which
// every shard of a replay's partition shares: a shard keeps its own
// tuples and reads the same pivots the partition's one store would
// (TestPivotStoreShards). The store holds at most the tuples with a
// record in the window, as the state does. In memory only: after a
// restart or a move to another instance a tuple's pivots fill in from its
// next record with them in full (at most pivotRefresh of event time
// later). Its worker's goroutine alone uses it.
//
// A record's pivots are taken in two steps: observe, as the record is
// released, notes them with the window as of then; apply, with the
// segment (worker.flush, before anything reads them), looks a batch of
// tuples up in the table at once, so that their cache misses overlap
// (the table is larger than the caches, and a probe per connection, one
// after the other, waited on a miss each).
type pivotStore struct {
	m        timedTable[heldPivots]
	lookback time.Duration // Params.Lookback
	now      beacon.Time   // the newest connection's time
	buf      []byte        // pivotSum's
	sink     uint64        // touch's
	pend     []pendingPivots
	procs    []procPivots // the process fields of pend's full sections; they alias the records
	recent   *[procCache]*procPivots
}

// procCache is how many process fields a store remembers having made, by
// checksum, so that the tuples of one process share them.
const procCache = 4096

// procOf returns p, which aliases a record, as held: the one made last
// for its checksum when equal, else a copy with its strings interned (so
// that the processes running one binary share its hash and path).
func (ps *pivotStore) procOf(p *procPivots) *procPivots {
	if ps.recent == nil {
		ps.recent = new([procCache]*procPivots)
	}
	r := &ps.recent[p.sum%procCache]
	if *r != nil && **r == *p {
		return *r
	}
	*r = &procPivots{intern(p.TenantId), intern(p.SHA256), intern(p.SHA1), intern(p.FolderPath), intern(p.CommandLine), p.ProcessId, p.sum}
	return *r
}

// intern copies s out of the record it aliases.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// pendingPivots is a record's pivots section between observe and apply.
type pendingPivots struct {
	key     uint64 // the tuple's (tableKey)
	time    beacon.Time
	horizon beacon.Time // the oldest event time whose pivots counted when it was released
	report  int64
	sum     uint32
	proc    int32 // full: its process fields in procs (sum unset); -1: a checksum (pvSame) in sum
}

// advance takes the time of a connection the partition released: one of
// its own (observe) or a replay shard's shadow of another shard's.
func (ps *pivotStore) advance(t beacon.Time) { ps.now = max(ps.now, t) }

// horizon is the oldest event time whose pivots count.
func (ps *pivotStore) horizon() beacon.Time { return ps.now.Add(-ps.lookback) }

// observe takes the pivots section of a released connection record; its
// strings must stay valid until apply.
func (ps *pivotStore) observe(it *item) {
	ps.advance(it.time)
	if it.pv.flags == 0 {
		return
	}
	horizon := ps.horizon()
	if it.time < horizon {
		return // out of the window already
	}
	t := it.tupleKey()
	pp := pendingPivots{key: tableKey(tupleHash(&t)), time: it.time, horizon: horizon, report: it.pv.ReportId,
		sum: it.pv.sum, proc: -1}
	if p := &it.pv.Pivots; it.pv.flags&pvFull != 0 {
		pp.proc = int32(len(ps.procs)) // its checksum when it is kept (take)
		ps.procs = append(ps.procs, procPivots{p.TenantId, p.SHA256, p.SHA1, p.FolderPath, p.CommandLine, p.ProcessId, 0})
	}
	ps.pend = append(ps.pend, pp)
}

// apply takes the pivots observed since the last apply, in their order.
// A record's replace those held unless they are an older event's (the
// newest event's are kept) or are unchanged pivots (pvSame) that this
// partition does not hold (a restart, or another ingest member wrote
// them: they come with the next full record; until then the older ones
// stay).
func (ps *pivotStore) apply() {
	for base := 0; base < len(ps.pend); base += touchPivots {
		batch := ps.pend[base:min(base+touchPivots, len(ps.pend))]
		ps.touch(batch)
		for i := range batch {
			ps.take(&batch[i])
		}
	}
	clear(ps.procs) // they alias the segment's records
	ps.pend, ps.procs = ps.pend[:0], ps.procs[:0]
}

// touchPivots is how many tuples apply looks up at once.
const touchPivots = 16

// touch loads the home slot of each of batch's tuples, then the process
// fields each found holds: loads with no dependence on one another are
// waited on together, and take's probes then find them in the cache.
// What is loaded is only summed (sink).
func (ps *pivotStore) touch(batch []pendingPivots) {
	if len(ps.m.slots) == 0 {
		return
	}
	mask := uint64(len(ps.m.slots) - 1)
	var sink uint64
	for i := range batch {
		sink += ps.m.slots[batch[i].key&mask].key
	}
	for i := range batch {
		if s := ps.m.lookup(batch[i].key); s != nil {
			sink += uint64(s.v.proc.sum)
		}
	}
	ps.sink += sink
}

func (ps *pivotStore) take(pp *pendingPivots) {
	s := ps.m.lookup(pp.key)
	live := s != nil && s.t >= pp.horizon
	if live && pp.time < s.t {
		return
	}
	h := heldPivots{report: pp.report}
	switch {
	case pp.proc < 0:
		if !live || s.v.proc.sum != pp.sum {
			return
		}
		h.proc = s.v.proc
	default:
		p := &ps.procs[pp.proc]
		if live {
			if p.sum = s.v.proc.sum; *p == *s.v.proc {
				h.proc = s.v.proc // unchanged: no checksum to compute
				break
			}
		}
		p.sum, ps.buf = pivotSum(&Pivots{TenantId: p.TenantId, SHA256: p.SHA256, SHA1: p.SHA1, FolderPath: p.FolderPath,
			CommandLine: p.CommandLine, ProcessId: p.ProcessId}, ps.buf)
		h.proc = ps.procOf(p)
	}
	if s == nil {
		s = ps.m.add(pp.key, pp.horizon, 0)
	}
	s.t, s.v = pp.time, h
}

// get returns a tuple's pivots, zero when unknown.
func (ps *pivotStore) get(t *beacon.Tuple) Pivots {
	ps.apply() // none pending, when the worker reads them (after its flush)
	s := ps.m.lookup(tableKey(tupleHash(t)))
	if s == nil || s.t < ps.horizon() {
		return Pivots{}
	}
	p := s.v.proc
	return Pivots{TenantId: p.TenantId, SHA256: p.SHA256, SHA1: p.SHA1, FolderPath: p.FolderPath,
		CommandLine: p.CommandLine, ProcessId: p.ProcessId, ReportId: s.v.report}
}
