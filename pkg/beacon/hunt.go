package beacon

import (
	"slices"
)

// Hunt is the query as a batch: add every event of an export, then ask for
// the rows at some now. It keeps, per tuple, the timestamps of the events
// that pass the query's filters and, per (RemoteIP, domain), the newest time
// the pair was seen — what the query needs and nothing else.
//
// Event strings may alias decoder buffers: Hunt copies what it keeps.
type Hunt struct {
	p       Params
	index   map[Tuple]int32
	tuples  []Tuple
	times   [][]Time
	domains map[ipDomain]Time
	urls    map[string]string // RemoteUrl → domain, a cache
	strs    map[string]string // interned strings
	newest  Time
	any     bool
	events  int64
}

type ipDomain struct{ ip, domain string }

// NewHunt returns an empty batch.
func NewHunt(p Params) *Hunt {
	return &Hunt{
		p:       p,
		index:   make(map[Tuple]int32),
		domains: make(map[ipDomain]Time),
		urls:    make(map[string]string),
		strs:    make(map[string]string),
	}
}

func (h *Hunt) intern(s string) string {
	if v, ok := h.strs[s]; ok {
		return v
	}
	v := cloneString(s)
	h.strs[v] = v
	return v
}

// Add takes one event.
func (h *Hunt) Add(e *Event) {
	h.events++
	if DomainIP(e.RemoteIP) {
		d, ok := h.urls[e.RemoteUrl]
		if !ok {
			d = h.intern(DomainOf(e.RemoteUrl))
			if len(h.urls) > 1<<20 { // bound the cache, not the answer
				clear(h.urls)
			}
			h.urls[h.intern(e.RemoteUrl)] = d
		}
		k := ipDomain{e.RemoteIP, d}
		if t, ok := h.domains[k]; !ok || e.Timestamp > t {
			if !ok {
				k.ip = h.intern(k.ip)
			}
			h.domains[k] = e.Timestamp
		}
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
	t := e.Tuple()
	i, ok := h.index[t]
	if !ok {
		t = Tuple{h.intern(t.DeviceId), h.intern(t.DeviceName), h.intern(t.AccountName),
			h.intern(t.AccountDomain), h.intern(t.FileName), h.intern(t.RemoteIP), t.RemotePort}
		i = int32(len(h.tuples))
		h.index[t] = i
		h.tuples = append(h.tuples, t)
		h.times = append(h.times, nil)
	}
	h.times[i] = append(h.times[i], e.Timestamp)
}

// Events is the number of events added.
func (h *Hunt) Events() int64 { return h.events }

// DefaultNow is the query's now when none is given: the newest Timestamp
// among events that pass the filters, plus one second — the clock the
// streaming detector has. ok is false when no event passed.
func (h *Hunt) DefaultNow() (now Time, ok bool) {
	return h.newest + Second, h.any
}

// Rows runs the query at now and returns its rows in output order.
func (h *Hunt) Rows(now Time) []Row {
	from, to := h.p.Window(now)
	byDest := make(map[Destination][]Candidate)
	var tsOf = make(map[Tuple][]Time)
	var deltas []int64
	for i, all := range h.times {
		ts := windowSet(all, from, to)
		if len(ts) < 2 {
			continue
		}
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
	SortRows(rows)
	return rows
}

// windowSet returns the sorted distinct timestamps of all within
// [from, to] (make_set, then array_sort_asc).
func windowSet(all []Time, from, to Time) []Time {
	ts := make([]Time, 0, len(all))
	for _, t := range all {
		if t >= from && t <= to {
			ts = append(ts, t)
		}
	}
	slices.Sort(ts)
	return slices.Compact(ts)
}

// domainsAfter returns, for the IPs of the candidates, the sorted set of
// domains seen after from.
func (h *Hunt) domainsAfter(from Time, byDest map[Destination][]Candidate) map[string][]string {
	want := make(map[string][]string)
	for d := range byDest {
		want[d.RemoteIP] = nil
	}
	for k, t := range h.domains {
		if t <= from {
			continue
		}
		if list, ok := want[k.ip]; ok {
			want[k.ip] = append(list, k.domain)
		}
	}
	for ip, list := range want {
		slices.Sort(list)
		want[ip] = list
	}
	return want
}
