package beacon

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Profiles.
const (
	ProfileSeed   = "seed"
	ProfileRobust = "robust"
)

// RobustParams are the robust profile's parameters (docs/robust.md).
// Every decision is a function of a tuple's distinct-timestamp count and
// its delta Summary, so pkg/state keeps it incrementally and exactly, as
// it does for seed.
type RobustParams struct {
	// BurstGap (2 s): a delta of at most this many seconds is inside one
	// callback (a burst of connections, a near-duplicate event) and is
	// neither a gap nor evidence against the period.
	BurstGap int64
	// MinCallbacks (5): a tuple needs at least this many callbacks to be
	// reported. A 12 h sleep reaches it in 2.5 days; the 7 d window gives
	// it 14.
	MinCallbacks int64
	// PrevalenceCallbacks (3): a tuple with at least this many callbacks
	// (two gaps: a period) counts toward the prevalence of its
	// (destination, period) and toward its destination's devices, even
	// before it has MinCallbacks: a fleet service is recognised from the
	// devices that poll it, not only from those that have polled it
	// MinCallbacks times (a short window, a service's devices entering a
	// stream one by one).
	PrevalenceCallbacks int64
	// MinPeriod and MaxPeriod (4 s, 15 h) bound the period estimate.
	MinPeriod, MaxPeriod float64
	// MaxMissed (4): a gap of about k × period, k = 2..MaxMissed, is k−1
	// missed callbacks and supports the period; a longer gap is a pause
	// (working hours, overnight) and is neither.
	MaxMissed int64
	// Tolerance (0.1): a gap within this fraction of the period counts as
	// "on time" in the reasons.
	Tolerance float64
	// Threshold (0.8): a tuple needs Score at least this to be reported.
	Threshold float64
	// PrevalenceScore (0.5): tuples scoring at least this (or Threshold,
	// if lower) count toward the devices of their (destination, period);
	// kept ones need Threshold.
	PrevalenceScore float64
	// PeriodTolerance (0.25): candidates of one destination whose periods
	// differ by at most this fraction poll it with one period.
	PeriodTolerance float64
	// RareThreshold (0.65): a tuple scoring at least this, below Threshold,
	// is reported when its device is the only one with a candidate on the
	// destination (rare destination: a C2 server has one victim here, a
	// web site people visit a few times a day has many) — with a window of
	// at least RareWindow.
	RareThreshold float64
	// RareWindow (24 h): rarity is judged only when the window (Lookback)
	// is at least this long, a day of the fleet's activity (working hours,
	// browsing sessions): in a shorter one few devices have visited
	// anything three times, so being alone on a destination says little.
	// The demo's 1 h window alerted 14 browsing tuples in 17 h of fleet
	// time by rarity, none without it.
	RareWindow time.Duration
	// RareCallbacks (6): rarity reports only tuples with at least this many
	// callbacks — one gap more than MinCallbacks gives, since it lowers the
	// score asked. A stream evaluates a tuple at every change, and a
	// browsing tuple's first five visits look regular now and then: in two
	// replayed days of 150 devices, 4 browsing tuples were alerted by rarity
	// with 5 callbacks and 1 with more.
	RareCallbacks int64
	// RareSpan (12 h): rarity reports a tuple only when its gaps at about
	// the period (none folded, none a pause) add up to at least this: it
	// has kept its period around the clock, longer than a working day. A
	// person's visits to a site that look regular by luck — five, six or a
	// dozen of them, every hour or two — fit in their working day; a C2
	// timer does not stop. In the hunted sets every tuple rarity reported
	// that was neither implant nor updater spanned 6–10 h, every implant it
	// reported 17–22 h.
	//
	// Nor may it have paused (a gap of more than MaxMissed + ½ periods):
	// a timer that stopped for a night or a weekend has not kept its
	// period, and a person's visits pause. Every implant rarity reported
	// in 43 hunted sets had no pause; the two other tuples it reported had
	// 1 and 4 (a site visited over 5 days).
	//
	// RareEvidence (0.3): a rare tuple with MinCallbacks but fewer than
	// RareCallbacks callbacks — a 4 h beacon's five callbacks in a day —
	// is reported when its evidence (CountScore) is at least this: four
	// gaps this close by chance have a probability of at most
	// 10^(−10·RareEvidence) = 1 in 1000, and a day of 300 devices has
	// 600–1000 tuples of five callbacks (2000 in a week of 150), so fewer
	// than one a set passes by chance (background traffic's Poisson gaps
	// spread over the whole day, which the span does not exclude).
	RareSpan     time.Duration
	RareEvidence float64
}

// DefaultRobust returns the robust profile's defaults.
func DefaultRobust() RobustParams {
	return RobustParams{
		BurstGap:            2,
		MinCallbacks:        5,
		PrevalenceCallbacks: 3,
		MinPeriod:           4,
		MaxPeriod:           15 * 3600,
		MaxMissed:           4,
		Tolerance:           0.1,
		Threshold:           0.8,
		PrevalenceScore:     0.5,
		PeriodTolerance:     0.25,
		RareThreshold:       0.65,
		RareWindow:          24 * time.Hour,
		RareCallbacks:       6,
		RareSpan:            12 * time.Hour,
		RareEvidence:        0.3,
	}
}

func (r *RobustParams) validate() error {
	switch {
	case r.BurstGap < 0:
		return fmt.Errorf("burst gap must not be negative, got %d", r.BurstGap)
	case r.MinCallbacks < 3:
		return fmt.Errorf("min callbacks must be at least 3, got %d", r.MinCallbacks)
	case r.PrevalenceCallbacks < 3:
		return fmt.Errorf("prevalence callbacks must be at least 3, got %d", r.PrevalenceCallbacks)
	case r.MinPeriod <= float64(r.BurstGap) || r.MaxPeriod < r.MinPeriod:
		return fmt.Errorf("period bounds [%v, %v] must lie above the burst gap %d", r.MinPeriod, r.MaxPeriod, r.BurstGap)
	case r.MaxMissed < 1:
		return fmt.Errorf("max missed must be at least 1, got %d", r.MaxMissed)
	case r.Tolerance <= 0 || r.Tolerance >= 0.5:
		return fmt.Errorf("tolerance must be in (0, 0.5), got %v", r.Tolerance)
	case r.Threshold < 0 || r.Threshold > 1 || r.PrevalenceScore < 0 || r.PrevalenceScore > 1 || r.RareThreshold < 0 || r.RareThreshold > 1 ||
		r.RareEvidence < 0 || r.RareEvidence > 1:
		return fmt.Errorf("threshold %v, rare threshold %v, rare evidence %v and prevalence score %v must be in [0, 1]", r.Threshold, r.RareThreshold, r.RareEvidence, r.PrevalenceScore)
	case r.RareWindow < 0 || r.RareSpan < 0:
		return fmt.Errorf("rare window %s and rare span %s must not be negative", r.RareWindow, r.RareSpan)
	case r.PeriodTolerance < 0 || r.PeriodTolerance >= 1:
		return fmt.Errorf("period tolerance must be in [0, 1), got %v", r.PeriodTolerance)
	}
	return nil
}

