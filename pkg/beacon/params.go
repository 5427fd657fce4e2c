package beacon

import (
	"fmt"
	"math"
	"time"
)

// Params holds every parameter of the seed query, with the query's names in
// the doc comments. The zero value is not useful: start from Seed().
type Params struct {
	// Profile is "seed" (the query, quirks included; "" means seed) or
	// "robust" (see Robust and docs/robust.md). Every method of Params that
	// pkg/state and pkg/stream ask switches on it, so they stay
	// profile-agnostic.
	Profile string
	// Robust holds the robust profile's own parameters; seed ignores them.
	Robust RobustParams
	// Lookback is the query's starttime: the window is
	// [now-Lookback, now-EndOffset], both ends inclusive.
	Lookback time.Duration
	// EndOffset is the query's endtime (1s): the newest second is left out.
	EndOffset time.Duration
	// TimeDeltaThresholdMin (1 ms) only sets the derived
	// TotalEventsThresholdMax = toint((Lookback-EndOffset)/TimeDeltaThresholdMin).
	// Raising it to a sleep (e.g. 675 s) caps the events a tuple may have.
	TimeDeltaThresholdMin time.Duration
	// TotalEventsThresholdMin (15): a tuple needs more distinct timestamps.
	TotalEventsThresholdMin int64
	// TotalEventsThresholdMax, when not 0, overrides the derived maximum; a
	// tuple needs fewer distinct timestamps.
	TotalEventsThresholdMax int64
	// JitterThreshold (50): keep tuples with stdev/avg*100 below it.
	JitterThreshold float64
	// OutlierThresholdMax (2): a delta scoring above it is an outlier.
	OutlierThresholdMax float64
	// OutlierCountMax (3): a tuple with more outliers than this is dropped.
	// The query also uses it, negated, as the low score bound; see
	// OutlierThresholdLow.
	OutlierCountMax int64
	// OutlierThresholdLow, when not nil, replaces -OutlierCountMax as the
	// low score bound. Seed keeps the query's quirk (nil).
	OutlierThresholdLow *float64
	// CompromisedDeviceCountMax (10): destinations (process, IP, port) that
	// more devices beacon to are dropped as benign.
	CompromisedDeviceCountMax int64
	// ActionTypes that pass. The query lists ConnectionSuccess and two typos
	// (CsonnectionRequest, CsonnectionFailed); seed keeps them, so only
	// ConnectionSuccess matches in practice.
	ActionTypes []string
	// SleepMin and SleepMax, when not 0, keep only beacons whose average gap
	// (TimeDeltaInSeconds_avg, seconds) lies in [SleepMin, SleepMax] — the
	// sleep filter the query's README describes. Off in seed.
	SleepMin, SleepMax float64
}

// Seed returns the query's parameters as published.
func Seed() Params {
	return Params{
		Lookback:                  24 * time.Hour,
		EndOffset:                 time.Second,
		TimeDeltaThresholdMin:     time.Millisecond,
		TotalEventsThresholdMin:   15,
		JitterThreshold:           50,
		OutlierThresholdMax:       2,
		OutlierCountMax:           3,
		CompromisedDeviceCountMax: 10,
		ActionTypes:               []string{"ConnectionSuccess", "CsonnectionRequest", "CsonnectionFailed"},
	}
}

