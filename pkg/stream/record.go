package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// The repartition topic carries what detection needs and nothing else,
// keyed by RemoteIP so that every tuple of a destination and every domain
// of that IP meet in one partition, plus the watermarks that make stream
// time (docs/streaming.md, "Repartition format" and "Time"):
//
//	0x01 connection  varint ticks | varint port | 5 × (uvarint len, bytes):
//	                 DeviceId, DeviceName, AccountName, AccountDomain, FileName |
//	                 optional pivots section (pivots.go): byte flags |
//	                 5 × (uvarint len, bytes): TenantId, SHA256, SHA1,
//	                 FolderPath, CommandLine | varint ProcessId, when flags&1 |
//	                 4 bytes checksum of them, when flags&2 |
//	                 varint ReportId, when flags&4
//	0x02 no-port     varint ticks
//	                 a connection whose RemotePort was null: it moves stream
//	                 time but never forms a tuple (null == null is null)
//	0x03 domain      varint ticks | uvarint len, domain
//	0x04 watermark   uvarint len, filter fingerprint | uvarint n |
//	                 n × (uvarint len, topic | uvarint partition | byte flags |
//	                      varint ticks, present when flags&wmHasTime)
//	                 no key; written to every partition
//
// A data kind with the high bit set (0x81, 0x82, 0x83) carries a release
// time after its ticks, as a uvarint of ticks after them: the event came
// out of order in its input partition, after that partition's watermark
// had passed it, and is counted at the watermark (see release below).
//
// Ticks are 100 ns since the Unix epoch (beacon.Time), zigzag varints.
// RemoteIP is the record key and is not repeated in the value. The Kafka
// record timestamp is the event time in milliseconds, so that a new owner
// can find where its window starts with ListOffsets by timestamp.
const (
	kindConn      byte = 0x01
	kindNoPort    byte = 0x02
	kindDomain    byte = 0x03
	kindWatermark byte = 0x04

	kindReleased byte = 0x80 // flag on a data kind: a release time follows the ticks
)

// Watermark entry flags.
const (
	wmOwned   byte = 1 << 0 // the writer reads this input partition
	wmHasTime byte = 1 << 1 // ticks follow: the newest event time read from it
	wmIdle    byte = 1 << 2 // caught up and quiet: it holds no partition back
)

// source is one input partition's entry in a watermark record.
type source struct {
	topic string
	part  int32
	flags byte
	time  beacon.Time
}

// item is one decoded repartition record. Strings alias the record value.
type item struct {
	kind    byte // without kindReleased
	ip      string
	time    beacon.Time
	release beacon.Time // when the event counts: time, or later (see kindReleased)
	port    int32
	tuple   [5]string // DeviceId, DeviceName, AccountName, AccountDomain, FileName
	domain  string
	pv      pivotItem // connections: their pivots section, flags 0 when none

	// watermark records
	fingerprint string
	sources     []source
}

// appendConn appends the value of a connection event that passed the
// query's filters, released at rel (≥ its Timestamp).
func appendConn(b []byte, e *beacon.Event, rel beacon.Time) []byte {
	if !e.HasPort {
		return appendTimes(b, kindNoPort, e.Timestamp, rel)
	}
	b = appendTimes(b, kindConn, e.Timestamp, rel)
	b = binary.AppendVarint(b, int64(e.RemotePort))
	for _, s := range [...]string{e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName} {
		b = appendString(b, s)
	}
	return b
}

// appendDomain appends the value of a domain observation released at rel.
func appendDomain(b []byte, t, rel beacon.Time, domain string) []byte {
	b = appendTimes(b, kindDomain, t, rel)
	return appendString(b, domain)
}

// appendTimes appends a data kind and its time, with the release time when
// it is later.
func appendTimes(b []byte, kind byte, t, rel beacon.Time) []byte {
	if rel <= t {
		b = append(b, kind)
		return binary.AppendVarint(b, int64(t))
	}
	b = append(b, kind|kindReleased)
	b = binary.AppendVarint(b, int64(t))
	return binary.AppendUvarint(b, uint64(rel-t))
}

