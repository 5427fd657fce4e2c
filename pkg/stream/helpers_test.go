package stream

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

// Test topics.
const (
	tInput  = "events"
	tRepart = "repartition"
	tAlerts = "alerts"
	tDead   = "deadletter"
)

// newCluster starts an in-process broker on loopback with the test topics.
func newCluster(t testing.TB, repartitions int32, alertTopics ...string) (*kfake.Cluster, string) {
	t.Helper()
	topics := []testkit.Topic{{Name: tInput, Partitions: 3}, {Name: tRepart, Partitions: int(repartitions)}, {Name: tDead, Partitions: 1}}
	topics = append(topics, testkit.Topics(2, append(alertTopics, tAlerts)...)...)
	c := testkit.NewCluster(t, topics)
	return c.Cluster, c.Addr
}

// testFleet is a small fleet whose implants beacon fast enough to be
// found with testParams' one-hour window: 20 devices over 6 hours, ~12k
// events.
func testFleet(seed int64) fleet.Config {
	return fleet.Config{Seed: seed, Devices: 20, Duration: 6 * time.Hour,
		Sleeps: []time.Duration{30 * time.Second, time.Minute}}
}

// testParams is the seed query with a one-hour window.
func testParams() beacon.Params {
	p := beacon.Seed()
	p.Lookback = time.Hour
	return p
}

// everInSet returns the labels of the tuples that the batch query finds,
// evaluated every minute of event time once a full window has passed.
func everInSet(p beacon.Params, rs []fleet.Record, labels []fleet.Label) map[beacon.Tuple]fleet.Label {
	byTuple := make(map[beacon.Tuple]fleet.Label)
	for _, l := range labels {
		byTuple[tupleOfLabel(l)] = l
	}
	out := make(map[beacon.Tuple]fleet.Label)
	h := beacon.NewHunt(p)
	next := rs[0].Timestamp.Add(p.Lookback)
	for i := range rs {
		if rs[i].Timestamp > next {
			now, _ := h.DefaultNow()
			for _, r := range h.Rows(now) {
				out[r.Tuple] = byTuple[r.Tuple]
			}
			next = next.Add(time.Minute)
		}
		h.Add(&rs[i].Event)
	}
	return out
}

func records(t testing.TB, c fleet.Config) ([]fleet.Record, []fleet.Label) {
	t.Helper()
	g, err := fleet.New(c)
	if err != nil {
		t.Fatal(err)
	}
	var rs []fleet.Record
	for r, ok := g.NextRecord(); ok; r, ok = g.NextRecord() {
		rs = append(rs, r)
	}
	return rs, g.Labels()
}

// newClient returns a client of the broker at addr, closed when the test
// ends.
func newClient(t testing.TB, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return testkit.Attach(addr).Client(t, opts...)
}

// produceJSON writes records as flat JSON (every other batch as Streaming
// API envelopes of up to 50 records), round robin over the input's
// partitions.
func produceJSON(t testing.TB, addr string, rs []fleet.Record) {
	t.Helper()
	cl := newClient(t, addr, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerBatchMaxBytes(128<<10))
	var recs []*kgo.Record
	for i := 0; i < len(rs); {
		if (i/500)%2 == 1 {
			n := min(50, len(rs)-i)
			recs = append(recs, &kgo.Record{Topic: tInput, Value: fleet.AppendEnvelope(nil, "", rs[i:i+n])})
			i += n
			continue
		}
		recs = append(recs, &kgo.Record{Topic: tInput, Value: fleet.AppendJSON(nil, &rs[i])})
		i++
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// service builds a service against addr with the test topics; it is not
// started.
func service(t testing.TB, addr, dir string, log *zap.Logger, opts ...Opt) *Service {
	t.Helper()
	base := []Opt{
		Brokers(addr), InputTopics(tInput), RepartitionTopic(tRepart), AlertTopic(tAlerts),
		DeadLetterTopic(tDead), Group("test"), StateDir(dir), Logger(log),
		CommitInterval(200 * time.Millisecond), SessionTimeout(time.Second), CreateTopics(false, -1, -1),
	}
	s, err := New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// start runs a service in the background; the returned stop cancels it
// and returns Run's error.
func start(t testing.TB, s *Service) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(30 * time.Second):
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				err = fmt.Errorf("service did not stop:\n%s", buf)
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func testLogger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(testLevel))
}

// endOffsets returns the end offset of every partition of topic.
func endOffsets(t testing.TB, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	return testkit.EndOffsetsOf(t, adm, topic)
}

// waitDrained waits until ingest has committed the whole input and the
// services together have applied, evaluated and committed the whole
// repartition topic.
func waitDrained(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	adm := testkit.Attach(addr).Admin(t)
	testkit.WaitFor(t, timeout, "ingest and detection to commit everything", func() (bool, string) { return drainedSaw(t, adm) })
}

func drained(t testing.TB, adm *kadm.Client) bool {
	ok, _ := drainedSaw(t, adm)
	return ok
}

func drainedSaw(t testing.TB, adm *kadm.Client) (bool, string) {
	fi, si := testkit.CommittedOf(t, adm, "test.ingest", tInput)
	fd, sd := testkit.CommittedOf(t, adm, "test.detect", tRepart)
	return fi >= 1 && fd >= 1, si + "; " + sd
}

// alertsOf reads every alert on the alert topic.
func alertsOf(t testing.TB, addr string) []Alert { return alertsOn(t, addr, tAlerts) }

// alertsOn reads every alert on topic, in the default (JSON) format.
func alertsOn(t testing.TB, addr, topic string) []Alert { return alertsAs(t, addr, topic, AlertJSON) }

// alertsAs reads every alert on topic in format f, in partition then offset
// order, and checks that each is keyed by its tuple.
func alertsAs(t testing.TB, addr, topic string, f AlertFormat) []Alert {
	t.Helper()
	var out []Alert
	for _, r := range testkit.ReadRecords(t, testkit.Attach(addr), topic) {
		a, err := DecodeAlert(f, r.Value)
		if err != nil {
			t.Fatalf("alert at %s/%d/%d: %v: %s", topic, r.Partition, r.Offset, err, r.Value)
		}
		if string(r.Key) != string(a.Key()) {
			t.Errorf("alert %s at %s/%d/%d keyed %q, not by its tuple", a.ID, topic, r.Partition, r.Offset, r.Key)
		}
		out = append(out, a)
	}
	return out
}

// partitionOf is Kafka's default partitioner (murmur2 of the key), which
// ingest's producer uses for the RemoteIP key.
func partitionOf(key string, n int) int32 {
	return int32(int(murmur2([]byte(key))&0x7fffffff) % n)
}

func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[3])<<24 + uint32(b[2])<<16 + uint32(b[1])<<8 + uint32(b[0])
		b = b[4:]
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// huntByPartition is the contract: per repartition partition, the rows of
// the batch query over that partition's events at its own default now
// (stream time + 1 s), merged in output order.
func huntByPartition(p beacon.Params, rs []fleet.Record, partitions int) []beacon.Row {
	hunts := make([]*beacon.Hunt, partitions)
	for i := range hunts {
		hunts[i] = beacon.NewHunt(p)
	}
	for i := range rs {
		hunts[partitionOf(rs[i].RemoteIP, partitions)].Add(&rs[i].Event)
	}
	var rows []beacon.Row
	for _, h := range hunts {
		if now, ok := h.DefaultNow(); ok {
			rows = append(rows, h.Rows(now)...)
		}
	}
	beacon.SortRows(rows)
	return rows
}

