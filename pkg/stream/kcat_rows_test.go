package stream

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

// TestKcatRowsEqualHunt: what kcat (librdkafka) produces — flat JSON lines
// and Streaming API envelopes, to partitions of its own choosing — is
// detected as the batch query finds it: /beacons equals hunt per partition
// row for row, and every alert kcat reads back carries the row of its
// tuple in the batch query over its partition's events up to the alert's
// stream time (the fleet reports in order, so that is what the partition
// had seen). Comparing rows, not IDs, catches an ingest that loses
// records: the counts and gaps change.
func TestKcatRowsEqualHunt(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is required for the interop test (apt-get install kcat): %v", err)
	}
	const parts = 3
	cl := testkit.NewCluster(t, []testkit.Topic{{Name: tInput, Partitions: 3}, {Name: tRepart, Partitions: parts},
		{Name: tAlerts, Partitions: 2}, {Name: tDead, Partitions: 1}})
	c := testFleet(6)
	c.LateRate = -1
	rs, _ := records(t, c)
	var in bytes.Buffer
	for i := 0; i < len(rs); {
		if i%1000 < 700 {
			in.Write(fleet.AppendJSON(nil, &rs[i]))
			i++
		} else {
			n := min(25, len(rs)-i)
			in.Write(fleet.AppendEnvelope(nil, "", rs[i:i+n]))
			i += n
		}
		in.WriteByte('\n')
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prod := exec.CommandContext(ctx, kcat, "-P", "-b", cl.Addr, "-t", tInput, "-X", "broker.address.family=v4")
	prod.Stdin = &in
	if out, err := prod.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}

	p := testParams()
	s := service(t, cl.Addr, t.TempDir(), testLogger(t), Params(p), Warmup(30*time.Minute))
	stop := start(t, s)
	cl.WaitCommitted(t, 90*time.Second, "test.ingest", tInput)
	cl.WaitCommitted(t, 90*time.Second, "test.detect", tRepart)
	want := jsonl(huntByPartition(p, rs, parts))
	if got := getBeacons(t, s, ""); got != want {
		t.Errorf("/beacons over kcat's records differs from hunt per partition:\n%s", diffLines(got, want))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	cctx, ccancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer ccancel()
	out, err := exec.CommandContext(cctx, kcat, "-C", "-b", cl.Addr, "-t", tAlerts, "-o", "beginning", "-e", "-q",
		"-f", "%s\n", "-X", "broker.address.family=v4").Output()
	if err != nil {
		t.Fatalf("kcat -C: %v", err)
	}
	var alerts []Alert
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		a, err := ParseAlert([]byte(l))
		if err != nil {
			t.Fatalf("kcat alert: %v: %.200s", err, l)
		}
		alerts = append(alerts, a)
	}
	if len(alerts) < 5 {
		t.Fatalf("only %d alerts", len(alerts))
	}
	checkAlertRows(t, p, rs, parts, alerts)
	t.Logf("%d events from kcat, %d alerts read by kcat, rows checked", len(rs), len(alerts))
}
