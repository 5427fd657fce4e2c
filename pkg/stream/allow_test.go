package stream

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// TestReplayAllow: with an allow list, the rows it matches are neither
// alerted nor in the final beacon set, every other row and alert is what
// the replay without it gives, and each suppressed member is counted in
// beacon_beacons_allowed_total.
func TestReplayAllow(t *testing.T) {
	_, addr := newCluster(t, 1)
	rs, _ := records(t, testFleet(3))
	produceJSON(t, addr, rs)
	p := testParams()
	plain := replayOf(t, addr, ReplayOptions{Partitions: 2}, Params(p), Warmup(-1))
	if len(plain.Rows) < 2 {
		t.Fatalf("only %d rows without an allow list", len(plain.Rows))
	}
	// Allow the process of the first row: some rows go, others stay.
	allowed := plain.Rows[0].FileName
	a, err := beacon.ReadAllowList(strings.NewReader("process "+strings.ToUpper(allowed)+"\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	res := replayOf(t, addr, ReplayOptions{Partitions: 2}, Params(p), Warmup(-1), Allow(a), Registry(reg))
	wantRows, _ := a.Filter(append([]beacon.Row(nil), plain.Rows...))
	if len(wantRows) == 0 || len(wantRows) == len(plain.Rows) {
		t.Fatalf("allowing %s keeps %d of %d rows: the test shows nothing", allowed, len(wantRows), len(plain.Rows))
	}
	if got, want := jsonl(res.Rows), jsonl(wantRows); got != want {
		t.Errorf("rows with the allow list differ from the filtered rows:\n%s", diffLines(got, want))
	}
	var wantAlerts, suppressed []string
	for _, al := range plain.Alerts {
		if al.Row.FileName == allowed {
			suppressed = append(suppressed, al.ID)
		} else {
			wantAlerts = append(wantAlerts, al.ID)
		}
	}
	var gotAlerts []string
	for _, al := range res.Alerts {
		if al.Row.FileName == allowed {
			t.Errorf("alert %s of an allowed process %s", al.ID, allowed)
		}
		gotAlerts = append(gotAlerts, al.ID)
	}
	if strings.Join(gotAlerts, " ") != strings.Join(wantAlerts, " ") {
		t.Errorf("alerts %v, want %v", gotAlerts, wantAlerts)
	}
	if got := allowedTotal(t, reg); got != float64(len(suppressed)) {
		t.Errorf("beacon_beacons_allowed_total = %v, want %d (the alerts suppressed)", got, len(suppressed))
	}
}

// allowedTotal returns beacon_beacons_allowed_total from reg.
func allowedTotal(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "beacon_beacons_allowed_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no beacon_beacons_allowed_total")
	return 0
}
