package beacon

import (
	"hash/maphash"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
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
	for i := range batch {
		a.add(&batch[i])
	}
	h.give(a)
}

func (h *Hunt) take() *adder {
	h.mu.Lock()
	defer h.mu.Unlock()
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
	for _, t := range h.merge().evTime {
		if t >= from && t <= to {
			events++
		}
	}
	return from, to, events
}

// adder is one caller's share of a Hunt: the events it was given, reduced
// to what the query needs.
type adder struct {
	p    *Params
	hx   *hashIndex
	seed bool // the seed profile: Connection's IP checks are DomainIP's (see add)

	ipIndex   slots
	ips       []ipEntry
	ipKeys    []ipKey // ips[i]'s first 16 bytes, beside the slots' order
	whoIndex  slots
	whos      []who
	tupIndex  tupleSlots
	tuples    []tupleKey
	pairIndex slots
	pairs     []ipURL
	// Each kept event is (tuple index, timestamp), in arrival order; Rows
	// groups them with a counting sort, so no per-tuple slice is grown.
	evTuple []int32
	evTime  []Time
	newest  Time
	any     bool
}

func newAdder(p *Params, hx *hashIndex) *adder {
	return &adder{p: p, hx: hx, seed: p.Profile == "" || p.Profile == ProfileSeed}
}

// ipEntry is a distinct RemoteIP.
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

// tupleKey is a tuple as indexes into ips and whos.
type tupleKey struct {
	who, ip uint32
	port    int32
}

// ipURL is a distinct (RemoteIP, RemoteUrl) and the newest time it was
// seen, for the Domains enrichment.
type ipURL struct {
	ip     uint32
	url    string
	newest Time
	hash   uint64
}

func (a *adder) add(e *Event) {
	ii := a.ip(e.RemoteIP)
	domain := a.ips[ii].domain
	if domain {
		a.addDomain(ii, e.RemoteUrl, e.Timestamp)
	}
	if a.seed {
		if !seedConnection(a.p, domain, e) {
			return
		}
	} else if !a.p.Connection(e) {
		return
	}
	if !a.any || e.Timestamp > a.newest {
		a.newest, a.any = e.Timestamp, true
	}
	if !e.HasPort {
		return // null == null is null in Kusto: such rows never pair up
	}
	var wi uint32
	if a.seed {
		wi = a.who(e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName)
	} else {
		t := a.p.TupleOf(e) // robust lower-cases names; the IP is the event's
		wi = a.who(t.DeviceId, t.DeviceName, t.AccountName, t.AccountDomain, t.FileName)
	}
	a.evTuple = append(a.evTuple, a.tuple(tupleKey{wi, ii, e.RemotePort}))
	a.evTime = append(a.evTime, e.Timestamp)
}

// seedConnection is seed's Params.Connection given domain =
// DomainIP(e.RemoteIP), which an adder knows per address: Connection's IP
// checks (not empty, not 0.0.0.0, public IPv4) are DomainIP's.
// TestHuntSeedConnection holds the two to the same answer.
func seedConnection(p *Params, domain bool, e *Event) bool {
	if !domain {
		return false
	}
	switch e.RemoteIPType {
	case "Reserved", "Private", "LinkLocal", "Loopback":
		return false
	}
	return p.ActionTypeOK(e.ActionType)
}

// absorb folds b's events, tuples and pairs into a. b's strings are
// already a's to keep.
func (a *adder) absorb(b *adder) {
	ipMap := make([]uint32, len(b.ips))
	for i := range b.ips {
		ipMap[i] = a.ipOf(&b.ips[i])
	}
	whoMap := make([]uint32, len(b.whos))
	for i := range b.whos {
		whoMap[i] = a.whoOf(&b.whos[i])
	}
	tupMap := make([]int32, len(b.tuples))
	for i, t := range b.tuples {
		tupMap[i] = a.tuple(tupleKey{whoMap[t.who], ipMap[t.ip], t.port})
	}
	for k, i := range b.evTuple {
		a.evTuple = append(a.evTuple, tupMap[i])
		a.evTime = append(a.evTime, b.evTime[k])
	}
	for i := range b.pairs {
		u := &b.pairs[i]
		a.pairOf(ipMap[u.ip], u.url, u.newest, true)
	}
	if b.any && (!a.any || b.newest > a.newest) {
		a.newest, a.any = b.newest, true
	}
}

