package main

// TEMPORARY diagnostic copy of TestKillDashNine (to be removed).

import (
	"fmt"
	"os"
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

func TestKillDiag(t *testing.T) {
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
			"--commit-interval", "100ms", "--session-timeout", "2s", "--listen", "", "--log-level", "info"}
	}
	one := testkit.Start(t, bin, args("one")...)
	two := testkit.Start(t, bin, args("two")...)
	var twoOld *testkit.Proc
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
	var hourEnds []string
	flush := func() {
		cl.ProduceEvents(t, "beacon.events", chunk)
		chunk = chunk[:0]
		hours++
		if hours != 3 {
			for _, name := range []string{"one", "two"} {
				testkit.WaitFor(t, 120*time.Second, name+" to catch up", func() (bool, string) { return caughtUp(name) })
			}
			_, s1 := caughtUp("one")
			_, s2 := caughtUp("two")
			hourEnds = append(hourEnds, fmt.Sprintf("hour %d: %s || %s", hours, s1, s2))
			return
		}
		time.Sleep(20 * time.Millisecond)
		_, ing := cl.Committed(t, "two.ingest", "beacon.events")
		_, det := cl.Committed(t, "two.detect", "rep.two")
		two.Kill(t)
		twoOld = two
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
	_, s1 := caughtUp("one")
	_, s2 := caughtUp("two")
	hourEnds = append(hourEnds, fmt.Sprintf("end: %s || %s", s1, s2))
	for name, p := range map[string]*testkit.Proc{"one": one, "two": two} {
		if err := p.Stop(t, 30*time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, p.Stderr())
		}
	}
	all := func(topic string) []stream.Alert { return testkit.ReadAll(t, cl, topic, stream.ParseAlert) }
	ids := func(as []stream.Alert) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.ID)
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	a1, a2 := all("alerts.one"), all("alerts.two")
	want, got := ids(a1), ids(a2)
	if !slices.Equal(got, want) {
		out := os.Getenv("DIAG_DIR")
		if out == "" {
			out = "/tmp/k9diag"
		}
		out = filepath.Join(out, fmt.Sprintf("fail-%d", time.Now().UnixNano()))
		os.MkdirAll(out, 0o755)
		dump := func(name string, as []stream.Alert) {
			var b strings.Builder
			for _, a := range as {
				fmt.Fprintf(&b, "%s epoch=%d st=%s dev=%s proc=%s ip=%s port=%d avg=%.1f jit=%.2f n=%d\n", a.ID, a.Epoch, a.StreamTime, a.Row.DeviceName, a.Row.FileName, a.Row.RemoteIP, a.Row.RemotePort, a.Row.Avg, a.Row.Jitter, a.Row.Count)
			}
			os.WriteFile(filepath.Join(out, name), []byte(b.String()), 0o644)
		}
		dump("alerts.one", a1)
		dump("alerts.two", a2)
		os.WriteFile(filepath.Join(out, "one.stderr"), []byte(one.Stderr()), 0o644)
		os.WriteFile(filepath.Join(out, "two.stderr"), []byte(two.Stderr()), 0o644)
		os.WriteFile(filepath.Join(out, "twoOld.stderr"), []byte(twoOld.Stderr()), 0o644)
		os.WriteFile(filepath.Join(out, "info"), []byte("killed "+killed+"\n"+strings.Join(hourEnds, "\n")+"\n"+
			"got "+strings.Join(got, " ")+"\nwant "+strings.Join(want, " ")+"\n"), 0o644)
		// the repartition topics
		for _, topic := range []string{"rep.one", "rep.two"} {
			var b strings.Builder
			for _, r := range testkit.ReadRecords(t, cl, topic) {
				fmt.Fprintf(&b, "%d %d %d %x %q\n", r.Partition, r.Offset, r.Timestamp.UnixMilli(), r.Key, r.Value)
			}
			os.WriteFile(filepath.Join(out, topic), []byte(b.String()), 0o644)
		}
		// copy state dirs
		os.Rename(dir, filepath.Join(out, "state"))
		t.Errorf("differ; saved in %s:\n got %s\nwant %s", out, strings.Join(got, " "), strings.Join(want, " "))
	}
	t.Logf("%d events in %d hours; %d distinct alert IDs uninterrupted, %d killed and restarted", len(evs), hours, len(want), len(got))
}
