package mde

import (
	"encoding/binary"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// timestamp is beacon.ParseTime with a fast path for the layout Defender
// writes, 2024-05-01T10:00:00[.f…]Z with up to seven fractional digits:
// the date part repeats from row to row, so the decoder keeps the last
// date it parsed (its ten bytes and its midnight, both from a successful
// beacon.ParseTime) and, when the next value has the same date, parses
// only the time of day. Any other value goes to beacon.ParseTime whole.
func (d *decoder) timestamp(v []byte) (beacon.Time, error) {
	tod, ok := timeOfDay(v)
	if !ok {
		return beacon.ParseTime(v)
	}
	w, h := binary.LittleEndian.Uint64(v), binary.LittleEndian.Uint16(v[8:])
	if d.dateOK && w == d.dateW && h == d.dateH {
		return d.midnight + tod, nil
	}
	t, err := beacon.ParseTime(v)
	if err == nil {
		d.dateW, d.dateH, d.midnight, d.dateOK = w, h, t-tod, true
	}
	return t, err
}

// timeOfDay reads the time of day of a value in the fast layout (the date
// is not looked at), in ticks; ok is false for any other layout.
func timeOfDay(v []byte) (beacon.Time, bool) {
	n := len(v)
	if n < 20 || n > 28 || n == 21 {
		return 0, false
	}
	_ = v[19] // one bounds check for the fixed positions below
	if v[n-1] != 'Z' || v[10] != 'T' || v[13] != ':' || v[16] != ':' || (n > 20 && v[19] != '.') {
		return 0, false
	}
	h1, h2, m1, m2, s1, s2 := v[11]-'0', v[12]-'0', v[14]-'0', v[15]-'0', v[17]-'0', v[18]-'0'
	if h1 > 9 || h2 > 9 || m1 > 9 || m2 > 9 || s1 > 9 || s2 > 9 {
		return 0, false
	}
	hh, mm, ss := int64(h1)*10+int64(h2), int64(m1)*10+int64(m2), int64(s1)*10+int64(s2)
	if hh > 23 || mm > 59 || ss > 59 {
		return 0, false
	}
	var frac int64
	if k := n - 21; k > 0 {
		// The k digits v[20:n-1] as the last bytes of the word that ends
		// with them (v[n-9:n-1], n >= 22), the bytes before them made
		// '0': eight digits read at once.
		const zeros, lo, hi = 0x3030303030303030, 0x0101010101010101, 0x8080808080808080
		keep := ^uint64(0) << (8 * (8 - k)) // the k high bytes: the digits
		w := binary.LittleEndian.Uint64(v[n-9:])&keep | zeros&^keep
		// A byte not in '0'..'9' has its high bit set in w, in w+0x46…
		// (above '9') or in w-0x30… (below '0'): the lowest such byte is
		// flagged exactly, so any is.
		if (w|(w+lo*0x46)|(w-zeros))&hi != 0 {
			return 0, false
		}
		w -= zeros
		w = (w*10 + w>>8) & 0x00ff00ff00ff00ff
		w = (w*100 + w>>16) & 0x0000ffff0000ffff
		w = (w*10000 + w>>32) & 0xffffffff
		frac = int64(w) * fracScale[k] // k digits, scaled to seven
	}
	return beacon.Time((hh*3600+mm*60+ss)*int64(beacon.Second) + frac), true
}

// fracScale[k] scales a fraction of k digits to seven (ticks).
var fracScale = [8]int64{0, 1_000_000, 100_000, 10_000, 1_000, 100, 10, 1}
