package main

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/internal/testkit"
)

// The command line in process, for every test of this package: run with
// an empty stdin and buffers for stdout and stderr, bounded in time.

func runMain(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) error {
	return run(ctx, args, stdio{in, out, errOut})
}

// cmdTimeout bounds one command line of a test (a replay of a simulated
// day under the race detector takes tens of seconds).
const cmdTimeout = 3 * time.Minute

// runCmd runs a command line and returns what it wrote and its error.
func runCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return testkit.RunMain(t, cmdTimeout, runMain, args...)
}

// cmdRun runs a command line that must succeed.
func cmdRun(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	return testkit.MustRunMain(t, cmdTimeout, runMain, args...)
}

// caughtUp reports whether both consumer groups of a 'beacon run' with
// --group group — GROUP.ingest on the input topic, GROUP.detect on
// GROUP.repartition — have committed everything, and what they have.
func caughtUp(t *testing.T, c *testkit.Cluster, group, input string) (bool, string) {
	fi, si := c.Committed(t, group+".ingest", input)
	fd, sd := c.Committed(t, group+".detect", group+".repartition")
	return fi >= 1 && fd >= 1, si + "; " + sd
}

// returned fails the test if a command run in the background has ended.
func returned(t *testing.T, done <-chan error, stderr fmt.Stringer) {
	select {
	case err := <-done:
		t.Fatalf("run returned early: %v\n%s", err, stderr)
	default:
	}
}
