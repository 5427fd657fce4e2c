package stream

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/state"
)

// bookTuple is a member of the set named by its device.
func bookTuple(dev string) beacon.Tuple {
	return beacon.Tuple{DeviceId: dev, DeviceName: dev + ".contoso.local", AccountName: "alice", AccountDomain: "contoso",
		FileName: "implant.exe", RemoteIP: "45.77.1.10", RemotePort: 443}
}

// TestAlertBook: which members alert at each evaluation point, through the
// warm-up's end (exactly reached, and a tick before), re-alert period
// boundaries, a stream-time jump that restarts the warm-up, and restarts
// (the book written to a meta blob and read back into a new one, as a
// restarted worker does).
func TestAlertBook(t *testing.T) {
	t0 := beacon.Time(mustTime(t, "2024-05-01T10:00:00Z"))
	const (
		tick = beacon.Tick
		min  = 60 * beacon.Second
		hour = 60 * min
	)
	type step struct {
		at      beacon.Time
		members []string // the members evaluated at this point
		restart bool     // before the point: the book goes through its meta blob into a new book
		want    []string // the members claimed (alerted) at the point
		all     bool     // the point makes every member due
	}
	for _, c := range []struct {
		name    string
		warmup  time.Duration
		reAlert time.Duration
		steps   []step
	}{
		{"warm-up exactly reached", 20 * time.Minute, time.Hour, []step{
			{at: t0, members: []string{"a"}, all: true}, // a new period
			{at: t0 + 20*min - tick, members: []string{"a"}},
			{at: t0 + 20*min, members: []string{"a", "b"}, want: []string{"a", "b"}, all: true},
			{at: t0 + 21*min, members: []string{"a", "b"}},
		}},
		{"no warm-up: the first point alerts", 0, time.Hour, []step{
			{at: t0, members: []string{"a"}, want: []string{"a"}, all: true},
		}},
		{"re-alert period boundaries", 0, time.Hour, []step{
			{at: t0 + 59*min, members: []string{"a"}, want: []string{"a"}, all: true},
			{at: t0 + hour - tick, members: []string{"a", "b"}, want: []string{"b"}},
			{at: t0 + hour, members: []string{"a", "b"}, want: []string{"a", "b"}, all: true},
			{at: t0 + 2*hour - tick, members: []string{"a", "b"}},
		}},
		{"a jump of exactly the lookback keeps the warm-up", 20 * time.Minute, 24 * time.Hour, []step{
			{at: t0, members: []string{"a"}, all: true},
			{at: t0 + 20*min, members: []string{"a"}, want: []string{"a"}, all: true},
			{at: t0 + 20*min + hour, members: []string{"a", "b"}, want: []string{"b"}},
		}},
		{"a jump past the lookback restarts the warm-up", 20 * time.Minute, 24 * time.Hour, []step{
			{at: t0, members: []string{"a"}, all: true},
			{at: t0 + 20*min, members: []string{"a"}, want: []string{"a"}, all: true},
			{at: t0 + 20*min + hour + tick, members: []string{"a", "b"}},
			{at: t0 + 40*min + hour, members: []string{"a", "b"}},
			{at: t0 + 40*min + hour + tick, members: []string{"a", "b"}, want: []string{"b"}, all: true},
		}},
		{"a restart keeps the warm-up's start", 20 * time.Minute, time.Hour, []step{
			{at: t0, members: []string{"a"}, all: true},
			{at: t0 + 20*min - tick, members: []string{"a"}, restart: true},
			{at: t0 + 20*min, members: []string{"a"}, restart: true, want: []string{"a"}, all: true},
		}},
		{"a restart keeps the period's alerted set", 0, time.Hour, []step{
			{at: t0, members: []string{"a", "b"}, want: []string{"a", "b"}, all: true},
			// The warm-up is not recorded as over: the restarted book
			// finds it over again, and every member is due, but those
			// alerted in the period stay alerted.
			{at: t0 + min, members: []string{"a", "b", "c"}, restart: true, want: []string{"c"}, all: true},
			{at: t0 + 2*min, members: []string{"a", "b", "c"}, restart: true, all: true},
			{at: t0 + 3*min, members: []string{"a", "b", "c"}},
			{at: t0 + hour, members: []string{"a"}, restart: true, want: []string{"a"}, all: true},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			const lookback = time.Hour
			b := newAlertBook(c.warmup, lookback, c.reAlert)
			for i, s := range c.steps {
				if s.restart {
					blob := appendMeta(nil, &b, &metaTime{})
					b = newAlertBook(c.warmup, lookback, c.reAlert)
					var mt metaTime
					if err := decodeMeta(blob, &b, &mt); err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
				}
				e, all := b.at(s.at)
				if want := EpochOf(s.at, c.reAlert); e != want {
					t.Errorf("step %d (%s): period %d, want %d", i, s.at, e, want)
				}
				var got []string
				for _, m := range s.members {
					tu := bookTuple(m)
					if b.claim(&tu) {
						got = append(got, m)
					}
				}
				if !slices.Equal(got, s.want) || all != s.all {
					t.Errorf("step %d (%s): alerted %v (all %v), want %v (all %v)", i, s.at, got, all, s.want, s.all)
				}
			}
		})
	}
}

