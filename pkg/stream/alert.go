package stream

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/beaconhunt/beacon/internal/version"
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
	// Row holds the query's output columns for the tuple, and its
	// explanation (Score, Severity, PeriodSeconds, Callbacks, Reasons).
	Row beacon.Row
	// DetectedAt is when the alert was found: the wall clock of beacon run
	// at the evaluation point. A replay runs in event time only, so there
	// it is the stream time: when a caught-up live detector would have
	// found it (and two replays give the same bytes).
	DetectedAt time.Time
	// Pivots are the newest event's fields of the tuple to pivot on.
	Pivots Pivots
	// Link is the rendered --alert-link template, "" when none is set.
	Link string
}

// Pivots are what an analyst pivots on from an alert, taken from the
// newest event of the tuple: the envelope's tenant and the initiating
// process's identity. Zero values mean unknown.
type Pivots struct {
	TenantId    string // envelope tenantId (Streaming API)
	SHA256      string // InitiatingProcessSHA256
	SHA1        string // InitiatingProcessSHA1
	FolderPath  string // InitiatingProcessFolderPath
	CommandLine string // InitiatingProcessCommandLine
	ProcessId   int64  // InitiatingProcessId
	ReportId    int64  // ReportId
}

// The rule every alert of a profile comes from, and the alert schema.
const (
	// RuleVersion changes when the rule's logic does; AlertSchemaVersion
	// when alert records gain or change fields.
	RuleVersion        = "1"
	AlertSchemaVersion = "2"
	// Product is the name alerts give as their source.
	Product       = "beacon"
	ProductVendor = "beaconhunt"
	ruleNameSeed  = "Suspicious Network Beacons"
	tacticID      = "TA0011"
	tacticName    = "Command and Control"
	attackVersion = "15"
)

// Rule identifies the detection rule of an alert.
type Rule struct {
	Id      string `json:"Id"`
	Name    string `json:"Name"`
	Version string `json:"Version"`
}

// Rule is the rule of the alert's profile: the seed query as published,
// or another profile under its own id.
func (a *Alert) Rule() Rule {
	name := ruleNameSeed
	if a.Profile != "seed" {
		name += " (" + a.Profile + ")"
	}
	return Rule{Id: "beacon." + a.Profile, Name: name, Version: RuleVersion}
}

// Tactic is the ATT&CK tactic of every beacon: Command and Control.
func (a *Alert) Tactic() Technique { return Technique{tacticID, tacticName} }

// productVersion is the module version of the binary (runtime/debug build
// info), with the VCS revision when the build recorded one.
var productVersion = version.Read().Product()

// ProductVersion is the version alerts give for the product.
func ProductVersion() string { return productVersion }

// FirstSeen is the tuple's first callback in the window (min_Timestamp).
func (a *Alert) FirstSeen() beacon.Time { return a.Row.MinTimestamp }

// LastSeen is the tuple's last callback, to the second: the row keeps the
// second-to-last timestamp exactly (max_Timestamp) and the last delta in
// whole seconds. It is never after StreamTime.
func (a *Alert) LastSeen() beacon.Time {
	r := &a.Row
	t := r.MaxTimestamp
	if n := len(r.TimeDeltaList); n > 0 {
		t += beacon.Time(r.TimeDeltaList[n-1]) * beacon.Second
	}
	if a.StreamTime != 0 && t > a.StreamTime {
		t = a.StreamTime
	}
	return t
}

// Title is the alert in one line for a person (beacon.Row.Title).
func (a *Alert) Title() string { return a.Row.Title() }

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
	buf = t.AppendBinary(buf)
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
	fp := fmt.Sprintf("lookback=%d;end=%d;tdmin=%d;min=%d;max=%d;jitter=%g;omax=%g;ocount=%d;olow=%g;devices=%d;actions=%s;sleep=%g,%g",
		p.Lookback, p.EndOffset, p.TimeDeltaThresholdMin, p.TotalEventsThresholdMin, p.EventsMax(),
		p.JitterThreshold, p.OutlierThresholdMax, p.OutlierCountMax, low, p.CompromisedDeviceCountMax,
		strings.Join(actions, ","), p.SleepMin, p.SleepMax)
	// The robust profile's own parameters count only under it, so a seed
	// fingerprint (and every seed alert ID) stays what it was.
	if p.Profile == beacon.ProfileRobust {
		fp += fmt.Sprintf(";profile=robust;robust=%+v", p.Robust)
	}
	return fp
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
// first (alertHead), then every output column of the query under its own
// name, in its order (what `beacon hunt --format jsonl` prints for the row).
func (a *Alert) AppendJSON(b []byte) []byte {
	hj, _ := json.Marshal(a.head())
	b = append(b, hj[:len(hj)-1]...)
	row := a.Row.AppendJSON(nil)
	b = append(b, ',')
	return append(b, row[1:]...) // the row's members, and its closing brace
}

