package main

import (
	"os"
	"runtime/debug"
	"sync"
)

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

// replayGCState counts the replays in this process (tests run them
// concurrently), as huntGCState does the hunts.
var replayGCState struct {
	sync.Mutex
	replays int
	prev    int
}

// replayGC sets the GC target for a replay and returns what restores it.
// The last replay to end puts back the target the first one found, unless
// something else (a hunt) changed it meanwhile.
func replayGC() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {} // GOGC still decides when it is set
	}
	g := &replayGCState
	g.Lock()
	if g.replays == 0 {
		g.prev = debug.SetGCPercent(replayGCPercent)
	}
	g.replays++
	g.Unlock()
	return func() {
		g.Lock()
		if g.replays--; g.replays == 0 {
			if cur := debug.SetGCPercent(g.prev); cur != replayGCPercent {
				debug.SetGCPercent(cur) // not ours any more
			}
		}
		g.Unlock()
	}
}
