package state

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/cockroachdb/pebble/v2"
)

// model is the reference for one partition: every input the state was
// given, fed to the batch engine (beacon.Hunt) and kept per tuple, so that
// the state can be compared with a recomputation at any moment.
type model struct {
	t       testing.TB
	pid     int32
	p       beacon.Params
	hunt    *beacon.Hunt
	ts      map[beacon.Tuple][]beacon.Time
	domains map[[2]string]beacon.Time
	dests   map[beacon.Destination]bool
	stream  beacon.Time
	has     bool
	prev    map[beacon.Destination][]beacon.Row
	offset  int64
	checks  int
	capSeen [3]int // checks with cap-1, cap, cap+1 candidate devices
}

func newModel(t testing.TB, pid int32, p beacon.Params) *model {
	return &model{t: t, pid: pid, p: p, hunt: beacon.NewHunt(p),
		ts: make(map[beacon.Tuple][]beacon.Time), domains: make(map[[2]string]beacon.Time),
		dests: make(map[beacon.Destination]bool), prev: make(map[beacon.Destination][]beacon.Row)}
}

// in is one input: a connection (with the RemoteUrl its row carried, which
// also makes a domain observation) or a domain observation alone.
type in struct {
	conn   bool
	tuple  beacon.Tuple
	url    string
	time   beacon.Time
	arrive beacon.Time
}

// feed records inputs in the model and returns them as the state's inputs,
// as the ingest would forward them: a connection also yields the domain
// observation of its row.
func (m *model) feed(ins []in) ([]Conn, []DomainSeen) {
	for _, x := range ins {
		e := beacon.Event{Timestamp: x.time, RemoteIP: x.tuple.RemoteIP, RemoteUrl: x.url,
			RemoteIPType: "Public", ActionType: "ConnectionFailed"}
		k := [2]string{x.tuple.RemoteIP, beacon.DomainOf(x.url)}
		if old, ok := m.domains[k]; !ok || x.time > old {
			m.domains[k] = x.time
		}
		if x.conn {
			e.ActionType = "ConnectionSuccess"
			e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName = x.tuple.DeviceId, x.tuple.DeviceName, x.tuple.AccountName, x.tuple.AccountDomain, x.tuple.FileName
			e.RemotePort, e.HasPort = x.tuple.RemotePort, true
			m.ts[x.tuple] = append(m.ts[x.tuple], x.time)
			m.dests[x.tuple.Destination()] = true
			if !m.has || x.time > m.stream {
				m.stream, m.has = x.time, true
			}
		}
		m.hunt.Add(&e)
	}
	return stateInputs(ins)
}

// stateInputs turns inputs into what the ingest forwards: a connection also
// yields the domain observation of its row.
func stateInputs(ins []in) ([]Conn, []DomainSeen) {
	var conns []Conn
	var doms []DomainSeen
	for _, x := range ins {
		doms = append(doms, DomainSeen{IP: x.tuple.RemoteIP, Domain: beacon.DomainOf(x.url), Time: x.time})
		if x.conn {
			conns = append(conns, Conn{Tuple: x.tuple, Time: x.time})
		}
	}
	return conns, doms
}

// probes returns inputs on the exact bounds the batch will have once
// applied: connections at the window start (kept), one tick before (late),
// and one to three seconds after (evicted exactly by a whole-second
// advance); domain observations likewise around the domain bound.
func (m *model) probes(rng *rand.Rand, batch []in) []in {
	stream, has := m.stream, m.has
	var tuples []beacon.Tuple
	for _, x := range batch {
		if x.conn {
			tuples = append(tuples, x.tuple)
			if !has || x.time > stream {
				stream, has = x.time, true
			}
		}
	}
	if !has || len(tuples) == 0 {
		return nil
	}
	var out []in
	from, _ := m.p.Window(stream + beacon.Second)
	for _, off := range []beacon.Time{0, -beacon.Tick, beacon.Second, 2 * beacon.Second, 3 * beacon.Second} {
		out = append(out, in{conn: true, tuple: tuples[rng.IntN(len(tuples))], time: from + off})
	}
	return append(out, m.domainProbes(rng, stream)...)
}

