package state

import (
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// TestMatchesBatchQueryRobust runs the model test of TestMatchesBatchQuery
// with the robust profile: pkg/state keeps the same windows and summaries
// and asks beacon.Params, so after every batch Evaluate equals beacon.Hunt
// with robust parameters too (per-period prevalence, no device-cap
// shortcut, robust rows).
func TestMatchesBatchQueryRobust(t *testing.T) {
	seeds := 3
	if testing.Short() {
		seeds = 1
	}
	for seed := range seeds {
		t.Run("robust", func(t *testing.T) {
			t.Parallel()
			p := beacon.Robust()
			p.Lookback = 10 * time.Minute
			// The scenario's timers are short: ask for fewer callbacks
			// and a low threshold so that many tuples decide both ways.
			p.Robust.MinCallbacks = 4
			p.Robust.Threshold = 0.5
			p.Robust.PrevalenceScore = 0.3
			// Tuples of 3 callbacks count toward prevalence only, and
			// rarity reports from 0.4 in this short window.
			p.TotalEventsThresholdMin = p.Robust.FirstCallbacks() - 1
			p.Robust.RareThreshold = 0.4
			p.Robust.RareWindow = 0
			// Rarity's span and evidence rules decide both ways too: a
			// span of a minute, and evidence for tuples of MinCallbacks.
			p.Robust.RareCallbacks = p.Robust.MinCallbacks + 1
			p.Robust.RareSpan = time.Minute
			runScenario(t, p, uint64(seed), seed == 1)
		})
	}
}
