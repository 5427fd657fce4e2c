package stream

import (
	"encoding/binary"
	"fmt"

	"github.com/linkedin/goavro/v2"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/schemas"
)

const alertSchemaFile = "BeaconAlert.avsc"

// alertCodec encodes alerts in a format other than the default JSON: ECS,
// OCSF, or Avro per schemas/BeaconAlert.avsc (raw binary, or the
// Confluent wire format when a schema id is set).
type alertCodec struct {
	format   AlertFormat
	codec    *goavro.Codec // Avro only
	schemaID int32         // -1: raw binary
}

// newAlertCodec returns the codec of a format; nil (and no error) for
// JSON, which Alert.AppendJSON writes.
func newAlertCodec(format AlertFormat, schemaID int32) (*alertCodec, error) {
	switch format {
	case AlertJSON, "":
		return nil, nil
	case AlertECS, AlertOCSF:
		return &alertCodec{format: format}, nil
	case AlertAvro:
	default:
		return nil, fmt.Errorf("stream: unknown alert format %q", format)
	}
	c, err := avroAlertCodec()
	if err != nil {
		return nil, err
	}
	return &alertCodec{format: AlertAvro, codec: c, schemaID: schemaID}, nil
}

func avroAlertCodec() (*goavro.Codec, error) {
	text, err := schemas.FS.ReadFile(alertSchemaFile)
	if err != nil {
		return nil, fmt.Errorf("alert schema: %w", err)
	}
	c, err := goavro.NewCodec(string(text))
	if err != nil {
		return nil, fmt.Errorf("alert schema %s: %w", alertSchemaFile, err)
	}
	return c, nil
}

func (c *alertCodec) append(b []byte, a *Alert) ([]byte, error) {
	switch c.format {
	case AlertECS:
		return a.AppendECS(b), nil
	case AlertOCSF:
		return a.AppendOCSF(b), nil
	}
	if c.schemaID >= 0 {
		b = append(b, 0)
		b = binary.BigEndian.AppendUint32(b, uint32(c.schemaID))
	}
	return c.codec.BinaryFromNative(b, alertNative(a))
}

// decode reads an alert back (tests and tools); the Confluent header, if
// any, must already be stripped.
func (c *alertCodec) decode(b []byte) (map[string]any, error) {
	n, rest, err := c.codec.NativeFromBinary(b)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(rest))
	}
	return n.(map[string]any), nil
}

func alertNative(a *Alert) map[string]any {
	r := &a.Row
	from, to := a.Window()
	ts := func(t beacon.Time) string { return t.String() }
	techs := a.Techniques()
	tn := make([]any, len(techs))
	for i, t := range techs {
		tn[i] = map[string]any{"Id": t.ID, "Name": t.Name}
	}
	ap := paramsOf(&a.Params, a.ReAlert)
	actions := make([]any, len(ap.ActionTypes))
	for i, s := range ap.ActionTypes {
		actions[i] = s
	}
	deltas := make([]any, len(r.TimeDeltaList))
	for i, d := range r.TimeDeltaList {
		deltas[i] = d
	}
	reasons := make([]any, len(r.Reasons))
	for i, s := range r.Reasons {
		reasons[i] = s
	}
	tac, rule := a.Tactic(), a.Rule()
	domains := make([]any, len(r.Domains))
	for i, d := range r.Domains {
		domains[i] = d
	}
	return map[string]any{
		"AlertId": a.ID, "Profile": a.Profile, "StreamTime": ts(a.StreamTime),
		"WindowStart": ts(from), "WindowEnd": ts(to), "AlertEpoch": a.Epoch,
		"Techniques": tn,
		"Parameters": map[string]any{
			"starttime": ap.Starttime, "endtime": ap.Endtime, "TimeDeltaThresholdMin": ap.TimeDeltaThresholdMin,
			"TotalEventsThresholdMin": ap.TotalEventsThresholdMin, "TotalEventsThresholdMax": ap.TotalEventsThresholdMax,
			"JitterThreshold": ap.JitterThreshold, "OutlierThresholdMax": ap.OutlierThresholdMax,
			"OutlierCountMax": ap.OutlierCountMax, "OutlierThresholdLow": ap.OutlierThresholdLow,
			"CompromisedDeviceCountMax": ap.CompromisedDeviceCountMax, "ActionTypes": actions,
			"SleepMin": ap.SleepMin, "SleepMax": ap.SleepMax, "ReAlertInterval": ap.ReAlertInterval,
		},
		"DeviceId": r.DeviceId, "DeviceName": r.DeviceName,
		"InitiatingProcessAccountName": r.AccountName, "InitiatingProcessAccountDomain": r.AccountDomain,
		"InitiatingProcessFileName": r.FileName, "RemoteIP": r.RemoteIP, "RemotePort": r.RemotePort,
		"count_": r.Count, "min_Timestamp": ts(r.MinTimestamp), "max_Timestamp": ts(r.MaxTimestamp),
		"Duration":                        r.Duration,
		"percentile_TimeDeltaInSeconds_5": r.Percentiles[0], "percentile_TimeDeltaInSeconds_25": r.Percentiles[1],
		"percentile_TimeDeltaInSeconds_50": r.Percentiles[2], "percentile_TimeDeltaInSeconds_75": r.Percentiles[3],
		"percentile_TimeDeltaInSeconds_95": r.Percentiles[4],
		"TimeDeltaList":                    deltas,
		"TimeDeltaInSeconds_min":           r.Min, "TimeDeltaInSeconds_min_index": int64(r.MinIndex),
		"TimeDeltaInSeconds_max": r.Max, "TimeDeltaInSeconds_max_index": int64(r.MaxIndex),
		"TimeDeltaInSeconds_avg": r.Avg, "TimeDeltaInSeconds_stdev": r.Stdev,
		"TimeDeltaInSeconds_variance": r.Variance, "Jitter": r.Jitter,
		"BeaconSleepMin": r.SleepMin(), "BeaconSleepMax": r.SleepMax(),
		"Domains": domains, "dcount_DeviceId": r.DeviceCount, "Timestamp": ts(r.MinTimestamp),

		"SchemaVersion": AlertSchemaVersion, "DetectedAt": a.DetectedAtText(),
		"FirstSeen": ts(a.FirstSeen()), "LastSeen": ts(a.LastSeen()), "Title": a.Title(),
		"Severity": r.Severity, "Score": finite(r.Score), "PeriodSeconds": finite(r.PeriodSeconds),
		"Callbacks": r.Callbacks, "Reasons": reasons,
		"Tactic":   map[string]any{"Id": tac.ID, "Name": tac.Name},
		"Rule":     map[string]any{"Id": rule.Id, "Name": rule.Name, "Version": rule.Version},
		"Product":  map[string]any{"Name": Product, "Vendor": ProductVendor, "Version": ProductVersion()},
		"TenantId": a.Pivots.TenantId, "InitiatingProcessSHA256": a.Pivots.SHA256, "InitiatingProcessSHA1": a.Pivots.SHA1,
		"InitiatingProcessFolderPath": a.Pivots.FolderPath, "InitiatingProcessCommandLine": a.Pivots.CommandLine,
		"InitiatingProcessId": a.Pivots.ProcessId, "ReportId": a.Pivots.ReportId, "Link": a.Link,
	}
}
