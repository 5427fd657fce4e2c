package state

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// TestBlockRoundTrip: every block value decodes to the timestamps it was
// encoded from, in both formats and at the edges of the bit packing (one
// timestamp, a zero-width frame, deltas of 1 tick, of 64 bits, widths that
// straddle bytes); a truncated or extended value is refused.
func TestBlockRoundTrip(t *testing.T) {
	start := testBase
	cases := map[string][]beacon.Time{
		"empty":    nil,
		"one":      {start},
		"one-late": {start + 12345},
		"two":      {start, start + 1},
		"periodic": {start, start + 60*beacon.Second, start + 120*beacon.Second, start + 180*beacon.Second},
		"huge":     {start, start + 1, start + beacon.Time(1)<<62},
	}
	rng := rand.New(rand.NewPCG(4, 4))
	for _, jitter := range []beacon.Time{0, 1, 7, 255, 256, beacon.Second, 6 * beacon.Second} {
		var ts []beacon.Time
		t0 := start + beacon.Time(rng.Int64N(int64(beacon.Second)))
		for range 1 + rng.IntN(2*blockMax) {
			ts = append(ts, t0)
			t0 += 60*beacon.Second + beacon.Time(rng.Int64N(int64(jitter)+1))
		}
		cases["jitter"+jitter.String()] = ts
	}
	for n := range 40 { // irregular: mostly short gaps, some long
		var ts []beacon.Time
		t0 := start
		for range 2 + n {
			ts = append(ts, t0)
			if rng.IntN(8) == 0 {
				t0 += beacon.Time(rng.Int64N(int64(3600 * beacon.Second)))
			}
			t0 += 1 + beacon.Time(rng.Int64N(int64(5*beacon.Second)))
		}
		cases["irregular"+string(rune('a'+n%26))+string(rune('a'+n/26))] = ts
	}
	formats := [2]int{}
	for name, ts := range cases {
		enc := appendBlock(nil, start, ts)
		got, err := decodeBlock(nil, start, enc)
		if err != nil || !slices.Equal(got, ts) {
			t.Fatalf("%s: decoded %v, %v; want %v", name, got, err, ts)
		}
		if len(ts) > 1 {
			formats[enc[1+uvarintLen(uint64(ts[0]-start))+uvarintLen(uint64(len(ts)))-1]]++
		}
		if _, err := decodeBlock(nil, start, append(enc, 0)); err == nil {
			t.Fatalf("%s: a trailing byte was accepted", name)
		}
		if len(enc) > 1 {
			if _, err := decodeBlock(nil, start, enc[:len(enc)-1]); err == nil {
				t.Fatalf("%s: a truncated value was accepted", name)
			}
		}
	}
	if formats[0] == 0 || formats[1] == 0 {
		t.Fatalf("both formats must be exercised: %v", formats)
	}
}

// A periodic tuple's block costs at most 4 bytes per timestamp at 100 ns
// precision (a 60 s beacon with up to ±6 s of jitter: 27-bit deltas).
func TestBlockSize(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	var ts []beacon.Time
	t0 := testBase + beacon.Time(rng.Int64N(int64(beacon.Second)))
	for range blockMax {
		ts = append(ts, t0)
		t0 += 54*beacon.Second + beacon.Time(rng.Int64N(int64(12*beacon.Second)))
	}
	if n := len(appendBlock(nil, testBase, ts)); n > 4*len(ts) {
		t.Fatalf("%d bytes for %d timestamps", n, len(ts))
	}
}

// TestHeaderRoundTrip: the header record decodes to what was encoded.
func TestHeaderRoundTrip(t *testing.T) {
	for _, h := range []header{{offset: -1}, {offset: 0, stream: testBase, hasStream: true, nextID: 1}, {offset: 1 << 40, stream: -5, hasStream: true, nextID: 1 << 50}} {
		var got header
		if err := got.decode(h.append(nil)); err != nil || got != h {
			t.Fatalf("header %+v decoded %+v, %v", h, got, err)
		}
	}
}

// TestBlockSplit: out-of-order timestamps that fill an old block beyond
// twice blockMax split it, ones before the first block move its start, and
// the windows, summaries and stored blocks still equal the batch query's
// (with a cache so small that blocks are read back from Pebble).
func TestBlockSplit(t *testing.T) {
	p := testParams(time.Hour, time.Second)
	for _, budget := range []int64{64 << 20, 1 << 10} {
		s := openT(t, t.TempDir(), p)
		s.blockBudget = budget
		part, err := s.Partition(0)
		if err != nil {
			t.Fatal(err)
		}
		m := newModel(t, 0, p)
		tu := beacon.Tuple{DeviceId: "d", DeviceName: "h", AccountName: "a", AccountDomain: "c", FileName: "x.exe", RemoteIP: "203.0.113.9", RemotePort: 443}
		apply := func(ts ...beacon.Time) {
			var ins []in
			for _, x := range ts {
				ins = append(ins, in{conn: true, tuple: tu, time: x})
			}
			conns, doms := m.feed(ins)
			m.offset++
			if _, err := part.Apply(conns, doms, m.offset, nil); err != nil {
				t.Fatal(err)
			}
			m.check(part, true)
		}
		base := testBase + 30*60*beacon.Second
		var ts []beacon.Time
		for i := range 4 * blockMax {
			ts = append(ts, base+beacon.Time(i)*10*beacon.Second)
		}
		apply(ts...)
		before := part.nblocks(part.lookup(&tu, part.hashes(&tu).tuple))
		rng := rand.New(rand.NewPCG(6, 6))
		for range 3 * blockMax { // into the second block, in small batches
			x := base + beacon.Time(blockMax)*10*beacon.Second + beacon.Time(rng.Int64N(int64(blockMax*10*beacon.Second)))
			apply(x, x+beacon.Tick)
		}
		apply(base-5*60*beacon.Second, base-beacon.Second) // before the first block
		tp := part.lookup(&tu, part.hashes(&tu).tuple)
		if part.nblocks(tp) <= before || tp.b0 != base-5*60*beacon.Second {
			t.Fatalf("budget %d: blocks %v (had %d): no split or no new start", budget, part.blockStarts(tp), before)
		}
		s.Close()
	}
}
