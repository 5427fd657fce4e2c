package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
	"github.com/beaconhunt/beacon/pkg/state"
)

// metric reads a counter of the service; stage is the value of its only
// label (stage), or "" for one without labels.
func metric(t *testing.T, s *Service, name, stage string) float64 {
	t.Helper()
	if stage == "" {
		return counterValue(t, s.reg, name, "", "")
	}
	return counterValue(t, s.reg, name, "stage", stage)
}

// waitCounter waits until a counter of the service reaches want.
func waitCounter(t *testing.T, s *Service, name, stage string, want float64) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, fmt.Sprintf("%s{stage=%q} to reach %v", name, stage, want), func() (bool, string) {
		v := metric(t, s, name, stage)
		return v >= want, fmt.Sprint(v)
	})
}

// ownGoroutines counts the goroutines that run the service's code or a
// franz-go client: what a Run that returned must not leave behind.
func ownGoroutines() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "franz-go/pkg/kgo.") || strings.Contains(g, "beacon/pkg/stream.(*") ||
			strings.Contains(g, "beacon/pkg/stream.runGroup") || strings.Contains(g, "net/http.(*Server).Serve") {
			n++
		}
	}
	return n
}

// waitGoroutines waits until at most n such goroutines are left.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, fmt.Sprintf("at most %d goroutines of the service (as before)", n), func() (bool, string) {
		left := ownGoroutines()
		if left <= n {
			return true, ""
		}
		buf := make([]byte, 1<<20)
		return false, fmt.Sprintf("%d left running:\n%s", left, buf[:runtime.Stack(buf, true)])
	})
}

// observed returns a logger that writes to the test log and to an
// observer, for counting lines.
func observed(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(zapcore.NewTee(testLogger(t).Core(), core)), logs
}

// TestRunErrorStopsEverything: a part that cannot be built, or that fails
// once running, makes Run return its error, and nothing of the service
// keeps running afterwards (before the run group, ingest kept running
// when the detector could not open its state).
func TestRunErrorStopsEverything(t *testing.T) {
	_, addr := newCluster(t, 2)
	produceJSON(t, addr, firstRecords(t, 2000))

	t.Run("detector not built", func(t *testing.T) {
		dir := t.TempDir()
		p := testParams()
		p.Lookback = 2 * time.Hour
		st, err := state.Open(dir, p)
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		before := ownGoroutines()
		l, base := listen(t)
		s := service(t, addr, dir, testLogger(t), Params(testParams()), HTTPListener(l))
		err = s.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "lookback") {
			t.Fatalf("Run: %v, want the state's parameter mismatch", err)
		}
		waitGoroutines(t, before)
		if _, err := http.Get(base + "/livez"); err == nil {
			t.Error("the HTTP listener is still open after Run failed")
		}
	})

	t.Run("http fails while running", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l.Close() // Serve fails at once
		before := ownGoroutines()
		s := service(t, addr, t.TempDir(), testLogger(t), Params(testParams()), HTTPListener(l))
		done := make(chan error, 1)
		go func() { done <- s.Run(context.Background()) }()
		select {
		case err = <-done:
		case <-time.After(60 * time.Second):
			t.Fatal("Run did not return after its HTTP server failed")
		}
		if err == nil || !strings.HasPrefix(err.Error(), "http: ") {
			t.Fatalf("Run: %v, want the HTTP server's error", err)
		}
		waitGoroutines(t, before)
		if l := s.live(); l.Live || !strings.Contains(strings.Join(l.Reasons, ";"), "failed: http") {
			t.Errorf("after the failure /livez says %+v", l)
		}
	})
}

// firstRecords is the first n records of testFleet(1), as JSON.
func firstRecords(t testing.TB, n int) []fleet.Record {
	rs, _ := records(t, testFleet(1))
	return rs[:min(n, len(rs))]
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v: %s", url, err, b)
	}
	return resp.StatusCode
}

// waitReady polls /readyz until want(ready) holds and returns the last
// answer.
func waitReady(t *testing.T, base string, what string, want func(int, readiness) bool) readiness {
	t.Helper()
	var r readiness
	testkit.WaitFor(t, 30*time.Second, what, func() (bool, string) {
		r = readiness{}
		code := getJSON(t, base+"/readyz", &r)
		return want(code, r), fmt.Sprintf("/readyz %d %+v", code, r)
	})
	return r
}

func listen(t *testing.T) (net.Listener, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l, "http://" + l.Addr().String()
}

