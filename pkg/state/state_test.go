package state

import (
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/cockroachdb/pebble/v2"
)

var testBase = beacon.TimeOf(time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC))

func testParams(lookback, endOffset time.Duration) beacon.Params {
	p := beacon.Seed()
	p.Lookback, p.EndOffset = lookback, endOffset
	return p
}

func openT(t testing.TB, dir string, p beacon.Params, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, p, append([]Option{WithCacheSize(8 << 20), WithMemTableSize(4 << 20)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestMatchesBatchQuery is the metamorphic test of the streaming contract:
// after every batch, every destination's rows (and all rows, and every
// tuple's summary, and the domains) equal the batch query run at
// now = stream time + 1 s over everything given so far. Two partitions
// share the store; the store is closed and reopened now and then.
func TestMatchesBatchQuery(t *testing.T) {
	variants := []struct {
		name      string
		lookback  time.Duration
		endOffset time.Duration
		seeds     int
	}{
		{"seed", 10 * time.Minute, time.Second, 4},
		{"lookback7m30.5s", 7*time.Minute + 30*time.Second + 500*time.Millisecond, time.Second, 2},
		{"endoffset0", 10 * time.Minute, 0, 1},
		{"endoffset20s", 10 * time.Minute, 20 * time.Second, 2},
		{"knobs", 10 * time.Minute, time.Second, 2},       // hash collisions, a tiny block cache
		{"commitevery", 10 * time.Minute, time.Second, 1}, // commits held back
	}
	if testing.Short() {
		variants = variants[:1]
		variants[0].seeds = 1
	}
	for _, v := range variants {
		for seed := range v.seeds {
			t.Run(v.name, func(t *testing.T) {
				t.Parallel()
				var opts []Option
				if v.name == "commitevery" {
					opts = append(opts, WithCommitEvery(5))
				}
				runScenario(t, testParams(v.lookback, v.endOffset), uint64(seed), v.name == "knobs", opts...)
			})
		}
	}
}

func runScenario(t *testing.T, p beacon.Params, seed uint64, knobs bool, opts ...Option) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	dir := t.TempDir()
	open := func() *Store {
		s := openT(t, dir, p, opts...)
		if knobs {
			s.hashMask = 7          // every tuple in one of 8 chains
			s.blockBudget = 4 << 10 // most block reads miss the cache
		}
		return s
	}
	s := open()
	defer func() { s.Close() }()
	const dur = 40 * time.Minute
	type part struct {
		m    *model
		ins  []in
		next int
		p    *Partition
	}
	parts := []*part{{}, {}}
	for i, pt := range parts {
		pid := int32(i * 3) // not adjacent: a bug in range bounds would show
		pt.m = newModel(t, pid, p)
		pt.ins = scenario(rng, pid, testBase, dur)
		var err error
		if pt.p, err = s.Partition(pid); err != nil {
			t.Fatal(err)
		}
	}
	var stats ApplyStats
	reopens, advances := 0, 0
	for step := 0; ; step++ {
		pt := parts[rng.IntN(len(parts))]
		if pt.next == len(pt.ins) {
			if pt = parts[0]; pt.next == len(pt.ins) {
				if pt = parts[1]; pt.next == len(pt.ins) {
					break
				}
			}
		}
		switch r := rng.Float64(); {
		case r < 0.06 && pt.m.has: // replay clock: move without an event
			to := pt.m.stream + beacon.Time(rng.Int64N(int64(90*beacon.Second)))
			switch rng.IntN(8) {
			case 0, 1, 2, 3: // whole seconds: lands exactly on probes
				to = pt.m.stream + beacon.Time(1+rng.IntN(3))*beacon.Second
			case 4: // a jump: whole windows, candidates included, empty at once
				to = pt.m.stream.Add(p.Lookback * time.Duration(5+rng.IntN(5)) / 10)
			}
			if err := pt.p.AdvanceTo(to); err != nil {
				t.Fatal(err)
			}
			pt.m.advance(to)
			advances++
		case r < 0.08: // restart: the state must come back exactly
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = open()
			for _, x := range parts {
				var err error
				if x.p, err = s.Partition(x.m.pid); err != nil {
					t.Fatal(err)
				}
				x.m.prev = map[beacon.Destination][]beacon.Row{} // all dirty after a load
			}
			reopens++
		case r < 0.14 && pt.m.has: // domains only, for IPs with rows
			ins := pt.m.domainProbes(rng, pt.m.stream)
			conns, doms := pt.m.feed(ins)
			pt.m.offset++
			if _, err := pt.p.Apply(conns, doms, pt.m.offset, nil); err != nil {
				t.Fatal(err)
			}
		default:
			n := min(1+rng.IntN(40), len(pt.ins)-pt.next)
			batch := slices.Clone(pt.ins[pt.next : pt.next+n])
			if rng.IntN(4) == 0 {
				batch = append(batch, pt.m.probes(rng, batch)...)
			}
			conns, doms := pt.m.feed(batch)
			pt.next += n
			pt.m.offset += int64(n)
			st, err := pt.p.Apply(conns, doms, pt.m.offset, []byte{byte(step)})
			if err != nil {
				t.Fatal(err)
			}
			stats.Applied += st.Applied
			stats.Duplicate += st.Duplicate
			stats.Late += st.Late
			stats.Evicted += st.Evicted
		}
		pt.m.check(pt.p, step%10 == 0)
	}
	// Let every window, then every domain, run out: nothing may be left.
	for _, pt := range parts {
		for _, d := range []time.Duration{p.Lookback, 25 * time.Hour} {
			to := pt.m.stream.Add(d)
			if err := pt.p.AdvanceTo(to); err != nil {
				t.Fatal(err)
			}
			pt.m.advance(to)
			pt.m.check(pt.p, true)
		}
		if pt.p.ntuples != 0 || pt.p.prinIndex.n != 0 || len(pt.p.pend) != 0 || len(pt.p.ips) != 0 || pt.p.destIndex.n != 0 || pt.p.evictQ.len() != 0 || pt.p.pendQ.len() != 0 || pt.p.domainQ.len() != 0 {
			t.Fatalf("p%d: state left after everything expired", pt.m.pid)
		}
		if err := pt.p.Flush(); err != nil {
			t.Fatal(err)
		}
		if n := countKeys(t, s, pt.m.pid); n != 2 { // header and meta
			t.Fatalf("p%d: %d keys left after everything expired, want 2", pt.m.pid, n)
		}
	}
	if stats.Late == 0 || stats.Duplicate == 0 || stats.Evicted == 0 || reopens == 0 || advances == 0 {
		t.Fatalf("scenario too tame: %+v, %d reopens, %d advances", stats, reopens, advances)
	}
	t.Logf("seed %d: %+v, %d reopens, %d advances, %d+%d checks, devices at cap-1/cap/cap+1: %v %v", seed, stats, reopens, advances,
		parts[0].m.checks, parts[1].m.checks, parts[0].m.capSeen, parts[1].m.capSeen)
}

func countKeys(t testing.TB, s *Store, pid int32) int {
	lo, hi := partitionSpan(pid)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for v := it.First(); v; v = it.Next() {
		n++
	}
	return n
}

// A null-port connection applied with a batch moves stream time (and so
// evicts) in the same write as the offset, and forms no tuple: the state
// equals hunt over the same events, where such a row moves the default now.
func TestNoPortConnMovesStreamTime(t *testing.T) {
	p := beacon.Seed()
	p.Lookback = 10 * time.Minute
	s := openT(t, t.TempDir(), p)
	part, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	t0, _ := beacon.ParseTime([]byte("2024-05-01T00:00:00Z"))
	tu := beacon.Tuple{DeviceId: "d", FileName: "x.exe", RemoteIP: "8.8.8.8", RemotePort: 443}
	h := beacon.NewHunt(p)
	var conns []Conn
	for i := 0; i < 20; i++ {
		at := t0 + beacon.Time(i)*20*beacon.Second
		conns = append(conns, Conn{Tuple: tu, Time: at})
		e := beacon.Event{Timestamp: at, DeviceId: tu.DeviceId, FileName: tu.FileName, RemoteIP: tu.RemoteIP,
			RemotePort: tu.RemotePort, HasPort: true, ActionType: "ConnectionSuccess", RemoteIPType: "Public"}
		h.Add(&e)
	}
	if _, err := part.Apply(conns, nil, 20, nil); err != nil {
		t.Fatal(err)
	}
	if rows, _ := part.Beacons(); len(rows) != 1 {
		t.Fatalf("before: %d rows, want the beacon", len(rows))
	}
	// Five minutes later, a null-port row: half the window is evicted.
	late := t0 + 19*20*beacon.Second + 5*60*beacon.Second
	if _, err := part.Apply([]Conn{{Tuple: beacon.Tuple{RemoteIP: "8.8.8.8"}, Time: late, NoPort: true}}, nil, 21, nil); err != nil {
		t.Fatal(err)
	}
	e := beacon.Event{Timestamp: late, RemoteIP: "8.8.8.8", ActionType: "ConnectionSuccess", RemoteIPType: "Public"}
	h.Add(&e)
	now, _ := h.DefaultNow()
	if st, _ := part.StreamTime(); st+beacon.Second != now {
		t.Fatalf("stream time %s, hunt's now %s", st, now)
	}
	got, err := part.Beacons()
	if err != nil {
		t.Fatal(err)
	}
	sameRows(t, "after a null-port row", got, h.Rows(now))
	if off, _ := part.Offset(); off != 21 {
		t.Fatalf("offset %d, want 21", off)
	}
}

// WithInMemory keeps everything off the disk: the directory stays empty,
// and the state answers as a durable one does.
func TestInMemory(t *testing.T) {
	dir := t.TempDir()
	p := testParams(10*time.Minute, time.Second)
	s := openT(t, dir, p, WithInMemory())
	defer s.Close()
	part, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	m := newModel(t, 0, p)
	ins := scenario(rand.New(rand.NewPCG(9, 9)), 0, testBase, 20*time.Minute)
	for i := 0; i < len(ins); i += 50 {
		conns, doms := m.feed(ins[i:min(i+50, len(ins))])
		m.offset = int64(min(i+50, len(ins)))
		if _, err := part.Apply(conns, doms, m.offset, nil); err != nil {
			t.Fatal(err)
		}
		m.check(part, true)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("in-memory store wrote %d entries to its directory (%v)", len(ents), err)
	}
}

// Dirty returns the destinations in compareDest's order, each once,
// whatever their IPs share: Dirty sorts by an 8-byte prefix of the IP
// first (ipPrefix), and compares the strings only when prefixes tie, so
// IPs that differ inside the prefix, after it, in length alone (one a
// prefix of the other) and by a zero byte must all come out in order.
func TestDirtyOrder(t *testing.T) {
	p := testParams(10*time.Minute, time.Second)
	s := openT(t, t.TempDir(), p, WithInMemory())
	defer s.Close()
	part, err := s.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	ips := []string{"1.2.3.4", "1.2.3.45", "1.2.3.4\x00", "1.2.3.", "", "10.0.0.1", "100.64.1.1", "2.0.0.0",
		"203.0.113.7", "203.0.113.70", "203.0.113.8", "2001:db8::1", "2001:db8::10", "9", "\x00", "\xff\xff"}
	rng := rand.New(rand.NewPCG(7, 7))
	at := testBase
	for round := range 20 {
		var conns []Conn
		want := map[beacon.Destination]bool{}
		for range 1 + rng.IntN(30) {
			tu := beacon.Tuple{DeviceId: "d", FileName: []string{"a.exe", "b.exe"}[rng.IntN(2)],
				RemoteIP: ips[rng.IntN(len(ips))], RemotePort: int32(rng.IntN(3))}
			at += beacon.Second
			conns = append(conns, Conn{Tuple: tu, Time: at})
			want[tu.Destination()] = true
		}
		if _, err := part.Apply(conns, nil, int64(round), nil); err != nil {
			t.Fatal(err)
		}
		got := part.Dirty()
		if len(got) != len(want) {
			t.Fatalf("round %d: %d destinations dirty, want %d", round, len(got), len(want))
		}
		for i, d := range got {
			if !want[d] || i > 0 && compareDest(got[i-1], d) >= 0 {
				t.Fatalf("round %d: Dirty %q", round, got)
			}
		}
	}
}
