package beacon

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// TestHuntHashCollisions keeps three bits of Hunt's who, address and pair
// hashes, so that nearly every who, RemoteIP kept as a string, RemoteUrl
// and (RemoteIP, RemoteUrl) shares its hash with others (and every tuple
// falls in one bucket), and holds the rows to those of full hashes: a
// slot whose hash matches is checked against the entry. The fleet has
// beacons among noise that differs in one column at a time (port,
// process, account, address), and domains whose pairs differ only in the
// URL or only in the IP; some addresses are spelt with a leading zero,
// which Kusto reads as IPv4 and Hunt keeps as strings.
func TestHuntHashCollisions(t *testing.T) {
	var evs []Event
	for d := range 12 {
		dev := fmt.Sprintf("d%02d", d)
		ip := fmt.Sprintf("8.8.%d.%d", d%3, d%5)
		for k, ts := range series(t0, every(30, Time(60+d)*Second)...) {
			e := conn(dev, "implant.exe", ip, 443, ts)
			e.RemoteUrl = fmt.Sprintf("c%d.evil%d.example.com", k%4, d%3)
			evs = append(evs, e)
			// Neighbours of the beacon's tuple, one column changed.
			n := conn(dev, "implant.exe", ip, int32(444+k%3), ts+Second/3)
			n.RemoteUrl = e.RemoteUrl
			evs = append(evs, n)
			n = conn(dev, fmt.Sprintf("p%d.exe", k%5), ip, 443, ts+Second/2)
			n.AccountName = fmt.Sprintf("u%d", k%2)
			evs = append(evs, n)
			n = conn(dev, "implant.exe", fmt.Sprintf("09.9.%d.%d", k%7, d), 443, ts+2*Second/3)
			n.RemoteUrl = e.RemoteUrl
			evs = append(evs, n)
		}
	}
	run := func(weak bool) []Row {
		h := NewHunt(Seed())
		h.hx.weak = weak
		h.AddBatch(evs)
		now, _ := h.DefaultNow()
		return h.Rows(now.Add(time.Hour))
	}
	want, got := run(false), run(true)
	if len(want) == 0 {
		t.Fatal("no beacons: the test's fleet is wrong")
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("with colliding hashes:\n%+v\nwant\n%+v", got, want)
	}
	// Three bits make at most eight hashes: more keys than that share.
	h := NewHunt(Seed())
	h.AddBatch(evs)
	if a := h.merge(); len(a.whos) <= 8 || len(a.urls) <= 8 || len(a.ips) <= 8 {
		t.Fatalf("%d whos, %d URLs, %d IPs kept as strings: too few to collide", len(a.whos), len(a.urls), len(a.ips))
	}
}

// TestHuntRobustSpellings: under robust, events whose process and
// account names differ only in case are one who, spelled as TupleOf
// lowers it, however often and in whichever order the spellings come;
// names that differ otherwise, or in DeviceName's case, are not.
func TestHuntRobustSpellings(t *testing.T) {
	p := Robust()
	hx := newHashIndex(maphash.MakeSeed())
	a := newAdder(&p, &hx)
	spell := func(dev, name, acct, dom, file string) *Event {
		return &Event{DeviceId: dev, DeviceName: name, AccountName: acct, AccountDomain: dom, FileName: file}
	}
	same := []*Event{
		spell("d1", "WKS-1", "SYSTEM", "NT AUTHORITY", "MsMpEng.exe"),
		spell("d1", "WKS-1", "system", "nt authority", "msmpeng.exe"),
		spell("d1", "WKS-1", "System", "NT Authority", "MSMPENG.EXE"),
	}
	other := []*Event{
		spell("d1", "wks-1", "system", "nt authority", "msmpeng.exe"), // DeviceName keeps its case
		spell("d2", "WKS-1", "SYSTEM", "NT AUTHORITY", "MsMpEng.exe"),
		spell("d1", "WKS-1", "SYSTEM", "NT AUTHORITY", "MsMpEng2.exe"),
	}
	var first uint32
	for round := range 3 {
		for k, e := range same {
			wi, wh := a.robustWho(e)
			if round == 0 && k == 0 {
				first = wi
			}
			w := a.whos[wi]
			if wi != first || wh != w.hash {
				t.Fatalf("round %d, %+v: who %d (hash %x), want %d (hash %x)", round, *e, wi, wh, first, w.hash)
			}
			if tu := p.TupleOf(e); w.AccountName != tu.AccountName || w.AccountDomain != tu.AccountDomain || w.FileName != tu.FileName {
				t.Fatalf("who %+v is not TupleOf's %+v", w, tu)
			}
		}
		for _, e := range other {
			if wi, _ := a.robustWho(e); wi == first {
				t.Fatalf("%+v: the who of %+v", *e, *same[0])
			}
		}
	}
	if len(a.whos) != 1+len(other) || len(a.raws) != len(same)+len(other) {
		t.Errorf("%d whos for %d spellings, want %d", len(a.whos), len(a.raws), 1+len(other))
	}
}

