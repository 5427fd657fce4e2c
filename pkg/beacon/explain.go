package beacon

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The seed profile's explanation is a fixed mapping from the row's own
// columns, so that the same row always gets the same score whatever the
// parameters (docs/semantics.md, "Explanation"):
//
//	regularity R = clamp(1 − Jitter/50, 0, 1)            50: the query's default JitterThreshold
//	volume     V = clamp(log10(Callbacks)/3, 0, 1)        1 000 callbacks or more: 1
//	breadth    B = 0.2 × (min(dcount_DeviceId, 10) − 1)/9  a destination many devices call is likelier a service
//	Score        = clamp(0.6 R + 0.4 V − B, 0, 1), rounded to 3 decimals
//
// Severity bands: critical ≥ 0.85, high ≥ 0.65, medium ≥ 0.40, low below.
// Callbacks are the distinct timestamps (count_ + 1); PeriodSeconds is
// TimeDeltaInSeconds_avg.
const (
	explainJitterScale  = 50.0
	explainVolumeDecade = 3.0
	explainWeightR      = 0.6
	explainWeightV      = 0.4
	explainBreadthMax   = 0.2
	explainDevicesCap   = 10
)

// Severity bands of Score, highest first.
var severityBands = []struct {
	min  float64
	name string
}{{0.85, "critical"}, {0.65, "high"}, {0.40, "medium"}, {math.Inf(-1), "low"}}

// SeverityOf names the band of a score in [0, 1].
func SeverityOf(score float64) string {
	for _, b := range severityBands {
		if score >= b.min {
			return b.name
		}
	}
	return "low"
}

func clamp01(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return math.Max(0, math.Min(1, v))
}

// explainSeed fills the explanation block of a seed row (see above).
func (r *Row) explainSeed() {
	r.Callbacks = r.Count + 1
	r.PeriodSeconds = r.Avg
	reg := clamp01(1 - r.Jitter/explainJitterScale)
	vol := clamp01(math.Log10(float64(r.Callbacks)) / explainVolumeDecade)
	devices := min(max(r.DeviceCount, 1), explainDevicesCap)
	breadth := explainBreadthMax * float64(devices-1) / float64(explainDevicesCap-1)
	r.Score = math.Round(clamp01(explainWeightR*reg+explainWeightV*vol-breadth)*1000) / 1000
	r.Severity = SeverityOf(r.Score)
	r.Reasons = []string{
		fmt.Sprintf("regular: every %s %s (jitter %.1f %% of %g %%)", FormatPeriod(r.PeriodSeconds), formatJitter(r.Jitter), r.Jitter, explainJitterScale),
		fmt.Sprintf("%s callbacks in %s", FormatCount(r.Callbacks), FormatSpan(r.spanSeconds())),
	}
	if r.DeviceCount <= 1 {
		r.Reasons = append(r.Reasons, "only this device calls the destination")
	} else {
		r.Reasons = append(r.Reasons, fmt.Sprintf("%d devices call the destination", r.DeviceCount))
	}
}

// spanSeconds is the time from the first to the last callback: the sum of
// the deltas.
func (r *Row) spanSeconds() int64 {
	var s int64
	for _, d := range r.TimeDeltaList {
		s += d
	}
	if s == 0 && len(r.TimeDeltaList) == 0 {
		return r.Duration
	}
	return s
}

// Title is the row in one line for a person, e.g.
//
//	rundll32.exe on wks-0042 calls 159.136.251.253:443 every 60 s ±3 % — 1,380 callbacks in 23 h
//
// from the explanation block (PeriodSeconds, Callbacks) and the jitter.
func (r *Row) Title() string {
	host := r.DeviceName
	if i := strings.IndexByte(host, '.'); i > 0 {
		host = host[:i]
	}
	if r.R.On {
		// A robust row's columns (and so its alert) carry a score, not the
		// query's jitter and delta list.
		return fmt.Sprintf("%s on %s calls %s:%d every %s — %s callbacks, score %.2f",
			r.FileName, host, r.RemoteIP, r.RemotePort, FormatPeriod(r.PeriodSeconds), FormatCount(r.Callbacks), r.Score)
	}
	return fmt.Sprintf("%s on %s calls %s:%d every %s %s — %s callbacks in %s",
		r.FileName, host, r.RemoteIP, r.RemotePort, FormatPeriod(r.PeriodSeconds), formatJitter(r.Jitter),
		FormatCount(r.Callbacks), FormatSpan(r.spanSeconds()))
}

func formatJitter(j float64) string {
	switch {
	case math.IsNaN(j):
		return "±? %"
	case j > 0 && j < 1:
		return fmt.Sprintf("±%.1f %%", j)
	}
	return fmt.Sprintf("±%.0f %%", j)
}

// FormatPeriod writes a period for people: seconds below 10 minutes, then
// minutes below 3 hours, then hours.
func FormatPeriod(s float64) string {
	switch {
	case math.IsNaN(s) || math.IsInf(s, 0):
		return "? s"
	case s < 600:
		return strconv.FormatFloat(math.Round(s*10)/10, 'f', -1, 64) + " s"
	case s < 3*3600:
		return strconv.FormatFloat(math.Round(s/6)/10, 'f', -1, 64) + " min"
	}
	return strconv.FormatFloat(math.Round(s/360)/10, 'f', -1, 64) + " h"
}

// FormatSpan writes a duration in seconds for people: minutes below an
// hour, hours below two days, then days.
func FormatSpan(s int64) string {
	switch {
	case s < 3600:
		return strconv.FormatInt((s+30)/60, 10) + " min"
	case s < 48*3600:
		return strconv.FormatInt((s+1800)/3600, 10) + " h"
	}
	return strconv.FormatInt((s+43200)/86400, 10) + " d"
}

// FormatCount writes n with thousands separators: 1,380.
func FormatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