// Robust returns the robust profile's parameters: a 7 d window, every
// outbound connection kind and Defender's aggregated reports, public IPv4
// and IPv6, names compared case-insensitively, per-period prevalence.
func Robust() Params {
	p := Seed()
	p.Profile = ProfileRobust
	p.Robust = DefaultRobust()
	p.Lookback = 7 * 24 * time.Hour
	p.TotalEventsThresholdMin = p.Robust.FirstCallbacks() - 1
	p.ActionTypes = []string{
		"ConnectionSuccess", "ConnectionFailed", "ConnectionRequest", "ConnectionAttempt",
		"ConnectionSuccessAggregatedReport", "ConnectionFailedAggregatedReport",
		"ConnectionRequestAggregatedReport", "ConnectionAttemptAggregatedReport",
	}
	return p
}

// FirstCallbacks is the fewest callbacks a tuple needs to be a candidate
// (for prevalence, if not to be reported): PrevalenceCallbacks, or
// MinCallbacks when that is lower.
func (r *RobustParams) FirstCallbacks() int64 { return min(r.PrevalenceCallbacks, r.MinCallbacks) }

// floor is the lowest Score of a candidate: it counts toward prevalence.
func (r *RobustParams) floor() float64 {
	return min(r.PrevalenceScore, r.Threshold, r.RareThreshold)
}

// reportable reports whether a candidate of a destination on devices
// devices, its period group under the cap, is reported.
func (p *Params) reportable(s *RobustStats, devices int64) bool {
	r := &p.Robust
	if s.Callbacks < r.MinCallbacks {
		return false // counts toward prevalence only
	}
	return s.Score >= r.Threshold ||
		(devices == 1 && s.Score >= r.RareThreshold && p.Lookback >= r.RareWindow &&
			s.Span >= r.RareSpan.Seconds() && s.Pauses == 0 && (s.Callbacks >= r.RareCallbacks || s.CountScore >= r.RareEvidence) &&
			s.regularity() >= r.Threshold)
}

// robustSameSelection is SameSelection for robust: robustSelect reads a
// candidate's period (to group) and, through reportable, which side of
// each threshold its statistics are on. It must follow reportable.
func (p *Params) robustSameSelection(a, b *RobustStats) bool {
	r := &p.Robust
	return a.Period == b.Period &&
		(a.Callbacks >= r.MinCallbacks) == (b.Callbacks >= r.MinCallbacks) &&
		(a.Score >= r.Threshold) == (b.Score >= r.Threshold) &&
		(a.Score >= r.RareThreshold) == (b.Score >= r.RareThreshold) &&
		(a.Callbacks >= r.RareCallbacks) == (b.Callbacks >= r.RareCallbacks) &&
		(a.Span >= r.RareSpan.Seconds()) == (b.Span >= r.RareSpan.Seconds()) &&
		(a.Pauses == 0) == (b.Pauses == 0) &&
		(a.CountScore >= r.RareEvidence) == (b.CountScore >= r.RareEvidence) &&
		(a.regularity() >= r.Threshold) == (b.regularity() >= r.Threshold)
}

// regularity is the Score without its evidence term, rescaled to [0, 1]:
// how regular the gaps are, whatever their number. Rarity stands in for
// evidence (few gaps), not for regularity: a rare tuple is reported when
// its gaps are as regular as a reported beacon's. Long-lived tuples alone
// on a destination whose gaps are loosely periodic (telemetry, a browser
// tab) have evidence enough and score low on regularity; in a replayed
// week of 150 devices they were 8 of the 10 tuples rarity alerted.
func (s *RobustStats) regularity() float64 {
	return (weightDispersion*s.Dispersion + weightSupport*s.Support + weightCoverage*s.Coverage) / (1 - weightCount)
}

// DefaultWarmup is how much event time a streaming partition waits before
// it alerts, unless told: seed waits for a full window (the query is only
// ever run over one), robust for a day at most — its prevalence per period
// sees every fleet service polling at least every 4.8 h with MinCallbacks
// by then, and waiting for a 7 d window would keep a new deployment silent
// for a week.
func (p *Params) DefaultWarmup() time.Duration {
	if p.Profile == ProfileRobust {
		return min(p.Lookback, 24*time.Hour)
	}
	return p.Lookback
}

// ProfileParams returns the defaults of a profile by name.
func ProfileParams(name string) (Params, error) {
	switch name {
	case ProfileSeed, "":
		return Seed(), nil
	case ProfileRobust:
		return Robust(), nil
	}
	return Params{}, fmt.Errorf("unknown profile %q (want %s or %s)", name, ProfileSeed, ProfileRobust)
}

// Score weights (docs/robust.md): they sum to 1, so Score is in [0, 1].
const (
	weightDispersion = 0.30
	weightSupport    = 0.25
	weightCount      = 0.35
	weightCoverage   = 0.10
	// evidenceFull is −log₁₀ of the chance probability at which the
	// evidence sub-score reaches 1.
	evidenceFull = 10
	// nullRange is the natural-log width of the range random gaps spread
	// over in the evidence model (a factor of e³ ≈ 20).
	nullRange = 3.0
	// timePrecision (seconds) and minSpread bound the half-spread evidence
	// believes from below: whole-second deltas cannot be more precise than
	// about a second and a half, relative to the period, and no timer is
	// more precise than 0.3 % — so four gaps of exactly 4 h are strong
	// evidence, four gaps of exactly 5 s are not.
	timePrecision = 1.5
	minSpread     = 0.003
	// jitterBand is the widest jitter frameworks use (±50 %): a gap within
	// it of the period supports the period.
	jitterBand = 0.5
	// multipleBand is how close to k × period a gap must be to be k−1
	// missed callbacks, in periods.
	multipleBand = 0.2
)

