package fleet

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// A hand-counted case: 3 implants (2 detected), 2 updaters (1 detected),
// 1 fleet service (detected), and 2 detections of unlabelled tuples.
// TP = 2, FN = 1, FP = 1 updater + 1 fleet service + 2 unlabelled = 4.
// Precision = 2/6, recall = 2/3.
func TestScoreHandCounted(t *testing.T) {
	tup := func(dev string) Tuple {
		return Tuple{DeviceId: dev, DeviceName: dev, FileName: "x.exe", RemoteIP: "1.2.3.4", RemotePort: 443}
	}
	t0, _ := beacon.ParseTime([]byte("2024-05-01T00:00:00Z"))
	labels := []Label{
		{Tuple: tup("i1"), Class: ClassImplant, Name: "cobaltstrike", FirstEvent: t0},
		{Tuple: tup("i2"), Class: ClassImplant, Name: "sliver", FirstEvent: t0},
		{Tuple: tup("i3"), Class: ClassImplant, Name: "empire", FirstEvent: t0},
		{Tuple: tup("u1"), Class: ClassUpdater, FirstEvent: t0},
		{Tuple: tup("u2"), Class: ClassUpdater, FirstEvent: t0},
		{Tuple: tup("f1"), Class: ClassFleetService, FirstEvent: t0},
	}
	det := []Detection{
		{tup("i1"), t0.Add(20 * time.Minute)},
		{tup("i1"), t0.Add(10 * time.Minute)}, // the earliest counts
		{tup("i2"), t0.Add(time.Hour)},
		{tup("u1"), t0},
		{tup("f1"), t0},
		{tup("n1"), t0},
		{tup("n2"), t0},
	}
	sc := Score(labels, det)
	if sc.TruePositives != 2 || sc.FalseNegatives != 1 || sc.FalsePositives != 4 {
		t.Fatalf("TP %d FN %d FP %d, want 2 1 4", sc.TruePositives, sc.FalseNegatives, sc.FalsePositives)
	}
	if sc.Precision != 2.0/6 || sc.Recall != 2.0/3 {
		t.Fatalf("precision %v recall %v", sc.Precision, sc.Recall)
	}
	want := []ClassScore{{ClassImplant, 3, 2, 1}, {ClassUpdater, 2, 1, 1}, {ClassFleetService, 1, 1, 0}, {ClassUnlabelled, 0, 2, 0}}
	if len(sc.Classes) != len(want) {
		t.Fatalf("classes %+v", sc.Classes)
	}
	for i := range want {
		if sc.Classes[i] != want[i] {
			t.Fatalf("class %d: %+v, want %+v", i, sc.Classes[i], want[i])
		}
	}
	ttf := map[string]time.Duration{}
	for _, b := range sc.Beacons {
		ttf[b.Label.DeviceId] = b.TimeToFirstAlert
	}
	if len(sc.Beacons) != 5 || ttf["i1"] != 10*time.Minute || ttf["i2"] != time.Hour || ttf["i3"] != 0 {
		t.Fatalf("beacons %+v", ttf)
	}
	var buf bytes.Buffer
	if err := sc.WriteTable(&buf); err != nil || !strings.Contains(buf.String(), "precision 0.333, recall 0.667") {
		t.Fatalf("table:\n%s", buf.String())
	}
}
