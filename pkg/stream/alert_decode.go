package stream

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// DecodeAlert reads an alert record of any format back, as a consumer of
// the alert topic would (the demo's printer, tools, tests). JSON and Avro
// restore what ParseAlert does; ECS and OCSF documents restore the tuple,
// the times, the explanation and the statistics they carry (period,
// jitter, callbacks, devices, domains), not the parameters or the full
// delta list.
func DecodeAlert(f AlertFormat, v []byte) (Alert, error) {
	switch f {
	case AlertJSON, "":
		return ParseAlert(v)
	case AlertAvro:
		return decodeAvroAlert(v)
	case AlertECS:
		return decodeECS(v)
	case AlertOCSF:
		return decodeOCSF(v)
	}
	return Alert{}, fmt.Errorf("unknown alert format %q", f)
}

func decodeAvroAlert(v []byte) (Alert, error) {
	if len(v) >= 5 && v[0] == 0 { // Confluent framing: an AlertId is never empty
		v = v[5:]
	}
	c, err := newAlertCodec(AlertAvro, -1)
	if err != nil {
		return Alert{}, err
	}
	m, err := c.decode(v)
	if err != nil {
		return Alert{}, err
	}
	if s, _ := m["DetectedAt"].(string); s == "" {
		delete(m, "DetectedAt")
	}
	// The Avro record has the JSON alert's names.
	j, err := json.Marshal(m)
	if err != nil {
		return Alert{}, err
	}
	return ParseAlert(j)
}

func decodeECS(v []byte) (Alert, error) {
	var d struct {
		Timestamp time.Time `json:"@timestamp"`
		Event     struct {
			Kind  string    `json:"kind"`
			ID    string    `json:"id"`
			Start time.Time `json:"start"`
			URL   string    `json:"url"`
		} `json:"event"`
		Host struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"host"`
		User struct {
			Name   string `json:"name"`
			Domain string `json:"domain"`
		} `json:"user"`
		Process struct {
			Name        string `json:"name"`
			Executable  string `json:"executable"`
			CommandLine string `json:"command_line"`
			PID         int64  `json:"pid"`
			Hash        struct {
				SHA256 string `json:"sha256"`
				SHA1   string `json:"sha1"`
			} `json:"hash"`
		} `json:"process"`
		Destination struct {
			IP   string `json:"ip"`
			Port int32  `json:"port"`
		} `json:"destination"`
		Organization struct {
			ID string `json:"id"`
		} `json:"organization"`
		Beacon ecsBeaconCustom `json:"beacon"`
	}
	if err := json.Unmarshal(v, &d); err != nil {
		return Alert{}, err
	}
	if d.Event.Kind != "alert" || d.Event.ID == "" {
		return Alert{}, errors.New("not a beacon ECS alert: no event.kind alert with an event.id")
	}
	a := Alert{ID: d.Event.ID, DetectedAt: d.Timestamp.UTC(), Link: d.Event.URL}
	a.Row.Tuple = beacon.Tuple{DeviceId: d.Host.ID, DeviceName: d.Host.Name, AccountName: d.User.Name,
		AccountDomain: d.User.Domain, FileName: d.Process.Name, RemoteIP: d.Destination.IP, RemotePort: d.Destination.Port}
	a.Row.MinTimestamp = beacon.TimeOf(d.Event.Start)
	d.Beacon.fill(&a)
	a.Pivots = Pivots{TenantId: d.Organization.ID, SHA256: d.Process.Hash.SHA256, SHA1: d.Process.Hash.SHA1,
		FolderPath: d.Process.Executable, CommandLine: d.Process.CommandLine, ProcessId: d.Process.PID, ReportId: a.Pivots.ReportId}
	return a, nil
}

func decodeOCSF(v []byte) (Alert, error) {
	var d struct {
		ClassUID    int   `json:"class_uid"`
		Time        int64 `json:"time"`
		FindingInfo struct {
			UID           string `json:"uid"`
			FirstSeenTime int64  `json:"first_seen_time"`
			SrcURL        string `json:"src_url"`
		} `json:"finding_info"`
		Evidences []struct {
			Actor struct {
				User struct {
					Name   string `json:"name"`
					Domain string `json:"domain"`
				} `json:"user"`
				Process struct {
					Name    string `json:"name"`
					PID     int64  `json:"pid"`
					CmdLine string `json:"cmd_line"`
					File    struct {
						Path   string `json:"path"`
						Hashes []struct {
							AlgorithmID int    `json:"algorithm_id"`
							Value       string `json:"value"`
						} `json:"hashes"`
					} `json:"file"`
				} `json:"process"`
			} `json:"actor"`
			Device struct {
				UID      string `json:"uid"`
				Hostname string `json:"hostname"`
			} `json:"device"`
			DstEndpoint struct {
				IP   string `json:"ip"`
				Port int32  `json:"port"`
			} `json:"dst_endpoint"`
		} `json:"evidences"`
		Metadata struct {
			TenantUID string `json:"tenant_uid"`
		} `json:"metadata"`
		Unmapped struct {
			Beacon ecsBeaconCustom `json:"beacon"`
		} `json:"unmapped"`
	}
	if err := json.Unmarshal(v, &d); err != nil {
		return Alert{}, err
	}
	if d.ClassUID != ocsfClassUID || d.FindingInfo.UID == "" || len(d.Evidences) == 0 {
		return Alert{}, errors.New("not a beacon OCSF alert: no Detection Finding (class_uid 2004) with a finding_info.uid and evidences")
	}
	e := &d.Evidences[0]
	a := Alert{ID: d.FindingInfo.UID, DetectedAt: time.UnixMilli(d.Time).UTC(), Link: d.FindingInfo.SrcURL}
	a.Row.Tuple = beacon.Tuple{DeviceId: e.Device.UID, DeviceName: e.Device.Hostname, AccountName: e.Actor.User.Name,
		AccountDomain: e.Actor.User.Domain, FileName: e.Actor.Process.Name, RemoteIP: e.DstEndpoint.IP, RemotePort: e.DstEndpoint.Port}
	a.Row.MinTimestamp = beacon.TimeOf(time.UnixMilli(d.FindingInfo.FirstSeenTime))
	d.Unmapped.Beacon.fill(&a)
	a.Pivots.TenantId = d.Metadata.TenantUID
	a.Pivots.FolderPath, a.Pivots.CommandLine, a.Pivots.ProcessId = e.Actor.Process.File.Path, e.Actor.Process.CmdLine, e.Actor.Process.PID
	for _, h := range e.Actor.Process.File.Hashes {
		switch h.AlgorithmID {
		case 3:
			a.Pivots.SHA256 = h.Value
		case 2:
			a.Pivots.SHA1 = h.Value
		}
	}
	return a, nil
}
