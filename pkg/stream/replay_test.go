package stream

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

// huntAll is `beacon hunt` with its default now over every event.
func huntAll(p beacon.Params, rs []fleet.Record) []beacon.Row {
	h := beacon.NewHunt(p)
	for i := range rs {
		h.Add(&rs[i].Event)
	}
	now, ok := h.DefaultNow()
	if !ok {
		return nil
	}
	return h.Rows(now)
}

func replayOf(t testing.TB, addr string, ro ReplayOptions, opts ...Opt) *ReplayResult {
	t.Helper()
	base := []Opt{Brokers(addr), InputTopics(tInput), Logger(testLogger(t))}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Replay(ctx, ro, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestReplayEqualsHunt: the beacon set at the end of a replay is the batch
// query's over the same events, whatever the number of partitions; the
// alerts do not depend on how the input was fetched; and the replay leaves
// nothing on the cluster: no consumer group, no topic.
func TestReplayEqualsHunt(t *testing.T) {
	_, addr := newCluster(t, 1)
	rs, _ := records(t, testFleet(1))
	produceJSON(t, addr, rs)
	adm := kadm.NewClient(newClient(t, addr))
	topicsBefore, err := adm.ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p := testParams()
	want := jsonl(huntAll(p, rs))
	var alerts []string
	for _, n := range []int{1, 4, 1} {
		res := replayOf(t, addr, ReplayOptions{Partitions: n}, Params(p), Warmup(-1))
		if got := jsonl(res.Rows); got != want {
			t.Errorf("%d partitions: replay differs from hunt:\n%s", n, diffLines(got, want))
		}
		if res.Events != int64(len(rs)) || res.Bad != 0 {
			t.Errorf("%d partitions: %d events, %d bad; want %d, 0", n, res.Events, res.Bad, len(rs))
		}
		var b []byte
		for _, a := range res.Alerts {
			b = append(a.AppendJSON(b), '\n')
		}
		if n == 1 {
			alerts = append(alerts, string(b))
		}
		t.Logf("%d partitions: %d events, %d rows, %d alerts, %d late, %s", n, res.Events, len(res.Rows), len(res.Alerts), res.Late, res.Elapsed)
	}
	if alerts[0] != alerts[1] || alerts[0] == "" {
		t.Errorf("two replays with one partition gave different alerts:\n%s", diffLines(alerts[0], alerts[1]))
	}
	groups, err := adm.ListGroups(context.Background())
	if err != nil || len(groups) != 0 {
		t.Errorf("replay left consumer groups %v (%v)", groups.Groups(), err)
	}
	topicsAfter, err := adm.ListTopics(context.Background())
	if err != nil || !slices.Equal(topicsAfter.Names(), topicsBefore.Names()) {
		t.Errorf("topics %v after replay, %v before (%v)", topicsAfter.Names(), topicsBefore.Names(), err)
	}
}

// TestReplayAlertsContract holds every alert of a replay to the streaming
// contract: its row is the row of its tuple in what the batch query returns
// over the events its partition had seen, at the alert's stream time + 1s.
// The fleet's sensor reports in order (no late events), so what a partition
// has seen at stream time S is its events up to S. And with one partition,
// every member of the set at the end was alerted in the last re-alert
// period.
func TestReplayAlertsContract(t *testing.T) {
	_, addr := newCluster(t, 1)
	cfg := testFleet(2)
	cfg.LateRate = -1
	rs, _ := records(t, cfg)
	produceJSON(t, addr, rs)
	p := testParams()
	for _, n := range []int{1, 3} {
		res := replayOf(t, addr, ReplayOptions{Partitions: n}, Params(p), Warmup(30*time.Minute))
		if len(res.Alerts) < 10 {
			t.Fatalf("%d partitions: only %d alerts", n, len(res.Alerts))
		}
		checkAlertRows(t, p, rs, n, res.Alerts) // per partition, a hunt fed in time order up to each alert
		if n == 1 {
			last := EpochOf(res.Now-beacon.Second, p.Lookback)
			alerted := make(map[beacon.Tuple]bool)
			for _, a := range res.Alerts {
				if a.Epoch == last {
					alerted[a.Row.Tuple] = true
				}
			}
			for _, r := range res.Rows {
				if !alerted[r.Tuple] {
					t.Errorf("%v is in the final set but was not alerted in the last period", r.Tuple)
				}
			}
		}
		t.Logf("%d partitions: %d alerts checked", n, len(res.Alerts))
	}
}

// TestReplayTransactional: a topic written in transactions ends with a
// commit marker, a control record the consumer does not deliver as data:
// replay counts it toward the end offset and finishes at once, with the
// batch query's set.
func TestReplayTransactional(t *testing.T) {
	_, addr := newCluster(t, 1)
	rs, _ := records(t, fleet.Config{Seed: 3, Devices: 8, Duration: 3 * time.Hour, Sleeps: []time.Duration{30 * time.Second}})
	cl := newClient(t, addr, kgo.TransactionalID("replay-test"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	ctx := context.Background()
	for i := 0; i < len(rs); i += 2000 {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for j := i; j < min(i+2000, len(rs)); j++ {
			cl.Produce(ctx, &kgo.Record{Topic: tInput, Value: fleet.AppendJSON(nil, &rs[j])}, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	p := testParams()
	res := replayOf(t, addr, ReplayOptions{}, Params(p))
	if got, want := jsonl(res.Rows), jsonl(huntAll(p, rs)); got != want {
		t.Errorf("replay differs from hunt:\n%s", diffLines(got, want))
	}
	// Without reading the transaction markers, the partition never seems
	// to reach its end and is given up on after stallTimeout.
	if res.Events != int64(len(rs)) || res.Stalled != 0 {
		t.Errorf("%d events of %d, %d partition(s) stalled", res.Events, len(rs), res.Stalled)
	}
}

// TestReplayShards: splitting a detection partition in shards by RemoteIP
// (ReplayOptions.Shards) changes nothing a replay returns — the alerts,
// every field of them (stream times, epochs, IDs, pivots), the beacon set
// and the counters — under both profiles, with one partition and with
// two. The sensor reports late, some events past the window (Late), and
// the input is three partitions written round robin, so records come out
// of event-time order and are released late: a shard that did not see
// the other shards' records as shadows would evaluate at other points,
// at another stream time, and count other connections late.
func TestReplayShards(t *testing.T) {
	_, addr := newCluster(t, 1)
	cfg := testFleet(4)
	cfg.LateRate, cfg.MaxLate = 0.02, 90*time.Minute // past the one-hour window
	rs, _ := records(t, cfg)
	produceJSON(t, addr, rs)
	defer func(n int) { maxPivots = n }(maxPivots)
	for _, cases := range []struct {
		profile string
		pivots  int
	}{
		{beacon.ProfileSeed, maxPivots}, {beacon.ProfileRobust, maxPivots},
		// An ingest pivot writer that forgets every few tuples: more
		// pivots in full, read by each tuple's own shard alone.
		{beacon.ProfileRobust, 16},
	} {
		profile := cases.profile
		maxPivots = cases.pivots
		p, err := beacon.ProfileParams(profile)
		if err != nil {
			t.Fatal(err)
		}
		p.Lookback = time.Hour
		for _, parts := range []int{1, 2} {
			var want *ReplayResult
			var wantJSON string
			for _, k := range []int{1, 2, 3} {
				name := fmt.Sprintf("%s, %d partition(s), %d shard(s), %d pivots", profile, parts, k, maxPivots)
				res := replayOf(t, addr, ReplayOptions{Partitions: parts, Shards: k}, Params(p), Warmup(30*time.Minute))
				var b []byte
				for _, a := range res.Alerts {
					b = append(a.AppendJSON(b), '\n')
				}
				t.Logf("%s: %d alerts, %d rows, %d connections, %d domains, %d late, %s",
					name, len(res.Alerts), len(res.Rows), res.Connections, res.Domains, res.Late, res.Elapsed)
				if k == 1 {
					want, wantJSON = res, string(b)
					if len(res.Alerts) < 10 || len(res.Rows) == 0 || res.Late == 0 || res.Domains == 0 {
						t.Fatalf("%s: %d alerts, %d rows, %d late, %d domains: the data does not exercise the shards",
							name, len(res.Alerts), len(res.Rows), res.Late, res.Domains)
					}
					continue
				}
				// The alerts come from destinations of every shard.
				from := make(map[int]bool)
				for _, a := range res.Alerts {
					from[shardOf(a.Row.RemoteIP, k)] = true
				}
				if len(from) < k {
					t.Errorf("%s: alerts from %d shard(s) only", name, len(from))
				}
				if got := string(b); got != wantJSON {
					t.Errorf("%s: alerts differ from one shard's:\n%s", name, diffLines(got, wantJSON))
				} else if !reflect.DeepEqual(res.Alerts, want.Alerts) {
					t.Errorf("%s: alerts differ from one shard's outside their JSON", name)
				}
				if got, w := jsonl(res.Rows), jsonl(want.Rows); got != w {
					t.Errorf("%s: rows differ from one shard's:\n%s", name, diffLines(got, w))
				}
				type counts struct {
					Now                                                    beacon.Time
					HasNow                                                 bool
					Warm, Parts                                            int
					Records, Events, Bad, OutOfRange, Connections, Domains int64
					Late                                                   int64
				}
				of := func(r *ReplayResult) counts {
					return counts{r.Now, r.HasNow, r.WarmPartitions, r.Partitions, r.Records, r.Events, r.Bad, r.OutOfRange,
						r.Connections, r.Domains, r.Late}
				}
				if got, w := of(res), of(want); got != w {
					t.Errorf("%s: counters %+v, one shard's %+v", name, got, w)
				}
			}
		}
	}
}

// TestShadowOf: a shard's shadow of a record (replay.route) decodes, with
// no key, to the record's event and release times and nothing else: a
// connection's, with or without a port or pivots, as a connection with a
// null port (its pivots are its own shard's alone: pivotStore); a domain
// observation's as one without an IP, which the worker drops.
func TestShadowOf(t *testing.T) {
	ts := mustTime(t, "2024-05-01T10:00:00.1234567Z")
	e := beacon.Event{Timestamp: ts, DeviceId: "d1", DeviceName: "wks-1", AccountName: "alice", AccountDomain: "contoso",
		FileName: "rundll32.exe", RemoteIP: "45.77.1.10", RemotePort: 443, HasPort: true}
	noPort := e
	noPort.HasPort = false
	withPivots := e
	withPivots.SHA256, withPivots.ProcessId, withPivots.ReportId = "ab", 7, 9
	for _, rel := range []beacon.Time{ts, ts + 90*beacon.Second} {
		var pw pivotWriter
		for _, c := range []struct {
			value []byte
			kind  byte
		}{
			{appendConn(nil, &e, rel), kindNoPort},
			{pw.append(appendConn(nil, &withPivots, rel), &withPivots), kindNoPort},
			{appendConn(nil, &noPort, rel), kindNoPort},
			{appendDomain(nil, ts, rel, "api.evil.com"), kindDomain},
		} {
			var want, got item
			if err := decodeItem([]byte(e.RemoteIP), c.value, &want); err != nil {
				t.Fatal(err)
			}
			sh := shadowOf([]byte("junk"), c.value)
			if string(sh[:4]) != "junk" {
				t.Fatalf("shadowOf overwrote what it appends to: %q", sh)
			}
			if err := decodeItem(nil, sh[4:], &got); err != nil {
				t.Fatalf("shadow of %x: %v", c.value, err)
			}
			if got.kind != c.kind || got.time != want.time || got.release != want.release || got.ip != "" || got.domain != "" ||
				got.pv != (pivotItem{}) {
				t.Errorf("shadow of %x (kind %#x, %v released %v): %+v", c.value, want.kind, want.time, want.release, got)
			}
			if max := 16; len(sh[4:]) > max { // a kind, two varints of ticks, an empty string
				t.Errorf("a shadow carries only its times, got %d bytes", len(sh[4:]))
			}
		}
	}
}

// TestReplayColdWarmup: a replay whose workers decide no membership
// before the warm-up ends (the default) alerts the same alerts, in
// the same order, and ends with the same set as one deciding at every
// point — under both profiles, with one partition (one shard and two)
// and three, and with a warm-up that ends inside a re-alert period.
func TestReplayColdWarmup(t *testing.T) {
	_, addr := newCluster(t, 1)
	rs, _ := records(t, testFleet(3))
	produceJSON(t, addr, rs)
	robust := beacon.Robust()
	robust.Lookback = time.Hour
	for name, p := range map[string]beacon.Params{"seed": testParams(), "robust": robust} {
		for _, ro := range []ReplayOptions{{Partitions: 1, Shards: 1}, {Partitions: 1, Shards: 2}, {Partitions: 3, Shards: 1}} {
			n := ro.Partitions
			var out [2]string
			for i, every := range []bool{true, false} {
				ro.decideInWarmup = every
				res := replayOf(t, addr, ro, Params(p), Warmup(100*time.Minute))
				if len(res.Alerts) == 0 || res.WarmPartitions == 0 {
					t.Fatalf("%s, %d partitions, %d shards: %d alerts, %d warm partitions: nothing to compare", name, n, ro.Shards, len(res.Alerts), res.WarmPartitions)
				}
				var b []byte
				for _, a := range res.Alerts {
					b = append(a.AppendJSON(b), '\n')
				}
				out[i] = string(b) + jsonl(res.Rows)
			}
			if out[0] != out[1] {
				t.Errorf("%s, %d partitions, %d shards: cold warm-up differs:\n%s", name, n, ro.Shards, diffLines(out[1], out[0]))
			}
		}
	}
}
