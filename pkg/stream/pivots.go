package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"math/rand/v2"
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
// equals the checksum of the pivots it holds. ReportId differs per event
// and goes with every record that has one.
const (
	pvFull   byte = 1 << 0
	pvSame   byte = 1 << 1
	pvReport byte = 1 << 2
)

// pivotRefresh is how much event time after writing a tuple's pivots in
// full ingest writes them in full again even though they did not change.
const pivotRefresh = 15 * 60 * beacon.Second

// maxPivots bounds the tuples whose pivots a detection partition (and an
// ingest member, for its checksums) remembers. It is an LRU of two
// generations: a tuple not seen while maxPivots/2 other tuples were is
// forgotten, and its next record with full pivots brings them back. At
// about 400 bytes a tuple (less, as equal strings are interned) that is at
// most 40 MB per partition.
var maxPivots = 100_000 // a variable for tests only: a replay's shards must turn over with it

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

// lru2 is a bounded map of two generations: lookups move an entry to the
// current one, and when that fills (max/2 entries) the older one is
// dropped and the current one becomes the older. Within a factor of two
// of an LRU of max entries, and cheaper than a linked list.
//
// Keys are hashes already. The entries live by value in one open
// addressing table (linear probing, at most max live entries in 2^k ≥ 2·max
// slots), each tagged with its generation: moving an entry to the current
// generation rewrites its tag in place, and a new generation is a rebuild
// of the current entries into the spare table. A lookup is one probe into
// one table, where two Go maps (and a pointer per value) cost a cache miss
// each; the pivot caches are looked up once per connection.
type lru2[V any] struct {
	slots    []lruSlot[V]
	spare    []lruSlot[V] // the next generation's table, empty
	gen      uint32       // the current generation; gen-1 is the older; 0 marks an empty slot
	cur, old int          // live entries of each generation
	max      int          // entries in both generations together
}

type lruSlot[V any] struct {
	key uint64
	gen uint32
	v   V
}

// find returns the slot of k, live or not; an empty one (gen 0) when k is
// not there.
func (c *lru2[V]) find(k uint64) *lruSlot[V] {
	mask := uint64(len(c.slots) - 1)
	for i := k & mask; ; i = (i + 1) & mask {
		if s := &c.slots[i]; s.gen == 0 || s.key == k {
			return s
		}
	}
}

func (c *lru2[V]) init() {
	c.slots, c.gen = make([]lruSlot[V], 16), 2
}

// grow doubles the table when its live entries reach half of it, up to
// the size that holds max at that load: a replay's or a small fleet's
// tuples are far fewer than max, and a table sized for max from the start
// cost every detection partition and ingest tens of MB.
func (c *lru2[V]) grow() {
	if 2*(c.cur+c.old+1) <= len(c.slots) || len(c.slots) >= 2*c.max {
		return
	}
	next := make([]lruSlot[V], 2*len(c.slots))
	c.copyLive(next, c.gen-1)
	c.slots, c.spare = next, nil
}

// copyLive inserts the entries of generation minGen and newer into next,
// an empty table.
func (c *lru2[V]) copyLive(next []lruSlot[V], minGen uint32) {
	mask := uint64(len(next) - 1)
	for i := range c.slots {
		s := &c.slots[i]
		if s.gen < minGen {
			continue
		}
		j := s.key & mask
		for next[j].gen != 0 {
			j = (j + 1) & mask
		}
		next[j] = *s
	}
}

// peek returns k's value without moving it: reading is not a use.
func (c *lru2[V]) peek(k uint64) (V, bool) {
	if c.slots != nil {
		if s := c.find(k); s.gen == c.gen || s.gen == c.gen-1 {
			return s.v, true
		}
	}
	var zero V
	return zero, false
}

// get returns k's value, moving it to the current generation.
func (c *lru2[V]) get(k uint64) (V, bool) {
	if c.slots == nil {
		var zero V
		return zero, false
	}
	s := c.find(k)
	switch s.gen {
	case c.gen:
		return s.v, true
	case c.gen - 1:
		v := s.v
		if c.cur >= c.max/2 {
			c.rotate() // drops the older generation, k with it
			c.insert(k, v)
		} else {
			s.gen = c.gen
			c.old--
			c.cur++
		}
		return v, true
	}
	var zero V
	return zero, false
}

// put sets k's value in the current generation.
func (c *lru2[V]) put(k uint64, v V) {
	if c.slots == nil {
		c.init()
	}
	c.grow()
	s := c.find(k)
	if s.gen == c.gen {
		s.v = v
		return
	}
	if c.cur >= c.max/2 {
		c.rotate()
		c.insert(k, v)
		return
	}
	if s.gen == c.gen-1 {
		c.old--
	}
	s.key, s.gen, s.v = k, c.gen, v
	c.cur++
}

// insert adds k, which is not in the table, to the current generation.
func (c *lru2[V]) insert(k uint64, v V) {
	s := c.find(k)
	s.key, s.gen, s.v = k, c.gen, v
	c.cur++
}

// rotate starts a generation: the current entries become the older ones,
// in a table of their own, and the older ones are dropped.
func (c *lru2[V]) rotate() {
	next := c.spare
	if next == nil {
		next = make([]lruSlot[V], len(c.slots))
	}
	c.copyLive(next, c.gen)
	clear(c.slots)
	c.slots, c.spare = next, c.slots
	c.gen++
	c.old, c.cur = c.cur, 0
}

func (c *lru2[V]) len() int { return c.cur + c.old }

// sentPivots is what an ingest member last wrote of a tuple's pivots.
type sentPivots struct {
	sum  uint32
	full beacon.Time // event time of the last record with them in full
}

