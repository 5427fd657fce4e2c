package stream

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Alert is one message of the alert topic: a tuple that is in the beacon
// set of its partition — the rows `beacon hunt --end <StreamTime + 1s>`
// returns — with the query's output columns (Row) and what a SIEM needs to
// triage and deduplicate it.
type Alert struct {
	// ID is deterministic (AlertID): a replay, a restart or a second owner
	// of the partition publishes the same tuple in the same period under
	// the same ID, so consumers deduplicate on it.
	ID string
	// Profile is the detection profile ("seed": the query as published).
	Profile string
	// Params are the detection parameters the set was computed with.
	Params beacon.Params
	// ReAlert is the re-alert interval: a tuple is alerted at most once per
	// period of this length, periods aligned to the Unix epoch in event
	// time. Epoch numbers the period of StreamTime.
	ReAlert time.Duration
	Epoch   int64
	// StreamTime is the partition's stream time when the tuple was found in
	// the set: the newest Timestamp of a filtered connection the partition
	// had seen. The window is [StreamTime+1s-Lookback, StreamTime+1s-EndOffset].
	StreamTime beacon.Time
	// Row holds the query's output columns for the tuple.
	Row beacon.Row
}

// Technique is a MITRE ATT&CK technique an alert maps to.
type Technique struct {
	ID   string `json:"Id"`
	Name string `json:"Name"`
}

// Techniques: every beacon is Application Layer Protocol C2; on 443 it is
// very likely also an Encrypted Channel.
func (a *Alert) Techniques() []Technique {
	t := []Technique{{"T1071", "Application Layer Protocol"}}
	if a.Row.RemotePort == 443 {
		t = append(t, Technique{"T1573", "Encrypted Channel"})
	}
	return t
}

// Window returns the event-time window of the alert, both ends inclusive.
func (a *Alert) Window() (from, to beacon.Time) {
	return a.Params.Window(a.StreamTime + beacon.Second)
}

// EpochOf numbers the re-alert period that t falls in.
func EpochOf(t beacon.Time, reAlert time.Duration) int64 {
	per := int64(reAlert / 100)
	if per <= 0 {
		per = 1
	}
	e := int64(t) / per
	if int64(t)%per < 0 {
		e--
	}
	return e
}

