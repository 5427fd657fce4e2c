package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// TestReplayEqualsHuntRobust: a replay with --profile robust of a topic of
// six partitions, holding two simulated days with every implant trait
// (IPv6, failed connections, aggregated reports, mixed-case names…), ends
// with byte for byte the rows of hunt --profile robust over the same
// events: the same tuples, order and Score. Among them is an IPv6 C2
// whose row names its domains (RemoteUrl), in both.
func TestReplayEqualsHuntRobust(t *testing.T) {
	t.Parallel()
	devices := 40
	if raceEnabled {
		devices = 16
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(0), kfake.SeedTopics(6, "robust"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("kfake listens on %s", addr)
	}
	file := filepath.Join(t.TempDir(), "robust.jsonl.gz")
	cmdRun(t, "simulate", "--quiet", "--hours", "48", "--implants", "10", "--traits", "all",
		"--sleeps", "30s,1m,5m,1h", "--devices", fmt.Sprint(devices), "--brokers", addr, "--topic", "robust", "--out", file)
	want, _ := cmdRun(t, "hunt", "--quiet", "--profile", "robust", "--format", "jsonl", file)
	got, _ := cmdRun(t, "replay", "--quiet", "--profile", "robust", "--brokers", addr, "--topic", "robust",
		"--format", "jsonl", "--partitions", "6", "--eval-interval", "10m")
	if got != want {
		t.Errorf("replay --profile robust differs from hunt --profile robust:\n%s", firstDiff(got, want))
	}
	if n := strings.Count(want, "\n"); n < 5 {
		t.Errorf("hunt --profile robust finds only %d beacons: the test fleet is too easy to pass", n)
	}
	v6 := 0
	for _, line := range strings.Split(strings.TrimSpace(want), "\n") {
		var r struct {
			RemoteIP string
			Domains  []string
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("hunt row %q: %v", line, err)
		}
		if a, err := netip.ParseAddr(r.RemoteIP); err == nil && a.Is6() && len(r.Domains) > 0 && r.Domains[0] != "" {
			v6++
		}
	}
	if v6 == 0 {
		t.Errorf("no IPv6 row with Domains among the robust rows:\n%s", want)
	}
	if !strings.Contains(want, `"Score":`) {
		t.Errorf("robust rows carry no Score:\n%.300s", want)
	}
}
