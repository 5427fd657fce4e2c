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
// Events are split by RemoteIP into shards, as the streaming detector
// partitions them: every tuple of a destination and every domain of an IP
// land in one shard, so the device cap and Domains are shard-local and
// AddBatch can fill the shards in parallel.
//
// Event strings may alias decoder buffers: Hunt copies what it keeps.
type Hunt struct {
	p      Params
	seed   maphash.Seed
	shards []*shard
	routes sync.Pool // of *route: AddBatch's per-shard event indexes, reused
	events atomic.Int64
}

// route is one AddBatch call's split of its batch by shard.
type route struct {
	idx  [][]int32
	done []bool
}

// shard holds the events of the RemoteIPs that hash to it.
type shard struct {
	mu   sync.Mutex // AddBatch may be called from several goroutines
	p    *Params
	seed maphash.Seed
	// index finds a tuple's position in tuples by its hash (huntindex.go).
	hx          hashIndex
	index       slots
	tuples      []Tuple
	tupleHashes []uint64
	// Each kept event is (tuple index, timestamp), in arrival order; Rows
	// groups them with a counting sort, so no per-tuple slice is grown.
	evTuple []int32
	evTime  []Time
	// For the Domains enrichment, the newest Timestamp of each distinct
	// (RemoteIP, RemoteUrl), found by urlIndex; domains are derived only
	// for the IPs of candidates, at the end.
	urlIndex slots
	urlSeen  []ipURL
	strs     map[string]string
	newest   Time
	any      bool
}

// NewHunt returns an empty batch with a shard per CPU.
func NewHunt(p Params) *Hunt {
	h := &Hunt{p: p, seed: maphash.MakeSeed()}
	n := runtime.GOMAXPROCS(0)
	for range n {
		h.shards = append(h.shards, &shard{
			p:    &h.p,
			seed: h.seed,
			hx:   newHashIndex(h.seed),
			strs: make(map[string]string),
		})
	}
	h.routes.New = func() any { return &route{idx: make([][]int32, n), done: make([]bool, n)} }
	return h
}

func (h *Hunt) shardOf(e *Event) int {
	if len(h.shards) == 1 {
		return 0
	}
	return int(maphash.String(h.seed, e.RemoteIP) % uint64(len(h.shards)))
}

// Add takes one event.
func (h *Hunt) Add(e *Event) {
	h.events.Add(1)
	sh := h.shards[h.shardOf(e)]
	sh.mu.Lock()
	sh.add(e)
	sh.mu.Unlock()
}

// AddBatch takes a batch of events. It is safe to call from several
// goroutines at once (a parallel decoder hands over each chunk as it is
// done): each shard is locked only while its part of the batch is added,
// and a caller fills whichever shard is free first, so callers rarely wait
// for each other and never for a whole batch.
func (h *Hunt) AddBatch(batch []Event) {
	h.events.Add(int64(len(batch)))
	if len(h.shards) == 1 {
		sh := h.shards[0]
		sh.mu.Lock()
		for i := range batch {
			sh.add(&batch[i])
		}
		sh.mu.Unlock()
		return
	}
	r := h.routes.Get().(*route)
	for k := range r.idx {
		r.idx[k] = r.idx[k][:0]
	}
	for i := range batch {
		k := h.shardOf(&batch[i])
		r.idx[k] = append(r.idx[k], int32(i))
	}
	pending := 0
	for k := range r.done {
		r.done[k] = len(r.idx[k]) == 0
		if !r.done[k] {
			pending++
		}
	}
	for pending > 0 {
		wait := -1
		for k, sh := range h.shards {
			if r.done[k] {
				continue
			}
			if !sh.mu.TryLock() {
				if wait < 0 {
					wait = k
				}
				continue
			}
			sh.addAll(batch, r.idx[k])
			sh.mu.Unlock()
			r.done[k] = true
			pending--
			wait = -2
		}
		if wait >= 0 { // every shard left is busy: wait for one
			sh := h.shards[wait]
			sh.mu.Lock()
			sh.addAll(batch, r.idx[wait])
			sh.mu.Unlock()
			r.done[wait] = true
			pending--
		}
	}
	h.routes.Put(r)
}

func (h *shard) addAll(batch []Event, idx []int32) {
	for _, i := range idx {
		h.add(&batch[i])
	}
}

func (h *shard) intern(s string) string {
	if v, ok := h.strs[s]; ok {
		return v
	}
	v := cloneString(s)
	h.strs[v] = v
	return v
}