// alertHead is the alert's own part of its JSON, in this order.
type alertHead struct {
	AlertId       string
	Title         string
	Severity      string
	Score         float64
	Profile       string
	DetectedAt    string `json:",omitempty"`
	StreamTime    string
	FirstSeen     string
	LastSeen      string
	WindowStart   string
	WindowEnd     string
	AlertEpoch    int64
	Tactic        Technique
	Techniques    []Technique
	Rule          Rule
	Product       productInfo
	SchemaVersion string
	TenantId      string
	Reasons       []string
	PeriodSeconds float64
	Callbacks     int64

	InitiatingProcessSHA256      string
	InitiatingProcessSHA1        string
	InitiatingProcessFolderPath  string
	InitiatingProcessCommandLine string
	InitiatingProcessId          int64
	ReportId                     int64

	Link       string `json:",omitempty"`
	Parameters alertParams
}

type productInfo struct {
	Name    string
	Vendor  string
	Version string
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// DetectedAtText is DetectedAt as alerts write it: RFC 3339, UTC, up to
// nanoseconds; "" when unknown.
func (a *Alert) DetectedAtText() string {
	if a.DetectedAt.IsZero() {
		return ""
	}
	return a.DetectedAt.UTC().Format(time.RFC3339Nano)
}

func (a *Alert) head() *alertHead {
	from, to := a.Window()
	r := &a.Row
	reasons := r.Reasons
	if reasons == nil {
		reasons = []string{}
	}
	return &alertHead{
		AlertId: a.ID, Title: a.Title(), Severity: r.Severity, Score: finite(r.Score), Profile: a.Profile,
		DetectedAt: a.DetectedAtText(), StreamTime: a.StreamTime.String(),
		FirstSeen: a.FirstSeen().String(), LastSeen: a.LastSeen().String(),
		WindowStart: from.String(), WindowEnd: to.String(), AlertEpoch: a.Epoch,
		Tactic: a.Tactic(), Techniques: a.Techniques(), Rule: a.Rule(),
		Product:       productInfo{Name: Product, Vendor: ProductVendor, Version: ProductVersion()},
		SchemaVersion: AlertSchemaVersion, TenantId: a.Pivots.TenantId,
		Reasons: reasons, PeriodSeconds: finite(r.PeriodSeconds), Callbacks: r.Callbacks,
		InitiatingProcessSHA256: a.Pivots.SHA256, InitiatingProcessSHA1: a.Pivots.SHA1,
		InitiatingProcessFolderPath: a.Pivots.FolderPath, InitiatingProcessCommandLine: a.Pivots.CommandLine,
		InitiatingProcessId: a.Pivots.ProcessId, ReportId: a.Pivots.ReportId,
		Link: a.Link, Parameters: paramsOf(&a.Params, a.ReAlert),
	}
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
	DetectedAt time.Time
	AlertEpoch int64
	Parameters alertParams

	Severity      string
	Score         float64
	PeriodSeconds float64
	Callbacks     int64
	Reasons       []string
	TenantId      string
	Link          string

	SHA256      string `json:"InitiatingProcessSHA256"`
	SHA1        string `json:"InitiatingProcessSHA1"`
	FolderPath  string `json:"InitiatingProcessFolderPath"`
	CommandLine string `json:"InitiatingProcessCommandLine"`
	ProcessId   int64  `json:"InitiatingProcessId"`
	ReportId    int64

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
			Score: j.Score, Severity: j.Severity, PeriodSeconds: j.PeriodSeconds, Callbacks: j.Callbacks, Reasons: j.Reasons,
		},
		DetectedAt: j.DetectedAt, Link: j.Link,
		Pivots: Pivots{TenantId: j.TenantId, SHA256: j.SHA256, SHA1: j.SHA1, FolderPath: j.FolderPath,
			CommandLine: j.CommandLine, ProcessId: j.ProcessId, ReportId: j.ReportId},
	}
	a.Row.R.On = j.Profile == beacon.ProfileRobust // its row has the robust columns (Title, AppendJSON)
	return a, nil
}

// String is the alert in one line, for people.
func (a *Alert) String() string {
	r := &a.Row
	acct := r.Account()
	dom := ""
	if len(r.Domains) > 0 && r.Domains[0] != "" {
		dom = " (" + strings.Join(r.Domains, ",") + ")"
	}
	return fmt.Sprintf("%s %s %s %s -> %s:%d%s every %.0fs ±%.1f%% over %d callbacks [%s]",
		a.StreamTime, r.DeviceName, acct, r.FileName, r.RemoteIP, r.RemotePort, dom,
		r.Avg, r.Jitter, r.Count+1, a.ID[:min(12, len(a.ID))])
}

