package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/fleet"
	"github.com/beaconhunt/beacon/pkg/stream"
)

// ownedPartitions asks /readyz of a child how many repartition partitions it owns.
func ownedPartitions(httpAddr string) int {
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var r struct {
		Partitions []json.RawMessage `json:"partitions"`
	}
	b, _ := io.ReadAll(resp.Body)
	if json.Unmarshal(b, &r) != nil {
		return -1
	}
	return len(r.Partitions)
}

// endTotal is the sum of topic's end offsets.
func endTotal(t *testing.T, c *testkit.Cluster, topic string) int64 {
	var n int64
	for _, o := range c.EndOffsets(t, topic) {
		n += max(o, 0)
	}
	return n
}

// dataRecords counts topic's records that carry events: every record but
// the watermarks (kind 0x04 in pkg/stream/record.go's layout). Ingest
// writes a watermark per poll into every partition, so their number
// follows how the input happened to be polled, not what it held.
func dataRecords(t *testing.T, c *testkit.Cluster, topic string) int64 {
	const kindWatermark = 0x04
	var n int64
	for _, r := range testkit.ReadRecords(t, c, topic) {
		if len(r.Value) > 0 && r.Value[0] != kindWatermark {
			n++
		}
	}
	return n
}

// TestKillRestart kills a real 'beacon run' process with SIGKILL twice
// while it works through a backlog, restarting it on its state directory
// each time, and measures (1) how long the restarted process takes to own
// its partitions again: with the static membership ID stored in the state
// directory it takes them back at once instead of waiting for the dead
// member's session to expire; and (2) how much the repartition topic grows
// per kill against a run that is not killed (docs/streaming.md, "Faults").
// The alerts of the killed run are the clean run's.
func TestKillRestart(t *testing.T) {
	cluster := testkit.NewCluster(t, testkit.Topics(3, "beacon.events"))
	addr := cluster.Addr
	fc := fleet.Config{Seed: 9, Devices: 150, Duration: 12 * time.Hour, Sleeps: []time.Duration{30 * time.Second, time.Minute}}
	if raceEnabled {
		fc.Devices, fc.Duration = 30, 6*time.Hour
	}
	g, err := fleet.New(fc)
	if err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for r, ok := g.NextRecord(); ok; r, ok = g.NextRecord() {
		recs = append(recs, &kgo.Record{Value: fleet.AppendJSON(nil, &r)})
	}
	cluster.Produce(t, "beacon.events", recs...)
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	const session = 20 * time.Second
	args := func(name, stateDir, httpAddr string) []string {
		return []string{"--brokers", addr, "--group", name, "--repartition-topic", name + ".repartition",
			"--alert-topic", name + ".alerts", "--dead-letter-topic", name + ".deadletter", "--partitions", "2",
			"--state-dir", stateDir, "--listen", httpAddr, "--lookback", "1h", "--session-timeout", session.String(),
			"--log-level", "warn"}
	}
	// done: both of a run's groups have committed everything.
	done := func(name string) (bool, string) {
		fi, si := cluster.Committed(t, name+".ingest", "beacon.events")
		fd, sd := cluster.Committed(t, name+".detect", name+".repartition")
		return fi >= 1 && fd >= 1, si + "; " + sd
	}
	const long = 3 * time.Minute
	alerts := func(topic string) map[string]bool {
		ids := map[string]bool{}
		for _, a := range testkit.ReadAll(t, cluster, topic, stream.ParseAlert) {
			ids[a.ID] = true
		}
		return ids
	}
	start := func(name, stateDir, httpAddr string) *testkit.Proc {
		return testkit.Start(t, bin, append([]string{"run"}, args(name, stateDir, httpAddr)...)...)
	}
	stop := func(name string, p *testkit.Proc) {
		if err := p.Stop(t, time.Minute); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, p.Stderr())
		}
	}

	// The clean run.
	cleanHTTP := freePort(t)
	clean := start("clean", filepath.Join(dir, "clean"), cleanHTTP)
	testkit.WaitFor(t, long, "the clean run", func() (bool, string) { return done("clean") })
	stop("clean", clean)
	total0 := endTotal(t, cluster, "clean.repartition")
	n0 := dataRecords(t, cluster, "clean.repartition")

	// The killed run.
	httpAddr := freePort(t)
	state := filepath.Join(dir, "killed")
	cmd := start("killed", state, httpAddr)
	for _, at := range []float64{0.3, 0.6} {
		testkit.WaitFor(t, long, "progress", func() (bool, string) {
			n := endTotal(t, cluster, "killed.repartition")
			return float64(n) >= at*float64(total0), fmt.Sprintf("%d of the clean run's %d repartition records", n, total0)
		})
		cmd.Kill(t) // SIGKILL
		began := time.Now()
		cmd = start("killed", state, httpAddr)
		testkit.WaitFor(t, long, "partitions owned after the restart", func() (bool, string) {
			n := ownedPartitions(httpAddr)
			return n == 2, fmt.Sprintf("%d owned", n)
		})
		took := time.Since(began)
		t.Logf("killed at %.0f%% of the clean run's repartition records; the restart owned its partitions after %s (session timeout %s)",
			100*at, took.Round(10*time.Millisecond), session)
		if took >= session {
			t.Errorf("the restart waited %s, the dead member's session: static membership did not work\n%s", took, cmd.Stderr())
		}
	}
	testkit.WaitFor(t, long, "the killed run", func() (bool, string) { return done("killed") })
	stop("killed", cmd)
	n1 := dataRecords(t, cluster, "killed.repartition")
	t.Logf("repartition data records (watermarks left out): clean run %d, killed twice %d: %+d, %.1f%% per kill", n0, n1, n1-n0, 100*float64(n1-n0)/float64(n0)/2)
	if n1 < n0 {
		t.Errorf("the killed run wrote %d repartition data records, fewer than the clean run's %d", n1, n0)
	}
	// A kill re-sends at most the poll in flight: 256 KiB per input
	// partition, some 750 events each, 2250 for the 3 (twice that as
	// slack). Committing every 5 s instead re-sent 56 % of the topic.
	if limit := int64(2 * 2 * 2250); n1-n0 > limit {
		t.Errorf("the kills re-sent %d repartition records, more than a poll each (%d)", n1-n0, limit)
	}
	want, got := alerts("clean.alerts"), alerts("killed.alerts")
	if len(want) == 0 {
		t.Fatal("the clean run published no alert")
	}
	for id := range want {
		if !got[id] {
			t.Errorf("alert %s of the clean run missing after the kills", id)
		}
	}
	for id := range got {
		if !want[id] {
			t.Errorf("alert %s after the kills is not the clean run's", id)
		}
	}
}
