package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
	"github.com/beaconhunt/beacon/pkg/stream"
)

// TestKillDashNine: a `beacon run` process killed with SIGKILL — no
// flush, no commit, no goodbye to the group — in the middle of its work
// and restarted on the same state directory loses no alert and invents
// none. Two processes (ingest and detection each) consume the same input
// topic, each with its own group, repartition topic and alert topic; the
// input arrives an hour of event time at a time; a few milliseconds after
// the third hour is produced, while it is being ingested and detected,
// the second process is killed and restarted. At the end its set of alert
// IDs is exactly the uninterrupted process's. Both are real subprocesses
// of a binary the test builds.
func TestKillDashNine(t *testing.T) {
	cl := testkit.NewCluster(t, []testkit.Topic{{Name: "beacon.events", Partitions: 3}})
	g, err := fleet.New(fleet.Config{Seed: 9, Devices: 20, Duration: 8 * time.Hour,
		Sleeps: []time.Duration{30 * time.Second, time.Minute}, LateRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	var evs []beacon.Event
	for r, ok := g.NextRecord(); ok; r, ok = g.NextRecord() {
		evs = append(evs, r.Event)
	}
	bin := testkit.BuildBinary(t)
	dir := t.TempDir()
	args := func(name string) []string {
		return []string{"run", "--brokers", cl.Addr, "--input-topics", "beacon.events", "--group", name,
			"--repartition-topic", "rep." + name, "--alert-topic", "alerts." + name, "--dead-letter-topic", "dead." + name,
			"--state-dir", filepath.Join(dir, name), "--partitions", "4", "--lookback", "1h",
			"--commit-interval", "100ms", "--session-timeout", "2s", "--listen", "", "--log-level", "error"}
	}
	one := testkit.Start(t, bin, args("one")...)
	two := testkit.Start(t, bin, args("two")...)
	alive := func(name string, p *testkit.Proc) {
		if done, err := p.Exited(); done {
			t.Fatalf("%s exited: %v\n%s", name, err, p.Stderr())
		}
	}
	caughtUp := func(name string) (bool, string) {
		alive("one", one)
		alive("two", two)
		fi, si := cl.Committed(t, name+".ingest", "beacon.events")
		fd, sd := cl.Committed(t, name+".detect", "rep."+name)
		return fi >= 1 && fd >= 1, si + "; " + sd
	}
	hour := evs[0].Timestamp.Add(time.Hour)
	var chunk []beacon.Event
	hours, killed := 0, ""
	flush := func() {
		cl.ProduceEvents(t, "beacon.events", chunk)
		chunk = chunk[:0]
		hours++
		if hours != 3 {
			// Both caught up before the next hour: the kill below comes
			// while two has state, offsets and alerts behind it.
			for _, name := range []string{"one", "two"} {
				testkit.WaitFor(t, 120*time.Second, name+" to catch up", func() (bool, string) { return caughtUp(name) })
			}
			return
		}
		time.Sleep(20 * time.Millisecond) // into the third hour's work
		_, ing := cl.Committed(t, "two.ingest", "beacon.events")
		_, det := cl.Committed(t, "two.detect", "rep.two")
		two.Kill(t)
		killed = ing + "; " + det
		two = testkit.Start(t, bin, args("two")...)
	}
	for _, e := range evs {
		if e.Timestamp >= hour {
			flush()
			hour = hour.Add(time.Hour)
		}
		chunk = append(chunk, e)
	}
	flush()
	t.Logf("killed two at %s", killed)
	for _, name := range []string{"one", "two"} {
		testkit.WaitFor(t, 120*time.Second, name+" to consume everything", func() (bool, string) { return caughtUp(name) })
	}
	for name, p := range map[string]*testkit.Proc{"one": one, "two": two} {
		if err := p.Stop(t, 30*time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, p.Stderr())
		}
	}
	ids := func(topic string) []string {
		var out []string
		for _, a := range testkit.ReadAll(t, cl, topic, stream.ParseAlert) {
			out = append(out, a.ID)
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	want, got := ids("alerts.one"), ids("alerts.two")
	if len(want) == 0 {
		t.Fatal("the uninterrupted run alerted nothing")
	}
	if !slices.Equal(got, want) {
		t.Errorf("alert IDs after kill -9 and restart differ from the uninterrupted run's:\n got %s\nwant %s",
			strings.Join(got, " "), strings.Join(want, " "))
	}
	t.Logf("%d events in %d hours; %d distinct alert IDs uninterrupted, %d killed and restarted", len(evs), hours, len(want), len(got))
}
