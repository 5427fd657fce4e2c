package stream

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestReplayRecycle: a replay whose fetched batches are reused (fetchPool,
// merger.recycle) and whose batch buffers to the workers are reused once
// released (replay.send, worker.released) gives what one without reuse
// gives — the beacon set, the
// alerts with their pivots, the bad records and their errors — while the
// pool poisons every buffer put back: a record, an event or a string still
// aliasing a batch once it was recycled would read the poison. The input
// has late (out-of-order) events, envelopes, bad records among good ones
// and several partitions, and the replay routes to several detection
// partitions, each split in two shards, which hold records.
func TestReplayRecycle(t *testing.T) {
	_, addr := newCluster(t, 1)
	cfg := testFleet(5)
	cfg.LateRate = 0.05
	rs, _ := records(t, cfg)
	produceJSON(t, addr, rs)
	cl := newClient(t, addr, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	var bad []*kgo.Record
	for i := range 30 {
		bad = append(bad, &kgo.Record{Topic: tInput, Value: []byte(fmt.Sprintf(`{"Timestamp": "2024-05-01T00:00:%02dZ", "DeviceId": `, i))})
	}
	if err := cl.ProduceSync(context.Background(), bad...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	produceJSON(t, addr, rs[:len(rs)/3]) // the same events again, after the bad ones

	reusedBatches := 0
	run := func(pooled bool) (string, *fetchPool) {
		var pool *fetchPool
		old, oldBytes, oldBatch, oldReuse, oldHook := newFetchPool, replayFetchBytes, replayBatch, replayReuse, onBatchReuse
		defer func() {
			newFetchPool, replayFetchBytes, replayBatch, replayReuse, onBatchReuse = old, oldBytes, oldBatch, oldReuse, oldHook
		}()
		replayFetchBytes = 16 << 10 // a batch a fetch: many fetches, the buffers go round
		replayBatch = 2             // many batches to the workers, of a record or two: what is held or in hand is in one
		replayReuse = pooled
		onBatchReuse = func(b []byte) {
			reusedBatches++
			for i := range b {
				b[i] = 0xfe // poison: what still aliases the buffer reads it
			}
		}
		newFetchPool = func() *fetchPool {
			if !pooled {
				return nil
			}
			pool = &fetchPool{poison: true}
			return pool
		}
		var bads []string
		res := replayOf(t, addr, ReplayOptions{Partitions: 3, Shards: 2, OnBad: func(r BadRecord) {
			bads = append(bads, r.String())
		}}, Params(testParams()), Warmup(-1))
		slices.Sort(bads) // reported as fetched: the partitions' order varies
		var b strings.Builder
		for _, s := range bads {
			b.WriteString("bad " + s + "\n")
		}
		b.WriteString(jsonl(res.Rows))
		for _, a := range res.Alerts {
			b.Write(a.AppendJSON(nil))
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%d events, %d bad, %d late\n", res.Events, res.Bad, res.Late)
		if len(res.Alerts) == 0 || res.Bad == 0 {
			t.Fatalf("pooled %v: %d alerts, %d bad records: nothing to compare", pooled, len(res.Alerts), res.Bad)
		}
		return b.String(), pool
	}
	want, _ := run(false)
	got, pool := run(true)
	if got != want {
		t.Errorf("the replay with reused batches differs:\n%s", diffLines(got, want))
	}
	if pool.reused == 0 || reusedBatches == 0 {
		t.Errorf("%d fetched and %d batch buffers reused: the test shows nothing", pool.reused, reusedBatches)
	}
	t.Logf("%d fetched and %d batch buffers reused", pool.reused, reusedBatches)
}