// RobustStats is the robust profile's analysis of one tuple.
type RobustStats struct {
	On         bool    // set by the robust profile
	Score      float64 // weighted sum of the sub-scores, in [0, 1]
	Dispersion float64 // 1 − (P90 − P10)/(2·period) of the gaps, missed callbacks folded
	Support    float64 // gaps (pauses aside) within ±50 % of the period, missed callbacks folded, over gaps + missed
	CountScore float64 // evidence: how unlikely this many gaps this close are by chance (see evidence)
	Coverage   float64 // share of the time between callbacks spent in supporting gaps
	Period     float64 // median of the folded gaps, seconds
	Period2    float64 // a second period (the sleep changed), or 0
	MAD        float64 // their median absolute deviation, seconds
	Callbacks  int64   // distinct timestamps minus those within BurstGap of the previous
	Merged     int64   // deltas of at most BurstGap (bursts, near-duplicates)
	Gaps       int64   // deltas between callbacks
	OnTime     int64   // gaps within Tolerance of the period
	Supported  int64   // gaps within ±50 % of the period, missed callbacks folded
	Missed     int64   // callbacks missing inside gaps of about k × period
	Pauses     int64   // gaps longer than MaxMissed + ½ periods
	LongestGap int64   // seconds
	// Span is the time, in seconds, in gaps within ±50 % of the period that
	// are neither folded (missed callbacks) nor the second period's: how
	// long the tuple has kept its period (RareSpan).
	Span float64
	// PeriodDevices is the number of devices whose candidates poll this
	// destination with about this period (set by SelectDestination).
	PeriodDevices int64
	// GapHistogram is the row's compact histogram of gaps (set by NewRow).
	GapHistogram []Bin
	foldedGaps   int64   // gaps of k ≥ 2 periods (missed callbacks)
	secondGaps   int64   // gaps the second period explains
	tolerance    float64 // RobustParams.Tolerance it was decided with, for Reasons
	threshold    float64 // RobustParams.Threshold: a row under it was reported by rarity, for Reasons
}

// Severity maps a score to low, medium, high or critical.
func (r *RobustStats) Severity() string {
	switch {
	case r.Score >= 0.95:
		return "critical"
	case r.Score >= 0.88:
		return "high"
	case r.Score >= 0.8:
		return "medium"
	}
	return "low"
}

// robustConnection is the robust row filter: an outbound connection kind
// (ActionTypes) to a public unicast address, IPv4 or IPv6.
func (p *Params) robustConnection(e *Event) bool {
	return p.ActionTypeOK(e.ActionType) && PublicIP(e.RemoteIP)
}

// PublicIP reports whether s is a public unicast address: not private
// (RFC 1918, ULA), loopback, link-local, multicast, unspecified, CGNAT
// (100.64/10), documentation, benchmarking, reserved or broadcast. An
// IPv4-mapped IPv6 address is judged as its IPv4 address.
func PublicIP(s string) bool {
	if v, ok := canonicalIPv4(s); ok {
		return publicIPv4(v) // every event asks: most are dotted quads
	}
	return publicAddr(s)
}

// publicIPv4 is publicAddr for an IPv4 address's value, without parsing
// (TestPublicIPv4 holds the two to the same answer): not 0/8, 10/8,
// 127/8, 169.254/16, 172.16/12, 192.168/16, multicast or 240/4 (broadcast
// included), nor one of nonPublic4.
func publicIPv4(v uint32) bool {
	switch {
	case v>>24 == 0, v>>24 == 10, v>>24 == 127, v>>28 >= 0xe:
		return false
	case v>>16 == 169<<8|254, v>>16 == 192<<8|168, v>>20 == 172<<4|1:
		return false
	case v>>22 == (100<<8|64)>>6, v>>17 == (198<<8|18)>>1: // 100.64/10, 198.18/15
		return false
	}
	switch v >> 8 {
	case 192<<16 | 0<<8 | 0, 192<<16 | 0<<8 | 2, 198<<16 | 51<<8 | 100, 203<<16 | 0<<8 | 113:
		return false
	}
	return true
}

// publicAddr is PublicIP for any spelling netip reads.
func publicAddr(s string) bool {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return false
	}
	a = a.Unmap()
	if !a.IsGlobalUnicast() || a.IsPrivate() {
		return false
	}
	nonPublic := nonPublic6
	if a.Is4() {
		nonPublic = nonPublic4 // every event asks: test only its family's
	}
	for _, pf := range nonPublic {
		if pf.Contains(a) {
			return false
		}
	}
	return true
}

