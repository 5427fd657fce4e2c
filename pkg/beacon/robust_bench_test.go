package beacon_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
	"github.com/beaconhunt/beacon/pkg/mde"
)

var (
	fleetOnce sync.Once
	fleetDay  []byte
)

// simulatedDay is a simulated day of 100 devices with every implant trait,
// as JSON lines: the same file for both profiles.
func simulatedDay(b *testing.B) []byte {
	fleetOnce.Do(func() {
		g, err := fleet.New(fleet.Config{Seed: 3, Devices: 100, Duration: 24 * time.Hour, Implants: 10, Traits: fleet.Traits})
		if err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		w, err := fleet.NewWriter(&buf, fleet.JSONL, fleet.WriterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for r, ok := g.NextRecord(); ok; r, ok = g.NextRecord() {
			w.Write(&r)
		}
		w.Close()
		fleetDay = buf.Bytes()
	})
	return fleetDay
}

// BenchmarkHuntProfile measures hunt end to end (decode, aggregate, query)
// with each profile on the same simulated day: robust is to stay within
// 1.5× seed's time (README, docs/robust.md).
func BenchmarkHuntProfile(b *testing.B) {
	data := simulatedDay(b)
	for _, prof := range []string{beacon.ProfileSeed, beacon.ProfileRobust} {
		b.Run(prof, func(b *testing.B) {
			p, _ := beacon.ProfileParams(prof)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				h := beacon.NewHunt(p)
				_, err := mde.Read(context.Background(), bytes.NewReader(data), "bench", mde.Options{},
					func(batch []beacon.Event) { h.AddBatch(batch) })
				if err != nil {
					b.Fatal(err)
				}
				now, _ := h.DefaultNow()
				if rows := h.Rows(now); len(rows) == 0 {
					b.Fatal("no beacons found in the simulated day")
				}
			}
		})
	}
}