// tupleOf returns the tuple of a key.
func (a *adder) tupleOf(k tupleKey) Tuple {
	w := &a.whos[k.who]
	return Tuple{w.DeviceId, w.DeviceName, w.AccountName, w.AccountDomain, w.FileName, a.ips[k.ip].s, k.port}
}

// Rows runs the query at now and returns its rows in output order.
func (h *Hunt) Rows(now Time) []Row {
	a := h.merge()
	from, to := h.p.Window(now)
	// Counting sort of the window's events by tuple.
	n := len(a.tuples)
	start := make([]int32, n+1)
	for k, i := range a.evTuple {
		if t := a.evTime[k]; t >= from && t <= to {
			start[i+1]++
		}
	}
	for i := range n {
		start[i+1] += start[i]
	}
	times := make([]Time, start[n])
	fill := append([]int32(nil), start[:n]...)
	for k, i := range a.evTuple {
		if t := a.evTime[k]; t >= from && t <= to {
			times[fill[i]] = t
			fill[i]++
		}
	}
	// The per-tuple tests, on every CPU: each takes a range of tuples.
	type cand struct {
		i  int32
		st Stats
		ts []Time
	}
	parts := make([][]cand, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for k := range parts {
		lo, hi := n*k/len(parts), n*(k+1)/len(parts)
		wg.Go(func() {
			var deltas []int64
			for i := lo; i < hi; i++ {
				ts := times[start[i]:start[i+1]]
				if len(ts) <= 1 || int64(len(ts)) <= h.p.TotalEventsThresholdMin {
					continue // cannot pass the count test, duplicates or not
				}
				slices.Sort(ts)
				ts = slices.Compact(ts)
				deltas = Deltas(ts, deltas)
				s := SummaryOf(deltas)
				if st, ok := h.p.Candidate(int64(len(ts)), &s); ok {
					parts[k] = append(parts[k], cand{int32(i), st, ts})
				}
			}
		})
	}
	wg.Wait()
	byDest := make(map[Destination][]Candidate)
	tsOf := make(map[Tuple][]Time)
	ipsOf := make(map[uint32]bool)
	for _, part := range parts {
		for _, c := range part {
			k := a.tuples[c.i]
			t := a.tupleOf(k)
			byDest[t.Destination()] = append(byDest[t.Destination()], Candidate{t, c.st})
			tsOf[t] = c.ts
			ipsOf[k.ip] = true
		}
	}
	domains := a.domainsAfter(h.p.DomainsFrom(now), ipsOf)
	var rows []Row
	for _, cands := range byDest {
		kept, devices := h.p.SelectDestination(cands)
		for _, k := range kept {
			c := &cands[k]
			rows = append(rows, NewRow(c, tsOf[c.Tuple], domains[c.RemoteIP], devices))
		}
	}
	SortRows(rows)
	return rows
}

// domainsAfter returns, for the IPs of the candidates, the sorted set of
// domains seen after from.
func (a *adder) domainsAfter(from Time, ips map[uint32]bool) map[string][]string {
	out := make(map[string][]string)
	for ip := range ips {
		out[a.ips[ip].s] = nil
	}
	for i := range a.pairs {
		u := &a.pairs[i]
		if ips[u.ip] && u.newest > from {
			s := a.ips[u.ip].s
			out[s] = append(out[s], DomainOf(u.url))
		}
	}
	for ip, list := range out {
		slices.Sort(list)
		out[ip] = slices.Compact(list)
	}
	return out
}