// TestReadyMissingInputTopic: with a misspelt input topic the process is
// live but not ready, says why, and warns once (not once per check);
// once the topic exists it is consumed and the process becomes ready.
func TestReadyMissingInputTopic(t *testing.T) {
	_, addr := newCluster(t, 2)
	log, logs := observed(t)
	l, base := listen(t)
	s := service(t, addr, t.TempDir(), log, Params(testParams()), InputTopics("evnets"), HTTPListener(l),
		WatchInterval(50*time.Millisecond))
	stop := start(t, s)

	r := waitReady(t, base, "the missing topic", func(code int, r readiness) bool {
		return code == 503 && strings.Contains(strings.Join(r.Reasons, ";"), "input topic evnets does not exist")
	})
	if r.Ready || r.Status != "not ready" {
		t.Errorf("readyz %+v", r)
	}
	var lv liveness
	if code := getJSON(t, base+"/livez", &lv); code != 200 || !lv.Live {
		t.Errorf("/livez %d %+v: a missing topic is no reason to restart", code, lv)
	}
	var hz readiness
	if code := getJSON(t, base+"/healthz", &hz); code != 503 || hz.Ready {
		t.Errorf("/healthz (alias of /readyz) %d %+v", code, hz)
	}
	time.Sleep(500 * time.Millisecond) // ten checks
	if n := logs.FilterMessage("input topic does not exist: not ready until it does").Len(); n != 1 {
		t.Errorf("%d warnings about the missing topic over ten checks, want 1", n)
	}

	adm := kadm.NewClient(newClient(t, addr))
	if _, err := adm.CreateTopic(context.Background(), 2, 1, nil, "evnets"); err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, addr, kgo.DefaultProduceTopic("evnets"))
	rs := firstRecords(t, 300)
	for i := range rs {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: fleet.AppendJSON(nil, &rs[i])}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	waitReady(t, base, "ready once the topic exists", func(code int, r readiness) bool { return code == 200 && r.Ready })
	waitCounter(t, s, "beacon_events_in_total", "ingest", float64(len(rs))) // every event of the new topic
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestRecreatedInputTopic: an input topic deleted and created again (a new
// topic ID, which franz-go never adopts by itself) is consumed again from
// its start, and the fetch errors in between neither spin nor flood the
// log.
func TestRecreatedInputTopic(t *testing.T) {
	_, addr := newCluster(t, 2)
	log, logs := observed(t)
	// The watch checks every 2s: the stall between recreation and the
	// watch noticing it lasts that long.
	s := service(t, addr, t.TempDir(), log, Params(testParams()), WatchInterval(2*time.Second), WithRole(RoleIngest))
	stop := start(t, s)
	rs := firstRecords(t, 600)
	produceJSON(t, addr, rs[:300])
	waitCounter(t, s, "beacon_events_in_total", "ingest", 300)

	adm := kadm.NewClient(newClient(t, addr))
	ctx := context.Background()
	if _, err := adm.DeleteTopic(ctx, tInput); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the consumer sees the topic gone
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, tInput); err != nil {
		t.Fatal(err)
	}
	produceJSON(t, addr, rs[300:])
	waitCounter(t, s, "beacon_events_in_total", "ingest", 600)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	n := logs.FilterMessage("input fetch error").Len()
	if n > 2*clientLogBurst {
		t.Errorf("%d fetch-error warnings in a few seconds, want at most %d", n, 2*clientLogBurst)
	}
	if logs.FilterMessage("input topic was recreated: consuming it again from its start").Len() != 1 {
		t.Errorf("the recreation was not reported once")
	}
}

