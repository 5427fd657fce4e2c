package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/stream"
)

// TestReplayAlertFormats: replay --alerts in every --alert-format writes
// the same alerts; ECS documents carry @timestamp = the detection time and
// what Elastic keys on, OCSF findings class 2004 with their title,
// severity and ATT&CK; Avro is a container file of the schema.
func TestReplayAlertFormats(t *testing.T) {
	t.Parallel()
	addr := testkit.NewCluster(t, testkit.Topics(3, "fmt")).Addr
	simulateDay(t, addr, "fmt", "envelope", 10, "4")
	dir := t.TempDir()
	files := map[string]string{}
	for _, f := range []string{"json", "ecs", "ocsf", "avro"} {
		files[f] = filepath.Join(dir, "alerts."+f)
		cmdRun(t, "replay", "--quiet", "--brokers", addr, "--topic", "fmt", "--lookback", "1h", "--warmup", "1h",
			"--alert-format", f, "--alerts", files[f], "--out", filepath.Join(dir, "set-"+f))
	}
	lines := func(f string) []string {
		b, err := os.ReadFile(files[f])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	var want []stream.Alert
	for _, l := range lines("json") {
		a, err := stream.ParseAlert([]byte(l))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, a)
	}
	if len(want) < 3 {
		t.Fatalf("only %d alerts: a weak check", len(want))
	}
	for i, l := range lines("ecs") {
		var d struct {
			Timestamp string `json:"@timestamp"`
			Event     struct{ Kind, ID string }
			Rule      struct{ Name string }
			Threat    struct {
				Technique struct{ ID []string }
			}
			Host        struct{ Name string }
			Process     struct{ Name string }
			Destination struct{ IP string }
		}
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatal(err)
		}
		w := &want[i]
		at, err := time.Parse(time.RFC3339Nano, d.Timestamp)
		if err != nil || !at.Equal(w.DetectedAt) || w.DetectedAt.IsZero() || d.Event.Kind != "alert" || d.Event.ID != w.ID ||
			d.Rule.Name == "" || !slices.Contains(d.Threat.Technique.ID, "T1071") || d.Host.Name != w.Row.DeviceName ||
			d.Process.Name != w.Row.FileName || d.Destination.IP != w.Row.RemoteIP {
			t.Errorf("ECS alert %d: %+v, want %s detected at %s", i, d, w.ID, w.DetectedAt)
		}
		// A replay detects in event time: at the stream time, never
		// at the first callback.
		if !at.Equal(w.StreamTime.Go()) || at.Equal(w.Row.MinTimestamp.Go()) {
			t.Errorf("ECS alert %d: @timestamp %s, stream time %s, first seen %s", i, at, w.StreamTime, w.Row.MinTimestamp)
		}
	}
	for i, l := range lines("ocsf") {
		var d struct {
			ClassUID    int                         `json:"class_uid"`
			SeverityID  int                         `json:"severity_id"`
			FindingInfo struct{ Title, UID string } `json:"finding_info"`
			Attacks     []struct {
				Technique struct{ UID string }
			}
		}
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatal(err)
		}
		if d.ClassUID != 2004 || d.FindingInfo.UID != want[i].ID || d.FindingInfo.Title != want[i].Title() ||
			d.SeverityID < 2 || d.SeverityID > 5 || len(d.Attacks) == 0 || d.Attacks[0].Technique.UID != "T1071" {
			t.Errorf("OCSF alert %d: %+v", i, d)
		}
	}
	f, err := os.Open(files["avro"])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := goavro.NewOCFReader(f)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; r.Scan(); n++ {
		d, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		if n >= len(want) || d.(map[string]any)["AlertId"] != want[n].ID {
			t.Errorf("Avro alert %d: %v", n, d.(map[string]any)["AlertId"])
		}
	}
	if n != len(want) {
		t.Errorf("%d Avro alerts, %d JSON", n, len(want))
	}
}
