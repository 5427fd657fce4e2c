package stream

import (
	"encoding/json"
	"math"
	"strings"
	"time"
)

// OCSFVersion is the OCSF schema version OCSF alerts follow.
const OCSFVersion = "1.1.0"

// OCSF Detection Finding (class_uid 2004, category_uid 2 Findings),
// activity Create. Every attribute is one of OCSFVersion's (checked by
// TestAlertFieldNames against testdata/ocsf-fields.txt); what OCSF has no
// attribute for is under unmapped.beacon.
const (
	ocsfCategoryUID = 2
	ocsfClassUID    = 2004
	ocsfActivityUID = 1 // Create
)

// ocsfSeverity maps Severity to severity_id: 2 Low, 3 Medium, 4 High, 5
// Critical (1 Informational and 6 Fatal are not used).
var ocsfSeverity = map[string]struct {
	id   int
	name string
}{"low": {2, "Low"}, "medium": {3, "Medium"}, "high": {4, "High"}, "critical": {5, "Critical"}}

type ocsfDoc struct {
	ActivityID   int             `json:"activity_id"`
	ActivityName string          `json:"activity_name"`
	CategoryUID  int             `json:"category_uid"`
	CategoryName string          `json:"category_name"`
	ClassUID     int             `json:"class_uid"`
	ClassName    string          `json:"class_name"`
	TypeUID      int             `json:"type_uid"`
	TypeName     string          `json:"type_name"`
	Time         int64           `json:"time"`
	StartTime    int64           `json:"start_time"`
	EndTime      int64           `json:"end_time"`
	Count        int64           `json:"count"`
	SeverityID   int             `json:"severity_id"`
	Severity     string          `json:"severity"`
	StatusID     int             `json:"status_id"`
	Status       string          `json:"status"`
	Message      string          `json:"message"`
	RiskScore    int             `json:"risk_score"`
	FindingInfo  ocsfFindingInfo `json:"finding_info"`
	Attacks      []ocsfAttack    `json:"attacks"`
	Evidences    []ocsfEvidence  `json:"evidences"`
	Resources    []ocsfResource  `json:"resources"`
	Observables  []ocsfObserv    `json:"observables"`
	Metadata     ocsfMetadata    `json:"metadata"`
	Unmapped     ocsfUnmapped    `json:"unmapped"`
}

type ocsfFindingInfo struct {
	UID           string       `json:"uid"`
	Title         string       `json:"title"`
	Desc          string       `json:"desc"`
	Types         []string     `json:"types"`
	CreatedTime   int64        `json:"created_time"`
	FirstSeenTime int64        `json:"first_seen_time"`
	LastSeenTime  int64        `json:"last_seen_time"`
	SrcURL        string       `json:"src_url,omitempty"`
	Analytic      ocsfAnalytic `json:"analytic"`
	Attacks       []ocsfAttack `json:"attacks"`
}

type ocsfAnalytic struct {
	UID     string `json:"uid"`
	Name    string `json:"name"`
	Version string `json:"version"`
	TypeID  int    `json:"type_id"`
	Type    string `json:"type"`
}

type ocsfAttack struct {
	Tactic    ocsfNamed `json:"tactic"`
	Technique ocsfNamed `json:"technique"`
	Version   string    `json:"version"`
}

type ocsfNamed struct {
	UID    string `json:"uid"`
	Name   string `json:"name"`
	SrcURL string `json:"src_url"`
}

type ocsfEvidence struct {
	Actor       ocsfActor    `json:"actor"`
	Device      ocsfDevice   `json:"device"`
	DstEndpoint ocsfEndpoint `json:"dst_endpoint"`
	Data        ocsfData     `json:"data"`
}

type ocsfActor struct {
	User    ocsfUser    `json:"user"`
	Process ocsfProcess `json:"process"`
}

type ocsfUser struct {
	Name   string `json:"name"`
	Domain string `json:"domain,omitempty"`
}

type ocsfProcess struct {
	Name    string    `json:"name"`
	PID     int64     `json:"pid,omitempty"`
	CmdLine string    `json:"cmd_line,omitempty"`
	File    *ocsfFile `json:"file,omitempty"`
}

type ocsfFile struct {
	Name   string     `json:"name"`
	Path   string     `json:"path,omitempty"`
	TypeID int        `json:"type_id"`
	Hashes []ocsfHash `json:"hashes,omitempty"`
}

type ocsfHash struct {
	AlgorithmID int    `json:"algorithm_id"`
	Algorithm   string `json:"algorithm"`
	Value       string `json:"value"`
}

type ocsfDevice struct {
	UID      string `json:"uid"`
	Name     string `json:"name"`
	Hostname string `json:"hostname"`
	TypeID   int    `json:"type_id"`
}

type ocsfEndpoint struct {
	IP       string `json:"ip"`
	Port     int32  `json:"port"`
	Hostname string `json:"hostname,omitempty"`
}

// ocsfData is the evidence's data: the statistics that make it a beacon.
type ocsfData struct {
	PeriodSeconds float64 `json:"period_seconds"`
	Jitter        float64 `json:"jitter"`
	Callbacks     int64   `json:"callbacks"`
	DeviceCount   int64   `json:"device_count"`
}

type ocsfResource struct {
	UID  string `json:"uid"`
	Name string `json:"name"`
	Type string `json:"type"`
}

type ocsfObserv struct {
	Name   string `json:"name"`
	TypeID int    `json:"type_id"`
	Type   string `json:"type"`
	Value  string `json:"value"`
}

type ocsfMetadata struct {
	Version   string      `json:"version"`
	UID       string      `json:"uid"`
	TenantUID string      `json:"tenant_uid,omitempty"`
	Product   ocsfProduct `json:"product"`
}