// TestFetchErrorsDoNotSpin: while the broker answers every fetch of the
// input with an error, every poll fails at once; ingest waits between such
// polls instead of spinning (issue 9: ~275 warnings/s and 31 % CPU), logs
// a few of the warnings, and goes on when the errors stop.
func TestFetchErrorsDoNotSpin(t *testing.T) {
	c, addr := newCluster(t, 2)
	log, logs := observed(t)
	s := service(t, addr, t.TempDir(), log, Params(testParams()), WithRole(RoleIngest))
	var mu sync.Mutex
	suppressed := map[string]int{}
	s.onSuppressed = func(m string) { mu.Lock(); suppressed[m]++; mu.Unlock() }
	stop := start(t, s)
	rs := firstRecords(t, 600)
	produceJSON(t, addr, rs[:300])
	waitCounter(t, s, "beacon_events_in_total", "ingest", 300)

	var failing atomic.Bool
	failing.Store(true)
	c.ControlKey(int16(kmsg.Fetch), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := r.(*kmsg.FetchRequest)
		if !failing.Load() || !slices.ContainsFunc(req.Topics, func(t kmsg.FetchRequestTopic) bool { return t.Topic == tInput || t.TopicID != [16]byte{} }) {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewFetchResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewFetchResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code // not retried by the client: every poll returns it
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	produceJSON(t, addr, rs[300:])
	const stall = 4 * time.Second
	time.Sleep(stall)
	mu.Lock()
	logged := logs.FilterMessage("input fetch error").Len()
	attempts := logged + suppressed["input fetch error"]
	mu.Unlock()
	failing.Store(false)
	t.Logf("%d failed fetches in %s (%d logged)", attempts, stall, logged)
	if attempts == 0 {
		t.Fatal("no fetch error: the stall this test is about did not happen")
	}
	// One poll a second at most, each failing on the 3 partitions.
	if limit := 3 * int(stall/time.Second+2); attempts > limit {
		t.Errorf("%d failed fetches in %s, want at most %d: ingest spins", attempts, stall, limit)
	}
	if logged > clientLogBurst {
		t.Errorf("%d fetch-error warnings logged, want at most %d", logged, clientLogBurst)
	}
	waitCounter(t, s, "beacon_events_in_total", "ingest", 600)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestOwnTopicsRecreated: with CreateTopics, a topic of the service that
// disappears (a broker that came back empty) is created again, and the
// service stops with an error that says so, since its clients hold the
// old topic's ID: a restart starts clean, and the restarted service runs.
func TestOwnTopicsRecreated(t *testing.T) {
	_, addr := newCluster(t, 2)
	dir := t.TempDir()
	s := service(t, addr, dir, testLogger(t), Params(testParams()), WatchInterval(100*time.Millisecond), CreateTopics(true, 2, 1))
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	produceJSON(t, addr, firstRecords(t, 300))
	waitCounter(t, s, "beacon_events_in_total", "detect", 1)

	adm := kadm.NewClient(newClient(t, addr))
	if _, err := adm.DeleteTopic(context.Background(), tDead); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the service did not stop after its dead-letter topic was recreated")
	}
	if err == nil || !strings.Contains(err.Error(), "created again") {
		t.Fatalf("Run: %v", err)
	}
	td, err := adm.ListTopics(context.Background(), tDead)
	if err != nil || td[tDead].Err != nil {
		t.Fatalf("dead-letter topic not recreated: %v %v", err, td[tDead].Err)
	}
	s2 := service(t, addr, dir, testLogger(t), Params(testParams()), WatchInterval(100*time.Millisecond), CreateTopics(true, 2, 1))
	stop := start(t, s2)
	time.Sleep(time.Second)
	if err := stop(); err != nil {
		t.Fatalf("the restarted service: %v", err)
	}
}

// TestInstanceID: the static membership ID is stored in the state
// directory at first start and reused; it can be set or turned off; an
// ingest-only process is dynamic.
func TestInstanceID(t *testing.T) {
	dir := t.TempDir()
	s := &Service{cfg: cfg{stateDir: dir, role: RoleAll}}
	if err := s.resolveInstanceID(); err != nil || !strings.HasPrefix(s.instanceID, "beacon-") {
		t.Fatalf("id %q, %v", s.instanceID, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, instanceIDFile))
	if err != nil || strings.TrimSpace(string(b)) != s.instanceID {
		t.Fatalf("stored %q, %v; want %q", b, err, s.instanceID)
	}
	again := &Service{cfg: cfg{stateDir: dir, role: RoleAll}}
	again.resolveInstanceID()
	other := &Service{cfg: cfg{stateDir: t.TempDir(), role: RoleAll}}
	other.resolveInstanceID()
	if again.instanceID != s.instanceID || other.instanceID == s.instanceID {
		t.Errorf("same dir %q, other dir %q, first %q", again.instanceID, other.instanceID, s.instanceID)
	}
	for _, c := range []struct {
		cfg  cfg
		want string
	}{
		{cfg{stateDir: dir, role: RoleAll, instanceID: "none"}, ""},
		{cfg{stateDir: dir, role: RoleAll, instanceID: "det-1"}, "det-1"},
		{cfg{role: RoleIngest}, ""},
	} {
		s := &Service{cfg: c.cfg}
		if err := s.resolveInstanceID(); err != nil || s.instanceID != c.want {
			t.Errorf("%+v: %q %v, want %q", c.cfg, s.instanceID, err, c.want)
		}
	}
	// The state directory still opens (Pebble ignores the file).
	st, err := state.Open(dir, testParams())
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
}

func observerCore(l zapcore.Level) zapcore.Core { c, _ := observer.New(l); return c }

// TestLimitRepeats: a message repeated many times a second is logged a few
// times per tick and the rest counted.
func TestLimitRepeats(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	s, err := New(Logger(zap.New(core)), StateDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		s.quiet.Warn("input fetch error", zap.String("topic", "x"))
	}
	cl := s.clientLogger("c")
	for range 10 {
		cl.Log(kgo.LogLevelWarn, "unable to open connection to broker", "addr", "x")
	}
	if cl.Level() != kgo.LogLevelWarn { // the client's info lines are chatter: not asked for below debug
		t.Errorf("client log level %v at info, want warn", cl.Level())
	}
	debug, _ := New(Logger(zap.New(observerCore(zapcore.DebugLevel))), StateDir(t.TempDir()))
	if l := debug.clientLogger("c").Level(); l != kgo.LogLevelDebug {
		t.Errorf("client log level %v at debug, want debug", l)
	}
	if n := logs.FilterMessage("input fetch error").Len(); n != clientLogBurst {
		t.Errorf("%d lines of 1000 logged, want %d", n, clientLogBurst)
	}
	if n := logs.FilterMessage("unable to open connection to broker").Len(); n != clientLogBurst {
		t.Errorf("%d client warnings of 10 logged, want %d", n, clientLogBurst)
	}
	if got, want := metric(t, s, "beacon_log_lines_suppressed_total", ""), float64(1000+10-2*clientLogBurst); got != want {
		t.Errorf("suppressed %v, want %v", got, want)
	}
}

// owned returns how many repartition and input partitions a running
// service owns.
func owned(s *Service) (repartition, input int) {
	if d := s.det.Load(); d != nil {
		repartition = len(d.status())
	}
	if in := s.in.Load(); in != nil {
		input, _ = in.merge.assigned()
	}
	return repartition, input
}

// TestStaticMembershipRestart: a process killed and restarted on the same
// state directory rejoins both groups under the instance ID stored there
// and owns its partitions again long before the dead member's session
// would have expired (a dynamic member waits that long: the group cannot
// rebalance until the dead member is gone). The kill is the crash hook,
// which for a static member does not leave the group (franz-go never
// leaves with an instance ID), as a kill -9 would not.
func TestStaticMembershipRestart(t *testing.T) {
	c, addr := newCluster(t, 2)
	produceJSON(t, addr, firstRecords(t, 2000))
	dir := t.TempDir()
	const session = 40 * time.Second
	svc := func() *Service {
		return service(t, addr, dir, testLogger(t), Params(testParams()), SessionTimeout(session))
	}
	waitOwned := func(s *Service, within time.Duration) time.Duration {
		t.Helper()
		began := time.Now()
		for {
			if r, in := owned(s); r == 2 && in == 3 {
				return time.Since(began)
			}
			if time.Since(began) > within {
				r, in := owned(s)
				t.Fatalf("owns %d of 2 repartition and %d of 3 input partitions after %s", r, in, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	a := svc()
	stopA := start(t, a)
	waitOwned(a, 30*time.Second)
	a.crash()
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	b := svc()
	if b.resolveInstanceID(); b.instanceID != a.instanceID || a.instanceID == "" {
		t.Fatalf("instance IDs %q and %q, want the same one", a.instanceID, b.instanceID)
	}
	stopB := start(t, b)
	took := waitOwned(b, session/2)
	t.Logf("the restarted process owned its partitions after %s (session timeout %s)", took.Round(time.Millisecond), session)
	for _, g := range []string{"test.ingest", "test.detect"} {
		gi := c.GroupInfo(g)
		if gi == nil || len(gi.Members) != 1 {
			t.Errorf("group %s: %+v, want one member", g, gi)
			continue
		}
		if id := gi.Members[0].InstanceID; id == nil || *id != a.instanceID {
			t.Errorf("group %s: member instance %v, want %q", g, id, a.instanceID)
		}
	}
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
}

// TestMergerCallsOutUnlocked: emit's callbacks (which produce, and can
// block) run without the merger's lock, so a rebalance callback that takes
// it meanwhile (revoke, assign) does not wait for them.
func TestMergerCallsOutUnlocked(t *testing.T) {
	var m merger
	m.assign("in", 0, 0, 2)
	m.add([]kgo.FetchTopicPartition{{Topic: "in", FetchPartition: kgo.FetchPartition{Partition: 0, HighWatermark: 2,
		Records: []*kgo.Record{{Topic: "in", Offset: 0}, {Topic: "in", Offset: 1}}}}},
		func(evs []beacon.Event, r *kgo.Record) ([]beacon.Event, string, error) {
			return append(evs, beacon.Event{Timestamp: beacon.Time(r.Offset + 1)}), "", nil
		}, nil)
	done := make(chan []int64, 1)
	go func() {
		var seen []int64
		m.emit(func(_ *mpart, e *beacon.Event, _ uint8) {
			m.assigned() // takes the lock: deadlocks if emit holds it
			seen = append(seen, int64(e.Timestamp))
		}, func(_ *mpart, _ int32, next int64) {
			m.revoke("other", 0) // likewise
			seen = append(seen, -next)
		})
		done <- seen
	}()
	select {
	case seen := <-done:
		if want := []int64{1, -1, 2, -2}; !slices.Equal(seen, want) {
			t.Errorf("events and marks %v, want %v (event, then the mark of its record)", seen, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("emit's callbacks wait for the merger's lock: emit holds it while calling out")
	}
}

// TestReadyLag: a process far behind its input is not ready, and says by
// how much; it becomes ready once it has caught up.
func TestReadyLag(t *testing.T) {
	_, addr := newCluster(t, 2)
	produceJSON(t, addr, firstRecords(t, 3000))
	l, base := listen(t)
	s := service(t, addr, t.TempDir(), testLogger(t), Params(testParams()), HTTPListener(l), WatchInterval(50*time.Millisecond),
		ReadyMaxLag(50), ClientOpts(kgo.FetchMaxPartitionBytes(4<<10)), optFn(func(c *cfg) { c.batchDelay = 20 * time.Millisecond }))
	stop := start(t, s)
	r := waitReady(t, base, "lagging", func(code int, r readiness) bool {
		return code == 503 && strings.Contains(strings.Join(r.Reasons, ";"), "records behind (bound 50)")
	})
	t.Logf("while catching up: %v", r.Reasons)
	waitReady(t, base, "caught up", func(code int, r readiness) bool { return code == 200 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestPausedBroker: the broker goes away for a few seconds and comes back
// with its data (kfake persisted in a directory, on the same port). The
// service stays live, is not ready while the broker is away and says why,
// keeps its partitions' state (no rebuild) and goes on with new input.
func TestPausedBroker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	data := t.TempDir()
	broker := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(data),
			kfake.SeedTopics(3, tInput), kfake.SeedTopics(2, tRepart), kfake.SeedTopics(2, tAlerts), kfake.SeedTopics(1, tDead),
			kfake.GroupMinSessionTimeout(500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := broker()
	addr := c.ListenAddrs()[0]
	rs := firstRecords(t, 4000)
	produceJSON(t, addr, rs[:2000])
	hl, base := listen(t)
	log, logs := observed(t)
	s := service(t, addr, t.TempDir(), log, Params(testParams()), HTTPListener(hl),
		WatchInterval(100*time.Millisecond), SessionTimeout(10*time.Second))
	stop := start(t, s)
	waitReady(t, base, "ready", func(code int, r readiness) bool { return code == 200 })
	waitCounter(t, s, "beacon_events_in_total", "ingest", 2000)
	waitReady(t, base, "state on both partitions", func(code int, r readiness) bool {
		return len(r.Parts) == 2 && r.Parts[0].Offset > 0 && r.Parts[1].Offset > 0 && r.Parts[0].Lag == 0 && r.Parts[1].Lag == 0
	})
	before := logs.Len()

	c.Close()
	r := waitReady(t, base, "not ready without a broker", func(code int, r readiness) bool {
		return code == 503 && strings.Contains(strings.Join(r.Reasons, ";"), "broker unreachable")
	})
	t.Logf("without the broker: %v", r.Reasons)
	var lv liveness
	if code := getJSON(t, base+"/livez", &lv); code != 200 {
		t.Errorf("/livez %d %+v during a broker outage: restarting would not help", code, lv)
	}
	time.Sleep(3 * time.Second)
	c = broker()
	defer c.Close()
	waitReady(t, base, "ready again", func(code int, r readiness) bool { return code == 200 })
	produceJSON(t, addr, rs[2000:])
	waitCounter(t, s, "beacon_events_in_total", "ingest", 4000)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := metric(t, s, "beacon_partition_rebuilds_total", ""); n != 0 {
		t.Errorf("%v partitions rebuilt after a pause of the broker: the state was dropped", n)
	}
	// Each partition that came back resumed from its state.
	resumed := map[any]bool{}
	for _, e := range logs.All()[before:] {
		switch {
		case e.Message == "partition assigned":
			resumed[e.ContextMap()["partition"]] = true
		case strings.HasPrefix(e.Message, "partition assigned"):
			t.Errorf("after the pause: %q %v: the state was dropped", e.Message, e.ContextMap())
		}
	}
	if len(resumed) != 2 {
		t.Errorf("partitions resumed from their state after the pause: %v, want both", resumed)
	}
}