// TestMetaRoundTrip: the meta blob (alert bookkeeping and time state)
// comes back as written, and encodes again to the same bytes; cut short
// or with bytes after its end, it is an error and restores nothing.
func TestMetaRoundTrip(t *testing.T) {
	ts := mustTime(t, "2024-05-01T10:00:00Z")
	b := newAlertBook(20*time.Minute, time.Hour, time.Hour)
	b.first, b.hasFirst = ts, true
	b.epoch = 476258
	b.alerted[bookTuple("d")] = struct{}{}
	b.lastEval, b.hasLastEval = ts, true
	mt := metaTime{
		sw: ts + 5*beacon.Second, hasSW: true,
		open: 171455760, hasOpen: true,
		unconfirmed: true,
		srcs: map[tp]*srcMark{
			{"events", 0}: {time: ts, hasTime: true},
			{"events", 1}: {idle: true},
			{"other", 3}:  {},
		},
	}
	blob := appendMeta(nil, &b, &mt)

	r := newAlertBook(20*time.Minute, time.Hour, time.Hour)
	var rt metaTime
	if err := decodeMeta(blob, &r, &rt); err != nil {
		t.Fatal(err)
	}
	if r.first != b.first || !r.hasFirst || r.epoch != b.epoch || len(r.alerted) != 1 || r.lastEval != b.lastEval || !r.hasLastEval {
		t.Errorf("bookkeeping round trip: %+v, want %+v", r, b)
	}
	if r.warmup != b.warmup || r.restart != b.restart || r.reAlert != b.reAlert {
		t.Errorf("the blob changed the book's configuration: %+v", r)
	}
	if rt.sw != mt.sw || !rt.hasSW || rt.open != mt.open || !rt.hasOpen || !rt.unconfirmed || len(rt.srcs) != 3 {
		t.Errorf("time round trip: %+v, want %+v", rt, mt)
	}
	for k, m := range mt.srcs {
		if got := rt.srcs[k]; got == nil || *got != *m {
			t.Errorf("source %v: %+v, want %+v", k, got, m)
		}
	}
	for k := range b.alerted {
		if _, ok := r.alerted[k]; !ok {
			t.Errorf("alerted %v lost", k)
		}
	}
	if again := appendMeta(nil, &r, &rt); !bytes.Equal(again, blob) {
		t.Errorf("re-encoding differs:\n%x\n%x", again, blob)
	}

	// A book with nothing in it: no warm-up start, no last evaluation.
	empty := newAlertBook(0, time.Hour, time.Hour)
	var et metaTime
	e := newAlertBook(0, time.Hour, time.Hour)
	if err := decodeMeta(appendMeta(nil, &empty, &metaTime{}), &e, &et); err != nil || e.hasFirst || e.hasLastEval || e.epoch != minEpoch || et.hasSW || len(et.srcs) != 0 {
		t.Errorf("empty book round trip: %+v %+v %v", e, et, err)
	}

	for _, bad := range [][]byte{append(bytes.Clone(blob), 0)} {
		x := newAlertBook(0, time.Hour, time.Hour)
		if err := decodeMeta(bad, &x, &et); !errors.Is(err, errMeta) || x.hasFirst {
			t.Errorf("a blob with a byte after its end: %v, restored %+v", err, x)
		}
	}
	for i := 0; i < len(blob); i++ {
		x := newAlertBook(0, time.Hour, time.Hour)
		var xt metaTime
		if err := decodeMeta(blob[:i], &x, &xt); !errors.Is(err, errMeta) || x.hasFirst || x.hasLastEval || xt.hasSW || xt.srcs != nil {
			t.Fatalf("a blob cut to %d bytes: %v, restored %+v %+v", i, err, x, xt)
		}
	}
}