func jsonl(rows []beacon.Row) string {
	var b bytes.Buffer
	writeExplainedJSONL(&b, rows) // as /beacons writes them
	return b.String()
}

// getBeacons fetches /beacons from the service's handler.
func getBeacons(t testing.TB, s *Service, query string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/beacons"+query, nil))
	if rec.Code != 200 {
		t.Fatalf("/beacons: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// alertIDs returns the sorted distinct IDs.
func alertIDs(as []Alert) []string {
	set := make(map[string]bool)
	for _, a := range as {
		set[a.ID] = true
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func tupleOfLabel(l fleet.Label) beacon.Tuple {
	return beacon.Tuple{DeviceId: l.DeviceId, DeviceName: l.DeviceName, AccountName: l.AccountName,
		AccountDomain: l.AccountDomain, FileName: l.FileName, RemoteIP: l.RemoteIP, RemotePort: l.RemotePort}
}

func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			// Show where the lines part, not only how they start.
			at := 0
			for at < min(len(x), len(y)) && x[at] == y[at] {
				at++
			}
			from := max(0, at-60)
			out = append(out, fmt.Sprintf("line %d, from byte %d:\n  got  …%.300s\n  want …%.300s", i+1, from, x[min(from, len(x)):], y[min(from, len(y)):]))
		}
		if len(out) > 5 {
			break
		}
	}
	return strings.Join(out, "\n")
}

// testLevel is the level of the services' logs in tests; BEACON_TEST_LOG=info shows more.
var testLevel = func() zapcore.Level {
	l, err := zapcore.ParseLevel(os.Getenv("BEACON_TEST_LOG"))
	if err != nil || os.Getenv("BEACON_TEST_LOG") == "" {
		return zapcore.WarnLevel
	}
	return l
}()

// checkAlertRows holds every alert to the streaming contract: its row is
// its tuple's row in the batch query over the events its partition had
// seen — those up to the alert's stream time, for a fleet in time order —
// at the alert's stream time + 1 s.
func checkAlertRows(t *testing.T, p beacon.Params, rs []fleet.Record, parts int, alerts []Alert) {
	t.Helper()
	sort.SliceStable(alerts, func(i, j int) bool { return alerts[i].StreamTime < alerts[j].StreamTime })
	hunts := make([]*beacon.Hunt, parts)
	next := make([]int, parts)
	byPart := make([][]*fleet.Record, parts)
	for i := range hunts {
		hunts[i] = beacon.NewHunt(p)
	}
	for i := range rs {
		k := partitionOf(rs[i].RemoteIP, parts)
		byPart[k] = append(byPart[k], &rs[i])
	}
	for _, a := range alerts {
		k := partitionOf(a.Row.RemoteIP, parts)
		for next[k] < len(byPart[k]) && byPart[k][next[k]].Timestamp <= a.StreamTime {
			hunts[k].Add(&byPart[k][next[k]].Event)
			next[k]++
		}
		var found *beacon.Row
		rows := hunts[k].Rows(a.StreamTime + beacon.Second)
		for i := range rows {
			if rows[i].Tuple == a.Row.Tuple {
				found = &rows[i]
			}
		}
		if found == nil {
			t.Errorf("alert %v at %s: not in the batch query's set", a.Row.Tuple, a.StreamTime)
			continue
		}
		if got, want := jsonl([]beacon.Row{a.Row}), jsonl([]beacon.Row{*found}); got != want {
			t.Errorf("alert row at %s differs from the batch query's:\n%s", a.StreamTime, diffLines(got, want))
		}
	}
}
