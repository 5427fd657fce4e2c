package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"unique"

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
const maxPivots = 100_000

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

// tupleSeed hashes tuples for the pivot caches, which live in one process.
var tupleSeed = maphash.MakeSeed()

// A collision only mixes two tuples' pivots.
func tupleHash(t *beacon.Tuple) uint64 { return t.Hash(tupleSeed) }

// lru2 is a bounded map of two generations: lookups move an entry to the
// current one, and when it fills the older one is dropped. Cheaper than
// a linked list and within a factor of two of an LRU of max entries.
type lru2[V any] struct {
	cur, old map[uint64]V
	max      int // entries in both generations together
}

func (c *lru2[V]) get(k uint64) (V, bool) {
	if v, ok := c.cur[k]; ok {
		return v, true
	}
	v, ok := c.old[k]
	if ok {
		delete(c.old, k)
		c.put(k, v)
	}
	return v, ok
}

func (c *lru2[V]) put(k uint64, v V) {
	if c.cur == nil {
		c.cur = make(map[uint64]V)
	}
	if _, ok := c.cur[k]; !ok && len(c.cur) >= c.max/2 {
		c.old, c.cur = c.cur, make(map[uint64]V, len(c.cur))
	}
	c.cur[k] = v
}

func (c *lru2[V]) len() int { return len(c.cur) + len(c.old) }

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
}

// append appends the pivots section of a connection event; nothing when
// it has no pivot at all.
func (pw *pivotWriter) append(b []byte, e *beacon.Event) []byte {
	p := eventPivots(e)
	if p == (Pivots{}) {
		return b
	}
	if pw.sent.max == 0 {
		pw.sent.max = maxPivots
	}
	var sum uint32
	sum, pw.buf = pivotSum(&p, pw.buf)
	t := e.Tuple()
	k := tupleHash(&t)
	last, ok := pw.sent.get(k)
	full := !ok || last.sum != sum || e.Timestamp-last.full >= pivotRefresh
	if full {
		pw.sent.put(k, sentPivots{sum: sum, full: e.Timestamp})
	}
	return appendPivots(b, &p, sum, full)
}

// heldPivots are a tuple's pivots as a detection partition knows them:
// those of its newest event (the greatest Timestamp) that carried them.
type heldPivots struct {
	time beacon.Time
	sum  uint32
	Pivots
}

// pivotStore is a detection partition's pivots per tuple: in memory only,
// so after a restart or a move to another instance a tuple's pivots fill
// in from its next record with them in full (at most pivotRefresh of event
// time later). Its worker's goroutine alone uses it.
type pivotStore struct {
	m   lru2[*heldPivots]
	buf []byte // pivotSum's
}

// observe takes the pivots section of a released connection record.
func (ps *pivotStore) observe(it *item) {
	if it.pv.flags == 0 {
		return
	}
	if ps.m.max == 0 {
		ps.m.max = maxPivots
	}
	t := it.tupleKey()
	k := tupleHash(&t)
	h, ok := ps.m.get(k)
	if ok && it.time < h.time {
		return // an older event's
	}
	if it.pv.flags&pvFull == 0 {
		if !ok || h.sum != it.pv.sum {
			// Pivots this partition has not seen in full (a restart, or
			// another ingest member wrote them): they come with the next
			// full record; until then the older ones stay.
			return
		}
		h.time, h.ReportId = it.time, it.pv.ReportId
		return
	}
	if !ok {
		h = new(heldPivots)
		ps.m.put(k, h)
	}
	h.time = it.time
	h.sum, ps.buf = pivotSum(&it.pv.Pivots, ps.buf)
	h.Pivots = Pivots{TenantId: intern(it.pv.TenantId), SHA256: intern(it.pv.SHA256), SHA1: intern(it.pv.SHA1),
		FolderPath: intern(it.pv.FolderPath), CommandLine: intern(it.pv.CommandLine),
		ProcessId: it.pv.ProcessId, ReportId: it.pv.ReportId}
}

// get returns a tuple's pivots, zero when unknown.
func (ps *pivotStore) get(t *beacon.Tuple) Pivots {
	if h, ok := ps.m.get(tupleHash(t)); ok {
		return h.Pivots
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
