package stream

import (
	"reflect"
	"testing"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// FuzzRepartitionRecord: decoding never panics on any key and value, and
// whatever decodes as a connection, a no-port connection or a domain
// observation encodes back to a value that decodes to the same item, and
// peekRelease agrees with decodeItem on it (checkPeek). The
// stored corpus (testdata/fuzz/FuzzRepartitionRecord) holds records ingest
// wrote for a simulated fleet — flat connections, a null port, domains,
// non-ASCII accounts — and their truncations, so `go test` runs them as
// seeds and `go test -fuzz FuzzRepartitionRecord` starts from real shapes.
func FuzzRepartitionRecord(f *testing.F) {
	f.Add([]byte("45.77.1.10"), []byte{kindNoPort, 0x02})
	for _, v := range pivotSeeds() {
		f.Add([]byte("45.77.1.10"), v)
	}
	f.Fuzz(func(t *testing.T, key, value []byte) {
		checkPeek(t, key, value)
		var it item
		if err := decodeItem(key, value, &it); err != nil {
			return
		}
		var again []byte
		switch it.kind {
		case kindConn, kindNoPort:
			tu := it.tupleKey()
			e := eventOf(&tu, it.time, it.kind == kindConn)
			again = appendConn(nil, &e, it.release)
			if it.pv.flags != 0 {
				again = appendPivots(again, &it.pv.Pivots, it.pv.sum, it.pv.flags&pvFull != 0)
			}
		case kindDomain:
			again = appendDomain(nil, it.time, it.release, it.domain)
		default:
			return // other kinds have their own encoders and tests
		}
		var back item
		if err := decodeItem(key, again, &back); err != nil {
			t.Fatalf("re-encoded %x does not decode: %v", again, err)
		}
		if !reflect.DeepEqual(back, it) {
			t.Fatalf("round trip: %+v, then %+v", it, back)
		}
	})
}

// eventOf is the connection event an item stands for.
func eventOf(tu *beacon.Tuple, ts beacon.Time, hasPort bool) beacon.Event {
	return beacon.Event{Timestamp: ts, DeviceId: tu.DeviceId, DeviceName: tu.DeviceName, AccountName: tu.AccountName,
		AccountDomain: tu.AccountDomain, FileName: tu.FileName, RemoteIP: tu.RemoteIP, RemotePort: tu.RemotePort, HasPort: hasPort}
}
