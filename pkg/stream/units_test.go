package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
	"github.com/beaconhunt/beacon/pkg/state"
)

func mustTime(t *testing.T, s string) beacon.Time {
	t.Helper()
	v, err := beacon.ParseTime([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRepartitionFormat: connections, null-port connections and domain
// observations round-trip; the null port stays distinct from port 0;
// damaged records are errors, never panics.
func TestRepartitionFormat(t *testing.T) {
	ts := mustTime(t, "2024-05-01T10:00:00.1234567Z")
	e := beacon.Event{Timestamp: ts, DeviceId: "d1", DeviceName: "wks-1", AccountName: "alice", AccountDomain: "contoso",
		FileName: "rundll32.exe", RemoteIP: "45.77.1.10", RemotePort: 443, HasPort: true}
	var it item
	v := appendConn(nil, &e, ts)
	if err := decodeItem([]byte(e.RemoteIP), v, &it); err != nil {
		t.Fatal(err)
	}
	if it.kind != kindConn || it.time != ts || it.tupleKey() != e.Tuple() {
		t.Errorf("connection round trip: %+v", it)
	}
	e.RemotePort, e.HasPort = 0, true
	if decodeItem([]byte(e.RemoteIP), appendConn(nil, &e, ts), &it); it.kind != kindConn || it.port != 0 {
		t.Errorf("port 0 is a port: %+v", it)
	}
	e.HasPort = false
	nv := appendConn(nil, &e, ts)
	if err := decodeItem([]byte(e.RemoteIP), nv, &it); err != nil || it.kind != kindNoPort || it.time != ts {
		t.Errorf("null port: %+v %v", it, err)
	}
	if len(nv) > 10 {
		t.Errorf("a null-port record carries only its time, got %d bytes", len(nv))
	}
	dv := appendDomain(nil, ts, ts, "api.evil.com")
	if err := decodeItem([]byte("45.77.1.10"), dv, &it); err != nil || it.kind != kindDomain || it.domain != "api.evil.com" || it.ip != "45.77.1.10" {
		t.Errorf("domain: %+v %v", it, err)
	}
	if err := decodeItem(nil, appendDomain(nil, ts, ts, ""), &it); err != nil || it.domain != "" {
		t.Errorf("empty domain (kept, as the query keeps it): %+v %v", it, err)
	}
	for _, bad := range [][]byte{nil, {0x09}, v[:len(v)-1], append(append([]byte{}, v...), 0), {kindConn, 0x80}, dv[:3]} {
		if err := decodeItem(nil, bad, &it); err == nil {
			t.Errorf("%x decoded", bad)
		}
	}
	// Every prefix of a valid record fails cleanly.
	for i := range v {
		decodeItem(nil, v[:i], &it)
	}
	if millis(ts) != 1714557600123 || millis(-1) != -1 {
		t.Errorf("millis: %d %d", millis(ts), millis(-1))
	}
}

// TestDomainDedup: new pairs and pairs newer by the margin go at once;
// newer times within the margin wait and a sweep sends the newest.
func TestDomainDedup(t *testing.T) {
	d := newDomainDedup(time.Hour)
	t0 := mustTime(t, "2024-05-01T10:00:00Z")
	type sent struct {
		ip, dom string
		t       beacon.Time
	}
	var out []sent
	send := func(ip, dom string, t beacon.Time) { out = append(out, sent{ip, dom, t}) }
	obs := func(t beacon.Time) bool { d.advance(t); return d.observe("1.2.3.4", "a.com", t) }
	if !obs(t0) {
		t.Error("a new pair waits")
	}
	if obs(t0.Add(time.Minute)) || obs(t0.Add(2*time.Minute)) || obs(t0) {
		t.Error("a newer time within the margin is sent at once")
	}
	d.sweep(false, send)
	if len(out) != 0 {
		t.Errorf("swept before a margin of event time: %v", out)
	}
	if !obs(t0.Add(61 * time.Minute)) {
		t.Error("a time newer by the margin waits")
	}
	obs(t0.Add(62 * time.Minute))
	d.sweep(true, send)
	if len(out) != 1 || out[0].t != t0.Add(62*time.Minute) {
		t.Errorf("forced sweep sent %v, want the newest pending time", out)
	}
	out = nil
	d.sweep(true, send)
	if len(out) != 0 {
		t.Errorf("a pair sent twice: %v", out)
	}
}

// TestAlertID: the ID depends on the tuple, the period and the settings,
// and on nothing else.
func TestAlertID(t *testing.T) {
	p := beacon.Seed()
	tu := beacon.Tuple{DeviceId: "d", DeviceName: "n", AccountName: "a", AccountDomain: "c", FileName: "f", RemoteIP: "1.2.3.4", RemotePort: 443}
	id := AlertID("seed", &p, 24*time.Hour, &tu, 19844)
	if len(id) != 32 || id != AlertID("seed", &p, 24*time.Hour, &tu, 19844) {
		t.Fatalf("not deterministic: %s", id)
	}
	other := tu
	other.RemotePort = 8443
	q := p
	q.JitterThreshold = 25
	for name, x := range map[string]string{
		"epoch":   AlertID("seed", &p, 24*time.Hour, &tu, 19845),
		"tuple":   AlertID("seed", &p, 24*time.Hour, &other, 19844),
		"params":  AlertID("seed", &q, 24*time.Hour, &tu, 19844),
		"realert": AlertID("seed", &p, time.Hour, &tu, 19844),
	} {
		if x == id {
			t.Errorf("a different %s gives the same ID", name)
		}
	}
	// ActionTypes are a set: order and repeats do not change the ID.
	r := p
	r.ActionTypes = append([]string{p.ActionTypes[2], p.ActionTypes[0]}, p.ActionTypes...)
	if AlertID("seed", &r, 24*time.Hour, &tu, 19844) != id {
		t.Error("reordered ActionTypes changed the ID")
	}
	// Fields are length-prefixed: moving a character between columns changes the ID.
	a := beacon.Tuple{DeviceId: "ab", DeviceName: "c"}
	b := beacon.Tuple{DeviceId: "a", DeviceName: "bc"}
	if AlertID("seed", &p, time.Hour, &a, 1) == AlertID("seed", &p, time.Hour, &b, 1) {
		t.Error("ambiguous tuple encoding")
	}
	day := mustTime(t, "2024-05-01T00:00:00Z")
	if EpochOf(day, 24*time.Hour) != EpochOf(day.Add(24*time.Hour-time.Second), 24*time.Hour) ||
		EpochOf(day, 24*time.Hour) == EpochOf(day-1, 24*time.Hour) {
		t.Error("periods are not aligned to UTC days")
	}
}

func sampleAlert(t *testing.T) Alert {
	rs, _ := records(t, fleet.Config{Seed: 1, Devices: 20, Duration: 3 * time.Hour, Sleeps: []time.Duration{time.Minute}})
	p := testParams()
	h := beacon.NewHunt(p)
	for i := range rs {
		h.Add(&rs[i].Event)
	}
	now, _ := h.DefaultNow()
	rows := h.Rows(now)
	if len(rows) == 0 {
		t.Fatal("no rows")
	}
	r := rows[0]
	r.RemotePort = 443
	e := EpochOf(now-beacon.Second, p.Lookback)
	return Alert{ID: AlertID("seed", &p, p.Lookback, &r.Tuple, e), Profile: "seed", Params: p, ReAlert: p.Lookback,
		Epoch: e, StreamTime: now - beacon.Second, Row: r}
}

// TestAlertJSON: an alert carries every output column of the query, as
// hunt --format jsonl prints the row, plus its own fields; it parses back.
func TestAlertJSON(t *testing.T) {
	a := sampleAlert(t)
	b := a.AppendJSON(nil)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	for _, c := range append(beacon.OutputColumns, "AlertId", "Profile", "StreamTime", "WindowStart", "WindowEnd", "AlertEpoch", "Techniques", "Parameters") {
		if _, ok := m[c]; !ok {
			t.Errorf("alert lacks %s", c)
		}
	}
	row := string(a.Row.AppendJSON(nil))
	if !strings.HasSuffix(string(b), row[1:]) {
		t.Error("the row's columns are not hunt's JSON")
	}
	if !strings.Contains(string(b), `"T1573"`) || !strings.Contains(string(b), `"T1071"`) {
		t.Errorf("port 443 maps to T1071 and T1573: %s", m["Techniques"])
	}
	back, err := ParseAlert(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != a.ID || back.Row.Tuple != a.Row.Tuple || back.StreamTime != a.StreamTime || back.Epoch != a.Epoch ||
		back.Row.Avg != a.Row.Avg || len(back.Row.TimeDeltaList) != len(a.Row.TimeDeltaList) ||
		ParamsFingerprint(&back.Params) != ParamsFingerprint(&a.Params) || back.ReAlert != a.ReAlert {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, a)
	}
	if _, err := ParseAlert([]byte(`{"x":1}`)); err == nil {
		t.Error("a record without AlertId parsed")
	}
	if !strings.Contains(a.String(), a.Row.RemoteIP) {
		t.Error(a.String())
	}
}

// TestAlertAvro: alerts encode per schemas/BeaconAlert.avsc, raw and
// Confluent-framed, and decode back with the same codec.
func TestAlertAvro(t *testing.T) {
	a := sampleAlert(t)
	c, err := newAlertCodec(AlertAvro, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.append(nil, &a)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if m["AlertId"] != a.ID || m["RemoteIP"] != a.Row.RemoteIP || m["count_"] != a.Row.Count ||
		m["Timestamp"] != a.Row.MinTimestamp.String() || len(m["TimeDeltaList"].([]any)) != len(a.Row.TimeDeltaList) {
		t.Errorf("decoded %v", m)
	}
	framed, _ := newAlertCodec(AlertAvro, 42)
	fb, err := framed.append(nil, &a)
	if err != nil || fb[0] != 0 || fb[4] != 42 || string(fb[5:]) != string(b) {
		t.Errorf("Confluent framing: % x…", fb[:8])
	}
}

// TestSniff: auto detection tells JSON, Confluent and raw Avro apart.
func TestSniff(t *testing.T) {
	for in, want := range map[string]InputFormat{
		`{"a":1}`: InputJSON, "  \n{": InputJSON, "\x00\x00\x00\x00\x07": InputConfluent, "8abc": InputAvro, "": InputAvro,
	} {
		if got := sniff([]byte(in)); got != want {
			t.Errorf("sniff(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestMerger: events leave in event-time order across partitions, a
// partition that may still deliver holds the others back, an idle one
// does not, and commits follow completed records.
func TestMerger(t *testing.T) {
	var m merger
	m.assign("in", 0, 0, 10)
	m.assign("in", 1, 0, 10)
	m.assign("in", 2, 5, 5) // nothing to read: idle
	mk := func(p int32, hwm int64, times ...int) *kgo.FetchTopicPartition {
		fp := &kgo.FetchTopicPartition{Topic: "in", FetchPartition: kgo.FetchPartition{Partition: p, HighWatermark: hwm}}
		for i, tm := range times {
			fp.Records = append(fp.Records, &kgo.Record{Topic: "in", Partition: p, Offset: int64(i), Value: []byte{byte(tm)}})
		}
		return fp
	}
	decode := func(evs []beacon.Event, r *kgo.Record) ([]beacon.Event, string, error) {
		if r.Value[0] == 0 {
			return evs, "", nil // a record without events
		}
		if r.Value[0] == 255 {
			return evs, "bad", fmt.Errorf("record %d/%d", r.Partition, r.Offset)
		}
		return append(evs, beacon.Event{Timestamp: beacon.Time(r.Value[0])}), "", nil
	}
	var rejected []string
	reject := func(r *kgo.Record, reason string, err error) { rejected = append(rejected, reason+" "+err.Error()) }
	var got []int
	marks := map[int32]int64{}
	emit := func(m *merger) {
		m.emit(func(_ *mpart, e *beacon.Event, _ uint8) { got = append(got, int(e.Timestamp)) },
			func(mp *mpart, _ int32, next int64) { marks[mp.id] = next })
	}
	m.add([]kgo.FetchTopicPartition{*mk(0, 10, 1, 4, 0, 7)}, decode, reject)
	emit(&m)
	if len(got) != 0 {
		t.Fatalf("emitted %v while partition 1, not read yet, may hold older events", got)
	}
	m.add([]kgo.FetchTopicPartition{*mk(1, 3, 2, 3, 5)}, decode, reject)
	emit(&m)
	if g, want := fmt.Sprint(got), "[1 2 3 4 5 7]"; g != want {
		t.Errorf("order %s, want %s (partition 1 is idle once read to its end)", g, want)
	}
	if marks[0] != 4 || marks[1] != 3 {
		t.Errorf("marks %v, want 0→4 (the empty record included), 1→3", marks)
	}

	// The same partitions fetched together decode in parallel, each into
	// its own segment, and merge to the same order; records that do not
	// decode reach reject in fetch order, after decoding, and their
	// offsets are still marked.
	var m2 merger
	for p := range int32(4) {
		m2.assign("in", p, 0, 4)
	}
	got, marks = nil, map[int32]int64{}
	m2.add([]kgo.FetchTopicPartition{*mk(0, 4, 1, 4, 255, 7), *mk(1, 4, 2, 3, 5, 9), *mk(2, 4, 255, 6, 6, 8), *mk(3, 4, 0, 0, 0, 10)}, decode, reject)
	emit(&m2)
	if g, want := fmt.Sprint(got), "[1 2 3 4 5 6 6 7 8 9 10]"; g != want {
		t.Errorf("parallel decode: order %s, want %s", g, want)
	}
	if g, want := fmt.Sprint(rejected), "[bad record 0/2 bad record 2/0]"; g != want {
		t.Errorf("rejected %s, want %s", g, want)
	}
	for p := range int32(4) {
		if marks[p] != 4 {
			t.Errorf("partition %d marked %d, want 4", p, marks[p])
		}
	}

	// A client-level error arrives as a fetch of topic "", partition -1:
	// it is no partition, so the merger neither tracks nor counts it.
	m2.add([]kgo.FetchTopicPartition{{FetchPartition: kgo.FetchPartition{Partition: -1, Err: context.Canceled}}}, decode, reject)
	if n, _ := m2.assigned(); n != 4 {
		t.Errorf("after an error fetch the merger counts %d partitions, want 4", n)
	}
}

// A repartition record's Kafka timestamp is its event time, clamped to what
// a broker accepts: a sensor with a clock years ahead must not fail ingest.
func TestRecordTime(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	ev := mustTime(t, "2026-11-26T11:00:00.1234567Z")
	if got := recordTime(ev, now); !got.Equal(time.UnixMilli(ev.Go().UnixMilli())) {
		t.Fatalf("past event: %v", got)
	}
	future := mustTime(t, "2031-01-01T00:00:00Z")
	if got := recordTime(future, now); !got.Equal(now.Add(maxFutureSkew)) {
		t.Fatalf("future event stamped %v, want now+%v", got, maxFutureSkew)
	}
	if got := recordTime(mustTime(t, "1969-12-31T23:00:00Z"), now); got.UnixMilli() != 0 {
		t.Fatalf("pre-epoch event stamped %v", got)
	}
}

// TestMemoryBudgetReachesState: MemoryBudget sizes the state the service
// and Replay open (a quarter of it to the block cache), and a budget below
// the state's floor is refused by New with a message naming it.
func TestMemoryBudgetReachesState(t *testing.T) {
	s, err := New(Brokers("127.0.0.1:1"), StateDir(t.TempDir()), MemoryBudget(256<<20))
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(t.TempDir(), s.cfg.params, s.stateOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if budget, _ := st.CacheBudget(); budget != 64<<20 {
		t.Errorf("block cache budget %d, want %d (a quarter of the memory budget)", budget, 64<<20)
	}
	if _, err := New(Brokers("127.0.0.1:1"), StateDir(t.TempDir()), MemoryBudget(1<<20)); err == nil || !strings.Contains(err.Error(), "memory budget must be at least 16 MiB") {
		t.Errorf("New with a 1 MiB budget: %v, want an error naming the floor", err)
	}
}
