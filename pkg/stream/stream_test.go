package stream

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

// TestEndToEnd: fleet events in (flat JSON and envelopes), alerts out for
// every planted implant and none for fleet services; once the input has
// drained, /beacons is exactly the batch query per partition at its stream
// time, and every alerted tuple is one the batch query finds.
func TestEndToEnd(t *testing.T) {
	const parts = 4
	_, addr := newCluster(t, parts)
	rs, labels := records(t, testFleet(1))
	produceJSON(t, addr, rs)

	p := testParams()
	s := service(t, addr, t.TempDir(), testLogger(t), Params(p))
	stop := start(t, s)
	waitDrained(t, addr, 90*time.Second)

	want := jsonl(huntByPartition(p, rs, parts))
	if got := getBeacons(t, s, ""); got != want {
		t.Errorf("/beacons differs from hunt per partition:\n%s", diffLines(got, want))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	alerts := alertsOf(t, addr)
	alerted := make(map[beacon.Tuple]bool)
	for _, a := range alerts {
		alerted[a.Row.Tuple] = true
	}
	found := everInSet(p, rs, labels)
	implants := 0
	for tu, l := range found {
		if l.Class == fleet.ClassImplant {
			implants++
			if !alerted[tu] {
				t.Errorf("implant %s (%s, sleep %s) not alerted", l.Name, l.RemoteIP, l.Sleep)
			}
		}
	}
	if implants < 3 {
		t.Errorf("the batch query finds only %d implants: the test fleet is too hard", implants)
	}
	byTuple := make(map[beacon.Tuple]fleet.Label)
	for _, l := range labels {
		byTuple[tupleOfLabel(l)] = l
	}
	for tu := range alerted {
		switch l, ok := byTuple[tu]; {
		case !ok:
			t.Errorf("alert for %v, which is no timer of the fleet", tu)
		case l.Class == fleet.ClassFleetService:
			t.Errorf("fleet service %s (%s) alerted", l.Name, tu.DeviceName)
		}
	}
	if len(alertIDs(alerts)) != len(alerts) {
		t.Errorf("%d alerts but %d distinct IDs", len(alerts), len(alertIDs(alerts)))
	}
	t.Logf("%d events, %d alerts", len(rs), len(alerts))
}

// ingestAll runs ingest alone until the input is in the repartition topic.
func ingestAll(t *testing.T, addr string, opts ...Opt) {
	t.Helper()
	s := service(t, addr, "", testLogger(t), append([]Opt{WithRole(RoleIngest)}, opts...)...)
	stop := start(t, s)
	adm := testkit.Attach(addr).Admin(t)
	testkit.WaitFor(t, 60*time.Second, "ingest to commit the input", func() (bool, string) {
		f, saw := testkit.CommittedOf(t, adm, "test.ingest", tInput)
		return f >= 1, saw
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// detectedAll waits until group has committed the whole repartition topic.
func detectedAll(t *testing.T, adm *kadm.Client, group string, timeout time.Duration) {
	t.Helper()
	testkit.WaitFor(t, timeout, group+" to commit the repartition topic", func() (bool, string) {
		f, saw := testkit.CommittedOf(t, adm, group, tRepart)
		return f >= 1, saw
	})
}

// waitProgress waits until group has committed at least frac of the
// repartition topic, failing after timeout (a service that died makes no
// progress; the test must say so, not hang).
func waitProgress(t *testing.T, adm *kadm.Client, group string, frac float64, timeout time.Duration) {
	t.Helper()
	testkit.WaitFor(t, timeout, fmt.Sprintf("%s to commit %.0f%% of the repartition topic", group, 100*frac), func() (bool, string) {
		f := progress(t, adm, group)
		return f >= frac, fmt.Sprintf("%.0f%%", 100*f)
	})
}

// progress is the fraction of the repartition topic group has committed.
func progress(t *testing.T, adm *kadm.Client, group string) float64 {
	ends := endOffsets(t, adm, tRepart)
	got, err := adm.FetchOffsets(context.Background(), group)
	if err != nil {
		return 0
	}
	var done, total int64
	for p, end := range ends {
		total += end
		if o, ok := got.Lookup(tRepart, p); ok && o.At > 0 {
			done += o.At
		}
	}
	if total == 0 {
		return 0
	}
	return float64(done) / float64(total)
}

// TestTwoInstancesCrash: one detector alone, then two detectors in one
// group of which one is killed mid-stream (nothing flushed or committed)
// and restarted on its state directory. The union of the pair's alerts,
// deduplicated by ID, is exactly the single detector's: no alert lost, no
// alert that a single run would not give, and every duplicate carries an
// ID the single run also produced.
func TestTwoInstancesCrash(t *testing.T) {
	const parts = 6
	_, addr := newCluster(t, parts, "alerts-single", "alerts-pair", "alerts-solo")
	fc := testFleet(2)
	fc.Duration = 12 * time.Hour
	rs, _ := records(t, fc)
	produceJSON(t, addr, rs)
	ingestAll(t, addr, ClientOpts(kgo.ProducerBatchMaxBytes(16<<10)))
	adm := kadm.NewClient(newClient(t, addr))
	p := testParams()
	slow := ClientOpts(kgo.FetchMaxPartitionBytes(8<<10), kgo.FetchMaxBytes(32<<10))
	delay := optFn(func(c *cfg) { c.batchDelay = 40 * time.Millisecond })

	// The reference: one detector.
	single := service(t, addr, t.TempDir(), testLogger(t), WithRole(RoleDetect), Params(p), Group("single"), AlertTopic("alerts-single"))
	stop := start(t, single)
	detectedAll(t, adm, "single.detect", 90*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := alertIDs(alertsOn(t, addr, "alerts-single"))

	// The pair, one of which dies.
	dir1, dir2 := t.TempDir(), t.TempDir()
	pair := func(dir string) *Service {
		return service(t, addr, dir, testLogger(t), WithRole(RoleDetect), Params(p), Group("pair"), AlertTopic("alerts-pair"),
			slow, delay, CommitInterval(50*time.Millisecond))
	}
	a := pair(dir1)
	stopA := start(t, a)
	b := pair(dir2)
	stopB := start(t, b)
	waitProgress(t, adm, "pair.detect", 0.3, 90*time.Second)
	a.crash()
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed one detector at %.0f%%", 100*progress(t, adm, "pair.detect"))
	time.Sleep(300 * time.Millisecond)
	a2 := pair(dir1)
	stopA2 := start(t, a2)
	detectedAll(t, adm, "pair.detect", 90*time.Second)
	for _, stop := range []func() error{stopA2, stopB} {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	all := alertsOn(t, addr, "alerts-pair")
	got := alertIDs(all)
	t.Logf("single: %d alerts; pair: %d alerts, %d distinct", len(want), len(all), len(got))
	if len(want) == 0 {
		t.Fatal("no alerts at all")
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		missing, extra := setDiff(want, got), setDiff(got, want)
		t.Errorf("pair's alert IDs differ from the single run's: %d missing %v, %d extra %v", len(missing), missing, len(extra), extra)
	}

	// One detector killed and restarted on its own state: it resumes from
	// the offsets in its state instead of rebuilding, and republishes
	// what it may have found but not published.
	dir := t.TempDir()
	solo := func() *Service {
		return service(t, addr, dir, testLogger(t), WithRole(RoleDetect), Params(p), Group("solo"), AlertTopic("alerts-solo"),
			slow, delay, CommitInterval(50*time.Millisecond))
	}
	c := solo()
	stopC := start(t, c)
	waitProgress(t, adm, "solo.detect", 0.4, 90*time.Second)
	c.crash()
	if err := stopC(); err != nil {
		t.Fatal(err)
	}
	c2 := solo()
	stopC2 := start(t, c2)
	detectedAll(t, adm, "solo.detect", 90*time.Second)
	if err := stopC2(); err != nil {
		t.Fatal(err)
	}
	var rebuilt dto.Metric
	c2.m.rebuilds.Write(&rebuilt)
	if n := rebuilt.GetCounter().GetValue(); n != 0 {
		t.Errorf("restart on its own state rebuilt %v partitions", n)
	}
	all = alertsOn(t, addr, "alerts-solo")
	got = alertIDs(all)
	t.Logf("solo, killed and restarted: %d alerts, %d distinct", len(all), len(got))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		missing, extra := setDiff(want, got), setDiff(got, want)
		t.Errorf("restarted detector's alert IDs differ from the single run's: %d missing %v, %d extra %v", len(missing), missing, len(extra), extra)
	}
}

func setDiff(a, b []string) []string {
	in := make(map[string]bool)
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}

// TestIngestCrash: ingest killed mid-stream (nothing flushed, sent or
// committed after that point) and restarted loses nothing: the detector
// downstream still ends with exactly the batch query's rows.
func TestIngestCrash(t *testing.T) {
	const parts = 4
	_, addr := newCluster(t, parts)
	rs, _ := records(t, testFleet(5))
	produceJSON(t, addr, rs)
	adm := kadm.NewClient(newClient(t, addr))
	ingestProgress := func() float64 {
		ends := endOffsets(t, adm, tInput)
		got, err := adm.FetchOffsets(context.Background(), "test.ingest")
		if err != nil {
			return 0
		}
		var done, total int64
		for p, end := range ends {
			total += end
			if o, ok := got.Lookup(tInput, p); ok && o.At > 0 {
				done += o.At
			}
		}
		return float64(done) / float64(max(total, 1))
	}
	slow := []Opt{WithRole(RoleIngest), ClientOpts(kgo.FetchMaxPartitionBytes(16 << 10)), CommitInterval(100 * time.Millisecond),
		optFn(func(c *cfg) { c.batchDelay = 150 * time.Millisecond })}
	in := service(t, addr, "", testLogger(t), slow...)
	stop := start(t, in)
	for deadline := time.Now().Add(90 * time.Second); ingestProgress() < 0.3; {
		if time.Now().After(deadline) {
			t.Fatalf("ingest committed %.0f%% of the input after 90s", 100*ingestProgress())
		}
		time.Sleep(10 * time.Millisecond)
	}
	in.crash()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed ingest at %.0f%%", 100*ingestProgress())
	ingestAll(t, addr)

	p := testParams()
	s := service(t, addr, t.TempDir(), testLogger(t), WithRole(RoleDetect), Params(p))
	stopD := start(t, s)
	detectedAll(t, adm, "test.detect", 60*time.Second)
	want := jsonl(huntByPartition(p, rs, parts))
	if got := getBeacons(t, s, ""); got != want {
		t.Errorf("/beacons after an ingest crash differs from hunt:\n%s", diffLines(got, want))
	}
	if err := stopD(); err != nil {
		t.Fatal(err)
	}
}

// TestNullPortMovesStreamTime: a connection whose RemotePort is null never
// forms a tuple but moves stream time, through the repartition topic too:
// a beacon alerted on leaves the set when a later null-port connection to
// its IP moves the window past it, as in the batch query.
func TestNullPortMovesStreamTime(t *testing.T) {
	_, addr := newCluster(t, 2)
	t0 := mustTime(t, "2024-05-01T10:00:00Z")
	mk := func(ts beacon.Time, port bool) fleet.Record {
		return fleet.Record{Event: beacon.Event{Timestamp: ts, DeviceId: "dev1", DeviceName: "wks-1", ActionType: "ConnectionSuccess",
			RemoteIP: "45.77.1.10", RemoteIPType: "Public", RemotePort: 443, HasPort: port, RemoteUrl: "c2.evil.example.com",
			FileName: "rundll32.exe", AccountName: "alice", AccountDomain: "contoso"}}
	}
	var rs []fleet.Record
	for i := 0; i < 40; i++ {
		rs = append(rs, mk(t0.Add(time.Duration(i)*time.Minute), true))
	}
	p := testParams()
	// Up to here the tuple is a beacon: the batch query finds it.
	if rows := huntByPartition(p, rs, 2); len(rows) != 1 {
		t.Fatalf("the test beacon is not one: %d rows", len(rows))
	}
	rs = append(rs, mk(t0.Add(3*time.Hour), false))
	produceJSON(t, addr, rs)

	s := service(t, addr, t.TempDir(), testLogger(t), Params(p), Warmup(-1))
	stop := start(t, s)
	waitDrained(t, addr, 60*time.Second)
	got, want := getBeacons(t, s, ""), jsonl(huntByPartition(p, rs, 2))
	if got != want || want != "" {
		t.Errorf("/beacons after a null-port connection three hours later:\n got %q\nwant %q (none: the window moved)", got, want)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if as := alertsOf(t, addr); len(as) != 1 || as[0].Row.RemotePort != 443 {
		t.Errorf("alerts: %+v, want the one beacon", as)
	}
}

// TestAvroAlerts: with --alert-format avro the alert topic carries
// schemas/BeaconAlert.avsc records in the Confluent wire format, keyed by
// tuple, with the same deterministic ID.
func TestAvroAlerts(t *testing.T) {
	_, addr := newCluster(t, 2)
	t0 := mustTime(t, "2024-05-01T10:00:00Z")
	var rs []fleet.Record
	for i := 0; i < 40; i++ {
		rs = append(rs, fleet.Record{Event: beacon.Event{Timestamp: t0.Add(time.Duration(i) * time.Minute), DeviceId: "dev1",
			DeviceName: "wks-1", ActionType: "ConnectionSuccess", RemoteIP: "45.77.1.10", RemoteIPType: "Public",
			RemotePort: 8443, HasPort: true, FileName: "rundll32.exe", AccountName: "alice"}})
	}
	produceJSON(t, addr, rs)
	p := testParams()
	s := service(t, addr, t.TempDir(), testLogger(t), Params(p), Warmup(-1), WithAlertFormat(AlertAvro), AlertSchemaID(3))
	stop := start(t, s)
	waitDrained(t, addr, 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, addr, kgo.ConsumeTopics(tAlerts), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	codec, _ := newAlertCodec(AlertAvro, -1)
	var got []map[string]any
	var keys []string
	for len(got) == 0 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if len(r.Value) < 5 || r.Value[0] != 0 || r.Value[4] != 3 {
				t.Fatalf("not Confluent-framed with schema id 3: % x", r.Value[:min(8, len(r.Value))])
			}
			m, err := codec.decode(r.Value[5:])
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
			keys = append(keys, string(r.Key))
		})
	}
	if len(got) != 1 {
		t.Fatalf("%d alerts, want 1", len(got))
	}
	tu := rs[0].Tuple()
	if got[0]["RemotePort"] != int32(8443) || got[0]["Jitter"] != 0.0 || keys[0] != string(appendTupleKey(nil, &tu)) {
		t.Errorf("alert %v key %s", got[0], keys[0])
	}
	e := got[0]["AlertEpoch"].(int64)
	if got[0]["AlertId"] != AlertID("seed", &p, p.Lookback, &tu, e) {
		t.Errorf("AlertId %v is not AlertID(tuple, epoch %d)", got[0]["AlertId"], e)
	}
}

// A detector down longer than the repartition topic's retention comes back
// to find records it never applied gone: its state is older than the log
// start, so the partition is rebuilt from what the topic still holds (and
// counted), never resumed across the hole. (A worker overtaken by
// retention while running counts the records in
// events_dropped_total{reason="lost"} instead.)
func TestStateOlderThanRetentionIsRebuilt(t *testing.T) {
	_, addr := newCluster(t, 1)
	rs, _ := records(t, testFleet(5))
	half := len(rs) / 2
	p := testParams()
	dir := t.TempDir()
	produceJSON(t, addr, rs[:half])
	ingestAll(t, addr, Params(p))
	first := service(t, addr, dir, testLogger(t), Params(p), WithRole(RoleDetect))
	stop := start(t, first)
	adm := kadm.NewClient(newClient(t, addr))
	detectedAll(t, adm, "test.detect", 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	applied := endOffsets(t, adm, tRepart)[0]

	// While it is down, the rest arrives and retention removes the oldest
	// hundred records it has not applied.
	produceJSON(t, addr, rs[half:])
	ingestAll(t, addr, Params(p))
	if _, err := adm.DeleteRecords(context.Background(), kadm.Offsets{tRepart: {0: {At: applied + 100}}}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	again := service(t, addr, dir, testLogger(t), Params(p), WithRole(RoleDetect), Registry(reg))
	stop = start(t, again)
	detectedAll(t, adm, "test.detect", 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := counterValue(t, reg, "beacon_partition_rebuilds_total", "", ""); n != 1 {
		t.Fatalf("partition_rebuilds_total = %v, want 1", n)
	}
	if n := counterValue(t, reg, "beacon_events_dropped_total", "reason", "lost"); n != 0 {
		t.Fatalf("events_dropped_total{reason=lost} = %v after a rebuild, want 0", n)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
