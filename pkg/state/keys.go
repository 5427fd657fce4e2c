package state

import (
	"encoding/binary"
	"errors"
	"math"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Key layout (see the package doc and docs/state.md). Every key of a
// partition starts with its id as 4 big-endian bytes, so one DeleteRange
// [id, id+1) drops it; the next byte is the kind. Partition ids are
// non-negative int32s, so 0xFF… is free for store-wide keys.
const (
	kindHeader = 'h' // pid h → header (offset, stream time, tuple slots in use)
	kindMeta   = 'm' // pid m → the caller's opaque blob
	kindTuple  = 'k' // pid k id → the tuple's seven columns (written once)
	kindBlock  = 't' // pid t id start → a block of timestamps (blocks.go)
	kindDomain = 'd' // pid d ip 0x00 domain → newest time seen

	pidLen   = 4
	tupleLen = pidLen + 1 + 8      // pid kind id
	tsKeyLen = tupleLen + 8        // pid t id start
	maxPID   = math.MaxInt32       // ids are int32 ≥ 0
	version  = 3                   // layout version (2: timestamp blocks; 3: tuple ids reused, < 2³²), in header and config
	cfgKey   = "\xff\xffstate-cfg" // store-wide: lookback and end offset the state was built with
)

var errCorrupt = errors.New("state: corrupt value")

func appendPID(b []byte, pid int32) []byte { return binary.BigEndian.AppendUint32(b, uint32(pid)) }

// appendTime encodes a Time so that byte order is time order (sign bit
// flipped, big-endian).
func appendTime(b []byte, t beacon.Time) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(t)^(1<<63))
}

func decodeTime(b []byte) beacon.Time { return beacon.Time(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

func partitionSpan(pid int32) (lo, hi []byte) {
	return appendPID(nil, pid), appendPID(nil, pid+1)
}

func kindKey(b []byte, pid int32, kind byte) []byte {
	return append(appendPID(b[:0], pid), kind)
}

func idKey(b []byte, pid int32, kind byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(kindKey(b, pid, kind), id)
}

// tsKey is the key of tuple id's block starting at t.
func tsKey(b []byte, pid int32, id uint64, t beacon.Time) []byte {
	return appendTime(idKey(b, pid, kindBlock, id), t)
}

func domainKey(b []byte, pid int32, ip, domain string) []byte {
	b = append(kindKey(b, pid, kindDomain), ip...)
	b = append(b, 0)
	return append(b, domain...)
}

// header is the per-partition record written with every batch.
type header struct {
	offset    int64 // next offset to consume; -1 when none was recorded
	stream    beacon.Time
	hasStream bool
	nextID    uint64 // tuple slots handed out (ids are below it); informative, a load recounts
}

func (h *header) append(b []byte) []byte {
	b = append(b, version)
	b = binary.AppendVarint(b, h.offset)
	if h.hasStream {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendTime(b, h.stream)
	return binary.AppendUvarint(b, h.nextID)
}

func (h *header) decode(b []byte) error {
	if len(b) < 1 || b[0] != version {
		return errCorrupt
	}
	r := reader{b: b[1:]}
	h.offset = r.varint()
	h.hasStream = r.byte() == 1
	h.stream = r.time()
	h.nextID = r.uvarint()
	return r.done()
}

// reader decodes varints and times, remembering the first error.
type reader struct {
	b   []byte
	err bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.err = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) time() beacon.Time {
	if len(r.b) < 8 {
		r.err = true
		return 0
	}
	t := decodeTime(r.b)
	r.b = r.b[8:]
	return t
}

func (r *reader) done() error {
	if r.err || len(r.b) != 0 {
		return errCorrupt
	}
	return nil
}
