package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// addParamFlags registers every detection parameter as a flag named after
// the query's own variable, so hunt, run and replay take the same settings.
func addParamFlags(fs *flag.FlagSet, p *beacon.Params) {
	fs.DurationVar(&p.Lookback, "lookback", p.Lookback, "window length: the query's starttime")
	fs.DurationVar(&p.EndOffset, "end-offset", p.EndOffset, "newest part of the window left out: the query's endtime")
	fs.DurationVar(&p.TimeDeltaThresholdMin, "time-delta-threshold-min", p.TimeDeltaThresholdMin,
		"TimeDeltaThresholdMin: sets TotalEventsThresholdMax = (lookback-end-offset)/this; raise it toward a sleep to cap chatty tuples")
	fs.Int64Var(&p.TotalEventsThresholdMin, "total-events-threshold-min", p.TotalEventsThresholdMin,
		"TotalEventsThresholdMin: a tuple needs more distinct timestamps than this")
	fs.Int64Var(&p.TotalEventsThresholdMax, "total-events-threshold-max", p.TotalEventsThresholdMax,
		"TotalEventsThresholdMax: a tuple needs fewer distinct timestamps than this (0 = derived from time-delta-threshold-min)")
	fs.Float64Var(&p.JitterThreshold, "jitter-threshold", p.JitterThreshold,
		"JitterThreshold: keep tuples whose stdev/avg of gaps, in percent, is below this")
	fs.Float64Var(&p.OutlierThresholdMax, "outlier-threshold-max", p.OutlierThresholdMax,
		"OutlierThresholdMax: a gap whose series_outliers score is above this is an outlier")
	fs.Int64Var(&p.OutlierCountMax, "outlier-count-max", p.OutlierCountMax,
		"OutlierCountMax: drop tuples with more outliers than this (the query also uses -this as the low score bound)")
	fs.Var(optFloat{&p.OutlierThresholdLow}, "outlier-threshold-low",
		"low score bound for outliers, e.g. -2 (default: -outlier-count-max, the query's quirk)")
	fs.Int64Var(&p.CompromisedDeviceCountMax, "compromised-device-count-max", p.CompromisedDeviceCountMax,
		"CompromisedDeviceCountMax: drop destinations (process, IP, port) that more devices beacon to")
	fs.Var(stringList{&p.ActionTypes}, "action-types",
		"comma-separated ActionTypes to keep (default: the query's list, typos included, so only ConnectionSuccess matches)")
	fs.Float64Var(&p.SleepMin, "sleep-min", p.SleepMin,
		"keep beacons whose average gap is at least this many seconds (0 = off), e.g. 675 for 900 s ±25%")
	fs.Float64Var(&p.SleepMax, "sleep-max", p.SleepMax,
		"keep beacons whose average gap is at most this many seconds (0 = off), e.g. 1125 for 900 s ±25%")
}

type optFloat struct{ p **float64 }

func (o optFloat) String() string {
	if o.p == nil || *o.p == nil {
		return ""
	}
	return strconv.FormatFloat(**o.p, 'g', -1, 64)
}

func (o optFloat) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("not a number: %q", s)
	}
	*o.p = &v
	return nil
}

type stringList struct{ p *[]string }

func (l stringList) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l stringList) Set(s string) error {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	*l.p = out
	return nil
}
