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

// TestHuntGCOverlapping: hunts that overlap in one process (tests call run
// concurrently) leave the GC target as the first found it, whichever ends
// first; a set GOGC is left alone.
func TestHuntGCOverlapping(t *testing.T) {
	t.Setenv("GOGC", "")
	defer debug.SetGCPercent(debug.SetGCPercent(150))
	a := huntGC()
	if got := gcPercent(); got != huntGCPercent {
		t.Fatalf("during a hunt: GC target %d, want %d", got, huntGCPercent)
	}
	b := huntGC()
	a() // the first ends while the second runs
	if got := gcPercent(); got != huntGCPercent {
		t.Fatalf("after the first of two hunts: GC target %d, want %d", got, huntGCPercent)
	}
	b()
	if got := gcPercent(); got != 150 {
		t.Fatalf("after both: GC target %d, want the 150 found", got)
	}

	t.Setenv("GOGC", "100")
	c := huntGC()
	if got := gcPercent(); got != 150 {
		t.Fatalf("with GOGC set: GC target %d, want it untouched (150)", got)
	}
	c()
}
