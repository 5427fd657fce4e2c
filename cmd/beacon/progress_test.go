package main

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/internal/testkit"
)

// TestProgressLine: off a terminal the reporter writes whole lines (no
// carriage returns in a log), says nothing before its delay or while
// render has nothing, lets printf through, and is silent after stop.
func TestProgressLine(t *testing.T) {
	var out testkit.SyncBuffer
	var calls atomic.Int64
	p := startProgress(&out, true, 5*time.Millisecond, 30*time.Millisecond, func(el time.Duration) string {
		if el < 30*time.Millisecond {
			t.Errorf("rendered at %s, before the delay", el)
		}
		if calls.Add(1) == 1 {
			return "" // nothing to say yet
		}
		return "status"
	})
	p.printf("message %d\n", 1)
	testkit.WaitFor(t, 10*time.Second, "two status lines", func() (bool, string) {
		return strings.Contains(out.String(), "status\nstatus\n"), out.String()
	})
	p.stop()
	p.stop() // again: a deferred stop after an explicit one
	got := out.String()
	if !strings.HasPrefix(got, "message 1\nstatus\n") || strings.ContainsAny(got, "\r\x1b") {
		t.Errorf("output %q", got)
	}
	time.Sleep(20 * time.Millisecond)
	if out.String() != got {
		t.Errorf("wrote after stop: %q", out.String()[len(got):])
	}

	var quiet testkit.SyncBuffer
	off := startProgress(&quiet, false, time.Millisecond, 0, func(time.Duration) string { return "status" })
	time.Sleep(10 * time.Millisecond)
	off.printf("only this\n")
	off.stop()
	if quiet.String() != "only this\n" {
		t.Errorf("an off reporter wrote %q", quiet.String())
	}
}
