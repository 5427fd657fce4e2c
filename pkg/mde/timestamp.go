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
	if n < 20 || n > 28 || n == 21 || v[n-1] != 'Z' || v[10] != 'T' || v[13] != ':' || v[16] != ':' || (n > 20 && v[19] != '.') {
		return 0, false
	}
	dig := func(c byte) (int64, bool) { return int64(c - '0'), c-'0' <= 9 }
	h1, ok1 := dig(v[11])
	h2, ok2 := dig(v[12])
	m1, ok3 := dig(v[14])
	m2, ok4 := dig(v[15])
	s1, ok5 := dig(v[17])
	s2, ok6 := dig(v[18])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return 0, false
	}
	hh, mm, ss := h1*10+h2, m1*10+m2, s1*10+s2
	if hh > 23 || mm > 59 || ss > 59 {
		return 0, false
	}
	var frac int64
	digits := 0
	for _, c := range v[min(20, n-1) : n-1] {
		x, ok := dig(c)
		if !ok {
			return 0, false
		}
		frac = frac*10 + x
		digits++
	}
	for ; digits < 7; digits++ {
		frac *= 10
	}
	return beacon.Time((hh*3600+mm*60+ss)*int64(beacon.Second) + frac), true
}