// TestMetaVersionMismatch: a blob of another version is an error that
// names both versions and restores nothing. (The worker stops on it and
// the detector rebuilds the partition: TestRestartKeepsWarmup.)
func TestMetaVersionMismatch(t *testing.T) {
	ts := mustTime(t, "2024-05-01T10:00:00Z")
	b := newAlertBook(0, time.Hour, time.Hour)
	b.at(ts)
	blob := appendMeta(nil, &b, &metaTime{})
	blob[0] = metaVersion + 1
	x := newAlertBook(0, time.Hour, time.Hour)
	var xt metaTime
	err := decodeMeta(blob, &x, &xt)
	if !errors.Is(err, errMeta) || !strings.Contains(err.Error(), "version 3, this build reads version 2") {
		t.Errorf("another version: %v", err)
	}
	if x.hasFirst || x.hasLastEval || x.epoch != minEpoch {
		t.Errorf("another version restored %+v", x)
	}

	w := testWorker(t)
	if err := w.loadMeta(blob); !errors.Is(err, errMeta) {
		t.Errorf("worker.loadMeta: %v", err)
	}
	if w.book.hasFirst || w.hasSW {
		t.Errorf("worker restored from another version: %+v", w.book)
	}
	if err := w.loadMeta(nil); err != nil {
		t.Errorf("a new state's empty blob: %v", err)
	}
}

// TestRestartKeepsWarmup: a detector stopped after its warm-up and started
// again on its state alerts what a replay of the whole stream alerts — a
// beacon that enters the set soon after the restart included. A restart
// that forgot the warm-up's start (or the alerted set) would wait a new
// warm-up, which the stream ends before, and miss that beacon (or repeat
// the first one). When the state's meta blob is of another version, the
// partition is rebuilt from the repartition topic instead, with the same
// alerts.
func TestRestartKeepsWarmup(t *testing.T) {
	t.Run("restart", func(t *testing.T) { testRestartKeepsWarmup(t, false) })
	t.Run("meta of another version", func(t *testing.T) { testRestartKeepsWarmup(t, true) })
}

func testRestartKeepsWarmup(t *testing.T, otherVersion bool) {
	_, addr := newCluster(t, 1)
	p := testParams()
	const warm = 30 * time.Minute
	opts := []Opt{Params(p), Warmup(warm), ReAlertInterval(24 * time.Hour)}
	t0 := mustTime(t, "2024-05-01T10:00:00Z")
	var before, after []beacon.Event
	for ts := t0; ts <= t0.Add(35*time.Minute); ts = ts.Add(time.Minute) {
		before = append(before, connEvent("dev1", "45.77.1.10", ts))
	}
	for ts := t0.Add(36 * time.Minute); ts <= t0.Add(57*time.Minute); ts = ts.Add(time.Minute) {
		after = append(after, connEvent("dev1", "45.77.1.10", ts), connEvent("dev2", "45.77.1.11", ts))
	}
	cl := newClient(t, addr, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce := func(evs []beacon.Event) {
		recs := testkit.JSONRecords(evs)
		for _, r := range recs {
			r.Topic, r.Partition = tInput, 0
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm := kadm.NewClient(cl)
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	detect := func(reg *prometheus.Registry) {
		ingestAll(t, addr, opts...)
		stop := start(t, service(t, addr, dir, testLogger(t), append([]Opt{WithRole(RoleDetect), Registry(reg)}, opts...)...))
		detectedAll(t, adm, "test.detect", 60*time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	produce(before)
	detect(prometheus.NewRegistry())
	if n := len(alertsOf(t, addr)); n != 1 {
		t.Fatalf("%d alerts before the restart, want 1: the first beacon must be alerted, after the warm-up", n)
	}
	if otherVersion {
		st, err := state.Open(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		part, err := st.Partition(0)
		if err != nil {
			t.Fatal(err)
		}
		meta := bytes.Clone(part.Meta())
		meta[0] = metaVersion + 1
		if _, err := part.Apply(nil, nil, -1, meta); err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
	produce(after)
	detect(reg)
	if n, want := counterValue(t, reg, "beacon_partition_rebuilds_total", "", ""), map[bool]float64{false: 0, true: 1}[otherVersion]; n != want {
		t.Errorf("partition_rebuilds_total = %v, want %v", n, want)
	}

	want := replayOf(t, addr, ReplayOptions{Partitions: 1}, opts...).Alerts
	got := alertsOf(t, addr)
	if len(want) != 2 {
		t.Fatalf("the replay alerts %d beacons; the case needs both", len(want))
	}
	if strings.Join(alertIDs(got), " ") != strings.Join(alertIDs(want), " ") || len(got) != len(want) {
		t.Fatalf("alerts after a restart: %v, a replay of the stream: %v", alertIDs(got), alertIDs(want))
	}
	byID := make(map[string]Alert)
	for _, a := range want {
		byID[a.ID] = a
	}
	for _, a := range got {
		if w := byID[a.ID]; a.StreamTime != w.StreamTime || beacon.CompareRows(&a.Row, &w.Row) != 0 || a.Row.Count != w.Row.Count {
			t.Errorf("alert %s after a restart: at %s, %+v; the replay's at %s, %+v", a.ID, a.StreamTime, a.Row, w.StreamTime, w.Row)
		}
	}
}
