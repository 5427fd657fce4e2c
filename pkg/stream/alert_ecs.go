package stream

import (
	"encoding/json"
	"math"
	"strings"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// ECSVersion is the Elastic Common Schema version ECS alerts follow.
const ECSVersion = "8.11.0"

// ecsSeverity maps Severity to event.severity as Elastic's detection rules
// do (low 21, medium 47, high 73, critical 99).
var ecsSeverity = map[string]int{"low": 21, "medium": 47, "high": 73, "critical": 99}

// The ECS alert document (--alert-format ecs). Every field is an ECS
// field of ECSVersion (checked by TestAlertFieldNames against
// testdata/ecs-fields.txt) except beacon.*, the custom field set that
// holds what ECS has no field for (ECS reserves no "beacon" set).
type ecsDoc struct {
	Timestamp    string          `json:"@timestamp"`
	Message      string          `json:"message"`
	Tags         []string        `json:"tags"`
	ECS          ecsVersion      `json:"ecs"`
	Event        ecsEvent        `json:"event"`
	Rule         ecsRule         `json:"rule"`
	Threat       ecsThreat       `json:"threat"`
	Host         ecsHost         `json:"host"`
	User         ecsUser         `json:"user"`
	Process      ecsProcess      `json:"process"`
	Destination  ecsDestination  `json:"destination"`
	Observer     ecsObserver     `json:"observer"`
	Organization *ecsOrg         `json:"organization,omitempty"`
	Beacon       ecsBeaconCustom `json:"beacon"`
}

type ecsVersion struct {
	Version string `json:"version"`
}

type ecsEvent struct {
	Kind      string   `json:"kind"`
	Category  []string `json:"category"`
	Type      []string `json:"type"`
	Severity  int      `json:"severity"`
	RiskScore float64  `json:"risk_score"`
	ID        string   `json:"id"`
	Created   string   `json:"created,omitempty"`
	Start     string   `json:"start"`
	End       string   `json:"end"`
	Dataset   string   `json:"dataset"`
	Module    string   `json:"module"`
	Provider  string   `json:"provider"`
	Reason    string   `json:"reason"`
	URL       string   `json:"url,omitempty"`
}

type ecsRule struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Version     string   `json:"version"`
	Ruleset     string   `json:"ruleset"`
	Category    string   `json:"category"`
	Description string   `json:"description"`
	Author      []string `json:"author"`
}

type ecsThreat struct {
	Framework string       `json:"framework"`
	Tactic    ecsThreatRef `json:"tactic"`
	Technique ecsThreatRef `json:"technique"`
}

type ecsThreatRef struct {
	ID        []string `json:"id"`
	Name      []string `json:"name"`
	Reference []string `json:"reference"`
}

type ecsHost struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Hostname string `json:"hostname"`
}

type ecsUser struct {
	Name   string `json:"name"`
	Domain string `json:"domain,omitempty"`
}

type ecsProcess struct {
	Name        string   `json:"name"`
	Executable  string   `json:"executable,omitempty"`
	CommandLine string   `json:"command_line,omitempty"`
	PID         int64    `json:"pid,omitempty"`
	Hash        *ecsHash `json:"hash,omitempty"`
}

type ecsHash struct {
	SHA256 string `json:"sha256,omitempty"`
	SHA1   string `json:"sha1,omitempty"`
}

type ecsDestination struct {
	IP     string `json:"ip"`
	Port   int32  `json:"port"`
	Domain string `json:"domain,omitempty"`
}

type ecsObserver struct {
	Vendor  string `json:"vendor"`
	Product string `json:"product"`
	Version string `json:"version"`
	Type    string `json:"type"`
}

type ecsOrg struct {
	ID string `json:"id"`
}

// ecsBeaconCustom: what the alert has and ECS does not. The encoder
// (ecs) writes it and the decoder (decodeECS) reads it back with fill; the
// window is written for readers and not read back (Alert.Window derives it).
type ecsBeaconCustom struct {
	SchemaVersion string      `json:"schema_version"`
	Profile       string      `json:"profile"`
	StreamTime    beacon.Time `json:"stream_time"`
	WindowStart   beacon.Time `json:"window_start"`
	WindowEnd     beacon.Time `json:"window_end"`
	AlertEpoch    int64       `json:"alert_epoch"`
	Score         float64     `json:"score"`
	Severity      string      `json:"severity"`
	Reasons       []string    `json:"reasons"`
	PeriodSeconds float64     `json:"period_seconds"`
	Callbacks     int64       `json:"callbacks"`
	Jitter        float64     `json:"jitter"`
	DeviceCount   int64       `json:"device_count"`
	Domains       []string    `json:"domains"`
	ReportID      int64       `json:"report_id,omitempty"`
}

