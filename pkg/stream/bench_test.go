package stream

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

var (
	benchOnce sync.Once
	benchRecs []fleet.Record
	benchVals [][]byte
)

// benchData is a default fleet of 200 devices over 24 hours (~400k
// events, as flat JSON lines), the seed query's parameters.
func benchData(b *testing.B) ([]fleet.Record, [][]byte) {
	benchOnce.Do(func() {
		benchRecs, _ = records(b, fleet.Config{Seed: 1, Devices: 200})
		for i := range benchRecs {
			benchVals = append(benchVals, fleet.AppendJSON(nil, &benchRecs[i]))
		}
	})
	return benchRecs, benchVals
}

// BenchmarkEndToEnd measures events/s from the input topic to the alert
// topic on the embedded broker: the input is written first, then one
// service (ingest and detection) runs until every event is ingested and
// every repartition record applied, evaluated and its alerts acknowledged.
func BenchmarkEndToEnd(b *testing.B) {
	benchEndToEnd(b)
}

func benchEndToEnd(b *testing.B, benchOpts ...Opt) {
	_, vals := benchData(b)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cluster, addr := newCluster(b, 8)
		cl := produceVals(b, addr, vals)
		adm := kadm.NewClient(cl)
		s := service(b, addr, b.TempDir(), zap.NewNop(), append([]Opt{Warmup(time.Hour)}, benchOpts...)...)
		b.StartTimer()
		t0 := time.Now()
		stop := start(b, s)
		waitIngested(b, adm)
		ends := endOffsets(b, adm, tRepart)
		waitDetected(b, s, ends)
		total += time.Since(t0)
		b.StopTimer()
		if err := stop(); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			alerts := alertsOf(b, addr)
			var repart int64
			for _, e := range ends {
				repart += e
			}
			b.Logf("%d events, %d repartition records, %d alerts", len(vals), repart, len(alerts))
		}
		cl.Close()
		cluster.Close() // each iteration starts from a clean broker and heap
	}
	b.ReportMetric(float64(len(vals))*float64(b.N)/total.Seconds(), "events/s")
}

