package mde

import (
	"math/rand/v2"
	"testing"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// TestTimestampFastPath holds the decoder's timestamp, with its date
// cache, to beacon.ParseTime on a run of values that change date, layout
// and validity from one to the next: the same time or the same error.
func TestTimestampFastPath(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	base := []string{
		"2024-05-01T10:00:00Z", "2024-05-01T10:00:00.1Z", "2024-05-01T23:59:59.1234567Z",
		"2024-05-02T00:00:00.000001Z", "2024-02-29T12:00:00Z", "2023-02-29T12:00:00Z",
		"2024-05-01T24:00:00Z", "2024-05-01T10:60:00Z", "2024-05-01T10:00:60Z", "2024-05-01T10:00:00.Z",
		"2024-05-01T10:00:00.12345678Z", "2024-05-01 10:00:00Z", "2024-05-01T10:00:00+02:00",
		"2024-05-01T10:00:00", "2024-13-01T10:00:00Z", "2024-05-01T1a:00:00Z", "2024-05-01T10:00:00.1a3Z",
		"1969-12-31T23:59:59.9999999Z", "2024-05-01t10:00:00z",
	}
	d := decoder{}
	for range 20000 {
		v := []byte(base[r.IntN(len(base))])
		if r.IntN(3) == 0 { // change a byte
			v[r.IntN(len(v))] = "0123456789:-.TZ x"[r.IntN(17)]
		}
		got, gerr := d.timestamp(v)
		want, werr := beacon.ParseTime(v)
		if got != want || (gerr == nil) != (werr == nil) {
			t.Fatalf("%q: %v, %v; ParseTime %v, %v", v, got, gerr, want, werr)
		}
	}
}