type ocsfProduct struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
	Version    string `json:"version"`
}

type ocsfUnmapped struct {
	Beacon ecsBeaconCustom `json:"beacon"`
}

func unixMilli(t time.Time) int64 { return t.UnixMilli() }

// ocsf returns the alert as an OCSF Detection Finding: time is the
// detection time, start_time and end_time the first and last callback.
func (a *Alert) ocsf() *ocsfDoc {
	r := &a.Row
	rule := a.Rule()
	tac := a.Tactic()
	sev := ocsfSeverity[r.Severity]
	if sev.id == 0 {
		sev.id, sev.name = 99, "Other"
	}
	var attacks []ocsfAttack
	for _, t := range a.Techniques() {
		attacks = append(attacks, ocsfAttack{
			Tactic:    ocsfNamed{UID: tac.ID, Name: tac.Name, SrcURL: attackRef(tac.ID)},
			Technique: ocsfNamed{UID: t.ID, Name: t.Name, SrcURL: attackRef(t.ID)},
			Version:   attackVersion,
		})
	}
	detected := a.DetectedAt
	if detected.IsZero() {
		detected = a.StreamTime.Go()
	}
	host := r.DeviceName
	if i := strings.IndexByte(host, '.'); i > 0 {
		host = host[:i]
	}
	proc := ocsfProcess{Name: r.FileName, PID: a.Pivots.ProcessId, CmdLine: a.Pivots.CommandLine}
	if a.Pivots.FolderPath != "" || a.Pivots.SHA256 != "" || a.Pivots.SHA1 != "" {
		f := &ocsfFile{Name: r.FileName, Path: a.Pivots.FolderPath, TypeID: 1} // 1: Regular File
		if a.Pivots.SHA256 != "" {
			f.Hashes = append(f.Hashes, ocsfHash{3, "SHA-256", a.Pivots.SHA256})
		}
		if a.Pivots.SHA1 != "" {
			f.Hashes = append(f.Hashes, ocsfHash{2, "SHA-1", a.Pivots.SHA1})
		}
		proc.File = f
	}
	obs := []ocsfObserv{
		{Name: "evidences.device.hostname", TypeID: 1, Type: "Hostname", Value: r.DeviceName},
		{Name: "evidences.dst_endpoint.ip", TypeID: 2, Type: "IP Address", Value: r.RemoteIP},
		{Name: "evidences.actor.user.name", TypeID: 4, Type: "User Name", Value: r.AccountName},
		{Name: "evidences.actor.process.name", TypeID: 9, Type: "Process Name", Value: r.FileName},
	}
	if a.Pivots.SHA256 != "" {
		obs = append(obs, ocsfObserv{Name: "evidences.actor.process.file.hashes.value", TypeID: 8, Type: "Hash", Value: a.Pivots.SHA256})
	}
	return &ocsfDoc{
		ActivityID: ocsfActivityUID, ActivityName: "Create",
		CategoryUID: ocsfCategoryUID, CategoryName: "Findings",
		ClassUID: ocsfClassUID, ClassName: "Detection Finding",
		TypeUID: ocsfClassUID*100 + ocsfActivityUID, TypeName: "Detection Finding: Create",
		Time:      unixMilli(detected),
		StartTime: unixMilli(a.FirstSeen().Go()), EndTime: unixMilli(a.LastSeen().Go()),
		Count:      r.Callbacks,
		SeverityID: sev.id, Severity: sev.name,
		StatusID: 1, Status: "New",
		Message:   a.Title(),
		RiskScore: int(math.Round(finite(r.Score) * 100)),
		FindingInfo: ocsfFindingInfo{
			UID: a.ID, Title: a.Title(), Desc: strings.Join(r.Reasons, "; "), Types: []string{"Network Beacon"},
			CreatedTime: unixMilli(detected), FirstSeenTime: unixMilli(a.FirstSeen().Go()), LastSeenTime: unixMilli(a.LastSeen().Go()),
			SrcURL:   a.Link,
			Analytic: ocsfAnalytic{UID: rule.Id, Name: rule.Name, Version: rule.Version, TypeID: 1, Type: "Rule"},
			Attacks:  attacks,
		},
		Attacks: attacks,
		Evidences: []ocsfEvidence{{
			Actor:       ocsfActor{User: ocsfUser{Name: r.AccountName, Domain: r.AccountDomain}, Process: proc},
			Device:      ocsfDevice{UID: r.DeviceId, Name: host, Hostname: r.DeviceName, TypeID: 0},
			DstEndpoint: ocsfEndpoint{IP: r.RemoteIP, Port: r.RemotePort, Hostname: firstDomain(r.Domains)},
			Data:        ocsfData{PeriodSeconds: finite(r.PeriodSeconds), Jitter: finite(r.Jitter), Callbacks: r.Callbacks, DeviceCount: r.DeviceCount},
		}},
		Resources:   []ocsfResource{{UID: r.DeviceId, Name: r.DeviceName, Type: "Device"}},
		Observables: obs,
		Metadata: ocsfMetadata{Version: OCSFVersion, UID: a.ID, TenantUID: a.Pivots.TenantId,
			Product: ocsfProduct{Name: Product, VendorName: ProductVendor, Version: ProductVersion()}},
		Unmapped: ocsfUnmapped{Beacon: a.beaconCustom()},
	}
}

// AppendOCSF appends the alert as one OCSF Detection Finding (JSON).
func (a *Alert) AppendOCSF(b []byte) []byte {
	j, _ := json.Marshal(a.ocsf())
	return append(b, j...)
}