// detectionClock is implemented by alert sinks that say when an alert is
// detected; without one it is the wall clock.
type detectionClock interface {
	detectedAt(stream beacon.Time) time.Time
}

// detectedAt: a replay runs in event time, so its alerts are detected at
// their stream time, as a caught-up live detector would have.
func (r *replay) detectedAt(stream beacon.Time) time.Time { return stream.Go().UTC() }

// newAlert is the alert of a member of the set at an evaluation point.
func (w *worker) newAlert(t *beacon.Tuple, epoch int64, now beacon.Time, row beacon.Row) Alert {
	cfg := w.cfg
	a := Alert{
		ID:      AlertID(cfg.profile, &cfg.params, cfg.reAlert, t, epoch),
		Profile: cfg.profile, Params: cfg.params, ReAlert: cfg.reAlert, Epoch: epoch,
		StreamTime: now, Row: row, Pivots: w.pivots(t),
	}
	if c, ok := w.owner.(detectionClock); ok {
		a.DetectedAt = c.detectedAt(now)
	} else {
		a.DetectedAt = time.Now().UTC()
	}
	if cfg.alertLink != "" {
		// The template was checked by New; a value that fails to render
		// leaves the link out rather than the alert.
		if tm, err := linkTemplate(cfg.alertLink); err == nil {
			a.Link, _ = renderLink(tm, &a)
		}
	}
	return a
}

// pivots returns the pivots of the tuple's newest event that this
// partition has seen with them (pivots.go); zero when none.
func (w *worker) pivots(t *beacon.Tuple) Pivots { return w.pivotsOf.get(t) }

// Link templates (--alert-link) are Go text/template text over LinkData,
// e.g. https://security.microsoft.com/machines/v2/{{.DeviceId}}/overview;
// in a template without "{{", {Name} is short for {{.Name | query}} (the
// value query-escaped), so
//
//	https://security.microsoft.com/machines/v2/{DeviceId}/overview?tid={TenantId}
//
// works too. The functions query and path escape a value for a URL's
// query or path.
var linkTemplates sync.Map // string → *template.Template

var placeholder = regexp.MustCompile(`\{([A-Za-z][A-Za-z0-9]*)\}`)

// LinkData are the values a link template can use.
type LinkData struct {
	AlertId, DeviceId, DeviceName, AccountName, AccountDomain, FileName, RemoteIP string
	RemotePort                                                                    int32
	TenantId, SHA256, SHA1                                                        string
	ProcessId, ReportId                                                           int64
	StreamTime, DetectedAt, FirstSeen, LastSeen                                   string
}

func linkTemplate(text string) (*template.Template, error) {
	if t, ok := linkTemplates.Load(text); ok {
		return t.(*template.Template), nil
	}
	expanded := text
	if !strings.Contains(text, "{{") {
		expanded = placeholder.ReplaceAllStringFunc(text, func(m string) string {
			return "{{." + m[1:len(m)-1] + " | query}}"
		})
	}
	t, err := template.New("alert-link").Option("missingkey=error").Funcs(template.FuncMap{
		"query": func(v any) string { return url.QueryEscape(fmt.Sprint(v)) },
		"path":  func(v any) string { return url.PathEscape(fmt.Sprint(v)) },
	}).Parse(expanded)
	if err != nil {
		return nil, fmt.Errorf("alert link template: %w", err)
	}
	// Render once on a sample, so that a field that does not exist is an
	// error at start, not a missing link on every alert.
	if _, err := renderLink(t, &Alert{}); err != nil {
		return nil, fmt.Errorf("alert link template: %w", err)
	}
	linkTemplates.Store(text, t)
	return t, nil
}

// CheckAlertLink reports whether text is a valid --alert-link template.
func CheckAlertLink(text string) error {
	if text == "" {
		return nil
	}
	_, err := linkTemplate(text)
	return err
}

func renderLink(t *template.Template, a *Alert) (string, error) {
	r := &a.Row
	d := LinkData{AlertId: a.ID, DeviceId: r.DeviceId, DeviceName: r.DeviceName, AccountName: r.AccountName,
		AccountDomain: r.AccountDomain, FileName: r.FileName, RemoteIP: r.RemoteIP, RemotePort: r.RemotePort,
		TenantId: a.Pivots.TenantId, SHA256: a.Pivots.SHA256, SHA1: a.Pivots.SHA1, ProcessId: a.Pivots.ProcessId,
		ReportId: a.Pivots.ReportId, StreamTime: a.StreamTime.String(), DetectedAt: a.DetectedAtText(),
		FirstSeen: a.FirstSeen().String(), LastSeen: a.LastSeen().String()}
	var b strings.Builder
	if err := t.Execute(&b, &d); err != nil {
		return "", err
	}
	return b.String(), nil
}