// AlertID is the alert ID of a tuple in a re-alert period:
//
//	hex(SHA-256("beacon-alert/v1" ‖ profile ‖ params ‖ tuple ‖ epoch))[:32]
//
// with every string length-prefixed, params the canonical form of the
// parameters (ParamsFingerprint) and the re-alert interval, and epoch the
// period number. It depends on nothing that differs between a live run, a
// replay and a restart: not on wall time, offsets or which process owns
// the partition. Different parameters give different IDs, so a backtest
// with other settings never collides with production alerts.
func AlertID(profile string, p *beacon.Params, reAlert time.Duration, t *beacon.Tuple, epoch int64) string {
	h := sha256.New()
	var buf []byte
	str := func(s string) {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	str("beacon-alert/v1")
	str(profile)
	str(ParamsFingerprint(p))
	buf = binary.AppendVarint(buf, int64(reAlert))
	for _, s := range [...]string{t.DeviceId, t.DeviceName, t.AccountName, t.AccountDomain, t.FileName, t.RemoteIP} {
		str(s)
	}
	buf = binary.AppendVarint(buf, int64(t.RemotePort))
	buf = binary.AppendVarint(buf, epoch)
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// AlertLogMessage is the constant message every published alert is logged
// with, so log pipelines (and the log sampler of beacon run) can single
// alerts out.
const AlertLogMessage = "beacon alert"

// ParamsFingerprint is a canonical text of every parameter that changes the
// beacon set. ActionTypes are a set: their order and repeats do not count.
func ParamsFingerprint(p *beacon.Params) string {
	actions := slices.Compact(slices.Sorted(slices.Values(p.ActionTypes)))
	low := -float64(p.OutlierCountMax)
	if p.OutlierThresholdLow != nil {
		low = *p.OutlierThresholdLow
	}
	return fmt.Sprintf("lookback=%d;end=%d;tdmin=%d;min=%d;max=%d;jitter=%g;omax=%g;ocount=%d;olow=%g;devices=%d;actions=%s;sleep=%g,%g",
		p.Lookback, p.EndOffset, p.TimeDeltaThresholdMin, p.TotalEventsThresholdMin, p.EventsMax(),
		p.JitterThreshold, p.OutlierThresholdMax, p.OutlierCountMax, low, p.CompromisedDeviceCountMax,
		strings.Join(actions, ","), p.SleepMin, p.SleepMax)
}

// Key returns the record key of the alert: the tuple's seven columns as a
// JSON array, so that every alert of a tuple lands in one partition and a
// compacted topic keeps the latest per tuple.
func (a *Alert) Key() []byte { return appendTupleKey(nil, &a.Row.Tuple) }

func appendTupleKey(b []byte, t *beacon.Tuple) []byte {
	b = append(b, '[')
	for _, s := range [...]string{t.DeviceId, t.DeviceName, t.AccountName, t.AccountDomain, t.FileName, t.RemoteIP} {
		b = appendJSONString(b, s)
		b = append(b, ',')
	}
	b = strconv.AppendInt(b, int64(t.RemotePort), 10)
	return append(b, ']')
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // escapes as encoding/json does, invalid UTF-8 included
	return append(b, q...)
}

func seconds(d time.Duration) float64 { return d.Seconds() }

// AppendJSON appends the alert as one JSON object: the alert's own fields
// first, then every output column of the query under its own name, in its
// order (what `beacon hunt --format jsonl` prints for the row).
func (a *Alert) AppendJSON(b []byte) []byte {
	from, to := a.Window()
	b = append(b, `{"AlertId":`...)
	b = appendJSONString(b, a.ID)
	b = append(b, `,"Profile":`...)
	b = appendJSONString(b, a.Profile)
	b = append(b, `,"StreamTime":"`...)
	b = a.StreamTime.AppendKusto(b)
	b = append(b, `","WindowStart":"`...)
	b = from.AppendKusto(b)
	b = append(b, `","WindowEnd":"`...)
	b = to.AppendKusto(b)
	b = append(b, `","AlertEpoch":`...)
	b = strconv.AppendInt(b, a.Epoch, 10)
	b = append(b, `,"Techniques":`...)
	tj, _ := json.Marshal(a.Techniques())
	b = append(b, tj...)
	b = append(b, `,"Parameters":`...)
	pj, _ := json.Marshal(paramsOf(&a.Params, a.ReAlert))
	b = append(b, pj...)
	row := a.Row.AppendJSON(nil)
	b = append(b, ',')
	return append(b, row[1:]...) // the row's members, and its closing brace
}

// alertParams are the parameters as alerts carry them: the query's variable
// names, durations in seconds.
type alertParams struct {
	Starttime                 float64  `json:"starttime"`
	Endtime                   float64  `json:"endtime"`
	TimeDeltaThresholdMin     float64  `json:"TimeDeltaThresholdMin"`
	TotalEventsThresholdMin   int64    `json:"TotalEventsThresholdMin"`
	TotalEventsThresholdMax   int64    `json:"TotalEventsThresholdMax"`
	JitterThreshold           float64  `json:"JitterThreshold"`
	OutlierThresholdMax       float64  `json:"OutlierThresholdMax"`
	OutlierCountMax           int64    `json:"OutlierCountMax"`
	OutlierThresholdLow       float64  `json:"OutlierThresholdLow"`
	CompromisedDeviceCountMax int64    `json:"CompromisedDeviceCountMax"`
	ActionTypes               []string `json:"ActionTypes"`
	SleepMin                  float64  `json:"SleepMin"`
	SleepMax                  float64  `json:"SleepMax"`
	ReAlertInterval           float64  `json:"ReAlertInterval"`
}

func paramsOf(p *beacon.Params, reAlert time.Duration) alertParams {
	low := -float64(p.OutlierCountMax)
	if p.OutlierThresholdLow != nil {
		low = *p.OutlierThresholdLow
	}
	return alertParams{
		Starttime: seconds(p.Lookback), Endtime: seconds(p.EndOffset),
		TimeDeltaThresholdMin:   seconds(p.TimeDeltaThresholdMin),
		TotalEventsThresholdMin: p.TotalEventsThresholdMin, TotalEventsThresholdMax: p.EventsMax(),
		JitterThreshold: p.JitterThreshold, OutlierThresholdMax: p.OutlierThresholdMax,
		OutlierCountMax: p.OutlierCountMax, OutlierThresholdLow: low,
		CompromisedDeviceCountMax: p.CompromisedDeviceCountMax,
		ActionTypes:               append([]string{}, p.ActionTypes...),
		SleepMin:                  p.SleepMin, SleepMax: p.SleepMax,
		ReAlertInterval: seconds(reAlert),
	}
}

func (ap *alertParams) params() (beacon.Params, time.Duration) {
	dur := func(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }
	p := beacon.Params{
		Lookback: dur(ap.Starttime), EndOffset: dur(ap.Endtime),
		TimeDeltaThresholdMin:     dur(ap.TimeDeltaThresholdMin),
		TotalEventsThresholdMin:   ap.TotalEventsThresholdMin,
		TotalEventsThresholdMax:   ap.TotalEventsThresholdMax,
		JitterThreshold:           ap.JitterThreshold,
		OutlierThresholdMax:       ap.OutlierThresholdMax,
		OutlierCountMax:           ap.OutlierCountMax,
		CompromisedDeviceCountMax: ap.CompromisedDeviceCountMax,
		ActionTypes:               ap.ActionTypes,
		SleepMin:                  ap.SleepMin, SleepMax: ap.SleepMax,
	}
	if ap.OutlierThresholdLow != -float64(ap.OutlierCountMax) {
		low := ap.OutlierThresholdLow
		p.OutlierThresholdLow = &low
	}
	return p, dur(ap.ReAlertInterval)
}

// alertJSON mirrors AppendJSON for ParseAlert.
type alertJSON struct {
	AlertId    string
	Profile    string
	StreamTime beacon.Time
	AlertEpoch int64
	Parameters alertParams

	DeviceId, DeviceName string
	AccountName          string      `json:"InitiatingProcessAccountName"`
	AccountDomain        string      `json:"InitiatingProcessAccountDomain"`
	FileName             string      `json:"InitiatingProcessFileName"`
	RemoteIP             string      `json:"RemoteIP"`
	RemotePort           int32       `json:"RemotePort"`
	Count                int64       `json:"count_"`
	MinTimestamp         beacon.Time `json:"min_Timestamp"`
	MaxTimestamp         beacon.Time `json:"max_Timestamp"`
	Duration             int64       `json:"Duration"`
	P5                   int64       `json:"percentile_TimeDeltaInSeconds_5"`
	P25                  int64       `json:"percentile_TimeDeltaInSeconds_25"`
	P50                  int64       `json:"percentile_TimeDeltaInSeconds_50"`
	P75                  int64       `json:"percentile_TimeDeltaInSeconds_75"`
	P95                  int64       `json:"percentile_TimeDeltaInSeconds_95"`
	TimeDeltaList        []int64     `json:"TimeDeltaList"`
	Min                  int64       `json:"TimeDeltaInSeconds_min"`
	MinIndex             int         `json:"TimeDeltaInSeconds_min_index"`
	Max                  int64       `json:"TimeDeltaInSeconds_max"`
	MaxIndex             int         `json:"TimeDeltaInSeconds_max_index"`
	Avg                  float64     `json:"TimeDeltaInSeconds_avg"`
	Stdev                float64     `json:"TimeDeltaInSeconds_stdev"`
	Variance             float64     `json:"TimeDeltaInSeconds_variance"`
	Jitter               float64     `json:"Jitter"`
	Domains              []string    `json:"Domains"`
	DeviceCount          int64       `json:"dcount_DeviceId"`
}

// ParseAlert reads an alert written by AppendJSON. Only the columns an
// alert carries are restored: the outlier analysis (P10, P90, Outliers) is
// not part of the query's output and stays zero.
func ParseAlert(b []byte) (Alert, error) {
	var j alertJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Alert{}, err
	}
	if j.AlertId == "" {
		return Alert{}, errors.New("not a beacon alert: no AlertId")
	}
	p, re := j.Parameters.params()
	a := Alert{
		ID: j.AlertId, Profile: j.Profile, Params: p, ReAlert: re, Epoch: j.AlertEpoch, StreamTime: j.StreamTime,
		Row: beacon.Row{
			Tuple: beacon.Tuple{DeviceId: j.DeviceId, DeviceName: j.DeviceName, AccountName: j.AccountName,
				AccountDomain: j.AccountDomain, FileName: j.FileName, RemoteIP: j.RemoteIP, RemotePort: j.RemotePort},
			Stats: beacon.Stats{Count: j.Count, Min: j.Min, Max: j.Max, Avg: j.Avg, Stdev: j.Stdev,
				Variance: j.Variance, Jitter: j.Jitter, Percentiles: [5]int64{j.P5, j.P25, j.P50, j.P75, j.P95}},
			MinTimestamp: j.MinTimestamp, MaxTimestamp: j.MaxTimestamp, Duration: j.Duration,
			TimeDeltaList: j.TimeDeltaList, MinIndex: j.MinIndex, MaxIndex: j.MaxIndex,
			Domains: j.Domains, DeviceCount: j.DeviceCount,
		},
	}
	return a, nil
}

// String is the alert in one line, for people.
func (a *Alert) String() string {
	r := &a.Row
	acct := r.AccountName
	if r.AccountDomain != "" {
		acct = r.AccountDomain + `\` + r.AccountName
	}
	dom := ""
	if len(r.Domains) > 0 && r.Domains[0] != "" {
		dom = " (" + strings.Join(r.Domains, ",") + ")"
	}
	return fmt.Sprintf("%s %s %s %s -> %s:%d%s every %.0fs ±%.1f%% over %d callbacks [%s]",
		a.StreamTime, r.DeviceName, acct, r.FileName, r.RemoteIP, r.RemotePort, dom,
		r.Avg, r.Jitter, r.Count+1, a.ID[:min(12, len(a.ID))])
}