// TestHuntMergesAdders splits a fleet over several adders, as concurrent
// AddBatch calls do, with full and colliding hashes, and holds the rows,
// the default now and the window's count to those of one adder.
func TestHuntMergesAdders(t *testing.T) {
	var evs []Event
	for d := range 15 {
		dev := fmt.Sprintf("d%02d", d%5)
		ip := fmt.Sprintf("8.8.%d.%d", d%3, d%4)
		for k, ts := range series(t0.Add(time.Duration(d)*time.Minute), every(25, Time(90+d)*Second)...) {
			e := conn(dev, fmt.Sprintf("p%d.exe", d%2), ip, 443, ts)
			e.RemoteUrl = fmt.Sprintf("evil%d-%d.example", k, d%2)
			if d%5 == 4 {
				e.RemoteUrl = "" // events with no URL (of an adder that saw no other, below)
			}
			evs = append(evs, e)
			if k%4 == 0 {
				e.RemoteIP = "10.0.0.1" // private: domains only for public
				evs = append(evs, e)
			}
		}
	}
	type answer struct {
		rows   []Row
		now    Time
		window int64
	}
	run := func(parts int, weak, byURL bool) answer {
		h := NewHunt(Seed())
		h.hx.weak = weak
		adders := make([]*adder, parts)
		for k := range adders {
			adders[k] = h.take()
		}
		for i := range evs {
			k := i * 7 % parts
			if byURL { // the last adder gets every event with no URL, and no other
				k = i % (parts - 1)
				if evs[i].RemoteUrl == "" {
					k = parts - 1
				}
			}
			adders[k].add(&evs[i])
		}
		for _, a := range adders {
			h.give(a)
		}
		now, _ := h.DefaultNow()
		_, _, n := h.Window(now)
		if parts > 1 && len(h.merged.whos) == 0 {
			t.Fatal("nothing merged")
		}
		return answer{h.Rows(now), now, n}
	}
	want := run(1, false, false)
	if len(want.rows) == 0 {
		t.Fatal("no beacons: the test's fleet is wrong")
	}
	for _, parts := range []int{2, 3} {
		for _, weak := range []bool{false, true} {
			for _, byURL := range []bool{false, true} {
				if got := run(parts, weak, byURL); !reflect.DeepEqual(got, want) {
					t.Errorf("%d adders, weak %v, no-URL adder %v:\n%+v\nwant\n%+v", parts, weak, byURL, got, want)
				}
			}
		}
	}
}

