package main

import (
	"runtime/debug"
	"testing"
)

// gcPercent reads the GC target (SetGCPercent is the only reader).
func gcPercent() int {
	v := debug.SetGCPercent(100)
	debug.SetGCPercent(v)
	return v
}

// TestGCTargetOverlapping: hunts, or replays, that overlap in one process
// (tests call run concurrently) leave the GC target as the first found
// it, whichever ends first; a target another changed meanwhile is left
// alone; a set GOGC is left alone.
func TestGCTargetOverlapping(t *testing.T) {
	for _, c := range []struct {
		name    string
		set     func() func()
		percent int
	}{{"hunt", huntGC, huntGCPercent}, {"replay", replayGC, replayGCPercent}} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("GOGC", "")
			defer debug.SetGCPercent(debug.SetGCPercent(150))
			a := c.set()
			if got := gcPercent(); got != c.percent {
				t.Fatalf("during a %s: GC target %d, want %d", c.name, got, c.percent)
			}
			b := c.set()
			a() // the first ends while the second runs
			if got := gcPercent(); got != c.percent {
				t.Fatalf("after the first of two: GC target %d, want %d", got, c.percent)
			}
			b()
			if got := gcPercent(); got != 150 {
				t.Fatalf("after both: GC target %d, want the 150 found", got)
			}

			r := c.set()
			debug.SetGCPercent(300) // another sets its own meanwhile
			r()
			if got := gcPercent(); got != 300 {
				t.Fatalf("after a run whose target was changed meanwhile: GC target %d, want the 300 set meanwhile", got)
			}
			debug.SetGCPercent(150)

			t.Setenv("GOGC", "100")
			d := c.set()
			if got := gcPercent(); got != 150 {
				t.Fatalf("with GOGC set: GC target %d, want it untouched (150)", got)
			}
			d()
		})
	}
}
