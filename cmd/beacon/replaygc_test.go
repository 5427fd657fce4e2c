package main

import (
	"runtime/debug"
	"testing"
)

// TestReplayGCOverlapping: replays that overlap leave the GC target as the
// first found it, whichever ends first; a target another changed
// meanwhile is left alone; a set GOGC is left alone.
func TestReplayGCOverlapping(t *testing.T) {
	t.Setenv("GOGC", "")
	defer debug.SetGCPercent(debug.SetGCPercent(150))
	a := replayGC()
	if got := gcPercent(); got != replayGCPercent {
		t.Fatalf("during a replay: GC target %d, want %d", got, replayGCPercent)
	}
	b := replayGC()
	a()
	if got := gcPercent(); got != replayGCPercent {
		t.Fatalf("after the first of two replays: GC target %d, want %d", got, replayGCPercent)
	}
	b()
	if got := gcPercent(); got != 150 {
		t.Fatalf("after both: GC target %d, want the 150 found", got)
	}

	c := replayGC()
	debug.SetGCPercent(300) // another sets its own meanwhile
	c()
	if got := gcPercent(); got != 300 {
		t.Fatalf("after a replay whose target was changed meanwhile: GC target %d, want the 300 set meanwhile", got)
	}
	debug.SetGCPercent(150)

	t.Setenv("GOGC", "100")
	d := replayGC()
	if got := gcPercent(); got != 150 {
		t.Fatalf("with GOGC set: GC target %d, want it untouched (150)", got)
	}
	d()
}