// appendWatermark appends a watermark record: the writer's filter
// fingerprint and what it knows of every input partition.
func appendWatermark(b []byte, fingerprint string, srcs []source) []byte {
	b = append(b, kindWatermark)
	b = appendString(b, fingerprint)
	b = binary.AppendUvarint(b, uint64(len(srcs)))
	for i := range srcs {
		s := &srcs[i]
		b = appendString(b, s.topic)
		b = binary.AppendUvarint(b, uint64(s.part))
		b = append(b, s.flags)
		if s.flags&wmHasTime != 0 {
			b = binary.AppendVarint(b, int64(s.time))
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errShort = errors.New("truncated")

// decodeItem parses a repartition record. The strings of it alias value and
// key; it.sources is reused.
func decodeItem(key, value []byte, it *item) error {
	if len(value) == 0 {
		return errShort
	}
	released := value[0]&kindReleased != 0
	b := value[1:]
	if kind := value[0] &^ kindReleased; kind == kindWatermark {
		srcs := it.sources[:0]
		*it = item{kind: kind, ip: bytesString(key), sources: srcs}
		if released {
			return fmt.Errorf("unknown record kind %#x", value[0])
		}
		return decodeWatermark(b, it, srcs)
	}
	it.reset(value[0]&^kindReleased, bytesString(key))
	t, n := binary.Varint(b)
	if n <= 0 {
		return fmt.Errorf("kind %#x: bad time", it.kind)
	}
	it.time, it.release = beacon.Time(t), beacon.Time(t)
	b = b[n:]
	if released {
		d, n := binary.Uvarint(b)
		if n <= 0 || d == 0 || d > 1<<62 {
			return fmt.Errorf("kind %#x: bad release time", it.kind)
		}
		it.release = it.time + beacon.Time(d)
		b = b[n:]
	}
	switch it.kind {
	case kindNoPort:
	case kindConn:
		p, n := binary.Varint(b)
		if n <= 0 || p < -1<<31 || p > 1<<31-1 {
			return errors.New("connection: bad port")
		}
		it.port = int32(p)
		b = b[n:]
		for i := range it.tuple {
			var err error
			if it.tuple[i], b, err = readString(b); err != nil {
				return fmt.Errorf("connection: %w", err)
			}
		}
		if len(b) > 0 {
			var err error
			if b, err = decodePivots(b, &it.pv); err != nil {
				return fmt.Errorf("connection: %w", err)
			}
		}
	case kindDomain:
		var err error
		if it.domain, b, err = readString(b); err != nil {
			return fmt.Errorf("domain: %w", err)
		}
	default:
		return fmt.Errorf("unknown record kind %#x", value[0])
	}
	if len(b) != 0 {
		return fmt.Errorf("kind %#x: %d trailing bytes", it.kind, len(b))
	}
	return nil
}

// peekRelease returns the release time of a connection, no-port or
// domain record from its kind and times alone, as decodeItem would find
// it; ok is false for another kind or a header that does not parse
// (decodeItem then fails on it too). The rest of the record is not read.
func peekRelease(value []byte) (release beacon.Time, ok bool) {
	if len(value) == 0 {
		return 0, false
	}
	switch value[0] &^ kindReleased {
	case kindConn, kindNoPort, kindDomain:
	default:
		return 0, false
	}
	t, n := binary.Varint(value[1:])
	if n <= 0 {
		return 0, false
	}
	if value[0]&kindReleased == 0 {
		return beacon.Time(t), true
	}
	d, m := binary.Uvarint(value[1+n:])
	if m <= 0 || d == 0 || d > 1<<62 {
		return 0, false
	}
	return beacon.Time(t) + beacon.Time(d), true
}

// reset makes a reused item what decoding a data record starts from: the
// zero item with kind and ip, and it.sources emptied (its array kept). It writes only the fields
// that a previous record may have set and that the kind's decoding does
// not set on success (a connection writes every tuple column), instead
// of copying a whole zero item over it: the workers decode every record
// twice (process, then advance), and that copy was 40 % of decoding, its
// pointer fields passing the write barrier one by one while the collector
// ran (TestDecodeItemReused holds the equality).
func (it *item) reset(kind byte, ip string) {
	it.kind, it.ip, it.sources = kind, ip, it.sources[:0]
	it.time, it.release, it.port = 0, 0, 0
	if kind != kindConn && it.tuple != ([5]string{}) {
		it.tuple = [5]string{}
	}
	if it.domain != "" {
		it.domain = ""
	}
	if it.fingerprint != "" {
		it.fingerprint = ""
	}
	if it.pv != (pivotItem{}) {
		it.pv = pivotItem{}
	}
}

func decodeWatermark(b []byte, it *item, srcs []source) error {
	var err error
	if it.fingerprint, b, err = readString(b); err != nil {
		return fmt.Errorf("watermark: %w", err)
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return errors.New("watermark: bad count")
	}
	b = b[k:]
	for range n {
		var s source
		if s.topic, b, err = readString(b); err != nil {
			return fmt.Errorf("watermark: %w", err)
		}
		p, k := binary.Uvarint(b)
		if k <= 0 || p > 1<<31-1 || len(b) <= k {
			return errors.New("watermark: bad partition")
		}
		s.part, s.flags, b = int32(p), b[k], b[k+1:]
		if s.flags&^(wmOwned|wmHasTime|wmIdle) != 0 {
			return fmt.Errorf("watermark: unknown flags %#x", s.flags)
		}
		if s.flags&wmHasTime != 0 {
			t, k := binary.Varint(b)
			if k <= 0 {
				return errors.New("watermark: bad time")
			}
			s.time, b = beacon.Time(t), b[k:]
		}
		srcs = append(srcs, s)
	}
	if len(b) != 0 {
		return fmt.Errorf("watermark: %d trailing bytes", len(b))
	}
	it.sources = srcs
	return nil
}

func readString(b []byte) (string, []byte, error) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return "", nil, errShort
	}
	b = b[n:]
	return bytesString(b[:l]), b[l:], nil
}

// tuple returns the group key of a connection item.
func (it *item) tupleKey() beacon.Tuple {
	return beacon.Tuple{
		DeviceId: it.tuple[0], DeviceName: it.tuple[1], AccountName: it.tuple[2],
		AccountDomain: it.tuple[3], FileName: it.tuple[4], RemoteIP: it.ip, RemotePort: it.port,
	}
}

// millis converts event time to a Kafka record timestamp, rounding down so
// that a ListOffsets lookup by timestamp never starts after the event.
func millis(t beacon.Time) int64 {
	const perMilli = 10_000
	m := int64(t) / perMilli
	if int64(t)%perMilli < 0 {
		m--
	}
	return m
}

// The metadata of ingest's input offset commits carries the partition's
// watermark at the committed offset, so that the next reader of the
// partition starts exactly where the previous one stood (docs/streaming.md,
// "Time", Handover):
//
//	"beacon.wm/1"               no event handed on before the offset
//	"beacon.wm/1 " decimal ticks the newest event time handed on before it
//
// Commits without it (written by older versions, or by another tool) say
// nothing; the reader then falls back to the watermark records.
const progMetaPrefix = "beacon.wm/1"

// progMeta encodes a partition's watermark at a committed offset.
func progMeta(t beacon.Time, has bool) string {
	if !has {
		return progMetaPrefix
	}
	return progMetaPrefix + " " + strconv.FormatInt(int64(t), 10)
}

// parseProgMeta decodes progMeta's output; ok is false for any other
// metadata.
func parseProgMeta(s string) (t beacon.Time, has, ok bool) {
	rest, found := strings.CutPrefix(s, progMetaPrefix)
	if !found {
		return 0, false, false
	}
	if rest == "" {
		return 0, false, true
	}
	digits, found := strings.CutPrefix(rest, " ")
	if !found {
		return 0, false, false
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, false, false
	}
	return beacon.Time(n), true, true
}