// beaconCustom returns the alert's custom fields, as ECS and OCSF (in
// unmapped) carry them.
func (a *Alert) beaconCustom() ecsBeaconCustom {
	r := &a.Row
	from, to := a.Window()
	return ecsBeaconCustom{SchemaVersion: AlertSchemaVersion, Profile: a.Profile, StreamTime: a.StreamTime,
		WindowStart: from, WindowEnd: to, AlertEpoch: a.Epoch,
		Score: finite(r.Score), Severity: r.Severity, Reasons: nonNil(r.Reasons), PeriodSeconds: finite(r.PeriodSeconds),
		Callbacks: r.Callbacks, Jitter: finite(r.Jitter), DeviceCount: r.DeviceCount, Domains: nonNil(r.Domains),
		ReportID: a.Pivots.ReportId}
}

// fill sets what the custom fields carry on a decoded alert.
func (b *ecsBeaconCustom) fill(a *Alert) {
	a.Profile, a.StreamTime, a.Epoch = b.Profile, b.StreamTime, b.AlertEpoch
	r := &a.Row
	r.Score, r.Severity, r.Reasons, r.PeriodSeconds, r.Callbacks = b.Score, b.Severity, b.Reasons, b.PeriodSeconds, b.Callbacks
	r.Avg, r.Jitter, r.DeviceCount, r.Domains = b.PeriodSeconds, b.Jitter, b.DeviceCount, b.Domains
	r.Count = max(b.Callbacks-1, 0)
	a.Pivots.ReportId = b.ReportID
}

func attackRef(id string) string {
	if strings.HasPrefix(id, "TA") {
		return "https://attack.mitre.org/tactics/" + id + "/"
	}
	return "https://attack.mitre.org/techniques/" + strings.ReplaceAll(id, ".", "/") + "/"
}

func firstDomain(ds []string) string {
	for _, d := range ds {
		if d != "" {
			return d
		}
	}
	return ""
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ecs returns the alert as an ECS alert document: @timestamp is the
// detection time, event.start and event.end the first and last callback.
func (a *Alert) ecs() *ecsDoc {
	r := &a.Row
	rule := a.Rule()
	tac := a.Tactic()
	var tech ecsThreatRef
	for _, t := range a.Techniques() {
		tech.ID = append(tech.ID, t.ID)
		tech.Name = append(tech.Name, t.Name)
		tech.Reference = append(tech.Reference, attackRef(t.ID))
	}
	host := r.DeviceName
	if i := strings.IndexByte(host, '.'); i > 0 {
		host = host[:i]
	}
	ts := a.DetectedAtText()
	if ts == "" { // an alert from before DetectedAt existed
		ts = a.StreamTime.Go().UTC().Format(rfc3339Nano)
	}
	d := &ecsDoc{
		Timestamp: ts,
		Message:   a.Title(),
		Tags:      []string{"beacon", "c2", tac.ID},
		ECS:       ecsVersion{ECSVersion},
		Event: ecsEvent{
			Kind: "alert", Category: []string{"network", "intrusion_detection"}, Type: []string{"connection", "info"},
			Severity: ecsSeverity[r.Severity], RiskScore: math.Round(finite(r.Score)*10000) / 100,
			ID: a.ID, Created: a.DetectedAtText(),
			Start: a.FirstSeen().Go().UTC().Format(rfc3339Nano), End: a.LastSeen().Go().UTC().Format(rfc3339Nano),
			Dataset: "beacon.alerts", Module: "beacon", Provider: Product,
			Reason: strings.Join(r.Reasons, "; "), URL: a.Link,
		},
		Rule: ecsRule{ID: rule.Id, Name: rule.Name, Version: rule.Version, Ruleset: Product, Category: tac.Name,
			Description: "A process that calls one destination at regular intervals: the Suspicious Network Beacons hunting query, streaming (profile " + a.Profile + ").",
			Author:      []string{"Cyb3rMonk (query)", ProductVendor}},
		Threat: ecsThreat{Framework: "MITRE ATT&CK",
			Tactic:    ecsThreatRef{ID: []string{tac.ID}, Name: []string{tac.Name}, Reference: []string{attackRef(tac.ID)}},
			Technique: tech},
		Host:        ecsHost{ID: r.DeviceId, Name: r.DeviceName, Hostname: host},
		User:        ecsUser{Name: r.AccountName, Domain: r.AccountDomain},
		Process:     ecsProcess{Name: r.FileName, Executable: a.Pivots.FolderPath, CommandLine: a.Pivots.CommandLine, PID: a.Pivots.ProcessId},
		Destination: ecsDestination{IP: r.RemoteIP, Port: r.RemotePort, Domain: firstDomain(r.Domains)},
		Observer:    ecsObserver{Vendor: ProductVendor, Product: Product, Version: ProductVersion(), Type: "ids"},
		Beacon:      a.beaconCustom(),
	}
	if a.Pivots.SHA256 != "" || a.Pivots.SHA1 != "" {
		d.Process.Hash = &ecsHash{SHA256: a.Pivots.SHA256, SHA1: a.Pivots.SHA1}
	}
	if a.Pivots.TenantId != "" {
		d.Organization = &ecsOrg{ID: a.Pivots.TenantId}
	}
	return d
}

const rfc3339Nano = "2006-01-02T15:04:05.999999999Z07:00"

// AppendECS appends the alert as one ECS alert document (JSON).
func (a *Alert) AppendECS(b []byte) []byte {
	j, _ := json.Marshal(a.ecs())
	return append(b, j...)
}
