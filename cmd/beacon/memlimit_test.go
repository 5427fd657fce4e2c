package main

import (
	"bytes"
	"context"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/beaconhunt/beacon/internal/testkit"
)

// TestMemoryLimitFlag: --memory-limit takes GOMEMLIMIT's sizes, refuses
// what is not a size or is below the floor with a message saying so, and
// reaches the process: after a replay with it the Go memory limit is the
// flag's value, and the beacon set is hunt's (the state's caches at a
// quarter of it change where blocks live, not the answer).
func TestMemoryLimitFlag(t *testing.T) {
	for in, want := range map[string]int64{
		"268435456": 256 << 20, "256MiB": 256 << 20, "2GiB": 2 << 30, "1TiB": 1 << 40, "3GB": 3e9, "0": 0,
	} {
		var m memoryLimit
		if err := m.Set(in); err != nil || int64(m) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, m, err, want)
		}
	}
	for in, msg := range map[string]string{
		"2gigs": "is not a size", "-1GiB": "is not a size", "GiB": "is not a size", "10MiB": "below the least limit, 64MiB",
		"99999999999TiB": "is not a size",
	} {
		var m memoryLimit
		if err := m.Set(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("Set(%q): %v, want an error containing %q", in, err, msg)
		}
	}
	var errOut bytes.Buffer
	err := run(context.Background(), []string{"replay", "--memory-limit", "10MiB", "--topic", "x"}, stdio{strings.NewReader(""), &bytes.Buffer{}, &errOut})
	if err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Errorf("replay --memory-limit 10MiB: %v, want a usage error naming the flag", err)
	}

	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	addr := testkit.NewCluster(t, testkit.Topics(3, "mem")).Addr
	file := simulateDay(t, addr, "mem", "json", 12, "12")
	want, _ := cmdRun(t, "hunt", "--quiet", "--format", "jsonl", file)
	const limit = 3 << 30
	got, _ := cmdRun(t, "replay", "--profile", "seed", "--quiet", "--brokers", addr, "--topic", "mem", "--format", "jsonl", "--memory-limit", "3GiB")
	if l := debug.SetMemoryLimit(-1); l != limit {
		t.Errorf("Go memory limit %d after replay --memory-limit 3GiB, want %d", l, limit)
	}
	if got != want {
		t.Errorf("replay with --memory-limit differs from hunt:\n%s", firstDiff(got, want))
	}
	if strings.Count(want, "\n") < 1 {
		t.Errorf("hunt finds nothing: a weak check")
	}
}
