package beacon

import (
	"cmp"
	"encoding/binary"
	"hash/maphash"
	"math"
	"slices"
)

// Tuple is the query's group key: who (device, account, process) talks to
// what (remote IP and port).
type Tuple struct {
	DeviceId      string
	DeviceName    string
	AccountName   string // InitiatingProcessAccountName
	AccountDomain string // InitiatingProcessAccountDomain
	FileName      string // InitiatingProcessFileName
	RemoteIP      string
	RemotePort    int32
}

// Tuple returns the event's group key.
func (e *Event) Tuple() Tuple {
	return Tuple{e.DeviceId, e.DeviceName, e.AccountName, e.AccountDomain, e.FileName, e.RemoteIP, e.RemotePort}
}

// Account is the account as Windows writes it, DOMAIN\name, or the name
// alone when the domain is empty: how tables, alerts and the page show it.
func (t *Tuple) Account() string {
	if t.AccountDomain == "" {
		return t.AccountName
	}
	return t.AccountDomain + `\` + t.AccountName
}

// Compare orders tuples by their seven columns, ascending (ordinal string
// comparison): the tie-break of the output order.
func (t *Tuple) Compare(o *Tuple) int {
	if c := cmp.Compare(t.DeviceId, o.DeviceId); c != 0 {
		return c
	}
	if c := cmp.Compare(t.DeviceName, o.DeviceName); c != 0 {
		return c
	}
	if c := cmp.Compare(t.AccountName, o.AccountName); c != 0 {
		return c
	}
	if c := cmp.Compare(t.AccountDomain, o.AccountDomain); c != 0 {
		return c
	}
	if c := cmp.Compare(t.FileName, o.FileName); c != 0 {
		return c
	}
	if c := cmp.Compare(t.RemoteIP, o.RemoteIP); c != 0 {
		return c
	}
	return cmp.Compare(t.RemotePort, o.RemotePort)
}

// Hash is a 64-bit hash of the seven columns, for maps of tuples keyed by
// hash (Hunt, pkg/state): cheaper to look up than a seven-field struct key.
// Columns are separated, so moving a character between them changes it.
func (t *Tuple) Hash(seed maphash.Seed) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	for _, s := range t.strings() {
		h.WriteString(s)
		h.WriteByte(0)
	}
	var port [4]byte
	binary.LittleEndian.PutUint32(port[:], uint32(t.RemotePort))
	h.Write(port[:])
	return h.Sum64()
}

// Destination is what the device cap counts devices of: the process name,
// remote IP and port, across devices and accounts.
type Destination struct {
	FileName   string
	RemoteIP   string
	RemotePort int32
}

// Destination returns the tuple's destination.
func (t *Tuple) Destination() Destination { return Destination{t.FileName, t.RemoteIP, t.RemotePort} }

// Candidate is a tuple that passed the count and jitter tests
// (BeaconCandidates in the query).
type Candidate struct {
	Tuple
	Stats
}

// Candidate applies the per-tuple tests to a tuple with distinct timestamps
// in the window summarized by s: distinct > TotalEventsThresholdMin,
// distinct < TotalEventsThresholdMax, and Jitter < JitterThreshold.
func (p *Params) Candidate(distinct int64, s *Summary) (Stats, bool) {
	if p.Profile == ProfileRobust {
		return p.robustCandidate(distinct, s)
	}
	if distinct <= p.TotalEventsThresholdMin || distinct >= p.EventsMax() || s.N < 1 {
		return Stats{}, false
	}
	// Most tuples fail on jitter, which needs only the sums: decide that
	// before walking the histogram for percentiles and outliers. The
	// arithmetic is Stats' own, so the answer cannot differ.
	avg := float64(s.Sum) / float64(s.N)
	if !p.jitterOK((math.Sqrt(sampleVariance(s.N, s.Sum, s.SumSq)) / avg) * 100) {
		return Stats{}, false
	}
	return p.Stats(s), true
}

// OverDeviceCap reports whether a destination with candidates on this many
// distinct devices is benign by prevalence (dcount_DeviceId >
// CompromisedDeviceCountMax).
func (p *Params) OverDeviceCap(devices int64) bool {
	if p.Profile == ProfileRobust {
		return false // robust counts devices per period: see robustSelect
	}
	return devices > p.CompromisedDeviceCountMax
}

// SelectDestination decides which candidates of one destination are
// beacons: when more than CompromisedDeviceCountMax distinct devices beacon
// to it, none is (dcount over all candidates, before outliers); otherwise
// those with at most OutlierCountMax outliers and, when set, an average
// sleep within [SleepMin, SleepMax]. It returns the indexes kept and the
// destination's device count (dcount_DeviceId).
func (p *Params) SelectDestination(cands []Candidate) (kept []int, devices int64) {
	return p.selectDestination(cands, nil, 0, nil)
}

// SelectNumbered is SelectDestination for a caller that numbers the
// candidates' devices: dev[i], in [0, ndev), is cands[i]'s device, and
// two numbers are equal exactly when the DeviceIds are. The answer is
// SelectDestination's; the numbers spare it telling DeviceIds apart (a
// stream asks at every evaluation point where a destination's candidates
// changed, and hashing every candidate's DeviceId was a third of robust's
// selection).
func (p *Params) SelectNumbered(cands []Candidate, dev []int32, ndev int) (kept []int, devices int64) {
	return p.selectDestination(cands, dev, ndev, nil)
}

// SelectHinted is SelectNumbered for a caller that keeps a slice per
// destination across calls (*hint, nil at first) and selects again over
// about the same candidates: the profile keeps there what makes the next
// selection cheaper (robust: the last order of the candidates' indexes by
// period, which the next sort starts from). The answer is SelectNumbered's
// whatever *hint holds.
func (p *Params) SelectHinted(cands []Candidate, dev []int32, ndev int, hint *[]int32) (kept []int, devices int64) {
	return p.selectDestination(cands, dev, ndev, hint)
}

func (p *Params) selectDestination(cands []Candidate, dev []int32, ndev int, hint *[]int32) (kept []int, devices int64) {
	if p.Profile == ProfileRobust {
		return p.robustSelect(cands, dev, ndev, hint)
	}
	if dev != nil {
		devices = countNumbered(dev, ndev)
	} else {
		devices = countDevices(cands)
	}
	if p.OverDeviceCap(devices) {
		return nil, devices
	}
	for i := range cands {
		c := &cands[i]
		if c.Outliers > p.OutlierCountMax {
			continue
		}
		if (p.SleepMin != 0 && c.Avg < p.SleepMin) || (p.SleepMax != 0 && c.Avg > p.SleepMax) {
			continue
		}
		kept = append(kept, i)
	}
	return kept, devices
}

// SameSelection reports whether SelectDestination's answer (the indexes
// kept, the device count and the fields it sets) is the same when one
// candidate's statistics a are replaced by b, its tuple unchanged: true
// when b agrees with a on everything SelectDestination reads. A stream
// that keeps a destination's answer asks it for every candidate whose
// window changed, and selects again only when one says false.
func (p *Params) SameSelection(a, b *Stats) bool {
	if p.Profile == ProfileRobust {
		return p.robustSameSelection(&a.R, &b.R)
	}
	out := func(s *Stats) bool { return s.Outliers > p.OutlierCountMax }
	short := func(s *Stats) bool { return p.SleepMin != 0 && s.Avg < p.SleepMin }
	long := func(s *Stats) bool { return p.SleepMax != 0 && s.Avg > p.SleepMax }
	return out(a) == out(b) && short(a) == short(b) && long(a) == long(b)
}

// countNumbered is countDevices over the caller's device numbers.
func countNumbered(dev []int32, ndev int) int64 {
	if len(dev) <= 1 {
		return int64(len(dev))
	}
	var small [256]bool // most destinations have few devices: no allocation
	seen := small[:]
	if ndev > len(small) {
		seen = make([]bool, ndev)
	}
	var n int64
	for _, d := range dev {
		if !seen[d] {
			seen[d] = true
			n++
		}
	}
	return n
}

func countDevices(cands []Candidate) int64 {
	if len(cands) <= 1 {
		return int64(len(cands))
	}
	ids := make([]string, len(cands))
	for i := range cands {
		ids[i] = cands[i].DeviceId
	}
	slices.Sort(ids)
	return int64(len(slices.Compact(ids)))
}

// Row is one row of the query's output.
type Row struct {
	Tuple
	Stats
	MinTimestamp  Time    // min_Timestamp (and Timestamp)
	MaxTimestamp  Time    // max_Timestamp: the second-to-last timestamp
	Duration      int64   // datetime_diff('second', max, min)
	TimeDeltaList []int64 // deltas in time order
	MinIndex      int     // TimeDeltaInSeconds_min_index
	MaxIndex      int     // TimeDeltaInSeconds_max_index
	Domains       []string
	DeviceCount   int64 // dcount_DeviceId
	// Explanation, for every profile (seed: a fixed mapping, see
	// docs/semantics.md; robust: its own score).
	Score         float64  // in [0, 1]
	Severity      string   // low, medium, high or critical
	PeriodSeconds float64  // the period estimate, seconds
	Callbacks     int64    // callbacks (seed: distinct timestamps)
	Reasons       []string // short phrases that explain Score
}

// SleepMin is BeaconSleepMin = avg − stdev.
func (r *Row) SleepMin() float64 { return r.Avg - r.Stdev }

// SleepMax is BeaconSleepMax = avg + stdev.
func (r *Row) SleepMax() float64 { return r.Avg + r.Stdev }

// Deltas returns the query's TimeDeltaList for sorted distinct timestamps:
// datetime_diff('second', next, this) for every timestamp that has a next.
func Deltas(ts []Time, dst []int64) []int64 {
	dst = dst[:0]
	for i := 0; i+1 < len(ts); i++ {
		dst = append(dst, DatetimeDiffSeconds(ts[i+1], ts[i]))
	}
	return dst
}

// NewRow renders a kept candidate: ts are the tuple's sorted distinct
// timestamps in the window (at least two), domains the Domains of its IP.
func NewRow(c *Candidate, ts []Time, domains []string, devices int64) Row {
	if c.R.On {
		return newRobustRow(c, ts, domains, devices)
	}
	// max_Timestamp is the second-to-last timestamp: the query summarizes
	// only rows that have a next one.
	r := baseRow(c, ts, ts[len(ts)-2], domains, devices)
	r.explainSeed()
	return r
}

// baseRow is the part of a row both profiles render alike: the tuple, its
// statistics, the deltas in time order with their min/max index, and the
// span from the first timestamp to last.
func baseRow(c *Candidate, ts []Time, last Time, domains []string, devices int64) Row {
	deltas := Deltas(ts, nil)
	minI, maxI := MinMaxIndex(deltas)
	return Row{
		Tuple:         c.Tuple,
		Stats:         c.Stats,
		MinTimestamp:  ts[0],
		MaxTimestamp:  last,
		Duration:      DatetimeDiffSeconds(last, ts[0]),
		TimeDeltaList: deltas,
		MinIndex:      minI,
		MaxIndex:      maxI,
		Domains:       domains,
		DeviceCount:   devices,
	}
}

// CompareRows is the output order: Jitter asc, TimeDeltaInSeconds_avg asc,
// then the seven tuple columns asc (Kusto leaves those ties open).
func CompareRows(a, b *Row) int {
	if a.R.On || b.R.On {
		return compareRobustRows(a, b)
	}
	if c := cmp.Compare(a.Jitter, b.Jitter); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Avg, b.Avg); c != 0 {
		return c
	}
	return a.Tuple.Compare(&b.Tuple)
}

// SortRows sorts rows in the output order.
func SortRows(rows []Row) { slices.SortFunc(rows, func(a, b Row) int { return CompareRows(&a, &b) }) }
