package beacon

import (
	"encoding/binary"
	"errors"
)

// The tuple's binary form, the one encoding of the seven columns. pkg/state
// stores it as a tuple's record value, the alert bookkeeping's blob (pkg/stream
// alerting.go) lists the alerted tuples in it, and the alert ID hashes it, so
// changing it changes stored state and every alert ID (the known-answer test
// in pkg/stream holds the latter):
//
//	+-------------+----------------+-----+-------------+----------------+-------------------+
//	| uvarint len | DeviceId bytes | ... | uvarint len | RemoteIP bytes | varint RemotePort |
//	+-------------+----------------+-----+-------------+----------------+-------------------+
//	  six strings, each length-prefixed, in the order DeviceId, DeviceName,
//	  AccountName, AccountDomain, FileName, RemoteIP; then the port (zigzag)
//
// Lengths make the form unambiguous: no column's bytes can move into the next.

// ErrTupleCorrupt says that bytes do not hold a tuple's binary form.
var ErrTupleCorrupt = errors.New("beacon: corrupt tuple encoding")

// AppendBinary appends the tuple's binary form to b.
func (t *Tuple) AppendBinary(b []byte) []byte {
	for _, s := range t.strings() {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return binary.AppendVarint(b, int64(t.RemotePort))
}

// DecodeTuple decodes the tuple at the start of b and returns how many bytes
// it took, so a tuple can sit inside a larger blob. The six strings share one
// allocation.
func DecodeTuple(b []byte) (Tuple, int, error) {
	var span [6][2]int // start, end of each string in b
	i := 0
	for f := range span {
		n, w := binary.Uvarint(b[i:])
		if w <= 0 || n > uint64(len(b)-i-w) {
			return Tuple{}, 0, ErrTupleCorrupt
		}
		i += w
		span[f] = [2]int{i, i + int(n)}
		i += int(n)
	}
	port, w := binary.Varint(b[i:])
	if w <= 0 || port < -1<<31 || port >= 1<<31 {
		return Tuple{}, 0, ErrTupleCorrupt
	}
	all := string(b[span[0][0]:span[5][1]])
	s := func(f int) string { return all[span[f][0]-span[0][0] : span[f][1]-span[0][0]] }
	return Tuple{DeviceId: s(0), DeviceName: s(1), AccountName: s(2), AccountDomain: s(3),
		FileName: s(4), RemoteIP: s(5), RemotePort: int32(port)}, i + w, nil
}

// strings are the tuple's six string columns in their order.
func (t *Tuple) strings() [6]string {
	return [...]string{t.DeviceId, t.DeviceName, t.AccountName, t.AccountDomain, t.FileName, t.RemoteIP}
}
