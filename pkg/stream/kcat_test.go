package stream

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/fleet"
)

// TestKcatInterop: a client we did not write (kcat, librdkafka) produces
// the input — flat JSON lines and Streaming API envelopes — into the
// embedded broker and consumes the alerts. kcat is required: the test
// fails, not skips, without it (Debian/Ubuntu: apt-get install kcat).
func TestKcatInterop(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is required for the interop test (apt-get install kcat): %v", err)
	}
	_, addr := newCluster(t, 3)
	rs, _ := records(t, testFleet(4))
	var in bytes.Buffer
	for i := 0; i < len(rs); {
		if i%1000 < 500 {
			in.Write(fleet.AppendJSON(nil, &rs[i]))
			i++
		} else {
			n := min(20, len(rs)-i)
			in.Write(fleet.AppendEnvelope(nil, "", rs[i:i+n]))
			i += n
		}
		in.WriteByte('\n')
	}
	nLines := strings.Count(in.String(), "\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prod := exec.CommandContext(ctx, kcat, "-P", "-b", addr, "-t", tInput, "-X", "broker.address.family=v4")
	prod.Stdin = &in
	if out, err := prod.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}

	p := testParams()
	s := service(t, addr, t.TempDir(), testLogger(t), Params(p))
	stop := start(t, s)
	waitDrained(t, addr, 90*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := alertsOf(t, addr)
	if len(want) == 0 {
		t.Fatal("no alerts")
	}

	// kcat reads the alert topic to its end: key TAB value per line. Its
	// own deadline: the drain above may have used much of the first.
	cctx, ccancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer ccancel()
	cons := exec.CommandContext(cctx, kcat, "-C", "-b", addr, "-t", tAlerts, "-o", "beginning", "-e", "-q",
		"-f", "%k\t%s\n", "-X", "broker.address.family=v4")
	var stderr bytes.Buffer
	cons.Stderr = &stderr
	out, err := cons.Output()
	if err != nil {
		t.Fatalf("kcat -C: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(want) {
		t.Fatalf("kcat read %d alerts, want %d", len(lines), len(want))
	}
	var got []Alert
	for _, l := range lines {
		key, value, ok := strings.Cut(l, "\t")
		if !ok {
			t.Fatalf("kcat line without a key: %q", l)
		}
		a, err := ParseAlert([]byte(value))
		if err != nil {
			t.Fatalf("kcat alert: %v: %s", err, value)
		}
		if key != string(a.Key()) {
			t.Errorf("alert %s keyed %s, want %s", a.ID, key, a.Key())
		}
		got = append(got, a)
	}
	if g, w := strings.Join(alertIDs(got), ","), strings.Join(alertIDs(want), ","); g != w {
		t.Errorf("kcat's alerts differ from franz-go's:\n got %s\nwant %s", g, w)
	}
	t.Logf("kcat produced %d lines (%d events) and consumed %d alerts", nLines, len(rs), len(got))
}