var (
	nonPublic4 = prefixes("0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4")
	nonPublic6 = prefixes("100::/64", "2001:db8::/32", "3fff::/20", "fec0::/10", "::/8")
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// DomainIP reports whether RemoteIP can be a beacon's under the profile,
// so that its domains (RemoteUrl) are worth keeping for the Domains
// column: seed's public IPv4 (the package's DomainIP), robust's public
// IPv4 and IPv6 (PublicIP). Hunt, pkg/stream's ingest and pkg/state ask it.
func (p *Params) DomainIP(ip string) bool {
	if p.Profile == ProfileRobust {
		return PublicIP(ip)
	}
	return DomainIP(ip)
}

// TupleOf returns the event's group key under the profile: robust compares
// process and account names case-insensitively, so it lower-cases them.
func (p *Params) TupleOf(e *Event) Tuple {
	t := e.Tuple()
	if p.Profile == ProfileRobust {
		t.AccountName = toLower(t.AccountName)
		t.AccountDomain = toLower(t.AccountDomain)
		t.FileName = toLower(t.FileName)
	}
	return t
}

// toLower is strings.ToLower, with the common case (ASCII without an
// upper-case letter: the string itself) found eight bytes a step; ingest
// asks it of three columns of every connection.
func toLower(s string) string {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	p := unsafe.Pointer(unsafe.StringData(s))
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := load64at(p, i)
		// With every byte below 0x80 (else w&hi is set), b+0x3f has its
		// high bit set for b >= 'A', b+0x25 for b > 'Z', and no byte
		// carries into the next.
		if (w|(w+lo*0x3f)&^(w+lo*0x25))&hi != 0 {
			return strings.ToLower(s)
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// Normalize rewrites the event's tuple columns as TupleOf forms them, for
// paths that carry the event on (pkg/stream's ingest).
func (p *Params) Normalize(e *Event) {
	if p.Profile != ProfileRobust {
		return
	}
	e.AccountName, e.AccountDomain, e.FileName = toLower(e.AccountName), toLower(e.AccountDomain), toLower(e.FileName)
}

// ConnectionOf is Connection(e) for an event whose DomainIP(e.RemoteIP)
// is known (domainIP): ingest asks both of every event, and each profile's
// Connection holds its DomainIP's test of the address (robust: PublicIP;
// seed: not empty, 0.0.0.0 or private IPv4), which is then not asked
// twice.
func (p *Params) ConnectionOf(e *Event, domainIP bool) bool {
	if !domainIP {
		return false
	}
	if p.Profile == ProfileRobust {
		return p.ActionTypeOK(e.ActionType)
	}
	switch e.RemoteIPType {
	case "Reserved", "Private", "LinkLocal", "Loopback":
		return false
	}
	return p.ActionTypeOK(e.ActionType)
}

// wbin is a weighted value: count gaps of value v (seconds).
type wbin struct {
	v float64
	c int64
}

// wbinScratch holds robustCandidate's lists between calls: mid and irr
// are foldSorted's folded and irregular gaps, k its multiples.
type wbinScratch struct {
	raw, folded, other, dev, tmp, mid, irr []wbin
	k                                      []int64
}

var wbinPool = sync.Pool{New: func() any { return new(wbinScratch) }}

// compareNoNaN is cmp.Compare for floats that are never NaN (gaps,
// periods), without its NaN tests: the sorts of robust's analysis run at
// every evaluation point of every changed tuple.
func compareNoNaN(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sortWbins sorts by value, using tmp (returned, grown) as the merge's
// buffer. Only the values of a sorted list are ever read (weightedAt), so
// the order of equal values does not matter; none is NaN. Folded gaps are
// a few ascending runs — the gaps under 1.5 periods and the irregular ones
// in raw order, and those folded from each multiple — merged here in
// linear passes rather than sorted.
func sortWbins(vs, tmp []wbin) []wbin {
	var starts [maxRuns + 1]int
	runs := append(starts[:0], 0)
	for i := 1; i < len(vs); i++ {
		if vs[i].v < vs[i-1].v {
			if len(runs) == maxRuns {
				slices.SortFunc(vs, func(a, b wbin) int { return compareNoNaN(a.v, b.v) })
				return tmp
			}
			runs = append(runs, i)
		}
	}
	if len(runs) == 1 {
		return tmp
	}
	if len(vs) <= insertionWbins {
		// A short list (foldSorted's folded gaps): sorted in place,
		// for less than the merges' set-up and copying.
		for i := 1; i < len(vs); i++ {
			for j := i; j > 0 && vs[j].v < vs[j-1].v; j-- {
				vs[j], vs[j-1] = vs[j-1], vs[j]
			}
		}
		return tmp
	}
	tmp = slices.Grow(tmp[:0], len(vs))[:len(vs)]
	src, dst := vs, tmp
	for len(runs) > 1 {
		next := runs[:0] // written behind the reads
		for r := 0; r < len(runs); r += 2 {
			lo, mid, hi := runs[r], len(vs), len(vs)
			if r+1 < len(runs) {
				mid = runs[r+1]
				if r+2 < len(runs) {
					hi = runs[r+2]
				}
			}
			mergeWbins(dst[lo:hi], src[lo:mid], src[mid:hi])
			next = append(next, lo)
		}
		runs = next
		src, dst = dst, src
	}
	if &src[0] != &vs[0] {
		copy(vs, src)
	}
	return tmp
}

// maxRuns is the most ascending runs sortWbins merges; more are sorted.
// Lists of up to insertionWbins values of more than one run are sorted
// by insertion.
const (
	maxRuns        = 8
	insertionWbins = 16
)

// mergeWbins merges ascending a and b into dst (len(a)+len(b)).
func mergeWbins(dst, a, b []wbin) {
	// The values of a below b's first, and those left once one list is
	// done, are copied: robustCandidate merges the gaps of one period
	// with the few folded ones, most of them below or above.
	i, j := 0, 0
	if len(b) > 0 {
		for i < len(a) && a[i].v <= b[0].v {
			i++
		}
		copy(dst, a[:i])
	}
	for k := i; k < len(dst); k++ {
		if j == len(b) {
			copy(dst[k:], a[i:])
			return
		}
		if i == len(a) {
			copy(dst[k:], b[j:])
			return
		}
		if a[i].v <= b[j].v {
			dst[k] = a[i]
			i++
		} else {
			dst[k] = b[j]
			j++
		}
	}
}

// absDeviations appends |v − center| of sorted values to dst, sorted: the
// values below center give a descending run, those above an ascending one,
// merged.
func absDeviations(dst, sorted []wbin, center float64) []wbin {
	mid, _ := slices.BinarySearchFunc(sorted, center, func(b wbin, c float64) int {
		if b.v < c {
			return -1
		}
		return 1
	})
	lo, hi := mid-1, mid
	for lo >= 0 || hi < len(sorted) {
		if hi >= len(sorted) || (lo >= 0 && center-sorted[lo].v <= sorted[hi].v-center) {
			dst = append(dst, wbin{math.Abs(sorted[lo].v - center), sorted[lo].c})
			lo--
		} else {
			dst = append(dst, wbin{math.Abs(sorted[hi].v - center), sorted[hi].c})
			hi++
		}
	}
	return dst
}

// weightedMedian returns the lower median of sorted weighted values.
func weightedMedian(vs []wbin, n int64) float64 { return weightedAt(vs, (n-1)/2) }

// weightedQuantile is the q-quantile of sorted weighted values, linearly
// interpolated between closest ranks (index q·(n−1)).
func weightedQuantile(vs []wbin, n int64, q float64) float64 {
	pos := q * float64(n-1)
	k := int64(pos)
	lo, hi := weightedAt(vs, k), weightedAt(vs, min(k+1, n-1))
	return interpolate(lo, hi, pos-float64(k))
}

// weightedAt is the k-th smallest (0-based) of sorted weighted values.
func weightedAt(vs []wbin, k int64) float64 {
	for _, b := range vs {
		if k < b.c {
			return b.v
		}
		k -= b.c
	}
	return vs[len(vs)-1].v
}

// robustCandidate analyses a tuple's deltas (docs/robust.md):
//  1. deltas ≤ BurstGap are inside a callback and merged;
//  2. the other deltas are gaps; P₀ is their median;
//  3. each gap d is folded against P: d/P < 1.5 stays d; d ≈ k·P (k =
//     2..MaxMissed, within a fifth of a period) becomes d − (k−1)·P with
//     k−1 missed callbacks; longer than MaxMissed+½ periods is a pause (left out); the
//     rest stays d (irregular);
//  4. P is the median of the folded gaps (steps 3–4 run twice, from P₀);
//  5. sub-scores and the weighted Score.
//
// A tuple is a candidate when it has MinCallbacks, a period within bounds
// and Score ≥ PrevalenceScore (it then counts toward prevalence);
// SelectDestination keeps those with Score ≥ Threshold.
// robustEarlyExit is false only in TestRobustEarlyExit, which holds the
// early rejection below to the whole analysis.
var robustEarlyExit = true

func (p *Params) robustCandidate(distinct int64, s *Summary) (Stats, bool) {
	rp := &p.Robust
	if distinct <= p.TotalEventsThresholdMin || s.N < 2 {
		return Stats{}, false
	}
	// The deltas within BurstGap are the histogram's first bins: the gaps
	// are the others, counted from N without reading them.
	first, merged := len(s.Hist), int64(0)
	for i, b := range s.Hist {
		if b.Delta > rp.BurstGap {
			first = i
			break
		}
		merged += b.Count
	}
	gaps := s.Hist[first:]
	nGaps := s.N - merged
	r := RobustStats{On: true, Gaps: nGaps, Merged: merged, tolerance: rp.Tolerance, threshold: rp.Threshold}
	r.Callbacks = distinct - r.Merged
	if r.Callbacks < rp.FirstCallbacks() || nGaps < 2 {
		return Stats{}, false
	}
	r.LongestGap = gaps[len(gaps)-1].Delta
	// The three lists are scratch: a stream asks again about every tuple
	// that changed, at every evaluation point.
	sc := wbinPool.Get().(*wbinScratch)
	defer wbinPool.Put(sc)
	raw := slices.Grow(sc.raw[:0], len(gaps))
	for _, b := range gaps {
		raw = append(raw, wbin{float64(b.Delta), b.Count})
	}
	sc.raw = raw
	period := weightedMedian(raw, nGaps)
	folded := slices.Grow(sc.folded[:0], len(gaps))
	var kept int64
	// With robustFastFold, the fold that gave the period classified the
	// gaps between whole and hi against it (sc.k): when it is the final
	// period, the second period's and Coverage's loops read the
	// classification instead of asking multiple about each gap again.
	whole, hi, foldedAt := 0, 0, math.NaN()
	for i, p0 := 0, period; i < 2; i++ {
		if i == 1 && robustFastFold && period == p0 {
			// The second fold would fold against the same period again:
			// the same list, counts and median (a steady beacon's gaps
			// mostly stay whole, and its median with them).
			break
		}
		if robustFastFold {
			folded, kept, whole, hi = rp.foldSorted(raw, period, folded[:0], sc, &r)
		} else {
			folded, kept = rp.fold(raw, period, 0, folded[:0], &r)
			sc.tmp = sortWbins(folded, sc.tmp)
		}
		if kept == 0 {
			sc.folded = folded
			return Stats{}, false
		}
		foldedAt = period
		period = weightedMedian(folded, kept)
	}
	sc.folded = folded
	if period < rp.MinPeriod || period > rp.MaxPeriod {
		return Stats{}, false
	}
	r.Period = period
	classified := robustFastFold && foldedAt == period // sc.k[i-whole] is raw[i]'s multiple k, 0 none, for i in [whole, hi)
	if !classified {
		whole = rp.whole(raw, period) // raw[:whole] are gaps of one period (multiple's k = 1)
	}
	// A second period (the sleep changed inside the window): the median of
	// the gaps the first does not explain, if they are a twentieth of all and
	// at least twelve (a regime needs evidence of its own).
	other := sc.other[:0]
	var nOther int64
	for i, b := range raw[whole:] {
		var ok bool
		switch {
		case !classified:
			_, ok = rp.multiple(b.v, period)
		case whole+i < hi:
			ok = sc.k[i] > 0
		} // beyond hi: more than MaxMissed periods, no multiple
		if !ok && b.v <= rp.MaxPeriod {
			other = append(other, b)
			nOther += b.c
		}
	}
	sc.other = other
	if nOther >= 12 && nOther*20 >= nGaps {
		// The regime must be one: its gaps within a ±45 % interdecile
		// range of their median (a random process's long tail is wider).
		p2 := weightedMedian(other, nOther)
		idr2 := weightedQuantile(other, nOther, 0.9) - weightedQuantile(other, nOther, 0.1)
		if p2 > 1.5*period && idr2 <= 0.9*p2 {
			r.Period2 = p2
			folded, kept = rp.fold(raw, period, p2, folded[:0], &r)
			sc.folded = folded
			sc.tmp = sortWbins(folded, sc.tmp)
			classified = false // Coverage's explain asks the second period about the gaps the first leaves
		}
	}
	var onTime, supported int64
	var idr float64
	if robustFastFold {
		onTime, supported, idr = foldedScan(folded, kept, period, rp.Tolerance)
	} else {
		for _, b := range folded {
			d := math.Abs(b.v - period)
			if d <= rp.Tolerance*period {
				onTime += b.c
			}
			if d <= jitterBand*period {
				supported += b.c
			}
		}
		idr = weightedQuantile(folded, kept, 0.9) - weightedQuantile(folded, kept, 0.1)
	}
	r.OnTime, r.Supported = onTime, supported
	// Dispersion from the interdecile range: with many gaps a few odd ones
	// do not move it; with few gaps every one must agree.
	r.Dispersion = clamp01(1 - idr/(2*period))
	// Every missed callback is an expected one not seen, every pause a
	// stretch without the period.
	r.Support = float64(supported) / float64(kept+r.Missed+r.Pauses)
	// Evidence does not count folded gaps: they support the period (in
	// Support and Coverage), but a random gap lands near one of MaxMissed
	// multiples more often than near the period, so they add no evidence.
	// Nor do the second period's gaps: that period is a free choice fitted to
	// the gaps the first leaves, so their spread is no surprise.
	r.CountScore = evidence(supported-r.foldedGaps-r.secondGaps, kept-r.foldedGaps-r.secondGaps, max(idr/(2*period), timePrecision/period))
	// Coverage is at most 1: a tuple that cannot reach the floor even so
	// is rejected before its coverage and MAD are computed (a stream asks
	// again at every point about tuples the Score rejects). The sum is the
	// Score's term by term and rounding is monotone, so this rejects
	// exactly tuples the Score would.
	if robustEarlyExit && clamp01(weightDispersion*r.Dispersion+weightSupport*r.Support+
		weightCount*r.CountScore+weightCoverage*1) < rp.floor() {
		return Stats{}, false
	}
	if robustFastFold {
		r.MAD = medianDeviation(folded, kept, period)
	} else {
		sc.dev = absDeviations(sc.dev[:0], folded, period)
		r.MAD = weightedMedian(sc.dev, kept)
	}
	// Coverage: time in supporting gaps over the time between callbacks
	// that is not a pause. A pause (working hours, overnight) is already
	// counted against the period in Support; counting its hours again here
	// would score a working-hours implant by the length of its nights.
	var covered, total float64
	pause := (float64(rp.MaxMissed) + 0.5) * max(period, r.Period2)
	for i, b := range raw {
		v, ok := b.v, true // explain's k = 1 of the first period
		switch {
		case i < whole:
		case !classified:
			_, v, ok = rp.explain(b.v, period, r.Period2)
		case i < hi:
			// explain with no second period: multiple's fold, or d.
			if k := sc.k[i-whole]; k > 0 {
				v = b.v - float64(k-1)*period
			} else {
				ok = false
			}
		default:
			ok = false
		}
		if !ok && b.v > pause {
			continue
		}
		total += b.v * float64(b.c)
		if ok && math.Abs(v-period) <= jitterBand*period {
			covered += b.v * float64(b.c)
			if b.v < 1.5*period { // k = 1 of the first period
				r.Span += b.v * float64(b.c)
			}
		}
	}
	if total > 0 {
		r.Coverage = clamp01(covered / total)
	}
	r.Score = clamp01(weightDispersion*r.Dispersion + weightSupport*r.Support +
		weightCount*r.CountScore + weightCoverage*r.Coverage)
	if r.Score < rp.floor() {
		return Stats{}, false
	}
	st := Stats{Count: s.N, Min: s.Hist[0].Delta, Max: s.Hist[len(s.Hist)-1].Delta}
	st.Avg = float64(s.Sum) / float64(s.N)
	st.Variance = sampleVariance(s.N, s.Sum, s.SumSq)
	st.Stdev = math.Sqrt(st.Variance)
	st.Jitter = (st.Stdev / st.Avg) * 100
	st.R = r
	return st, true
}

// multiple returns k when d is about k × period: k = 1 for d < 1.5
// periods, k = round(d/period) ≤ MaxMissed within multipleBand periods.
func (rp *RobustParams) multiple(d, period float64) (int64, bool) {
	x := d / period
	if x < 1.5 {
		return 1, true
	}
	k := math.Round(x)
	if k <= float64(rp.MaxMissed) && math.Abs(x-k) <= multipleBand {
		return int64(k), true
	}
	return 0, false
}

// explain folds one gap d against the period (and the second period, when
// not 0): k is the number of periods it spans, v its folded value on the
// first period's scale. The deviation from k periods stays whole, so
// folding cannot make a random gap look punctual; a gap of the second
// period keeps its relative deviation.
func (rp *RobustParams) explain(d, period, period2 float64) (k int64, v float64, ok bool) {
	if k, ok := rp.multiple(d, period); ok {
		return k, d - float64(k-1)*period, true
	}
	if period2 > 0 {
		if k, ok := rp.multiple(d, period2); ok {
			return k, period + (d-float64(k)*period2)*period/period2, true
		}
	}
	return 0, d, false
}

// robustFastFold is false only in TestRobustFastFold, which holds
// foldSorted, whole, the skipped second fold and the classification
// reused, foldedScan and medianDeviation to fold, multiple asked about
// every gap, a sort of the folded list, and the plain loops over it.
var robustFastFold = true

// whole returns how many of the sorted raw gaps are under 1.5 periods
// (multiple's k = 1, d/period < 1.5): d/period is monotone in d, so they
// are a prefix, found without dividing every gap.
func (rp *RobustParams) whole(raw []wbin, period float64) int {
	if !robustFastFold {
		return 0
	}
	return sort.Search(len(raw), func(i int) bool { return raw[i].v/period >= 1.5 })
}

// foldSorted is fold against the first period alone (period2 0) for
// sorted raw gaps, followed by sortWbins, without sorting the whole list:
// the gaps under 1.5 periods (raw[:whole], multiple's k = 1) are copied,
// those of more than MaxMissed periods (raw[hi:], round(d/period) >
// MaxMissed, a suffix too) are pauses or irregular by their length alone
// (pause is monotone in d), and only the gaps between are folded one by
// one. A folded gap is within a fifth of a period of the period, an
// irregular one 1.5 periods or more: the sorted list is the copied gaps
// merged with the folded ones, then the irregular ones in raw order. It
// records each gap's multiple k between whole and hi in sc.k (0: none).
func (rp *RobustParams) foldSorted(raw []wbin, period float64, dst []wbin, sc *wbinScratch, r *RobustStats) (folded []wbin, n int64, whole, hi int) {
	r.Missed, r.Pauses, r.foldedGaps, r.secondGaps = 0, 0, 0, 0
	lo := rp.whole(raw, period)
	maxK := float64(rp.MaxMissed)
	hi = lo + sort.Search(len(raw)-lo, func(i int) bool { return math.Round(raw[lo+i].v/period) > maxK })
	for _, b := range raw[:lo] {
		n += b.c
	}
	pause := (float64(rp.MaxMissed) + 0.5) * period
	mid, irr, ks := sc.mid[:0], sc.irr[:0], sc.k[:0]
	for _, b := range raw[lo:hi] {
		k, ok := rp.multiple(b.v, period)
		ks = append(ks, k) // 0 when not ok
		switch {
		case ok:
			mid = append(mid, wbin{b.v - float64(k-1)*period, b.c})
			r.Missed += (k - 1) * b.c
			if k > 1 {
				r.foldedGaps += b.c
			}
		case b.v > pause:
			r.Pauses += b.c
			continue
		default:
			irr = append(irr, b)
		}
		n += b.c
	}
	// The folded gaps are a run per k, each ascending.
	sc.tmp = sortWbins(mid, sc.tmp)
	dst = slices.Grow(dst[:0], lo+len(mid)+len(irr)+len(raw)-hi)[:lo+len(mid)]
	mergeWbins(dst, raw[:lo], mid)
	dst = append(dst, irr...)
	for _, b := range raw[hi:] { // no multiple: a pause, or irregular
		if b.v > pause {
			r.Pauses += b.c
			continue
		}
		dst = append(dst, b)
		n += b.c
	}
	sc.mid, sc.irr, sc.k = mid, irr, ks
	return dst, n, lo, hi
}

// foldedScan returns, over sorted folded gaps (n in all), those within
// tolerance and within jitterBand of the period, and their interdecile
// range weightedQuantile(0.9) − weightedQuantile(0.1), in one pass.
func foldedScan(folded []wbin, n int64, period, tolerance float64) (onTime, supported int64, idr float64) {
	// weightedQuantile's ranks: k and min(k+1, n−1) for each quantile,
	// found in ascending order (k10+1 passes k90 only when k10 = k90, and
	// then both pairs are the same ranks).
	pos10, pos90 := 0.1*float64(n-1), 0.9*float64(n-1)
	k10, k90 := int64(pos10), int64(pos90)
	ranks := [4]int64{k10, min(k10+1, n-1), k90, min(k90+1, n-1)}
	swapped := ranks[1] > ranks[2]
	if swapped {
		ranks[1], ranks[2] = ranks[2], ranks[1]
	}
	last := folded[len(folded)-1].v
	at := [4]float64{last, last, last, last} // weightedAt past the end: the last value
	next, seen := 0, int64(0)                // ranks found; gaps up to this bin
	for _, b := range folded {
		d := math.Abs(b.v - period)
		if d <= tolerance*period {
			onTime += b.c
		}
		if d <= jitterBand*period {
			supported += b.c
		}
		seen += b.c
		for next < len(ranks) && ranks[next] < seen {
			at[next] = b.v
			next++
		}
	}
	if swapped {
		at[1], at[2] = at[2], at[1]
	}
	q90 := interpolate(at[2], at[3], pos90-float64(k90))
	q10 := interpolate(at[0], at[1], pos10-float64(k10))
	return onTime, supported, q90 - q10
}

// medianDeviation is weightedMedian(absDeviations(sorted, center), n): it
// walks the deviations in absDeviations' order, outward from center, and
// stops at the median's rank instead of listing them all.
func medianDeviation(sorted []wbin, n int64, center float64) float64 {
	k := (n - 1) / 2
	mid, _ := slices.BinarySearchFunc(sorted, center, func(b wbin, c float64) int {
		if b.v < c {
			return -1
		}
		return 1
	})
	lo, hi := mid-1, mid
	var v float64
	for lo >= 0 || hi < len(sorted) {
		var c int64
		if hi >= len(sorted) || (lo >= 0 && center-sorted[lo].v <= sorted[hi].v-center) {
			v, c = math.Abs(sorted[lo].v-center), sorted[lo].c
			lo--
		} else {
			v, c = math.Abs(sorted[hi].v-center), sorted[hi].c
			hi++
		}
		if k < c {
			return v
		}
		k -= c
	}
	return v
}

// fold folds raw gaps against period (step 3 of robustCandidate) into dst
// and returns it with the number of gaps it holds; it sets r's Missed and
// Pauses.
func (rp *RobustParams) fold(raw []wbin, period, period2 float64, dst []wbin, r *RobustStats) ([]wbin, int64) {
	r.Missed, r.Pauses, r.foldedGaps, r.secondGaps = 0, 0, 0, 0
	var n int64
	pause := (float64(rp.MaxMissed) + 0.5) * max(period, period2)
	for _, b := range raw {
		// explain, which also tells which period explained the gap.
		k, ok := rp.multiple(b.v, period)
		first, v := ok, b.v-float64(k-1)*period
		if !ok && period2 > 0 {
			if k, ok = rp.multiple(b.v, period2); ok {
				v = period + (b.v-float64(k)*period2)*period/period2
			}
		}
		switch {
		case ok:
			dst = append(dst, wbin{v, b.c})
			r.Missed += (k - 1) * b.c
			if !first {
				r.secondGaps += b.c
			} else if k > 1 {
				r.foldedGaps += b.c
			}
		case b.v > pause:
			r.Pauses += b.c
			continue
		default:
			dst = append(dst, b) // irregular: counts against the period
		}
		n += b.c
	}
	return dst, n
}

// evidence scores n of N gaps within a relative half-spread w of the
// period against chance: if gaps were spread evenly over a log range of
// width nullRange, one would fall within ±w of a given value with
// probability q = 2w/nullRange, and at least n of N within ±w of one of
// them with probability about p = N·P(Bin(N−1, q) ≥ n−1), bounded by
// Chernoff as N·exp(−(N−1)·KL((n−1)/(N−1) ‖ q)) — which is N·q^(N−1) when
// every gap agrees (n = N). The sub-score is −log₁₀(p)/evidenceFull,
// clamped to [0, 1]: five gaps within 2 % give 0.68, six within 15 % 0.42,
// a hundred within 40 % 1. It is what makes a few jittery gaps (a person
// visiting a site six times a day) weigh less than many, or than a few
// exact ones; and the gaps that do not agree count against it, so that
// a Poisson process's 46 gaps, 18 of them within ±34 % of its median
// (about what chance puts there), are not evidence (TestRobustEvidence).
func evidence(n, total int64, w float64) float64 {
	if n < 2 {
		return 0
	}
	total = max(total, n)
	w = math.Max(w, minSpread)
	q := math.Min(2*w/nullRange, 1)
	if q >= 1 {
		return 0
	}
	a := float64(n-1) / float64(total-1)
	if a <= q {
		return 0
	}
	kl := a * math.Log(a/q)
	if a < 1 {
		kl += (1 - a) * math.Log((1-a)/(1-q))
	}
	lp := math.Log10(float64(total)) - float64(total-1)*kl/math.Ln10
	return clamp01(-lp / evidenceFull)
}

// robustSelect is SelectDestination for robust: candidates are grouped by
// period (sorted, a new group where a period exceeds the previous by more
// than PeriodTolerance); a group on more than CompromisedDeviceCountMax
// devices is a fleet service for that period and none of it is kept; of
// the others, those with MinCallbacks and Score ≥ Threshold are, and those
// with Score ≥ RareThreshold when their device is the destination's only
// one. devices is the destination's device count over all candidates,
// those counting toward prevalence only (fewer than MinCallbacks) included.
func (p *Params) robustSelect(cands []Candidate, dev []int32, ndev int, hint *[]int32) (kept []int, devices int64) {
	switch len(cands) {
	case 0:
		return nil, 0
	case 1: // one group of one device
		c := &cands[0]
		c.R.PeriodDevices = 1
		if 1 <= p.CompromisedDeviceCountMax && p.reportable(&c.R, 1) {
			kept = []int{0}
		}
		return kept, 1
	}
	// A stream asks again at every evaluation point where a candidate of
	// the destination changed: the lists are scratch, each device is
	// numbered once (devices counted by stamping, not by sorting
	// DeviceIds), and the candidates are ordered by period alone (equal
	// periods fall into one group whatever their order, and kept is
	// sorted by index).
	sc := selectPool.Get().(*selectScratch)
	defer sc.put()
	switch {
	case dev != nil:
		// Numbered by the caller: the devices are counted by stamping.
		// With a hint, the candidates are listed in its order (the last
		// sort's), those it does not name after: the sort below then
		// moves only the candidates whose period moved.
		sc.seen = slices.Grow(sc.seen[:0], ndev)[:ndev]
		clear(sc.seen)
		add := func(i int32) {
			d := dev[i]
			if sc.seen[d] == 0 {
				sc.seen[d] = 1
				devices++
			}
			sc.order = append(sc.order, byPeriod{cands[i].R.Period, i, d})
		}
		if hint != nil {
			sc.listed = slices.Grow(sc.listed[:0], len(cands))[:len(cands)]
			clear(sc.listed)
			for _, i := range *hint {
				if i >= 0 && int(i) < len(cands) && !sc.listed[i] {
					sc.listed[i] = true
					add(i)
				}
			}
			for i := range cands {
				if !sc.listed[i] {
					add(int32(i))
				}
			}
		} else {
			for i := range cands {
				add(int32(i))
			}
		}
	case len(cands) <= smallSelect:
		// Few candidates: their devices are found by comparing DeviceIds
		// with the distinct ones so far (numbered in the same order), which
		// costs less than hashing each.
		for i := range cands {
			id := cands[i].DeviceId
			d := int32(slices.Index(sc.small, id))
			if d < 0 {
				d = int32(len(sc.small))
				sc.small = append(sc.small, id)
			}
			sc.order = append(sc.order, byPeriod{cands[i].R.Period, int32(i), d})
		}
		devices = int64(len(sc.small))
		ndev = int(devices)
	default:
		for i := range cands {
			id := cands[i].DeviceId
			d, ok := sc.ids[id]
			if !ok {
				d = int32(len(sc.ids))
				sc.ids[id] = d
			}
			sc.order = append(sc.order, byPeriod{cands[i].R.Period, int32(i), d})
		}
		devices = int64(len(sc.ids))
		ndev = int(devices)
	}
	sc.seen = slices.Grow(sc.seen[:0], ndev)[:ndev]
	clear(sc.seen)
	order := sc.order
	if hint == nil || !sortNearly(order) {
		slices.SortFunc(order, func(a, b byPeriod) int { return compareNoNaN(a.period, b.period) })
	}
	if hint != nil {
		*hint = slices.Grow((*hint)[:0], len(order))
		for _, o := range order {
			*hint = append(*hint, o.i)
		}
	}
	for lo, g := 0, int32(1); lo < len(order); g++ {
		hi := lo + 1
		for hi < len(order) && order[hi].period <= order[hi-1].period*(1+p.Robust.PeriodTolerance) {
			hi++
		}
		// The group's distinct devices: seen[d] == g once counted.
		var n int64
		for _, o := range order[lo:hi] {
			if sc.seen[o.dev] != g {
				sc.seen[o.dev] = g
				n++
			}
		}
		for _, o := range order[lo:hi] {
			c := &cands[o.i]
			c.R.PeriodDevices = n
			if n <= p.CompromisedDeviceCountMax && p.reportable(&c.R, devices) {
				kept = append(kept, int(o.i))
			}
		}
		lo = hi
	}
	slices.Sort(kept)
	return kept, devices
}

// sortNearly sorts a list that is nearly sorted by period by insertion,
// and reports false, leaving it a permutation of itself, when that moves
// more than a few candidates per candidate (the list was not).
func sortNearly(order []byPeriod) bool {
	budget := 4*len(order) + 16
	for i := 1; i < len(order); i++ {
		for j := i; j > 0 && order[j].period < order[j-1].period; j-- {
			if budget--; budget < 0 {
				return false
			}
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
	return true
}

// byPeriod is a candidate's period, index and device number.
type byPeriod struct {
	period float64
	i, dev int32
}

// selectScratch is robustSelect's between calls.
type selectScratch struct {
	ids    map[string]int32
	small  []string // the distinct DeviceIds, with at most smallSelect candidates
	order  []byPeriod
	seen   []int32
	listed []bool // the candidates a hint listed
}

// smallSelect is the most candidates robustSelect numbers devices of by
// comparing DeviceIds rather than through the map (TestRobustSelectSmall
// sets it to 0 to compare the two).
var smallSelect = 16

var selectPool = sync.Pool{New: func() any { return &selectScratch{ids: make(map[string]int32)} }}

func (sc *selectScratch) put() {
	if len(sc.ids) > 1024 {
		sc.ids = make(map[string]int32) // a large destination's: clearing costs its size
	} else {
		clear(sc.ids)
	}
	sc.order = sc.order[:0]
	clear(sc.small)
	sc.small = sc.small[:0]
	selectPool.Put(sc)
}

// newRobustRow renders a kept robust candidate.
func newRobustRow(c *Candidate, ts []Time, domains []string, devices int64) Row {
	// Connections without a RemoteUrl name no domain: seed's make_set keeps
	// their "", robust leaves it out.
	if i := slices.Index(domains, ""); i >= 0 {
		domains = slices.Delete(slices.Clone(domains), i, i+1)
	}
	r := baseRow(c, ts, ts[len(ts)-1], domains, devices) // LastSeen: the newest callback
	r.R.GapHistogram = gapHistogram(r.TimeDeltaList, c.R.Period)
	r.Score = c.R.Score
	r.Severity = c.R.Severity()
	r.PeriodSeconds = c.R.Period
	r.Callbacks = c.R.Callbacks
	r.Reasons = c.R.reasons()
	return r
}

// gapHistogram buckets deltas for people: each delta is rounded to two
// significant digits of the period's unit (1/20 of the period), so a
// steady beacon shows a few bins.
func gapHistogram(deltas []int64, period float64) []Bin {
	unit := int64(math.Max(1, math.Round(period/20)))
	s := Summary{}
	for _, d := range deltas {
		s.Add((d + unit/2) / unit * unit)
	}
	return s.Hist
}

func (r *RobustStats) reasons() []string {
	out := []string{fmt.Sprintf("%d of %d gaps within %g %% of %s", r.OnTime, r.Gaps-r.Pauses, 100*r.tolerance, fmtSeconds(r.Period))}
	if r.Period2 > 0 {
		out = append(out, fmt.Sprintf("second period %s", fmtSeconds(r.Period2)))
	}
	if r.Missed > 0 {
		out = append(out, fmt.Sprintf("%d missed callbacks", r.Missed))
	}
	if r.Merged > 0 {
		out = append(out, fmt.Sprintf("%d connections merged into callbacks (bursts, duplicates)", r.Merged))
	}
	if r.Pauses > 0 {
		out = append(out, fmt.Sprintf("%d pauses, longest %s", r.Pauses, fmtSeconds(float64(r.LongestGap))))
	}
	out = append(out, fmt.Sprintf("jitter (MAD) %s = %.0f %% of period", fmtSeconds(r.MAD), 100*r.MAD/r.Period))
	out = append(out, fmt.Sprintf("%d callbacks", r.Callbacks))
	if r.PeriodDevices > 1 {
		out = append(out, fmt.Sprintf("%d devices poll with this period", r.PeriodDevices))
	}
	if r.Score < r.threshold { // kept only by rarity (Params.reportable)
		out = append(out, fmt.Sprintf("rare destination: the only device, period kept for %s", fmtSeconds(r.Span)))
	}
	return out
}

// fmtSeconds renders seconds compactly: 45 s, 30 min, 4 h, 1.5 h.
func fmtSeconds(s float64) string {
	switch {
	case s >= 3600:
		return trimFloat(s/3600) + " h"
	case s >= 120:
		return trimFloat(s/60) + " min"
	}
	return trimFloat(s) + " s"
}

func trimFloat(v float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", v), "0"), ".")
}

// compareRobustRows is the robust output order: Score descending, then
// the seven tuple columns ascending.
func compareRobustRows(a, b *Row) int {
	if c := cmp.Compare(b.R.Score, a.R.Score); c != 0 {
		return c
	}
	return a.Tuple.Compare(&b.Tuple)
}