// Validate reports parameters that cannot give a meaningful answer, naming
// each by its flag and saying the range it must be in.
func (p *Params) Validate() error {
	switch p.Profile {
	case "", ProfileSeed:
	case ProfileRobust:
		if err := p.Robust.validate(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown profile %q (want %s or %s)", p.Profile, ProfileSeed, ProfileRobust)
	}
	bad := func(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }
	switch {
	case p.Lookback <= 0:
		return fmt.Errorf("lookback must be positive (a duration such as 24h or 90m), got %s", p.Lookback)
	case p.EndOffset < 0 || p.EndOffset >= p.Lookback:
		return fmt.Errorf("end-offset must be in [0, lookback %s), got %s", p.Lookback, p.EndOffset)
	case p.TimeDeltaThresholdMin <= 0:
		return fmt.Errorf("time-delta-threshold-min must be positive (a duration such as 1ms or 675s), got %s", p.TimeDeltaThresholdMin)
	case p.TotalEventsThresholdMin < 0:
		return fmt.Errorf("total-events-threshold-min must be at least 0 (a count of distinct timestamps; the query's is 15), got %d", p.TotalEventsThresholdMin)
	case p.TotalEventsThresholdMax < 0:
		return fmt.Errorf("total-events-threshold-max must be at least 0 (0 = derived from time-delta-threshold-min), got %d", p.TotalEventsThresholdMax)
	case p.TotalEventsThresholdMax != 0 && p.TotalEventsThresholdMax <= p.TotalEventsThresholdMin+1:
		return fmt.Errorf("total-events-threshold-max must be 0 or above total-events-threshold-min+1 = %d (else no tuple can pass), got %d",
			p.TotalEventsThresholdMin+1, p.TotalEventsThresholdMax)
	case bad(p.JitterThreshold) || p.JitterThreshold <= 0:
		return fmt.Errorf("jitter-threshold must be above 0 (a percentage of the average gap; the query's is 50), got %v", p.JitterThreshold)
	case bad(p.OutlierThresholdMax) || p.OutlierThresholdMax < 0:
		return fmt.Errorf("outlier-threshold-max must be at least 0 (a series_outliers score; the query's is 2), got %v", p.OutlierThresholdMax)
	case p.OutlierCountMax < 0:
		return fmt.Errorf("outlier-count-max must be at least 0 (the query's is 3), got %d", p.OutlierCountMax)
	case p.OutlierThresholdLow != nil && (bad(*p.OutlierThresholdLow) || *p.OutlierThresholdLow > p.OutlierThresholdMax):
		return fmt.Errorf("outlier-threshold-low must be a number at most outlier-threshold-max %v (a series_outliers score, e.g. -2), got %v",
			p.OutlierThresholdMax, *p.OutlierThresholdLow)
	case p.CompromisedDeviceCountMax < 1:
		return fmt.Errorf("compromised-device-count-max must be at least 1 (the query's is 10), got %d", p.CompromisedDeviceCountMax)
	case len(p.ActionTypes) == 0:
		return fmt.Errorf("action-types needs at least one action type")
	case bad(p.SleepMin) || p.SleepMin < 0:
		return fmt.Errorf("sleep-min must be at least 0 seconds (0 = off), got %v", p.SleepMin)
	case bad(p.SleepMax) || p.SleepMax < 0:
		return fmt.Errorf("sleep-max must be at least 0 seconds (0 = off), got %v", p.SleepMax)
	case p.SleepMax != 0 && p.SleepMax < p.SleepMin:
		return fmt.Errorf("sleep-max %v is below sleep-min %v", p.SleepMax, p.SleepMin)
	}
	return nil
}

// EventsMax is TotalEventsThresholdMax: the override, or the query's
// toint((starttime - endtime) / TimeDeltaThresholdMin).
func (p *Params) EventsMax() int64 {
	if p.TotalEventsThresholdMax != 0 {
		return p.TotalEventsThresholdMax
	}
	return int64(float64(p.Lookback-p.EndOffset) / float64(p.TimeDeltaThresholdMin))
}

// lowBound is the negative score below which a delta is an outlier.
func (p *Params) lowBound() float64 {
	if p.OutlierThresholdLow != nil {
		return *p.OutlierThresholdLow
	}
	return -1 * float64(p.OutlierCountMax)
}

// Window returns the inclusive event-time window of a query run at now.
func (p *Params) Window(now Time) (from, to Time) {
	return now.Add(-p.Lookback), now.Add(-p.EndOffset)
}

// DomainsFrom returns the exclusive lower bound of the Domains enrichment:
// the query reads Timestamp > ago(starttime+1d), with no upper bound.
func (p *Params) DomainsFrom(now Time) Time {
	return now.Add(-p.Lookback - 24*time.Hour)
}

// ActionTypeOK reports whether the ActionType passes (case-sensitive, as
// Kusto's in operator).
func (p *Params) ActionTypeOK(a string) bool {
	for _, t := range p.ActionTypes {
		if t == a {
			return true
		}
	}
	return false
}

// Connection reports whether an event passes the query's row filters other
// than time: RemoteIPType, RemoteIP empty/0.0.0.0, ipv4_is_private, and
// ActionType. Only such events form tuples and move stream time.
func (p *Params) Connection(e *Event) bool {
	if p.Profile == ProfileRobust {
		return p.robustConnection(e)
	}
	switch e.RemoteIPType {
	case "Reserved", "Private", "LinkLocal", "Loopback":
		return false
	}
	if e.RemoteIP == "" || e.RemoteIP == "0.0.0.0" {
		return false
	}
	// where not(ipv4_is_private(RemoteIP)): null (not IPv4) drops the row.
	priv, ok := IPv4IsPrivate(e.RemoteIP)
	if !ok || priv {
		return false
	}
	return p.ActionTypeOK(e.ActionType)
}

// jitterOK is `Jitter < JitterThreshold`; NaN (avg = 0) fails.
func (p *Params) jitterOK(j float64) bool { return j < p.JitterThreshold && !math.IsNaN(j) }
