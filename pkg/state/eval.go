package state

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Evaluate returns the rows of destination d at the current stream time,
// in output order: what `hunt --end <stream time + 1s>` returns for d.
// Deciding reads summaries only: Params.Candidate is asked again about the
// tuples changed since d was last evaluated (O(histogram) each), a
// destination over the device cap is settled from its device count, and
// the statistics of its candidates are computed from their summaries. The
// timestamps of a tuple are read from Pebble only to render a row it keeps.
// Rows of one call share their Domains slice.
func (p *Partition) Evaluate(d beacon.Destination) ([]beacon.Row, error) {
	if p.err != nil {
		return nil, p.err
	}
	if !p.h.hasStream {
		return nil, nil
	}
	ds := p.destByKey(d)
	if ds == nil {
		return nil, nil
	}
	return p.evaluate(ds, nil)
}

// Beacons returns every row of the partition at the current stream time, in
// output order.
func (p *Partition) Beacons() ([]beacon.Row, error) {
	if p.err != nil {
		return nil, p.err
	}
	if !p.h.hasStream {
		return nil, nil
	}
	var rows []beacon.Row
	for _, ds := range p.destAt {
		if ds == nil {
			continue
		}
		var err error
		if rows, err = p.evaluate(ds, rows); err != nil {
			return nil, err
		}
	}
	beacon.SortRows(rows)
	return rows, nil
}

// Members returns the tuples of destination d that are beacons at the
// current stream time, deciding from summaries alone: unlike Evaluate it
// reads no timestamps, so a caller that tracks membership (alerting) pays
// for rendering only the rows it publishes (Row).
func (p *Partition) Members(d beacon.Destination) ([]beacon.Tuple, error) {
	if p.err != nil {
		return nil, p.err
	}
	if !p.h.hasStream {
		return nil, nil
	}
	ds := p.destByKey(d)
	if ds == nil {
		return nil, nil
	}
	return members(p.decide(ds)), nil
}

func members(sel []selected, _ int64) []beacon.Tuple {
	if len(sel) == 0 {
		return nil
	}
	out := make([]beacon.Tuple, len(sel))
	for i := range sel {
		out[i] = sel[i].c.Tuple
	}
	return out
}

// MembersOf sets out[i] to Members(keys[i]) for every key, deciding the
// destinations on up to par goroutines: each decision reads and writes its
// destination's own state alone, so they are independent, and an
// evaluation point of a stream with one partition need not decide its
// dirty destinations one after another. out is grown to len(keys) and
// returned.
func (p *Partition) MembersOf(keys []beacon.Destination, par int, out [][]beacon.Tuple) ([][]beacon.Tuple, error) {
	clear(out)
	out = slices.Grow(out[:0], len(keys))[:len(keys)]
	if p.err != nil {
		return out, p.err
	}
	if !p.h.hasStream {
		return out, nil
	}
	ds := slices.Grow(p.decideQ[:0], len(keys))
	p.decideGen++
	dup := false
	for i, k := range keys {
		d := p.destOfKey(i, k) // nil: no longer a destination
		if d != nil {
			if d.decideGen == p.decideGen {
				d, dup = nil, true // decided once, copied below
			} else {
				d.decideGen = p.decideGen
			}
		}
		ds = append(ds, d)
	}
	p.decideQ = ds
	defer clear(ds)
	if dup {
		defer func() {
			for i, k := range keys {
				if ds[i] == nil && p.destByKey(k) != nil {
					out[i] = slices.Clone(out[slices.Index(keys, k)])
				}
			}
		}()
	}
	par = min(par, len(ds)/minDecidesPerGoroutine)
	if par <= 1 {
		for i, d := range ds {
			if d != nil {
				out[i] = members(p.decide(d))
			}
		}
		return out, nil
	}
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= len(ds) {
				return
			}
			if d := ds[i]; d != nil {
				out[i] = members(p.decide(d))
			}
		}
	}
	var wg sync.WaitGroup
	for range par - 1 {
		wg.Go(work)
	}
	work() // the caller is one of the par
	wg.Wait()
	return out, nil
}

// minDecidesPerGoroutine keeps MembersOf serial when the destinations are
// too few to pay for starting goroutines (a few µs each; a decision costs
// about as much). The tests lower it.
var minDecidesPerGoroutine = 8

// Row renders tuple t's row at the current stream time; ok is false when
// t is not a beacon now.
func (p *Partition) Row(t beacon.Tuple) (row beacon.Row, ok bool, err error) {
	if p.err != nil {
		return row, false, p.err
	}
	if !p.h.hasStream {
		return row, false, nil
	}
	ds := p.destByKey(t.Destination())
	if ds == nil {
		return row, false, nil
	}
	sel, devices := p.decide(ds)
	for i := range sel {
		if s := &sel[i]; s.c.Tuple == t {
			row, err = p.render(p.tup(s.id), &s.c, p.domainsOf(ds.ip), devices)
			return row, err == nil, err
		}
	}
	return row, false, nil
}