// TestCanonicalIPv4 holds Hunt's IPv4 shortcut to the strings: an address
// read by canonicalIPv4 formats back to the same string, its DomainIP is
// read from the value, and every other spelling is refused (kept as a
// string).
func TestCanonicalIPv4(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "8.8.8.8", "10.1.2.3", "172.16.0.1", "172.31.255.255", "172.32.0.1", "192.168.1.1",
		"192.169.0.1", "255.255.255.255", "1.22.133.4", "100.64.0.1", "", "01.2.3.4", "1.2.3.04", "1.2.3.4/24", "1.2.3",
		"1.2.3.4.5", "256.1.1.1", "1.2.3.4 ", " 1.2.3.4", "1..3.4", "::1", "::ffff:8.8.8.8", "1.2.3.4a", "1234.1.1.1", "1.2.3.-4"} {
		v, ok := canonicalIPv4(s)
		if !ok {
			if a, isV4 := parseIPv4(s); isV4 && formatIPv4(a) == s {
				t.Errorf("%q: refused, but it is canonical", s)
			}
			continue
		}
		if got := formatIPv4(v); got != s {
			t.Errorf("%q: read as %d, which formats as %q", s, v, got)
		}
		if got, want := v != 0 && !ipv4Private(v), DomainIP(s); got != want {
			t.Errorf("%q: DomainIP from the value %v, from the string %v", s, got, want)
		}
	}
	for i := range uint32(100_000) {
		v := i * 2654435761 // spread over the space, 0 included
		if got, ok := canonicalIPv4(formatIPv4(v)); !ok || got != v {
			t.Fatalf("%d: formatted %q, read back %d %v", v, formatIPv4(v), got, ok)
		}
	}
}

// FuzzCanonicalIPv4 holds canonicalIPv4 to its definition: it accepts
// exactly the strings Kusto reads as IPv4 that formatIPv4 writes back the
// same, with their value.
func FuzzCanonicalIPv4(f *testing.F) {
	for _, s := range []string{"8.8.8.8", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3.4/8", "256.1.1.1", "1.2.3.4.5", "1.2.3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := canonicalIPv4(s)
		a, isV4 := parseIPv4(s)
		want := isV4 && formatIPv4(a) == s
		if ok != want || (ok && v != a) {
			t.Fatalf("%q: %d %v, want %v (Kusto %d %v)", s, v, ok, want, a, isV4)
		}
	})
}

// TestWhoKeys holds the block compare of whos (whoIs) to comparing the
// five strings: whos that differ in one string, or only in where one
// string ends and the next begins, are told apart; a who not laid out by
// newWho, or with a string over 65535 bytes, is compared by its strings.
func TestWhoKeys(t *testing.T) {
	p := Seed()
	hx := newHashIndex(maphash.MakeSeed())
	a := newAdder(&p, &hx)
	long := strings.Repeat("x", 70000)
	cases := [][5]string{
		{"dev", "name", "acct", "dom", "file"}, {"dev", "name", "acct", "dom", "filf"}, {"dev", "nam", "eacct", "dom", "file"},
		{"", "", "", "", ""}, {"", "name", "", "", ""}, {"dev", "name", "acct", "dom", long}, {long, "", "", "", "x"},
	}
	lookup := func(c [5]string) uint32 {
		return a.who(hx.whoHash(c[0], c[1], c[2], c[3], c[4]), c[0], c[1], c[2], c[3], c[4])
	}
	var ids []uint32
	for _, c := range cases {
		i := lookup(c)
		ids = append(ids, i)
	}
	// A who laid out by hand, its strings out of order in one block.
	block := strings.Clone("fnsep")
	sep := who{DeviceId: block[2:], DeviceName: block[1:2], FileName: block[:1]}
	a.addWho(sep)
	if !a.whoKeys[len(a.whoKeys)-1].slow || !a.whoKeys[ids[5]].slow || a.whoKeys[ids[0]].slow {
		t.Fatalf("slow flags: %+v", a.whoKeys)
	}
	for k, c := range cases {
		// The same strings from other memory find the same who.
		cc := [5]string{}
		for j := range c {
			cc[j] = strings.Clone(c[j])
		}
		if i := lookup(cc); i != ids[k] {
			t.Errorf("%q: who %d, first %d", c, i, ids[k])
		}
		for i := range a.whos {
			w := &a.whos[i]
			want := w.DeviceId == c[0] && w.DeviceName == c[1] && w.AccountName == c[2] && w.AccountDomain == c[3] && w.FileName == c[4]
			if got := a.whoIs(int32(i), c[0], c[1], c[2], c[3], c[4]); got != want {
				t.Errorf("who %d is %q: %v, want %v", i, c, got, want)
			}
		}
	}
	if !a.whoIs(int32(len(a.whos)-1), "sep", "n", "", "", "f") {
		t.Error("a who laid out by hand is not found")
	}
	if len(a.whos) != len(cases)+1 {
		t.Errorf("%d whos, want %d", len(a.whos), len(cases)+1)
	}
}

