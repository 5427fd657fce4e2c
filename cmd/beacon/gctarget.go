package main

import (
	"os"
	"runtime/debug"
	"sync"
)

// gcTarget is the GC target a command runs at unless GOGC is set, counted
// over the runs of that command in this process (tests run them
// concurrently): the first to start sets it, the last to end puts back
// the target the first one found, unless something else (another
// command) changed it meanwhile.
type gcTarget struct {
	percent int

	mu   sync.Mutex
	runs int
	prev int
}

// set sets the target for one run and returns what restores it.
func (g *gcTarget) set() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {} // GOGC still decides when it is set
	}
	g.mu.Lock()
	if g.runs == 0 {
		g.prev = debug.SetGCPercent(g.percent)
	}
	g.runs++
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		if g.runs--; g.runs == 0 {
			if cur := debug.SetGCPercent(g.prev); cur != g.percent {
				debug.SetGCPercent(cur) // not ours any more
			}
		}
		g.mu.Unlock()
	}
}

// replayGCPercent is the GC target replay runs at unless GOGC is set. A
// replay's live heap only grows (the window's state and pivot stores fill
// up) and its garbage is little (the fetched batches and repartition
// buffers are reused), so at the default 100 every collection marks the
// whole, larger state again: two days from 6 partitions ran 11
// collections, 1.76 s of GC CPU in gctrace's account (≈ 15 % of the
// replay's), against 6 and 0.74 s at 200, with the same 491 MB max RSS
// (the run ends before the last goal is reached; the bound is a peak heap
// of three times what is live instead of two). --memory-limit still
// bounds the heap: the runtime collects as the limit nears, whatever the
// target.
const replayGCPercent = 200

var replayGCTarget = gcTarget{percent: replayGCPercent}

// replayGC sets the GC target for a replay and returns what restores it.
func replayGC() (restore func()) { return replayGCTarget.set() }

// huntGCPercent is the GC target hunt runs at unless GOGC is set. What
// hunt keeps is pointer-free (≈ 48 bytes a kept event), so a collection
// finds little to do, but while one marks, every string the decoders store
// pays a write barrier: at the default 100 a 470 MB day runs seven
// collections, ≈ 10 % of the instructions (docs/performance.md). 400 runs
// two, for a peak heap of up to five times what is kept.
const huntGCPercent = 400

var huntGCTarget = gcTarget{percent: huntGCPercent}

// huntGC sets the GC target for a hunt and returns what restores it.
func huntGC() (restore func()) { return huntGCTarget.set() }