// pivotWriter decides, per connection, whether ingest writes the pivots
// in full. One goroutine uses it.
type pivotWriter struct {
	sent lru2[sentPivots]
	buf  []byte // pivotSum's
	// last is what the last append wrote, for a replay's shadows of the
	// record (replay.route): flags 0 when it wrote nothing.
	last pivotShadow
}

// pivotShadow is what a detection partition's pivotStore does with a
// connection record's pivots section, without the pivots: the tuple's key
// in the store, the section's kind (pvFull or pvSame) and its checksum. A
// replay shard applies it for the records of the other shards
// (pivotStore.shadow), so that its store holds and forgets the tuples
// the partition's one store would, in the same order.
type pivotShadow struct {
	key   uint64
	sum   uint32
	flags byte
}

// append appends the pivots section of a connection event; nothing when
// it has no pivot at all.
func (pw *pivotWriter) append(b []byte, e *beacon.Event) []byte {
	pw.last = pivotShadow{}
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
	if pw.sent.max == 0 {
		pw.sent.max = maxPivots
	}
	sum, pw.buf = pivotSum(&p, pw.buf)
	t := e.Tuple()
	k := tupleHash(&t)
	last, found := pw.sent.get(k)
	full = !found || last.sum != sum || e.Timestamp-last.full >= pivotRefresh
	pw.last = pivotShadow{key: k, sum: sum, flags: pvSame}
	if full {
		pw.sent.put(k, sentPivots{sum: sum, full: e.Timestamp})
		pw.last.flags = pvFull
	}
	return p, sum, full, true
}

// heldPivots are a tuple's pivots as a detection partition knows them:
// those of its newest event (the greatest Timestamp) that carried them.
// They are held by value in the store's table; the process fields, which
// rarely change, behind a pointer shared until they do.
type heldPivots struct {
	time   beacon.Time
	report int64 // ReportId
	sum    uint32
	proc   *Pivots // the process fields and tenant, interned; ReportId unset
}

// pivotStore is a detection partition's pivots per tuple: in memory only,
// so after a restart or a move to another instance a tuple's pivots fill
// in from its next record with them in full (at most pivotRefresh of event
// time later). Its worker's goroutine alone uses it.
type pivotStore struct {
	m   lru2[heldPivots]
	buf []byte // pivotSum's
}

// observe takes the pivots section of a released connection record.
func (ps *pivotStore) observe(it *item) {
	if it.pv.flags == 0 {
		return
	}
	full, sum, p := it.pv.flags&pvFull != 0, it.pv.sum, &it.pv.Pivots
	if full {
		sum, ps.buf = pivotSum(p, ps.buf)
	}
	t := it.tupleKey()
	k := tupleHash(&t)
	h, ok := ps.step(k, it.time, full, sum)
	if !ok {
		return
	}
	if full && (h.proc == nil || h.sum != sum || h.proc.TenantId != p.TenantId || h.proc.SHA256 != p.SHA256 || h.proc.SHA1 != p.SHA1 ||
		h.proc.FolderPath != p.FolderPath || h.proc.CommandLine != p.CommandLine || h.proc.ProcessId != p.ProcessId) {
		h.proc = &Pivots{TenantId: intern(p.TenantId), SHA256: intern(p.SHA256), SHA1: intern(p.SHA1),
			FolderPath: intern(p.FolderPath), CommandLine: intern(p.CommandLine), ProcessId: p.ProcessId}
	}
	h.time, h.sum, h.report = it.time, sum, p.ReportId
	ps.m.put(k, h) // in the current generation: get moved it there
}

// shadow applies a replay shard's shadow of another shard's connection
// record (it.pvKey, it.pv.flags and it.pv.sum): observe's table steps
// (step, then put), keeping the time and checksum alone. The tuple is
// never this shard's, so its pivots are never asked for; the table's
// generations turn over as the partition's one table would (maxPivots
// counts every tuple of the partition, not the shard's).
func (ps *pivotStore) shadow(it *item) {
	if h, ok := ps.step(it.pvKey, it.time, it.pv.flags&pvFull != 0, it.pv.sum); ok {
		h.time, h.sum = it.time, it.pv.sum
		ps.m.put(it.pvKey, h)
	}
}

// step looks tuple k up for a record at time t whose pivots section is
// full or carries checksum sum, and tells whether the record's pivots
// replace what it returns: not when an older event's (the newest
// event's pivots are kept), nor when unchanged pivots (pvSame) that this
// partition has not seen in full (a restart, or another ingest member
// wrote them: they come with the next full record; until then the older
// ones stay). The lookup moves k to the current generation either way.
func (ps *pivotStore) step(k uint64, t beacon.Time, full bool, sum uint32) (heldPivots, bool) {
	if ps.m.max == 0 {
		ps.m.max = maxPivots
	}
	h, ok := ps.m.get(k)
	if ok && t < h.time {
		return h, false
	}
	if !full && (!ok || h.sum != sum) {
		return h, false
	}
	return h, true
}

// get returns a tuple's pivots, zero when unknown. It peeks: an alert
// reading a tuple's pivots does not keep them, only its records do, so
// that what the store holds is a function of the records alone — which a
// replay's shards rely on, each reading only its own tuples' pivots
// (pivotStore.shadow).
func (ps *pivotStore) get(t *beacon.Tuple) Pivots {
	if h, ok := ps.m.peek(tupleHash(t)); ok && h.proc != nil { // nil: a shadow's (a hash collision)
		p := *h.proc
		p.ReportId = h.report
		return p
	}
	return Pivots{}
}

// intern copies s out of the record it aliases; tuples running the same
// binary share its hash and path.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}