// TestStrHash holds strHash to reading every byte of its string and
// only those: for every length up to 64, changing any one byte changes
// the hash, the bytes around the string (in the same array) do not, and
// a string and its extension by a zero byte hash apart.
func TestStrHash(t *testing.T) {
	buf := make([]byte, 80)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	for n := 0; n <= 64; n++ {
		s := string(buf[8 : 8+n])
		h := strHash(42, s)
		// The same bytes elsewhere, with other bytes around them.
		other := make([]byte, 80)
		copy(other[3:], s)
		if got := strHash(42, string(other[3:3+n])); got != h {
			t.Fatalf("len %d: the hash depends on the bytes around the string", n)
		}
		for i := range n {
			b := []byte(s)
			b[i] ^= 0x20
			if strHash(42, string(b)) == h {
				t.Errorf("len %d: byte %d does not change the hash", n, i)
			}
		}
		if strHash(42, s+"\x00") == h {
			t.Errorf("len %d: a zero byte more hashes the same", n)
		}
		if strHash(43, s) == h {
			t.Errorf("len %d: the seed does not change the hash", n)
		}
	}
}

// TestEqWords holds eqWords' word compares to ==, for every length from
// 0 to 80 and a difference at every position.
func TestEqWords(t *testing.T) {
	b := make([]byte, 96)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	for n := 0; n <= 80; n++ {
		s := string(b[:n])
		if !eqWords(p, s) {
			t.Fatalf("eqWords(%q, %q) = false", b[:n], s)
		}
		for d := range n {
			c := []byte(s)
			c[d] ^= 0x20
			if eqWords(p, string(c)) {
				t.Fatalf("eqWords(%q, %q) = true", b[:n], c)
			}
		}
	}
}

// TestSumsReject holds Rows' early rejection to Candidate: under seed,
// Candidate decides on the count and the deltas' sums alone (a candidate
// is whatever passes them), so sumsReject must say exactly the opposite
// of Candidate for every tuple Rows asks about (two or more distinct
// timestamps); under robust it leaves every tuple to Candidate.
func TestSumsReject(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	loose := Seed()
	loose.JitterThreshold, loose.TotalEventsThresholdMin, loose.TotalEventsThresholdMax = 90, 3, 40
	rejected, kept := 0, 0
	for _, p := range []Params{Seed(), loose, Robust()} {
		for range 3000 {
			n := 2 + r.IntN(60)
			period := 1 + r.Int64N(900)
			deltas := make([]int64, n-1)
			for i := range deltas {
				switch r.IntN(4) {
				case 0:
					deltas[i] = r.Int64N(3 * period) // noise
				default:
					deltas[i] = period + r.Int64N(period/4+1) // a beacon's gaps
				}
			}
			s := SummaryOf(deltas)
			_, ok := p.Candidate(int64(n), &s)
			rej := p.sumsReject(int64(n), deltas)
			if p.Profile == ProfileRobust {
				if rej {
					t.Fatalf("robust: sumsReject(%d, %v) = true: robust's tests are Candidate's own", n, deltas)
				}
				continue
			}
			if rej == ok {
				t.Fatalf("%+v: sumsReject(%d, %v) = %v, Candidate says %v", p, n, deltas, rej, ok)
			}
			if rej {
				rejected++
			} else {
				kept++
			}
		}
	}
	if rejected == 0 || kept == 0 {
		t.Fatalf("rejected %d, kept %d: the cases do not test both answers", rejected, kept)
	}
}

