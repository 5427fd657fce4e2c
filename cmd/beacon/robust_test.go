package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/beaconhunt/beacon/internal/testkit"
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
	addr := testkit.NewCluster(t, testkit.Topics(6, "robust")).Addr
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

// TestReplayProfileFromConfig: `profile: robust` in a --config file (or
// BEACON_PROFILE) switches replay to the robust profile with the robust
// defaults (a 7 d window, every connection kind…), exactly as --profile
// robust on the command line does; the command line still wins.
func TestReplayProfileFromConfig(t *testing.T) {
	addr := testkit.NewCluster(t, testkit.Topics(2, "cfgprofile")).Addr
	cmdRun(t, "simulate", "--quiet", "--hours", "30", "--implants", "4", "--traits", "dead,ipv6",
		"--sleeps", "1m,5m", "--devices", "12", "--brokers", addr, "--topic", "cfgprofile")
	base := []string{"replay", "--quiet", "--brokers", addr, "--topic", "cfgprofile", "--format", "jsonl", "--eval-interval", "1h"}
	robust, _ := cmdRun(t, append(base, "--profile", "robust")...)
	seed, _ := cmdRun(t, append(base, "--profile", "seed")...)
	if robust == seed {
		t.Fatalf("robust and seed give the same rows: the test shows nothing")
	}
	cfg := filepath.Join(t.TempDir(), "beacon.yaml")
	if err := os.WriteFile(cfg, []byte("profile: robust\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := cmdRun(t, append(base, "--config", cfg)...); got != robust {
		t.Errorf("profile: robust in --config differs from --profile robust:\n%s", firstDiff(got, robust))
	}
	if got, _ := cmdRun(t, append(base, "--config", cfg, "--profile", "seed")...); got != seed {
		t.Errorf("--profile seed with profile: robust in --config is not seed:\n%s", firstDiff(got, seed))
	}
	t.Setenv("BEACON_PROFILE", "robust")
	if got, _ := cmdRun(t, base...); got != robust {
		t.Errorf("BEACON_PROFILE=robust differs from --profile robust:\n%s", firstDiff(got, robust))
	}
}
