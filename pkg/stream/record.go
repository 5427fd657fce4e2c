package stream

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// The repartition topic carries what detection needs and nothing else,
// keyed by RemoteIP so that every tuple of a destination and every domain
// of that IP meet in one partition. The value is one of three compact
// binary records (docs/streaming.md, "Repartition format"):
//
//	0x01 connection  varint ticks | varint port | 5 × (uvarint len, bytes):
//	                 DeviceId, DeviceName, AccountName, AccountDomain, FileName
//	0x02 no-port     varint ticks
//	                 a connection whose RemotePort was null: it moves stream
//	                 time but never forms a tuple (null == null is null)
//	0x03 domain      varint ticks | uvarint len, domain
//
// Ticks are 100 ns since the Unix epoch (beacon.Time), zigzag varints.
// RemoteIP is the record key and is not repeated in the value. The Kafka
// record timestamp is the event time in milliseconds, so that a new owner
// can find where its window starts with ListOffsets by timestamp.
const (
	kindConn   byte = 0x01
	kindNoPort byte = 0x02
	kindDomain byte = 0x03
)

// item is one decoded repartition record. Strings alias the record value.
type item struct {
	kind   byte
	ip     string
	time   beacon.Time
	port   int32
	tuple  [5]string // DeviceId, DeviceName, AccountName, AccountDomain, FileName
	domain string
}

// appendConn appends the value of a connection event that passed the
// query's filters.
func appendConn(b []byte, e *beacon.Event) []byte {
	if !e.HasPort {
		b = append(b, kindNoPort)
		return binary.AppendVarint(b, int64(e.Timestamp))
	}
	b = append(b, kindConn)
	b = binary.AppendVarint(b, int64(e.Timestamp))
	b = binary.AppendVarint(b, int64(e.RemotePort))
	for _, s := range [...]string{e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName} {
		b = appendString(b, s)
	}
	return b
}

// appendDomain appends the value of a domain observation.
func appendDomain(b []byte, t beacon.Time, domain string) []byte {
	b = append(b, kindDomain)
	b = binary.AppendVarint(b, int64(t))
	return appendString(b, domain)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errShort = errors.New("truncated")

// decodeItem parses a repartition record. The strings of it alias value and
// key.
func decodeItem(key, value []byte, it *item) error {
	if len(value) == 0 {
		return errShort
	}
	*it = item{kind: value[0], ip: bytesString(key)}
	b := value[1:]
	t, n := binary.Varint(b)
	if n <= 0 {
		return fmt.Errorf("kind %#x: bad time", it.kind)
	}
	it.time = beacon.Time(t)
	b = b[n:]
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
	case kindDomain:
		var err error
		if it.domain, b, err = readString(b); err != nil {
			return fmt.Errorf("domain: %w", err)
		}
	default:
		return fmt.Errorf("unknown record kind %#x", it.kind)
	}
	if len(b) != 0 {
		return fmt.Errorf("kind %#x: %d trailing bytes", it.kind, len(b))
	}
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