func (h *shard) add(e *Event) {
	if h.p.DomainIP(e.RemoteIP) {
		h.addDomain(e)
	}
	if !h.p.Connection(e) {
		return
	}
	if !h.any || e.Timestamp > h.newest {
		h.newest, h.any = e.Timestamp, true
	}
	if !e.HasPort {
		return // null == null is null in Kusto: such rows never pair up
	}
	t := h.p.TupleOf(e)
	i := h.tupleIndex(&t)
	h.evTuple = append(h.evTuple, i)
	h.evTime = append(h.evTime, e.Timestamp)
}

type ipURL struct {
	ip, url string
	newest  Time
	hash    uint64 // pairHash(ip, url), to grow urlIndex
}

// Events is the number of events added.
func (h *Hunt) Events() int64 { return h.events.Load() }

// DefaultNow is the query's now when none is given: the newest Timestamp
// among events that pass the filters, plus one second — the clock the
// streaming detector has. ok is false when no event passed.
func (h *Hunt) DefaultNow() (now Time, ok bool) {
	var newest Time
	for _, sh := range h.shards {
		if sh.any && (!ok || sh.newest > newest) {
			newest, ok = sh.newest, true
		}
	}
	return newest + Second, ok
}

// Window returns the query's window at now and how many of the events
// that passed the filters lie in it: what hunt reports on stderr.
func (h *Hunt) Window(now Time) (from, to Time, events int64) {
	from, to = h.p.Window(now)
	for _, sh := range h.shards {
		for _, t := range sh.evTime {
			if t >= from && t <= to {
				events++
			}
		}
	}
	return from, to, events
}

// Rows runs the query at now and returns its rows in output order.
func (h *Hunt) Rows(now Time) []Row {
	parts := make([][]Row, len(h.shards))
	var wg sync.WaitGroup
	for k, sh := range h.shards {
		wg.Go(func() { parts[k] = sh.rows(now) })
	}
	wg.Wait()
	rows := slices.Concat(parts...)
	SortRows(rows)
	return rows
}

// rows returns the shard's rows, unsorted.
func (h *shard) rows(now Time) []Row {
	from, to := h.p.Window(now)
	// Counting sort of the window's events by tuple.
	start := make([]int32, len(h.tuples)+1)
	for k, i := range h.evTuple {
		if t := h.evTime[k]; t >= from && t <= to {
			start[i+1]++
		}
	}
	for i := range h.tuples {
		start[i+1] += start[i]
	}
	times := make([]Time, start[len(h.tuples)])
	fill := append([]int32(nil), start[:len(h.tuples)]...)
	for k, i := range h.evTuple {
		if t := h.evTime[k]; t >= from && t <= to {
			times[fill[i]] = t
			fill[i]++
		}
	}
	byDest := make(map[Destination][]Candidate)
	tsOf := make(map[Tuple][]Time)
	var deltas []int64
	for i := range h.tuples {
		ts := times[start[i]:start[i+1]]
		if len(ts) <= 1 || int64(len(ts)) <= h.p.TotalEventsThresholdMin {
			continue // cannot pass the count test, duplicates or not
		}
		slices.Sort(ts)
		ts = slices.Compact(ts)
		deltas = Deltas(ts, deltas)
		s := SummaryOf(deltas)
		st, ok := h.p.Candidate(int64(len(ts)), &s)
		if !ok {
			continue
		}
		t := h.tuples[i]
		byDest[t.Destination()] = append(byDest[t.Destination()], Candidate{t, st})
		tsOf[t] = ts
	}
	domains := h.domainsAfter(h.p.DomainsFrom(now), byDest)
	var rows []Row
	for _, cands := range byDest {
		kept, devices := h.p.SelectDestination(cands)
		for _, k := range kept {
			c := &cands[k]
			rows = append(rows, NewRow(c, tsOf[c.Tuple], domains[c.RemoteIP], devices))
		}
	}
	return rows
}

// domainsAfter returns, for the IPs of the candidates, the sorted set of
// domains seen after from.
func (h *shard) domainsAfter(from Time, byDest map[Destination][]Candidate) map[string][]string {
	out := make(map[string][]string)
	for d := range byDest {
		out[d.RemoteIP] = nil
	}
	for i := range h.urlSeen {
		u := &h.urlSeen[i]
		if list, ok := out[u.ip]; ok && u.newest > from {
			out[u.ip] = append(list, DomainOf(u.url))
		}
	}
	for ip, list := range out {
		slices.Sort(list)
		out[ip] = slices.Compact(list)
	}
	return out
}