// domainProbes returns observations of new domains for IPs that have
// destinations, at the domain bound (dropped), one tick after, and one to
// three seconds after (expiring exactly with a whole-second advance).
func (m *model) domainProbes(rng *rand.Rand, stream beacon.Time) []in {
	var ips []string
	for d := range m.dests {
		ips = append(ips, d.RemoteIP)
	}
	if len(ips) == 0 {
		return nil
	}
	slices.Sort(ips)
	bound := m.p.DomainsFrom(stream + beacon.Second)
	var out []in
	for _, off := range []beacon.Time{0, beacon.Tick, beacon.Second, 2 * beacon.Second, 3 * beacon.Second, 3600 * beacon.Second} {
		ip := ips[rng.IntN(len(ips))]
		url := fmt.Sprintf("probe%d.example.com", rng.IntN(1000))
		out = append(out, in{tuple: beacon.Tuple{RemoteIP: ip}, url: url, time: bound + off})
	}
	return out
}

func (m *model) advance(t beacon.Time) {
	if !m.has || t > m.stream {
		m.stream, m.has = t, true
	}
}

// check compares everything the partition answers with the batch engine at
// now = stream time + 1 s.
func (m *model) check(part *Partition, full bool) {
	t := m.t
	t.Helper()
	m.checks++
	st, ok := part.StreamTime()
	if ok != m.has || st != m.stream {
		t.Fatalf("p%d: stream time %v,%v, want %v,%v", m.pid, st, ok, m.stream, m.has)
	}
	if off, ok := part.Offset(); !ok || off != m.offset {
		t.Fatalf("p%d: offset %d,%v, want %d", m.pid, off, ok, m.offset)
	}
	if !m.has {
		return
	}
	now := m.stream + beacon.Second
	want := m.hunt.Rows(now)
	byDest := make(map[beacon.Destination][]beacon.Row)
	for _, r := range want {
		byDest[r.Destination()] = append(byDest[r.Destination()], r)
	}
	dirty := make(map[beacon.Destination]bool)
	dk := part.Dirty()
	for i := 1; i < len(dk); i++ {
		if compareDest(dk[i-1], dk[i]) >= 0 {
			t.Fatalf("p%d: Dirty not in order: %v before %v", m.pid, dk[i-1], dk[i])
		}
	}
	for _, d := range dk {
		dirty[d] = true
	}
	if m.checks%2 == 0 {
		// MembersOf, on several goroutines, first to decide since the
		// last batch: a key twice and one of no destination too.
		keys := slices.SortedFunc(maps.Keys(m.dests), compareDest)
		if len(keys) > 0 {
			keys = append(keys, keys[0])
		}
		keys = append(keys, beacon.Destination{FileName: "none.exe", RemoteIP: "192.0.2.1", RemotePort: 1})
		got, err := part.MembersOf(keys, 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range keys {
			var want []beacon.Tuple
			for _, r := range byDest[d] {
				want = append(want, r.Tuple)
			}
			g := slices.Clone(got[i])
			slices.SortFunc(g, func(a, b beacon.Tuple) int { return a.Compare(&b) })
			slices.SortFunc(want, func(a, b beacon.Tuple) int { return a.Compare(&b) })
			if !slices.Equal(g, want) {
				t.Fatalf("p%d check %d MembersOf(%v) = %v, batch %v", m.pid, m.checks, d, g, want)
			}
		}
	}
	for d := range m.dests {
		got, err := part.Evaluate(d)
		if err != nil {
			t.Fatal(err)
		}
		sameRows(t, fmt.Sprintf("p%d check %d Evaluate(%v)", m.pid, m.checks, d), got, byDest[d])
		// Members decides without rendering, Row renders one: both agree
		// with the batch answer too.
		members, err := part.Members(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(members) != len(byDest[d]) {
			t.Fatalf("p%d check %d Members(%v): %d tuples, batch %d", m.pid, m.checks, d, len(members), len(byDest[d]))
		}
		for _, r := range byDest[d] {
			row, ok, err := part.Row(r.Tuple)
			if err != nil || !ok {
				t.Fatalf("p%d check %d Row(%v) = %v, %v", m.pid, m.checks, r.Tuple, ok, err)
			}
			sameRows(t, fmt.Sprintf("p%d check %d Row(%v)", m.pid, m.checks, r.Tuple), []beacon.Row{row}, []beacon.Row{r})
			if !slices.Contains(members, r.Tuple) {
				t.Fatalf("p%d check %d: %v is a beacon but not in Members", m.pid, m.checks, r.Tuple)
			}
		}
		if !dirty[d] && !rowsEqual(byDest[d], m.prev[d]) {
			t.Fatalf("p%d check %d: %v changed (%d → %d rows) but was not reported dirty", m.pid, m.checks, d, len(m.prev[d]), len(byDest[d]))
		}
		m.prev[d] = byDest[d]
	}
	all, err := part.Beacons()
	if err != nil {
		t.Fatal(err)
	}
	sameRows(t, fmt.Sprintf("p%d check %d Beacons", m.pid, m.checks), all, want)
	m.checkTuples(part, full)
	m.checkDomains(part)
}

// checkTuples compares every tuple's window, summary and pending set with
// the timestamps given, and (full) with what Pebble holds.
func (m *model) checkTuples(part *Partition, full bool) {
	t := m.t
	from, to := m.p.Window(m.stream + beacon.Second)
	live := 0
	for tu, all := range m.ts {
		var win, pend []beacon.Time
		for _, x := range all {
			switch {
			case x >= from && x <= to:
				win = append(win, x)
			case x > to:
				pend = append(pend, x)
			}
		}
		slices.Sort(win)
		win = slices.Compact(win)
		slices.Sort(pend)
		pend = slices.Compact(pend)
		tp := part.lookup(&tu, part.hashes(&tu).tuple)
		if len(win) == 0 && len(pend) == 0 {
			if tp != nil {
				t.Fatalf("p%d: tuple %v has an empty window but is kept", m.pid, tu)
			}
			continue
		}
		live++
		if tp == nil {
			t.Fatalf("p%d: tuple %v missing (window %d, pending %d)", m.pid, tu, len(win), len(pend))
		}
		want := beacon.SummaryOf(beacon.Deltas(win, nil))
		var buf [2]beacon.Bin
		if sum := part.summary(tp, &buf); int(tp.distinct) != len(win) || !sum.Equal(&want) || tp.pending != int32(len(pend)) {
			t.Fatalf("p%d check %d: tuple %v: distinct %d pending %d summary %+v, want %d %d %+v",
				m.pid, m.checks, tu, tp.distinct, tp.pending, sum, len(win), len(pend), want)
		}
		if h := part.extHist(tp); h != nil && len(h) < 2 {
			t.Fatalf("p%d: tuple %v: %d bins out of line", m.pid, tu, len(h))
		}
		if len(win) > 0 && (tp.first != win[0] || tp.last != win[len(win)-1]) {
			t.Fatalf("p%d: tuple %v: window [%v, %v], want [%v, %v]", m.pid, tu, tp.first, tp.last, win[0], win[len(win)-1])
		}
		if len(pend) > 0 && part.pend[tp.id] != pend[0] {
			t.Fatalf("p%d: tuple %v: pending min %v, want %v", m.pid, tu, part.pend[tp.id], pend[0])
		}
		if full {
			if err := part.Flush(); err != nil {
				t.Fatal(err)
			}
			got := m.stored(part, tp)
			if !slices.Equal(got, append(win, pend...)) {
				t.Fatalf("p%d: tuple %v: Pebble holds %d timestamps, want %d", m.pid, tu, len(got), len(win)+len(pend))
			}
		}
	}
	// After evaluating every destination, each knows its candidates.
	for _, ds := range part.destAt {
		if ds == nil {
			continue
		}
		if c := int64(len(ds.devCounts())) - m.p.CompromisedDeviceCountMax; c >= -1 && c <= 1 {
			m.capSeen[c+1]++
		}
		if len(ds.stale) != 0 {
			t.Fatalf("p%d: %v has %d stale tuples after evaluation", m.pid, ds.key, len(ds.stale))
		}
		devices := map[string]int32{}
		n, ntuples := 0, 0
		for _, tp := range part.allTuples() {
			if tp.dest != ds.idx {
				continue
			}
			ntuples++
			var buf [2]beacon.Bin
			sum := part.summary(tp, &buf)
			if _, ok := m.p.Candidate(int64(tp.distinct), &sum); ok != tp.cand {
				t.Fatalf("p%d check %d: %v: candidate %v", m.pid, m.checks, part.columns(tp), tp.cand)
			}
			if tp.cand {
				devices[part.prinOf(tp).deviceId]++
				n++
				if ds.cands[tp.candPos] != tp.id {
					t.Fatalf("p%d: %v: candidate list broken", m.pid, part.columns(tp))
				}
				// The statistics decide uses are those of the window now.
				// (SelectDestination sets robust's PeriodDevices.)
				kept := ds.cs[tp.candPos]
				kept.R.PeriodDevices = 0
				if st, _ := m.p.Candidate(int64(tp.distinct), &sum); !reflect.DeepEqual(st, kept.Stats) || kept.Tuple != part.columns(tp) {
					t.Fatalf("p%d check %d: %v: kept candidate %+v, the window's %+v", m.pid, m.checks, part.columns(tp), kept, st)
				}
			}
		}
		counts, numbers := ds.devCounts(), ds.devNums()
		if n != len(ds.cands) || !reflect.DeepEqual(devices, counts) && !(len(devices) == 0 && len(counts) == 0) {
			t.Fatalf("p%d check %d: %v: %d candidates on %v devices, want %d on %v", m.pid, m.checks, ds.key, len(ds.cands), counts, n, devices)
		}
		// The devices are numbered for SelectNumbered: one number each,
		// distinct, below ndev, and each candidate's its device's.
		nums := map[int32]bool{}
		for dev := range devices {
			num, ok := numbers[dev]
			if !ok || num < 0 || num >= ds.ndev || nums[num] {
				t.Fatalf("p%d check %d: %v: device %s numbered %d (%v) of %d, numbers %v", m.pid, m.checks, ds.key, dev, num, ok, ds.ndev, numbers)
			}
			nums[num] = true
		}
		if len(numbers) != len(devices) || len(ds.candDev) != len(ds.cands) {
			t.Fatalf("p%d check %d: %v: %d devices numbered, %d candidates' numbers, want %d and %d", m.pid, m.checks, ds.key, len(numbers), len(ds.candDev), len(devices), len(ds.cands))
		}
		for i, id := range ds.cands {
			if dev := part.prinOf(part.tup(id)).deviceId; ds.candDev[i] != numbers[dev] {
				t.Fatalf("p%d check %d: %v: candidate %d numbered %d, its device %s %d", m.pid, m.checks, ds.key, i, ds.candDev[i], dev, numbers[dev])
			}
		}
		// The selection decide keeps is SelectDestination's over them now.
		if ds.selOK {
			fresh := make([]beacon.Candidate, len(ds.cands))
			for i, id := range ds.cands {
				fresh[i] = beacon.Candidate{Tuple: part.columns(part.tup(id)), Stats: ds.cs[i].Stats}
			}
			var want []selected
			var wantN int64
			if len(fresh) > 0 && !m.p.OverDeviceCap(int64(len(counts))) {
				var kept []int
				kept, wantN = m.p.SelectDestination(fresh)
				for _, k := range kept {
					want = append(want, selected{id: ds.cands[k], c: fresh[k]})
				}
			}
			if !reflect.DeepEqual(want, ds.sel) || wantN != ds.selN {
				t.Fatalf("p%d check %d: %v: kept selection %+v on %d devices, SelectDestination's %+v on %d", m.pid, m.checks, ds.key, ds.sel, ds.selN, want, wantN)
			}
		}
		if ntuples != int(ds.ntuples) || ntuples == 0 {
			t.Fatalf("p%d: %v counts %d tuples, has %d", m.pid, ds.key, ds.ntuples, ntuples)
		}
	}
	if live != part.ntuples {
		t.Fatalf("p%d: %d tuples in state, want %d", m.pid, part.ntuples, live)
	}
}

// allTuples lists the partition's tuples, checking the arena's and the
// index's accounts.
func (p *Partition) allTuples() []*tuple {
	var out []*tuple
	for id := range p.arena.n {
		if tp := p.tup(id); tp.dest != 0 {
			if tp.id != id {
				panic(fmt.Sprintf("tuple in slot %d has id %d", id, tp.id))
			}
			out = append(out, tp)
		}
	}
	for i, s := range p.index.slots {
		if s != 0 {
			tp := p.tup(uint32(s) - 1)
			cols := p.columns(tp)
			hs := p.hashes(&cols)
			if tp.dest == 0 || uint32(hs.tuple) != uint32(s>>32) || p.lookup(&cols, hs.tuple) != tp ||
				p.findPrin(&cols, hs.prin) != p.prinOf(tp) || p.destByKey(cols.Destination()) != p.destOf(tp) {
				panic(fmt.Sprintf("index slot %d: %x (tuple %d, dest %d)", i, s, tp.id, tp.dest))
			}
		}
	}
	if len(out) != p.arena.live || len(out)+len(p.arena.free) != int(p.arena.n) || p.index.n != len(out) {
		panic(fmt.Sprintf("%d tuples, arena %d live of %d with %d free, index %d", len(out), p.arena.live, p.arena.n, len(p.arena.free), p.index.n))
	}
	return out
}

// stored decodes every block of the tuple in Pebble and returns the live
// timestamps (not before the window start). Blocks must be in time order,
// match the tuple's block index, and hold a live timestamp each: a block of
// dead ones only is deleted, not kept.
func (m *model) stored(part *Partition, tp *tuple) []beacon.Time {
	lo := idKey(nil, part.id, kindBlock, uint64(tp.id))
	hi := idKey(nil, part.id, kindBlock, uint64(tp.id)+1)
	it, err := part.s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		m.t.Fatal(err)
	}
	defer it.Close()
	from, _ := m.p.Window(m.stream + beacon.Second)
	var out, starts []beacon.Time
	for v := it.First(); v; v = it.Next() {
		start := decodeTime(it.Key()[tupleLen:])
		starts = append(starts, start)
		ts, err := decodeBlock(nil, start, it.Value())
		if err != nil {
			m.t.Fatal(err)
		}
		live := 0
		for _, t := range ts {
			if t < start || len(out) > 0 && t <= out[len(out)-1] {
				m.t.Fatalf("p%d: tuple %v: block at %v out of order: %v", m.pid, part.columns(tp), start, ts)
			}
			if t >= from {
				out = append(out, t)
				live++
			}
		}
		if live == 0 {
			m.t.Fatalf("p%d: tuple %v: block at %v holds dead timestamps only", m.pid, part.columns(tp), start)
		}
	}
	if !slices.Equal(starts, part.blockStarts(tp)) {
		m.t.Fatalf("p%d: tuple %v: blocks %v in Pebble, index %v", m.pid, part.columns(tp), starts, part.blockStarts(tp))
	}
	return out
}

func (m *model) checkDomains(part *Partition) {
	bound := m.p.DomainsFrom(m.stream + beacon.Second)
	want := make(map[[2]string]beacon.Time)
	for k, tm := range m.domains {
		if tm > bound && beacon.DomainIP(k[0]) {
			want[k] = tm
		}
	}
	got := make(map[[2]string]beacon.Time)
	for ip, st := range part.ips {
		if len(st.dests) == 0 && len(st.domains) == 0 {
			m.t.Fatalf("p%d: empty IP %s kept", m.pid, ip)
		}
		for name, d := range st.domains {
			got[[2]string{ip, name}] = d.time
		}
	}
	for k, tm := range want {
		if g, ok := got[k]; !ok || g != tm {
			m.t.Fatalf("p%d check %d: domain %q of %s: have %v (%v), want %v", m.pid, m.checks, k[1], k[0], g, ok, tm)
		}
	}
	for k, tm := range got {
		if _, ok := want[k]; !ok {
			m.t.Fatalf("p%d check %d: domain %q of %s at %v kept, bound %v", m.pid, m.checks, k[1], k[0], tm, bound)
		}
	}
}

func rowsEqual(a, b []beacon.Row) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func sameRows(t testing.TB, what string, got, want []beacon.Row) {
	t.Helper()
	if rowsEqual(got, want) {
		return
	}
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			t.Fatalf("%s: row %d missing: %+v", what, i, want[i])
		case i >= len(want):
			t.Fatalf("%s: extra row %d: %+v", what, i, got[i])
		case !reflect.DeepEqual(got[i], want[i]):
			t.Fatalf("%s: row %d\n got %+v\nwant %+v", what, i, got[i], want[i])
		}
	}
}

