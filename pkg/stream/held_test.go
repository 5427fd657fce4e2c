package stream

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/state"
)

// deadLetterOwner is a replay's owner that keeps the records its worker
// dead-letters.
type deadLetterOwner struct {
	*replay
	dead []*kgo.Record
}

func (o *deadLetterOwner) deadLetter(r *kgo.Record, _ string, _ error) { o.dead = append(o.dead, r) }

// replayBatch builds a batch as replay.send does: keys and values in one
// buffer, at offsets first, first+1, …
func replayBatchOf(first int64, kvs ...[]byte) batch {
	b := batch{first: first, hwm: 1 << 62}
	for i := 0; i+1 < len(kvs); i += 2 {
		ks := len(b.buf)
		b.buf = append(b.buf, kvs[i]...)
		ke := len(b.buf)
		b.buf = append(b.buf, kvs[i+1]...)
		b.ents = append(b.ents, pendEnt{int32(ks), int32(ke), int32(len(b.buf))})
	}
	return b
}

// TestReplayHeldUndecoded: a replay's worker holds a record ahead of stream
// time on its header alone (peekRelease) and decodes it when released; a
// record whose header parses and whose rest does not is then dead-lettered
// as process dead-letters one, under its offset, and the records around
// it count; one whose header does not parse is dead-lettered at once.
func TestReplayHeldUndecoded(t *testing.T) {
	s, err := New(Brokers("127.0.0.1:1"), StateDir(t.TempDir()), Params(testParams()), Logger(testLogger(t)),
		CreateTopics(false, -1, -1), EvalInterval(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(s.cfg.stateDir, s.cfg.params, state.WithInMemory())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	part, err := st.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	work, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	o := &deadLetterOwner{replay: &replay{s: s}}
	w := newWorker(s.workerEnv(o, work, &o.late), 0, part, -1)

	t0 := mustTime(t, "2024-05-01T10:00:00Z")
	conn := func(ts beacon.Time) []byte {
		e := beacon.Event{Timestamp: ts, DeviceId: "d", DeviceName: "n", AccountName: "a", AccountDomain: "c",
			FileName: "f.exe", RemoteIP: "45.77.1.10", RemotePort: 443, HasPort: true}
		return appendConn(nil, &e, ts)
	}
	bad := conn(t0.Add(time.Second))
	bad = bad[:len(bad)-2] // the header parses, the last column does not
	ip := []byte("45.77.1.10")
	if err := w.process(replayBatchOf(0, ip, conn(t0), ip, bad, ip, []byte{kindConn}, ip, conn(t0.Add(2*time.Second)))); err != nil {
		t.Fatal(err)
	}
	if len(o.dead) != 1 || o.dead[0].Offset != 2 {
		t.Fatalf("dead letters %v before the release, want offset 2's (no time) alone", o.dead)
	}
	if n := w.held.len(); n != 3 {
		t.Fatalf("%d records held, want 3", n)
	}
	if err := w.advance(t0.Add(5 * time.Second)); err != nil { // in the interval of all three: no point yet
		t.Fatalf("releasing a held record that does not decode: %v", err)
	}
	if len(o.dead) != 2 || o.dead[1].Offset != 1 || string(o.dead[1].Key) != string(ip) || string(o.dead[1].Value) != string(bad) {
		t.Fatalf("dead letters %v after the release, want offsets 2 and 1, 1 with its key and value", o.dead)
	}
	if w.held.len() != 0 || len(w.conns) != 2 {
		t.Fatalf("after the release: %d held, %d connections in the segment, want 0 and 2", w.held.len(), len(w.conns))
	}
}

// TestMergerClearsStaleEvents (replay's recycling merger and live run's): a recycled segment's events are cleared
// once the next fetch was decoded into it, past what that fetch wrote, so
// that no handed-on event keeps its record's value alive.
func TestMergerClearsStaleEvents(t *testing.T) {
	for _, recycle := range []bool{true, false} { // replay's merger, live run's
		t.Run(fmt.Sprintf("recycle=%v", recycle), func(t *testing.T) { testMergerClearsStaleEvents(t, recycle) })
	}
}

func testMergerClearsStaleEvents(t *testing.T, recycle bool) {
	m := merger{recycle: recycle}
	m.assign("in", 0, 0, 10)
	decode := func(evs []beacon.Event, r *kgo.Record) ([]beacon.Event, string, error) {
		return append(evs, beacon.Event{Timestamp: beacon.Time(r.Offset + 1), RemoteIP: string(r.Value)}), "", nil
	}
	fetch := func(from, n int) []kgo.FetchTopicPartition {
		var recs []*kgo.Record
		for o := from; o < from+n; o++ {
			recs = append(recs, &kgo.Record{Topic: "in", Offset: int64(o), Value: []byte("45.77.1.10")})
		}
		return []kgo.FetchTopicPartition{{Topic: "in", FetchPartition: kgo.FetchPartition{Partition: 0, HighWatermark: 10, Records: recs}}}
	}
	var got []beacon.Time
	emit := func() {
		m.emit(func(_ *mpart, e *beacon.Event, _ uint8) { got = append(got, e.Timestamp) }, func(*mpart, int32, int64) {})
	}
	m.add(fetch(0, 4), decode, nil)
	emit()
	m.add(fetch(4, 1), decode, nil)
	sg := m.parts[0].segs[len(m.parts[0].segs)-1]
	if len(sg.evs) != 1 || cap(sg.evs) < 4 {
		t.Fatalf("the second fetch's segment has %d of %d events: not the first's reused", len(sg.evs), cap(sg.evs))
	}
	for i, e := range sg.evs[1:4] {
		if e != (beacon.Event{}) {
			t.Errorf("event %d of the reused segment still holds the first fetch's %+v", i+1, e)
		}
	}
	m.add(fetch(5, 5), decode, nil)
	emit()
	if len(got) != 10 || got[0] != 1 || got[9] != 10 {
		t.Errorf("handed on %v, want 1 to 10", got)
	}
}
