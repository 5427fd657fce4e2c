package testkit

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// fatalTB records Fatalf instead of ending the test, so that the kit's
// failure messages can be checked.
type fatalTB struct {
	testing.TB
	msg string
}

type fatalled struct{}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fatalled{})
}

func (f *fatalTB) Helper() {}

// TestWaitForSaysWhatItSaw: a wait that times out names what it waited
// for, the deadline and what the condition last reported.
func TestWaitForSaysWhatItSaw(t *testing.T) {
	f := &fatalTB{TB: t}
	n := 0
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(fatalled); !ok {
					panic(r)
				}
			}
		}()
		WaitFor(f, 100*time.Millisecond, "the answer", func() (bool, string) {
			n++
			return false, fmt.Sprintf("poll %d", n)
		})
	}()
	if !strings.Contains(f.msg, "the answer") || !strings.Contains(f.msg, "100ms") || !strings.Contains(f.msg, fmt.Sprintf("poll %d", n)) {
		t.Fatalf("message %q does not say what was awaited, how long, and the last poll (%d)", f.msg, n)
	}
	if n < 2 {
		t.Fatalf("polled %d times in 100 ms", n)
	}
	calls := 0
	WaitFor(t, time.Second, "a true condition", func() (bool, string) { calls++; return true, "" })
	if calls != 1 {
		t.Fatalf("a true condition was polled %d times", calls)
	}
}

// TestClusterRoundTrip: events produced through the kit come back from
// ReadAll, every one, in offset order per partition, and Committed reads a
// group that has committed nothing as 0.
func TestClusterRoundTrip(t *testing.T) {
	c := NewCluster(t, []Topic{{Name: "in", Partitions: 3}})
	t0, _ := beacon.ParseTime([]byte("2024-05-01T00:00:00Z"))
	var evs []beacon.Event
	for i := range 100 {
		evs = append(evs, beacon.Event{Timestamp: t0.Add(time.Duration(i) * time.Second), DeviceId: fmt.Sprintf("d%03d", i),
			ActionType: "ConnectionSuccess", RemoteIP: "45.77.1.10", RemoteIPType: "Public", RemotePort: 443, HasPort: true})
	}
	c.ProduceEvents(t, "in", evs)
	got := ReadAll(t, c, "in", func(b []byte) (string, error) { return string(b), nil })
	if len(got) != len(evs) {
		t.Fatalf("read %d records, produced %d", len(got), len(evs))
	}
	seen := map[string]bool{}
	for _, v := range got {
		for _, e := range evs {
			if strings.Contains(v, `"`+e.DeviceId+`"`) {
				seen[e.DeviceId] = true
			}
		}
	}
	if len(seen) != len(evs) {
		t.Fatalf("%d distinct events read back, want %d", len(seen), len(evs))
	}
	ends := c.EndOffsets(t, "in")
	if len(ends) != 3 || ends[0]+ends[1]+ends[2] != 100 {
		t.Fatalf("end offsets %v", ends)
	}
	if f, saw := c.Committed(t, "nobody", "in"); f != 0 || !strings.Contains(saw, "nobody") {
		t.Fatalf("Committed of an unknown group: %v, %q", f, saw)
	}
}

// TestRunMain: a command line runs in process with an empty stdin, its
// output comes back, and one that outlives its bound is stopped and says
// so.
func TestRunMain(t *testing.T) {
	echo := func(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) error {
		b, _ := io.ReadAll(in)
		fmt.Fprintf(out, "%s|%s", strings.Join(args, " "), b)
		fmt.Fprint(errOut, "note")
		return nil
	}
	o, e, err := RunMain(t, time.Second, echo, "a", "b")
	if o != "a b|" || e != "note" || err != nil {
		t.Errorf("RunMain = %q, %q, %v", o, e, err)
	}
	hang := func(ctx context.Context, _ []string, _ io.Reader, _, _ io.Writer) error {
		<-ctx.Done()
		return ctx.Err()
	}
	if _, _, err := RunMain(t, 50*time.Millisecond, hang, "hang"); err == nil || !strings.Contains(err.Error(), "not done after 50ms") {
		t.Errorf("a command past its bound: %v", err)
	}
}