// decide returns the candidates SelectDestination keeps, in ds.cands
// order, and the device count. They stay the destination's: the next
// decide that finds its candidates or their statistics changed replaces
// them, and the others return them again without asking
// SelectDestination. It reads the partition's shared state (tuple
// columns, summaries) and writes ds's own (its tuples' candidate marks
// and positions, its lists): decisions of different destinations may run
// concurrently.
func (p *Partition) decide(ds *dest) (sel []selected, devices int64) {
	p.refresh(ds)
	if ds.selOK {
		return ds.sel, ds.selN
	}
	clear(ds.sel)
	ds.sel, ds.selN, ds.selOK = ds.sel[:0], 0, true
	// SelectDestination keeps nothing when more than
	// CompromisedDeviceCountMax devices have a candidate. The devices are
	// counted already, so a popular destination is settled here.
	if len(ds.cands) == 0 || p.p.OverDeviceCap(int64(len(ds.devs))) {
		ds.sel = nil
		return nil, 0
	}
	// The statistics refresh kept: a tuple's summary, all Candidate
	// reads, changes only with its window, which makes it stale.
	// Computing them again for every candidate at every point was most
	// of a robust stream's CPU, and copying them for SelectDestination
	// the next most.
	kept, devices := p.p.SelectHinted(ds.cs, ds.candDev, int(ds.ndev), &ds.selHint)
	for _, k := range kept {
		ds.sel = append(ds.sel, selected{id: ds.cands[k], c: ds.cs[k]})
	}
	if len(ds.sel) == 0 {
		ds.sel = nil
	}
	ds.selN = devices
	return ds.sel, devices
}

// render reads a kept tuple's timestamps and builds its row.
func (p *Partition) render(tp *tuple, c *beacon.Candidate, domains []string, devices int64) (beacon.Row, error) {
	ts, err := p.timestamps(tp)
	if err != nil {
		return beacon.Row{}, err
	}
	if len(ts) != int(tp.distinct) {
		return beacon.Row{}, p.corrupt(tp, "window count")
	}
	return beacon.NewRow(c, ts, domains, devices), nil
}

// evaluate appends the destination's rows to rows, sorted when rows was
// empty.
func (p *Partition) evaluate(ds *dest, rows []beacon.Row) ([]beacon.Row, error) {
	sel, devices := p.decide(ds)
	if len(sel) == 0 {
		return rows, nil
	}
	domains := p.domainsOf(ds.ip)
	n := len(rows)
	for i := range sel {
		row, err := p.render(p.tup(sel[i].id), &sel[i].c, domains, devices)
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	if n == 0 {
		beacon.SortRows(rows)
	}
	return rows, nil
}

// refresh asks Params.Candidate again about the tuples that changed since
// the destination was last evaluated, and only about them, and keeps the
// candidates' statistics.
func (p *Partition) refresh(ds *dest) {
	var buf [2]beacon.Bin
	for _, id := range ds.stale {
		tp := p.tup(id)
		if tp.dest != ds.idx {
			continue // deleted (its slot free, or another tuple's)
		}
		tp.stale = false
		sum := p.summary(tp, &buf)
		st, ok := p.p.Candidate(int64(tp.distinct), &sum)
		switch {
		case ok != tp.cand:
			p.setCand(ds, tp, ok, &st)
		case ok:
			c := &ds.cs[tp.candPos]
			if !ds.selOK || !p.p.SameSelection(&c.Stats, &st) {
				c.Stats = st
				ds.selOK = false
				break
			}
			// The answer stands (a steady beacon's period and thresholds
			// rarely move): only the candidate's own statistics change,
			// with what SelectDestination set in them.
			st.R.PeriodDevices = c.R.PeriodDevices
			c.Stats = st
			for i := range ds.sel {
				if ds.sel[i].id == id {
					ds.sel[i].c.Stats = st
				}
			}
		}
	}
	clear(ds.stale)
	ds.stale = ds.stale[:0]
	if cap(ds.stale) > 1024 {
		// A burst (a load, a popular destination's first batches) left a
		// long list: give it back rather than keep 4 B per tuple.
		ds.stale = nil
	}
}

// domainsOf is the IP's Domains: sorted, newer than the domain bound, nil
// when none (as the batch query's leftouter join gives).
func (p *Partition) domainsOf(ip *ipState) []string {
	bound := p.p.DomainsFrom(p.now())
	var out []string
	for name, d := range ip.domains {
		if d.time > bound {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// timestamps reads the tuple's sorted window [first, last] from its blocks.
func (p *Partition) timestamps(tp *tuple) ([]beacon.Time, error) {
	if tp.distinct == 0 {
		return nil, nil
	}
	return p.rangeTS(make([]beacon.Time, 0, tp.distinct), tp, tp.first, tp.last)
}