// waitIngested waits until ingest has committed the end of the input.
func waitIngested(b *testing.B, adm *kadm.Client) {
	ends := endOffsets(b, adm, tInput)
	for {
		got, err := adm.FetchOffsets(context.Background(), "test.ingest")
		done := err == nil
		for p, end := range ends {
			if o, ok := got.Lookup(tInput, p); end > 0 && (!ok || o.At < end) {
				done = false
			}
		}
		if done {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitDetected waits until the service's workers have acknowledged every
// record up to ends.
func waitDetected(b *testing.B, s *Service, ends map[int32]int64) {
	for {
		d := s.det.Load()
		done := d != nil
		if d != nil {
			d.mu.Lock()
			for p, end := range ends {
				if w := d.workers[p]; end > 0 && (w == nil || w.acked.Load() < end) {
					done = false
				}
			}
			d.mu.Unlock()
		}
		if done {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkAlertLatency measures the delay from an event to its alert on a
// live stream: the fleet is produced in event-time order at a steady rate
// (event time compressed ~1000×), and each alert's delay is the time from
// producing the newest event of its tuple that the alert covers to
// receiving the alert from the alert topic. Warm-up is off and re-alerts
// are out of reach, so every alert is a tuple entering the set.
func BenchmarkAlertLatency(b *testing.B) {
	const rate = 10_000 // events/s
	rs, _ := records(b, fleet.Config{Seed: 1, Devices: 100, Implants: 30, Duration: 6 * time.Hour,
		Sleeps: []time.Duration{30 * time.Second, time.Minute}})
	var delays []time.Duration
	for i := 0; i < b.N; i++ {
		_, addr := newCluster(b, 4)
		p := testParams()
		s := service(b, addr, b.TempDir(), zap.NewNop(), Params(p), Warmup(-1), ReAlertInterval(10_000*time.Hour))
		stop := start(b, s)
		time.Sleep(time.Second) // let both groups join

		type sent struct {
			ts beacon.Time
			at time.Time
		}
		var mu sync.Mutex
		produced := make(map[beacon.Tuple][]sent)
		var wg sync.WaitGroup
		ctx, cancel := context.WithCancel(context.Background())
		received := make(chan time.Duration, 1<<16)
		wg.Add(1)
		go func() { // the SIEM: reads alerts as they come
			defer wg.Done()
			cl := newClient(b, addr, kgo.ConsumeTopics(tAlerts), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
				kgo.FetchMaxWait(100*time.Millisecond))
			for ctx.Err() == nil {
				cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
					now := time.Now()
					a, err := ParseAlert(r.Value)
					if err != nil {
						return
					}
					mu.Lock()
					evs := produced[a.Row.Tuple]
					mu.Unlock()
					// The newest event of the tuple within the alert's window.
					j, _ := slices.BinarySearchFunc(evs, a.StreamTime+1, func(s sent, t beacon.Time) int { return int(s.ts - t) })
					if j > 0 {
						received <- now.Sub(evs[j-1].at)
					}
				})
			}
		}()

		pcl := newClient(b, addr, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerLinger(0))
		b.ResetTimer()
		t0 := time.Now()
		const batch = rate / 100 // every 10 ms
		for j := 0; j < len(rs); j += batch {
			due := t0.Add(time.Duration(j) * time.Second / rate)
			time.Sleep(time.Until(due))
			end := min(j+batch, len(rs))
			recs := make([]*kgo.Record, 0, end-j)
			now := time.Now()
			mu.Lock()
			for k := j; k < end; k++ {
				recs = append(recs, &kgo.Record{Topic: tInput, Value: fleet.AppendJSON(nil, &rs[k])})
				if p.Connection(&rs[k].Event) && rs[k].HasPort {
					tu := rs[k].Tuple()
					produced[tu] = append(produced[tu], sent{rs[k].Timestamp, now})
				}
			}
			mu.Unlock()
			pcl.Produce(context.Background(), recs[0], nil)
			for _, r := range recs[1:] {
				pcl.Produce(context.Background(), r, nil)
			}
		}
		if err := pcl.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		b.StopTimer()
		cancel()
		wg.Wait()
		close(received)
		for d := range received {
			delays = append(delays, d)
		}
		if err := stop(); err != nil {
			b.Fatal(err)
		}
	}
	if len(delays) == 0 {
		b.Fatal("no alerts")
	}
	slices.Sort(delays)
	q := func(f float64) float64 { return float64(delays[int(f*float64(len(delays)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(float64(len(delays))/float64(b.N), "alerts")
}

// BenchmarkReplay measures events/s of Replay on the embedded broker: the
// default fleet (200 devices, 24 h, flat JSON over 3 input partitions) is
// written first, then each iteration replays the whole topic — consume,
// decode, merge, route, apply, evaluate, and the final beacon set — with
// scratch state. Seed parameters, 1 h warm-up, as BenchmarkEndToEnd.
func BenchmarkReplay(b *testing.B) {
	_, vals := benchData(b)
	_, addr := newCluster(b, 1)
	produceVals(b, addr, vals).Close()
	for _, parts := range []int{1, 2, 8} {
		b.Run(fmt.Sprintf("partitions=%d", parts), func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				res, err := Replay(context.Background(), ReplayOptions{Partitions: parts},
					Brokers(addr), InputTopics(tInput), Warmup(time.Hour), StateDir(b.TempDir()))
				if err != nil {
					b.Fatal(err)
				}
				total += time.Since(t0)
				if i == 0 {
					b.Logf("%d events, %d connections and %d domain records routed, %d alerts, %d beacons",
						res.Events, res.Connections, res.Domains, len(res.Alerts), len(res.Rows))
				}
			}
			b.ReportMetric(float64(len(vals))*float64(b.N)/total.Seconds(), "events/s")
		})
	}
}

// produceVals writes the benchmark's input records round robin to the
// input topic and returns the client, still open.
func produceVals(b *testing.B, addr string, vals [][]byte) *kgo.Client {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerBatchMaxBytes(1<<20))
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]*kgo.Record, len(vals))
	for j, v := range vals {
		recs[j] = &kgo.Record{Topic: tInput, Value: v}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		b.Fatal(err)
	}
	return cl
}
