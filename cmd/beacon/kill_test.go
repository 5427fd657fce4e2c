package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/pkg/fleet"
)

// TestHelperBeaconProcess is not a test: it is the child process of the
// tests below, which run the test binary again with BEACON_CHILD_ARGS set
// so that they can kill -9 a real 'beacon run'.
func TestHelperBeaconProcess(t *testing.T) {
	args := os.Getenv("BEACON_CHILD_ARGS")
	if args == "" {
		return
	}
	err := run(context.Background(), strings.Split(args, "\x1f"), stdio{strings.NewReader(""), os.Stdout, os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "beacon:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// child starts 'beacon run args…' in a process of its own.
func child(t *testing.T, logPath string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBeaconProcess$")
	cmd.Env = append(os.Environ(), "BEACON_CHILD_ARGS="+strings.Join(append([]string{"run"}, args...), "\x1f"))
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		f.Close()
	})
	return cmd
}

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

func endTotal(t *testing.T, adm *kadm.Client, topic string) int64 {
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += max(o.Offset, 0) })
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
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "beacon.events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	addr := cluster.ListenAddrs()[0]
	fc := fleet.Config{Seed: 9, Devices: 150, Duration: 12 * time.Hour, Sleeps: []time.Duration{30 * time.Second, time.Minute}}
	if raceEnabled {
		fc.Devices, fc.Duration = 30, 6*time.Hour
	}
	g, err := fleet.New(fc)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.DefaultProduceTopic("beacon.events"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for r, ok := g.NextRecord(); ok; r, ok = g.NextRecord() {
		recs = append(recs, &kgo.Record{Value: fleet.AppendJSON(nil, &r)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	dir := t.TempDir()
	const session = 20 * time.Second
	args := func(name, stateDir, httpAddr string) []string {
		return []string{"--brokers", addr, "--group", name, "--repartition-topic", name + ".repartition",
			"--alert-topic", name + ".alerts", "--dead-letter-topic", name + ".deadletter", "--partitions", "2",
			"--state-dir", stateDir, "--listen", httpAddr, "--lookback", "1h", "--session-timeout", session.String(),
			"--log-level", "warn"}
	}
	done := func(name string) bool {
		for _, gt := range [][2]string{{name + ".ingest", "beacon.events"}, {name + ".detect", name + ".repartition"}} {
			ends, err := adm.ListEndOffsets(context.Background(), gt[1])
			if err != nil {
				return false
			}
			got, err := adm.FetchOffsets(context.Background(), gt[0])
			if err != nil {
				return false
			}
			ok := len(ends) > 0
			ends.Each(func(o kadm.ListedOffset) {
				if c, found := got.Lookup(gt[1], o.Partition); o.Offset > 0 && (!found || c.At < o.Offset) {
					ok = false
				}
			})
			if !ok {
				return false
			}
		}
		return true
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Minute); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	alerts := func(topic string) map[string]bool {
		c, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		want := endTotal(t, adm, topic)
		ids := map[string]bool{}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for n := int64(0); n < want; {
			fs := c.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("read %d of %d alerts", n, want)
			}
			fs.EachRecord(func(r *kgo.Record) {
				n++
				var a struct{ AlertId string }
				json.Unmarshal(r.Value, &a)
				ids[a.AlertId] = true
			})
		}
		return ids
	}
	logs := filepath.Join(dir, "children.log")

	// The clean run.
	cleanHTTP := freePort(t)
	clean := child(t, logs, args("clean", filepath.Join(dir, "clean"), cleanHTTP)...)
	wait("the clean run", func() bool { return done("clean") })
	clean.Process.Signal(syscall.SIGTERM)
	clean.Wait()
	n0 := endTotal(t, adm, "clean.repartition")

	// The killed run.
	httpAddr := freePort(t)
	state := filepath.Join(dir, "killed")
	cmd := child(t, logs, args("killed", state, httpAddr)...)
	for _, at := range []float64{0.3, 0.6} {
		wait("progress", func() bool { return float64(endTotal(t, adm, "killed.repartition")) >= at*float64(n0) })
		cmd.Process.Kill() // SIGKILL
		cmd.Wait()
		began := time.Now()
		cmd = child(t, logs, args("killed", state, httpAddr)...)
		wait("partitions owned after the restart", func() bool { return ownedPartitions(httpAddr) == 2 })
		took := time.Since(began)
		t.Logf("killed at %.0f%% of the clean run's repartition records; the restart owned its partitions after %s (session timeout %s)",
			100*at, took.Round(10*time.Millisecond), session)
		if took >= session {
			b, _ := os.ReadFile(logs)
			t.Errorf("the restart waited %s, the dead member's session: static membership did not work\n%s", took, b)
		}
	}
	wait("the killed run", func() bool { return done("killed") })
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	n1 := endTotal(t, adm, "killed.repartition")
	t.Logf("repartition records: clean run %d, killed twice %d: %+d, %.1f%% per kill", n0, n1, n1-n0, 100*float64(n1-n0)/float64(n0)/2)
	if n1 < n0 {
		t.Errorf("the killed run wrote %d repartition records, fewer than the clean run's %d", n1, n0)
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
