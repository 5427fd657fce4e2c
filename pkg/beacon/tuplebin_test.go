package beacon

import (
	"errors"
	"testing"
)

// TestTupleBinaryRoundTrip: a tuple decodes to what was encoded, from inside
// a larger blob, and every cut-short form is an error, not a wrong tuple.
func TestTupleBinaryRoundTrip(t *testing.T) {
	for _, tu := range []Tuple{
		{},
		{DeviceId: "d", DeviceName: "n", AccountName: "a", AccountDomain: "c", FileName: "f.exe", RemoteIP: "1.2.3.4", RemotePort: -1},
		{DeviceId: "ü\x00x", RemoteIP: "2001:db8::1", RemotePort: 65535},
		{DeviceName: "only the second column", RemotePort: -1 << 31},
	} {
		b := tu.AppendBinary([]byte("prefix"))[len("prefix"):]
		b = append(b, "trailer"...)
		got, n, err := DecodeTuple(b)
		if err != nil || got != tu || string(b[n:]) != "trailer" {
			t.Fatalf("tuple %+v decoded %+v, n %d of %d, %v", tu, got, n, len(b), err)
		}
		for cut := range n {
			if _, _, err := DecodeTuple(b[:cut]); !errors.Is(err, ErrTupleCorrupt) {
				t.Fatalf("tuple %+v cut to %d of %d bytes: err %v, want ErrTupleCorrupt", tu, cut, n, err)
			}
		}
	}
}

// TestTupleBinaryLayout pins the bytes of the layout diagram: stored state
// and every alert ID depend on them.
func TestTupleBinaryLayout(t *testing.T) {
	tu := Tuple{DeviceId: "d1", DeviceName: "", AccountName: "a", AccountDomain: "", FileName: "x", RemoteIP: "1.2.3.4", RemotePort: 443}
	want := "\x02d1" + "\x00" + "\x01a" + "\x00" + "\x01x" + "\x071.2.3.4" + "\xf6\x06" // zigzag(443) = 886 = 0x376
	if got := string(tu.AppendBinary(nil)); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestTupleColumnsAreSeparated: moving a byte from one column to the next
// changes the form (and so the hash and the alert ID).
func TestTupleColumnsAreSeparated(t *testing.T) {
	a := Tuple{DeviceId: "ab", DeviceName: "c"}
	b := Tuple{DeviceId: "a", DeviceName: "bc"}
	if string(a.AppendBinary(nil)) == string(b.AppendBinary(nil)) {
		t.Fatal("two tuples share a binary form")
	}
}
