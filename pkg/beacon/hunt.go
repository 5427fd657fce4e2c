package beacon

import (
	"cmp"
	"hash/maphash"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Hunt is the query as a batch: add every event of an export, then ask for
// the rows at some now. It keeps, per tuple, the timestamps of the events
// that pass the query's filters and, per (RemoteIP, RemoteUrl), the newest
// time the pair was seen — what the query needs and nothing else.
//
// AddBatch may be called from several goroutines at once (a parallel
// decoder hands over each chunk as it is done). Each caller fills an adder
// of its own — no lock per event, no tables shared between cores — and the
// adders are folded together when the rows are asked for (DefaultNow,
// Window, Rows, which must not run concurrently with adds).
//
// An adder keeps each distinct RemoteIP once (with whether it passes the
// query's IP filters: IPv4 is parsed once per address, not per event),
// each distinct "who" (DeviceId, DeviceName, account, process) once, and
// a tuple as three integers (who, IP, port): what a lookup touches is a
// small table of hot entries, then the tuple's one 16-byte slot.
//
// Event strings may alias decoder buffers: Hunt copies what it keeps.
type Hunt struct {
	p      Params
	hx     hashIndex
	mu     sync.Mutex
	free   []*adder // adders not in use
	all    []*adder // every adder since the last merge
	merged *adder   // what the rows are read from
	events atomic.Int64
	// The window count of the last Rows: Window at the same now need not
	// read every event again.
	rowsNow   Time
	rowsCount int64
	rowsDone  bool
}

// NewHunt returns an empty batch.
func NewHunt(p Params) *Hunt {
	return &Hunt{p: p, hx: newHashIndex(maphash.MakeSeed())}
}

// Add takes one event.
func (h *Hunt) Add(e *Event) {
	h.events.Add(1)
	a := h.take()
	a.add(e)
	h.give(a)
}

// AddBatch takes a batch of events. It is safe to call from several
// goroutines at once: each call takes an adder no other call is using.
func (h *Hunt) AddBatch(batch []Event) {
	h.events.Add(int64(len(batch)))
	a := h.take()
	if !a.seed {
		for i := range batch {
			a.add(&batch[i])
		}
		h.give(a)
		return
	}
	// In parts of touchBatch events: first each event's address, its
	// pair and the filters (filter, as add does before the who), then the
	// who hashes and lookahead of the events kept with a port (touchWhos),
	// then their whos and buckets. A filtered event is neither hashed nor
	// looked ahead at (a fifth of a day). TestAddBatchIsAdd holds it to
	// add.
	var hs [touchBatch]uint64
	var kept [touchBatch]keptEvent
	for len(batch) > 0 {
		part := batch[:min(len(batch), touchBatch)]
		nk := 0
		for i := range part {
			if k, ok := a.filter(&part[i]); ok {
				k.i = i
				kept[nk] = k
				nk++
			}
		}
		a.touchWhos(part, kept[:nk], &hs)
		for j := range kept[:nk] {
			k := &kept[j]
			e := &part[k.i]
			a.store(e, k, a.who(hs[j], e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName), hs[j])
		}
		batch = batch[len(part):]
	}
	h.give(a)
}

// keptEvent is an event of an AddBatch part that passed the filters with
// a port: its index in the part and its address's ipID and hash.
type keptEvent struct {
	i      int
	id     ipID
	ipHash uint64
}

// filter is add up to the who: it takes e's address, pair and
// newest time, and tells whether e makes a tuple event (it passes the
// filters and has a port).
func (a *adder) filter(e *Event) (k keptEvent, ok bool) {
	id, ipHash, domain := a.ipOfEvent(e.RemoteIP)
	if domain {
		a.seen.add(newPairSeen(id, e.Timestamp, a.url(e.RemoteUrl)))
	}
	if !a.p.ConnectionOf(e, domain) {
		return k, false
	}
	if !a.any || e.Timestamp > a.newest {
		a.newest, a.any = e.Timestamp, true
	}
	// A null port passes the filters (it moves the window) but never
	// pairs up: null == null is null in Kusto.
	return keptEvent{id: id, ipHash: ipHash}, e.HasPort
}

// touchBatch is how many events touchWhos looks ahead at.
const touchBatch = 64

// touchWhos computes the who hash of each kept event of batch into hs,
// and reads what the who lookups after it will read — the hash's slot,
// the who's key, the first bytes of its strings — in passes of
// independent loads, so that the processor has many of these cache
// misses in flight at once instead of taking three in turn per event.
// It changes nothing: AddBatch still finds every who as who does.
func (a *adder) touchWhos(batch []Event, kept []keptEvent, hs *[touchBatch]uint64) {
	for j := range kept {
		e := &batch[kept[j].i]
		hs[j] = a.hx.whoHash(e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName)
	}
	t := &a.whoIndex
	if len(t.s) == 0 {
		return
	}
	var slot [touchBatch]uint64
	for j := range kept {
		slot[j] = t.s[hs[j]&t.mask]
	}
	var sink uint64
	for j := range kept {
		if e := slot[j]; e != 0 && e>>32 == hs[j]>>32 {
			k := &a.whoKeys[uint32(e)-1]
			if n := int(k.n[0]) + int(k.n[1]) + int(k.n[2]) + int(k.n[3]) + int(k.n[4]); n > 0 && !k.slow {
				// The block's first and last bytes: its one or two lines.
				sink += uint64(*k.p) + uint64(*(*byte)(unsafe.Add(unsafe.Pointer(k.p), n-1)))
			}
		}
	}
	a.touched += sink
}

func (h *Hunt) take() *adder {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rowsDone = false // events are coming: the window's count will change
	if n := len(h.free); n > 0 {
		a := h.free[n-1]
		h.free = h.free[:n-1]
		return a
	}
	a := newAdder(&h.p, &h.hx)
	h.all = append(h.all, a)
	return a
}

func (h *Hunt) give(a *adder) {
	h.mu.Lock()
	h.free = append(h.free, a)
	h.mu.Unlock()
}

// merge folds every adder into h.merged and returns it.
func (h *Hunt) merge() *adder {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range h.all {
		if h.merged == nil {
			h.merged = a // the first adder is the merge: nothing to copy
			continue
		}
		h.merged.absorb(a)
	}
	h.all, h.free = nil, nil
	if h.merged == nil {
		h.merged = newAdder(&h.p, &h.hx)
	}
	return h.merged
}

// Events is the number of events added.
func (h *Hunt) Events() int64 { return h.events.Load() }

// DefaultNow is the query's now when none is given: the newest Timestamp
// among events that pass the filters, plus one second — the clock the
// streaming detector has. ok is false when no event passed.
func (h *Hunt) DefaultNow() (now Time, ok bool) {
	m := h.merge()
	return m.newest + Second, m.any
}

// Window returns the query's window at now and how many of the events
// that passed the filters lie in it: what hunt reports on stderr.
func (h *Hunt) Window(now Time) (from, to Time, events int64) {
	from, to = h.p.Window(now)
	if h.rowsDone && h.rowsNow == now {
		return from, to, h.rowsCount
	}
	a := h.merge()
	for _, src := range a.sources() {
		for k := range src.buckets {
			l := &src.buckets[k]
			for ci := range l.numChunks() {
				for _, ev := range l.chunk(ci) {
					if ev.t >= from && ev.t <= to {
						events++
					}
				}
			}
		}
	}
	return from, to, events
}

// adder is one caller's share of a Hunt: the events it was given, reduced
// to what the query needs.
type adder struct {
	p    *Params
	hx   *hashIndex
	seed bool // the seed profile (who hashes and DomainIP differ by profile: add, ipOfEvent)

	// Addresses kept as strings: every RemoteIP under robust, and under
	// seed those that are not canonical IPv4 (see ipOfEvent).
	ipIndex  slots
	ips      []ipEntry
	ipKeys   []ipKey // ips[i]'s first 16 bytes, beside the slots' order
	whoIndex slots
	whos     []who
	whoKeys  []whoKey // whos[i] as its one block of bytes and lengths, for the hot compare
	// RemoteUrls, each distinct one once (a few thousand a day; urls[0]
	// is ""), and every public-IPv4 event's (RemoteIP, RemoteUrl) and
	// time as the address, the URL's index and the time, appended to a
	// log: the Domains column needs the pairs of the few addresses that
	// make rows, found in Rows, so adding probes no table of ~21k pairs
	// (a miss to memory an event) but writes 16 bytes in sequence.
	urlIndex slots
	urls     []urlEntry
	seen     pairLog
	// Each kept event as its tuple and timestamp, appended to the bucket
	// its tuple's hash picks (from the columns, not the adder's indexes, so
	// a tuple falls in the same bucket in every adder). Rows sorts each
	// bucket on its own — a few thousand events, in cache, on every CPU —
	// to group the events by tuple: no per-event probe of a table of
	// ~150k tuples (each a cache miss) while adding.
	buckets [numBuckets]eventList
	// The events of the adders absorbed, left in their buckets with the
	// maps of their indexes to this adder's: merging copies no event.
	absorbed []eventSource
	newest   Time
	any      bool
	touched  uint64 // what touchWhos read, kept so that its loads are not dropped
	// Robust's names as the events spell them, each with the who of its
	// lower-cased names (TupleOf's): a spelling is lowered once, not at
	// every event.
	rawIndex slots
	raws     []who
	rawTo    []uint32
}

// eventSource is an adder's buckets and the maps from its who and
// address indexes to those of the adder that absorbed it (nil: its own).
type eventSource struct {
	buckets *[numBuckets]eventList
	whoMap  []uint32
	ipMap   []ipID
}

// remap is ev with its indexes in the absorbing adder's terms.
func (s *eventSource) remap(ev tupleEvent) tupleEvent {
	if s.whoMap != nil {
		ev.who = s.whoMap[ev.who]
		if ev.ip&rawIPv4 == 0 {
			ev.ip = s.ipMap[ev.ip]
		}
	}
	return ev
}

// sources are the adder's own events and those it absorbed.
func (a *adder) sources() []eventSource {
	return append([]eventSource{{buckets: &a.buckets}}, a.absorbed...)
}

// numBuckets is how many buckets an adder spreads its events over: ~2k
// events (≈ 50 KB) each for a day of 600k kept events.
const numBuckets = 256

func newAdder(p *Params, hx *hashIndex) *adder {
	return &adder{p: p, hx: hx, seed: p.Profile == "" || p.Profile == ProfileSeed}
}

// ipEntry is a distinct RemoteIP kept as a string.
type ipEntry struct {
	s      string
	hash   uint64
	domain bool // p.DomainIP(s)
}

// ipKey is an address of at most 16 bytes as two words and its length
// (IPv4 always): compared without reading the string.
type ipKey struct {
	w0, w1 uint64
	n      int // len, or -1 for a longer address
}

// who is a tuple without its destination: DeviceId, DeviceName and the
// initiating process's account and file name.
type who struct {
	DeviceId, DeviceName, AccountName, AccountDomain, FileName string
	hash                                                       uint64
}

// ipID names a RemoteIP: a canonical IPv4 address (four decimal octets,
// no leading zeros, nothing else) by its value with rawIPv4 set, which is
// the same string in every adder and is formatted back the same; any
// other address by its index in the adder's ips.
type ipID uint64

const rawIPv4 ipID = 1 << 32

// tupleEvent is a kept event: its tuple (who, IP, port) and timestamp.
type tupleEvent struct {
	who  uint32
	port int32
	ip   ipID
	t    Time
}

// tupleGroups groups a bucket's events in a window by tuple, with a small
// table that stays in cache: first[i] is the first event of group i, and
// times[start[i]:start[i+1]] its timestamps, in no order. Its slices are
// reused from bucket to bucket.
type tupleGroups struct {
	first []tupleEvent
	start []int32
	times []Time
	of    []int32 // each event's group, -1 outside the window
	slots []int32 // group + 1, 0 empty
}

// group fills g from bucket b of the sources and returns how many events
// lie in [from, to].
func (g *tupleGroups) group(srcs []eventSource, b int, from, to Time) int64 {
	g.first, g.of = g.first[:0], g.of[:0]
	total := 0
	for _, src := range srcs {
		total += src.buckets[b].len()
	}
	size := 16
	for size < 2*total {
		size *= 2
	}
	if cap(g.slots) < size {
		g.slots = make([]int32, size)
	}
	g.slots = g.slots[:size]
	clear(g.slots)
	mask := uint64(size - 1)
	var n int64
	for si := range srcs {
		src := &srcs[si]
		l := &src.buckets[b]
		for ci := range l.numChunks() {
			for _, e := range l.chunk(ci) {
				if e.t < from || e.t > to {
					g.of = append(g.of, -1)
					continue
				}
				n++
				g.add(src.remap(e), mask)
			}
		}
	}
	// Counting sort of the times by group.
	if cap(g.start) < len(g.first)+1 {
		g.start = make([]int32, len(g.first)+1, 2*len(g.first)+1)
	}
	g.start = g.start[:len(g.first)+1]
	clear(g.start)
	for _, i := range g.of {
		if i >= 0 {
			g.start[i+1]++
		}
	}
	for i := range g.first {
		g.start[i+1] += g.start[i]
	}
	if cap(g.times) < int(n) {
		g.times = make([]Time, n, 2*n)
	}
	g.times = g.times[:n]
	fill := g.start[:len(g.first)] // advanced as filled, then restored
	k := 0
	for _, src := range srcs {
		l := &src.buckets[b]
		for ci := range l.numChunks() {
			for _, e := range l.chunk(ci) {
				if i := g.of[k]; i >= 0 {
					g.times[fill[i]] = e.t
					fill[i]++
				}
				k++
			}
		}
	}
	for i := len(g.first); i > 0; i-- { // fill[i-1] is now start[i]: shift back
		g.start[i] = g.start[i-1]
	}
	g.start[0] = 0
	return n
}

// add puts ev in its group.
func (g *tupleGroups) add(ev tupleEvent, mask uint64) {
	h := (uint64(ev.who)<<32 ^ uint64(uint32(ev.port))) * 0x9e3779b97f4a7c15
	h = (h ^ h>>29 ^ uint64(ev.ip)) * 0xbf58476d1ce4e5b9
	for j := (h ^ h>>32) & mask; ; j = (j + 1) & mask {
		s := g.slots[j]
		if s == 0 {
			g.first = append(g.first, ev)
			g.slots[j] = int32(len(g.first))
			g.of = append(g.of, int32(len(g.first)-1))
			return
		}
		if f := &g.first[s-1]; f.who == ev.who && f.ip == ev.ip && f.port == ev.port {
			g.of = append(g.of, s-1)
			return
		}
	}
}

// add takes one event: filter, then its who and its tuple's bucket
// (AddBatch does the same a part at a time).
func (a *adder) add(e *Event) {
	k, ok := a.filter(e)
	if !ok {
		return
	}
	var wi uint32
	var wh uint64
	if a.seed {
		wh = a.hx.whoHash(e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName)
		wi = a.who(wh, e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName)
	} else {
		wi, wh = a.robustWho(e) // robust's tuple lowers the names first
	}
	a.store(e, &k, wi, wh)
}

// store adds a kept event to its tuple's bucket: who wi, of who hash wh.
func (a *adder) store(e *Event, k *keptEvent, wi uint32, wh uint64) {
	a.buckets[a.hx.bucket(wh, k.ipHash, e.RemotePort)].add(tupleEvent{wi, e.RemotePort, k.id, e.Timestamp})
}

// eventList is a bucket's events in chunks that are never copied: the
// first ones small, then of eventChunk events each. Grown by doubling, a
// day's buckets were copied whole on the way and left as much again in
// garbage arrays: fresh heap pages, each a page fault and zeroed by the
// kernel, for what is appended once and read twice.
type eventList struct {
	tail []tupleEvent   // the chunk being filled
	full [][]tupleEvent // the chunks before it, full
}

// eventChunk is the size of a full chunk: 170 events fill a 4 KiB size
// class.
const eventChunk = 4096 / int(unsafe.Sizeof(tupleEvent{}))

func (l *eventList) add(ev tupleEvent) {
	if len(l.tail) == cap(l.tail) {
		l.grow()
	}
	l.tail = append(l.tail, ev)
}

//go:noinline
func (l *eventList) grow() {
	if cap(l.tail) > 0 {
		l.full = append(l.full, l.tail)
	}
	l.tail = make([]tupleEvent, 0, min(eventChunk, max(8, 2*cap(l.tail))))
}

func (l *eventList) len() int {
	n := len(l.tail)
	for _, c := range l.full {
		n += len(c)
	}
	return n
}

// numChunks and chunk give the list's chunks in order, for loops over
// every event: for ci := range l.numChunks() { … l.chunk(ci) … }.
func (l *eventList) numChunks() int { return len(l.full) + 1 }

func (l *eventList) chunk(ci int) []tupleEvent {
	if ci < len(l.full) {
		return l.full[ci]
	}
	return l.tail
}

// ipOfEvent names RemoteIP s: its ipID, a hash of it that is the same in
// every adder, and p.DomainIP(s). A canonical IPv4 address is its own
// name, and DomainIP is read from its value: no table is probed.
func (a *adder) ipOfEvent(s string) (id ipID, hash uint64, domain bool) {
	if v, ok := canonicalIPv4(s); ok {
		if a.seed {
			domain = v != 0 && !ipv4Private(v)
		} else {
			domain = publicIPv4(v)
		}
		return rawIPv4 | ipID(v), a.hx.v4Hash(v), domain
	}
	i := a.ip(s)
	e := &a.ips[i]
	return ipID(i), e.hash, e.domain
}

// ipString is the address an ipID names.
func (a *adder) ipString(id ipID) string {
	if id&rawIPv4 != 0 {
		return formatIPv4(uint32(id))
	}
	return a.ips[id].s
}

// absorb folds b's events, tuples and pairs into a. b's strings are
// already a's to keep.
func (a *adder) absorb(b *adder) {
	ipMap := make([]ipID, len(b.ips))
	for i := range b.ips {
		ipMap[i] = ipID(a.ipOf(&b.ips[i]))
	}
	remap := func(id ipID) ipID {
		if id&rawIPv4 != 0 {
			return id
		}
		return ipMap[id]
	}
	whoMap := make([]uint32, len(b.whos))
	for i := range b.whos {
		whoMap[i] = a.whoOf(&b.whos[i])
	}
	a.absorbed = append(a.absorbed, eventSource{&b.buckets, whoMap, ipMap})
	for _, src := range b.absorbed { // b absorbed others before: compose the maps
		wm := make([]uint32, len(src.whoMap))
		for i, w := range src.whoMap {
			wm[i] = whoMap[w]
		}
		im := make([]ipID, len(src.ipMap))
		for i, ip := range src.ipMap {
			im[i] = remap(ip)
		}
		a.absorbed = append(a.absorbed, eventSource{src.buckets, wm, im})
	}
	b.absorbed = nil
	// urls[0] is "" once any URL was kept; before that b's log can still
	// hold events with no URL (0), so urlMap always maps 0 to 0.
	urlMap := make([]uint32, max(1, len(b.urls)))
	for i := 1; i < len(b.urls); i++ {
		urlMap[i] = a.urlOf(&b.urls[i])
	}
	for _, c := range b.seen.chunks { // b is done: its log is remapped in place
		for i := range c {
			c[i] = newPairSeen(remap(c[i].id()), c[i].t, urlMap[c[i].urlIndex()])
		}
		a.seen.chunks = append(a.seen.chunks, c)
	}
	b.seen.chunks = nil
	if b.any && (!a.any || b.newest > a.newest) {
		a.newest, a.any = b.newest, true
	}
}

// tupleOf returns the tuple of a kept event.
func (a *adder) tupleOf(k *tupleEvent) Tuple {
	w := &a.whos[k.who]
	return Tuple{w.DeviceId, w.DeviceName, w.AccountName, w.AccountDomain, w.FileName, a.ipString(k.ip), k.port}
}

// Rows runs the query at now and returns its rows in output order.
func (h *Hunt) Rows(now Time) []Row {
	a := h.merge()
	from, to := h.p.Window(now)
	// The per-tuple tests, on every CPU: each takes buckets in turn,
	// sorts the bucket's events in the window by tuple and time, and tests
	// each tuple's run of timestamps.
	type cand struct {
		ev tupleEvent // the tuple's first event
		st Stats
		ts []Time
	}
	srcs := a.sources()
	parts := make([][]cand, runtime.GOMAXPROCS(0))
	inWindow := make([]int64, len(parts))
	var next atomic.Int32
	var wg sync.WaitGroup
	for k := range parts {
		wg.Go(func() {
			var g tupleGroups
			var deltas, scratch []int64
			var hist []Bin
			for {
				b := int(next.Add(1)) - 1
				if b >= numBuckets {
					return
				}
				inWindow[k] += g.group(srcs, b, from, to)
				for i := range g.first {
					ts := g.times[g.start[i]:g.start[i+1]]
					if len(ts) <= 1 || int64(len(ts)) <= h.p.TotalEventsThresholdMin {
						continue // cannot pass the count test, duplicates or not
					}
					slices.Sort(ts)
					ts = slices.Compact(ts)
					deltas = Deltas(ts, deltas)
					if h.p.sumsReject(int64(len(ts)), deltas) {
						continue // no histogram to sort for a tuple that fails on its sums
					}
					// Stats keeps nothing of the summary: its histogram's
					// array is the next one's.
					var s Summary
					s, scratch = summaryOf(deltas, scratch, hist)
					hist = s.Hist
					if st, ok := h.p.Candidate(int64(len(ts)), &s); ok {
						parts[k] = append(parts[k], cand{g.first[i], st, slices.Clone(ts)})
					}
				}
			}
		})
	}
	wg.Wait()
	h.rowsNow, h.rowsCount, h.rowsDone = now, 0, true
	for _, n := range inWindow {
		h.rowsCount += n
	}
	byDest := make(map[Destination][]Candidate)
	tsOf := make(map[Tuple][]Time)
	ipsOf := make(map[ipID]bool)
	for _, part := range parts {
		for _, c := range part {
			t := a.tupleOf(&c.ev)
			byDest[t.Destination()] = append(byDest[t.Destination()], Candidate{t, c.st})
			tsOf[t] = c.ts
			ipsOf[c.ev.ip] = true
		}
	}
	domains := a.domainsAfter(h.p.DomainsFrom(now), ipsOf)
	var rows []Row
	for _, cands := range byDest {
		// The candidates' order depends on how the events were spread
		// over adders and buckets: put them in the tuples' order.
		slices.SortFunc(cands, func(x, y Candidate) int { return compareTuples(&x.Tuple, &y.Tuple) })
		kept, devices := h.p.SelectDestination(cands)
		for _, k := range kept {
			c := &cands[k]
			rows = append(rows, NewRow(c, tsOf[c.Tuple], domains[c.RemoteIP], devices))
		}
	}
	SortRows(rows)
	return rows
}

// sumsReject tells whether Candidate rejects a tuple of distinct
// timestamps with these deltas on its first tests, which read only the
// count and the deltas' sums (under seed: the count bounds and the
// jitter, what most tuples fail on), so that Rows need not sort the
// deltas into a histogram (summaryOf) to be told no. False means "ask
// Candidate", never "a candidate". TestSumsReject holds it to Candidate.
func (p *Params) sumsReject(distinct int64, deltas []int64) bool {
	if p.Profile == ProfileRobust || len(deltas) == 0 {
		return false
	}
	if distinct <= p.TotalEventsThresholdMin || distinct >= p.EventsMax() {
		return true
	}
	var sum, sumSq int64
	for _, d := range deltas {
		sum += d
		sumSq += d * d
	}
	n := int64(len(deltas))
	return !p.jitterOK((math.Sqrt(sampleVariance(n, sum, sumSq)) / (float64(sum) / float64(n))) * 100)
}

// compareTuples orders tuples column by column.
func compareTuples(x, y *Tuple) int {
	for _, c := range [...]int{
		strings.Compare(x.DeviceId, y.DeviceId), strings.Compare(x.DeviceName, y.DeviceName),
		strings.Compare(x.AccountName, y.AccountName), strings.Compare(x.AccountDomain, y.AccountDomain),
		strings.Compare(x.FileName, y.FileName), strings.Compare(x.RemoteIP, y.RemoteIP),
	} {
		if c != 0 {
			return c
		}
	}
	return cmp.Compare(x.RemotePort, y.RemotePort)
}

// domainsAfter returns, for the IPs of the candidates, the sorted set of
// domains seen after from. The log is read in parts on every CPU, each
// part with its own set of the (address, URL) pairs it found: the sets
// are small tables of integers (the candidates numbered densely), not
// maps of pairs, and a pair found by two parts only repeats its domain,
// which the sort and compaction at the end remove.
func (a *adder) domainsAfter(from Time, ips map[ipID]bool) map[string][]string {
	cands := make([]ipID, 0, len(ips))
	var dense intSet // ipID -> index in cands
	for ip := range ips {
		dense.put(uint64(ip), int32(len(cands)))
		cands = append(cands, ip)
	}
	// A filter of the candidates' addresses: most entries of the log
	// fail one bit test, not a lookup.
	var bits [1024]uint64
	bit := func(ip ipID) (int, uint64) {
		h := uint64(ip) * 0x9e3779b97f4a7c15 >> (64 - 16)
		return int(h >> 6), 1 << (h & 63)
	}
	for _, ip := range cands {
		w, m := bit(ip)
		bits[w] |= m
	}
	chunks := a.seen.chunks
	parts := make([][]uint64, max(1, min(runtime.GOMAXPROCS(0), len(chunks)))) // each part's pairs: index<<32 | URL
	var wg sync.WaitGroup
	for k := range parts {
		wg.Go(func() {
			var done intSet
			var found []uint64
			for _, c := range chunks[k*len(chunks)/len(parts) : (k+1)*len(chunks)/len(parts)] {
				for i := range c {
					u := &c[i]
					ip := u.id()
					if w, m := bit(ip); bits[w]&m == 0 || u.t <= from {
						continue
					}
					ci, ok := dense.get(uint64(ip))
					if !ok {
						continue
					}
					if key := uint64(ci)<<32 | uint64(u.urlIndex()); done.put(key, 0) {
						found = append(found, key)
					}
				}
			}
			parts[k] = found
		})
	}
	wg.Wait()
	lists := make([][]string, len(cands))
	for _, found := range parts {
		for _, key := range found {
			lists[key>>32] = append(lists[key>>32], DomainOf(a.urlString(uint32(key))))
		}
	}
	out := make(map[string][]string, len(cands))
	for ci, ip := range cands {
		list := lists[ci]
		slices.Sort(list)
		out[a.ipString(ip)] = slices.Compact(list)
	}
	return out
}

// intSet is an open-addressing table of integer keys, each with a value:
// what domainsAfter looks entries of the log up in, without a map's
// hashing of a struct key.
type intSet struct {
	keys []uint64 // key + 1; 0 is empty
	vals []int32
	n    int
}

// put adds key with value v and tells whether it was new; an old key keeps
// its value.
func (t *intSet) put(key uint64, v int32) bool {
	if 2*(t.n+1) > len(t.keys) {
		t.grow()
	}
	for j := intSetHash(key) & uint64(len(t.keys)-1); ; j = (j + 1) & uint64(len(t.keys)-1) {
		switch t.keys[j] {
		case 0:
			t.keys[j], t.vals[j] = key+1, v
			t.n++
			return true
		case key + 1:
			return false
		}
	}
}

// get returns key's value.
func (t *intSet) get(key uint64) (int32, bool) {
	if t.n == 0 {
		return 0, false
	}
	for j := intSetHash(key) & uint64(len(t.keys)-1); ; j = (j + 1) & uint64(len(t.keys)-1) {
		switch t.keys[j] {
		case 0:
			return 0, false
		case key + 1:
			return t.vals[j], true
		}
	}
}

func (t *intSet) grow() {
	keys, vals := t.keys, t.vals
	size := max(64, 2*len(keys))
	t.keys, t.vals, t.n = make([]uint64, size), make([]int32, size), 0
	for j, k := range keys {
		if k != 0 {
			t.put(k-1, vals[j])
		}
	}
}

func intSetHash(key uint64) uint64 {
	h := key * 0x9e3779b97f4a7c15
	h = (h ^ h>>32) * 0xbf58476d1ce4e5b9
	return h ^ h>>29
}
