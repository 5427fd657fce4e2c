package stream

import (
	"context"
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