// TestIntSet holds intSet to a map: keys that share their low or high
// bits, zero, keys put twice (the first value stays), growth.
func TestIntSet(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var s intSet
	want := make(map[uint64]int32)
	for i := range 20000 {
		var k uint64
		switch i % 4 {
		case 0:
			k = uint64(r.IntN(3000)) << 32 // high bits only
		case 1:
			k = uint64(r.IntN(3000)) // low bits only
		case 2:
			k = uint64(rawIPv4) | uint64(r.Uint32())
		default:
			k = r.Uint64() >> 2
		}
		_, had := want[k]
		if added := s.put(k, int32(i)); added == had {
			t.Fatalf("put(%#x) = %v, but the key was there: %v", k, added, had)
		}
		if !had {
			want[k] = int32(i)
		}
	}
	if s.n != len(want) {
		t.Fatalf("%d keys, want %d", s.n, len(want))
	}
	for k, v := range want {
		if got, ok := s.get(k); !ok || got != v {
			t.Fatalf("get(%#x) = %d, %v; want %d", k, got, ok, v)
		}
	}
	for range 1000 {
		k := r.Uint64()>>2 | 1<<62 // bit 62: no key above has it
		if _, ok := s.get(k); ok {
			t.Fatalf("get(%#x) found a key never put", k)
		}
	}
	if _, ok := (&intSet{}).get(0); ok {
		t.Fatal("an empty set has 0")
	}
}

// TestAddBatchIsAdd: AddBatch, which filters a part's events before it
// hashes the whos of those kept, gives the rows, default now and window
// count of adding the same events one at a time (add), with beacons
// among events each filter drops (a private or reserved address, a
// failed connection, no port, an address that is not canonical IPv4),
// in parts of every size around touchBatch.
func TestAddBatchIsAdd(t *testing.T) {
	var evs []Event
	for d := range 9 {
		dev := fmt.Sprintf("d%02d", d)
		for k, ts := range series(t0, every(40, Time(60+d)*Second)...) {
			e := conn(dev, "implant.exe", fmt.Sprintf("8.8.%d.%d", d%3, d%2), 443, ts)
			e.RemoteUrl = fmt.Sprintf("c%d.evil.example.com", k%3)
			evs = append(evs, e)
			n := e
			switch k % 6 {
			case 0:
				n.RemoteIP, n.RemoteIPType = "10.0.0.1", "Private"
			case 1:
				n.RemoteIPType = "Reserved"
			case 2:
				n.ActionType = "ConnectionFailed"
			case 3:
				n.HasPort, n.RemotePort = false, 0
			case 4:
				n.RemoteIP = "2001:db8::1"
			case 5:
				n.RemoteIP = "08.8.8.8"
			}
			n.Timestamp += Second / 2
			evs = append(evs, n)
		}
	}
	type answer struct {
		Rows   []Row
		Now    Time
		Events int64
	}
	run := func(h *Hunt) answer {
		now, _ := h.DefaultNow()
		_, _, n := h.Window(now)
		return answer{h.Rows(now), now, n}
	}
	one := NewHunt(Seed())
	for i := range evs {
		one.Add(&evs[i])
	}
	want := run(one)
	if len(want.Rows) == 0 {
		t.Fatal("no beacons: the test's fleet is wrong")
	}
	for _, size := range []int{1, touchBatch - 1, touchBatch, touchBatch + 1, len(evs)} {
		h := NewHunt(Seed())
		for i := 0; i < len(evs); i += size {
			h.AddBatch(evs[i:min(i+size, len(evs))])
		}
		if got := run(h); !reflect.DeepEqual(got, want) {
			t.Fatalf("batches of %d:\n%+v\nwant (Add)\n%+v", size, got, want)
		}
	}
}