// scenario generates the inputs of one partition: destinations with one to
// three devices and one with thirteen (so the device cap flips as tuples
// become and stop being candidates), beacons with random sleep, jitter,
// sub-second phase, missed callbacks, exact and 100 ns-apart duplicates,
// activity that starts and stops, arrival delays (out of order, and late
// beyond the window), and domain observations of every age (some before the
// domain bound, some expiring during the run). Sorted by arrival.
func scenario(rng *rand.Rand, pid int32, base beacon.Time, dur time.Duration) []in {
	ips := make([]string, 3)
	for i := range ips {
		ips[i] = fmt.Sprintf("203.0.%d.%d", 100+pid, 10+i)
	}
	urls := map[string][]string{}
	for _, ip := range ips {
		urls[ip] = []string{"", "https://a." + ip + ".example.com/x", "b.example.org", "http://c.example.net:8080/", "d.e.f.example.com"}
	}
	procs := []string{"beacon.exe", "svchost.exe", "chrome.exe", "rundll32.exe"}
	ports := []int32{443, 80, 8080}
	var out []in
	span := beacon.Time(dur / 100)
	for di := range 5 {
		ip := ips[rng.IntN(len(ips))]
		proc := procs[di%len(procs)]
		port := ports[rng.IntN(len(ports))]
		devices := 1 + rng.IntN(3)
		jitters := []float64{0, 0, 0.02, 0.1, 0.3, 0.6, 1.2}
		if di == 0 { // many regular devices, each active for a while: the cap flips
			devices, jitters = 14, []float64{0, 0.02, 0.1, 0.3}
		}
		for dev := range devices {
			for acct := range 1 + rng.IntN(2) {
				tu := beacon.Tuple{DeviceId: fmt.Sprintf("dev-%d-%d", pid, dev), DeviceName: fmt.Sprintf("host%d", dev),
					AccountName: fmt.Sprintf("user%d", acct), AccountDomain: "corp", FileName: proc, RemoteIP: ip, RemotePort: port}
				period := beacon.Time(3+rng.IntN(33)) * beacon.Second
				jitter := jitters[rng.IntN(len(jitters))]
				start := base + beacon.Time(rng.Int64N(int64(span/2)))
				stop := start + beacon.Time(rng.Int64N(int64(base+span-start))) + 3*60*beacon.Second
				nearDup, dup, skip := rng.Float64()*0.06, rng.Float64()*0.06, rng.Float64()*0.08
				ts := start + beacon.Time(rng.Int64N(int64(beacon.Second)))
				for ts < stop {
					emit := func(x beacon.Time) {
						out = append(out, in{conn: true, tuple: tu, url: urls[ip][rng.IntN(5)], time: x, arrive: arrival(rng, x)})
					}
					if rng.Float64() >= skip {
						emit(ts)
						if rng.Float64() < dup {
							emit(ts)
						}
						if rng.Float64() < nearDup {
							emit(ts + beacon.Tick)
						}
					}
					gap := float64(period) * (1 + jitter*(rng.Float64()*2-1))
					ts += max(beacon.Time(gap), beacon.Tick)
				}
			}
		}
	}
	for range 60 {
		ip := ips[rng.IntN(len(ips))]
		// Domain bound = now − lookback − 1 day: observations around a day
		// before the run expire during it.
		tm := base - 24*3600*beacon.Second + beacon.Time(rng.Int64N(int64(span))) - 15*60*beacon.Second
		if rng.IntN(3) == 0 {
			tm = base + beacon.Time(rng.Int64N(int64(span)))
		}
		out = append(out, in{tuple: beacon.Tuple{RemoteIP: ip}, url: urls[ip][rng.IntN(5)], time: tm,
			arrive: base + beacon.Time(rng.Int64N(int64(span)))})
	}
	slices.SortStableFunc(out, func(a, b in) int { return cmp.Compare(a.arrive, b.arrive) })
	return out
}

func arrival(rng *rand.Rand, t beacon.Time) beacon.Time {
	switch r := rng.Float64(); {
	case r < 0.80:
		return t + beacon.Time(rng.Int64N(int64(beacon.Second/2)))
	case r < 0.95:
		return t + beacon.Time(rng.Int64N(int64(4*60*beacon.Second))) // out of order, inside the window
	default:
		return t + beacon.Time(8*60+rng.Int64N(8*60))*beacon.Second // mostly late
	}
}

// devCounts is d.devs' candidates per device.
func (d *dest) devCounts() map[string]int32 {
	out := make(map[string]int32, len(d.devs))
	for dev, v := range d.devs {
		out[dev] = int32(v >> 32)
	}
	return out
}

// devNums is d.devs' numbers per device.
func (d *dest) devNums() map[string]int32 {
	out := make(map[string]int32, len(d.devs))
	for dev, v := range d.devs {
		out[dev] = int32(uint32(v))
	}
	return out
}
