package stream

import (
	"bytes"
	"cmp"
	"context"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
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

var (
	twoDaysOnce sync.Once
	twoDaysVals [][]byte
)

// benchTwoDays is BenchmarkReplay's input: 48 hours of 200 devices as flat
// JSON lines, the acceptance's two days of traffic.
func benchTwoDays(b *testing.B) [][]byte {
	twoDaysOnce.Do(func() {
		rs, _ := records(b, fleet.Config{Seed: 11, Devices: 200, Duration: 48 * time.Hour})
		for i := range rs {
			twoDaysVals = append(twoDaysVals, fleet.AppendJSON(nil, &rs[i]))
		}
	})
	return twoDaysVals
}

// BenchmarkEndToEnd measures events/s from the input topic to the alert
// topic on the embedded broker: the input is written first, then one
// service (ingest and detection) runs until every event is ingested and
// every repartition record applied, evaluated and its alerts acknowledged.
// That end includes a fixed wait: the records after the slowest input
// partition's watermark are released only once ingest marks the caught-up
// partitions idle, idleAfter (3 s) of wall time after their last event,
// as a live detector cannot know that the input ended. So it also reports
// ingest-events/s, the rate to the commit of the whole input by ingest
// (the backlog drain rate; detection keeps up with it until that tail).
func BenchmarkEndToEnd(b *testing.B) {
	benchEndToEnd(b)
}

func benchEndToEnd(b *testing.B, benchOpts ...Opt) {
	_, vals := benchData(b)
	var total, ingest, cpu time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		cluster, addr := newCluster(b, 8)
		cl := produceVals(b, addr, vals)
		adm := kadm.NewClient(cl)
		s := service(b, addr, b.TempDir(), zap.NewNop(), append([]Opt{Warmup(time.Hour)}, benchOpts...)...)
		b.StartTimer()
		t0, cpu0 := time.Now(), cpuTime()
		stop := start(b, s)
		waitIngested(b, adm)
		ingested := time.Since(t0)
		ingest += ingested
		ends := endOffsets(b, adm, tRepart)
		waitDetected(b, s, ends)
		total += time.Since(t0)
		cpu += cpuTime() - cpu0
		b.StopTimer()
		if i == 0 {
			b.Logf("input committed by ingest after %v, every repartition record applied after %v", ingested.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		}
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
	b.ReportMetric(float64(len(vals))*float64(b.N)/ingest.Seconds(), "ingest-events/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/(float64(len(vals))*float64(b.N)), "cpu-ns/event")
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
// live stream: the fleet is produced in event-time order at 10k events/s
// (event time compressed ~2400×), and each alert's delay is the time from
// producing the newest event its evaluation covers (the first one dated at
// or after the alert's StreamTime: the alert cannot exist before it) to
// receiving the alert from the alert topic. That is what the pipeline
// adds; the wait for an evaluation point to close is the evaluation
// interval of event time, a setting. Warm-up is off; 150 implants
// re-alerted every 20 minutes of event time over 6 hours give well over
// 1,000 alerts per run (fewer fails the benchmark), so p99 is a
// percentile, not the second-largest sample. It reports p50, p99 and max
// in milliseconds and the alerts counted.
func BenchmarkAlertLatency(b *testing.B) {
	const rate = 10_000 // events/s
	rs, _ := records(b, fleet.Config{Seed: 1, Devices: 100, Implants: 150, Duration: 6 * time.Hour,
		Sleeps: []time.Duration{time.Minute, 2 * time.Minute}})
	var delays []time.Duration
	for i := 0; i < b.N; i++ {
		_, addr := newCluster(b, 4)
		p := testParams()
		s := service(b, addr, b.TempDir(), zap.NewNop(), Params(p), Warmup(-1), ReAlertInterval(20*time.Minute))
		stop := start(b, s)
		time.Sleep(time.Second) // let both groups join

		type sent struct {
			ts beacon.Time
			at time.Time
		}
		var mu sync.Mutex
		var produced []sent // per produced batch: its newest Timestamp, when
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
					// The first batch with an event at or after StreamTime.
					j, _ := slices.BinarySearchFunc(produced, a.StreamTime, func(s sent, t beacon.Time) int { return cmp.Compare(s.ts, t) })
					var at time.Time
					if j < len(produced) {
						at = produced[j].at
					}
					mu.Unlock()
					if !at.IsZero() {
						received <- now.Sub(at)
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
			newest := rs[j].Timestamp
			for k := j; k < end; k++ {
				recs = append(recs, &kgo.Record{Topic: tInput, Value: fleet.AppendJSON(nil, &rs[k])})
				newest = max(newest, rs[k].Timestamp)
			}
			mu.Lock()
			if len(produced) == 0 || newest > produced[len(produced)-1].ts {
				produced = append(produced, sent{newest, time.Now()})
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
	if len(delays) < 1000*b.N {
		b.Fatalf("%d alerts in %d runs: fewer than 1,000 a run make no p99", len(delays), b.N)
	}
	slices.Sort(delays)
	q := func(f float64) float64 { return float64(delays[int(f*float64(len(delays)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(float64(len(delays))/float64(b.N), "alerts")
}

// BenchmarkReplay measures Replay against the limit it approaches, in the
// same run: reading the same topic with no processing. Two days of a fleet
// of 200 devices (~830k flat JSON events, what `beacon simulate --hours 48
// --devices 200` writes) are written round robin to a 6-partition input
// topic on the embedded broker; then
//
//   - consume=kgo reads every partition from its start to its end offset
//     through kgo with replay's fetch settings and drops the records (the
//     raw consume of the acceptance; BenchmarkConsumeRaw alone);
//   - consume=kcat, when kcat is installed, does the same with
//     `kcat -C -e -q` (librdkafka) into /dev/null;
//   - partitions=N replays the whole topic — consume, decode, merge,
//     route, apply, evaluate, the final beacon set — with scratch state
//     (in memory, as `beacon replay` without --state-dir), N detection
//     partitions (1, the default of `beacon replay`, and 6). Seed
//     parameters, 1 h warm-up.
//
// Each reports events/s (wall), CPU per event (getrusage of the process,
// which includes the in-process broker serving the fetches) and, for the
// replays, x-kgo and x-kcat: its wall time over the raw consume's in this
// run (the acceptance asks ≤ 2 against kcat).
func BenchmarkReplay(b *testing.B) {
	vals := benchTwoDays(b)
	_, addr := newCluster(b, 1)
	topic := benchTopic6(b, addr, vals)
	var raw = map[string]float64{} // ns per op of the raw consumes
	run := func(name string, f func(b *testing.B)) {
		b.Run(name, func(b *testing.B) {
			cpu0 := cpuTime()
			b.ResetTimer()
			f(b)
			b.StopTimer()
			report(b, int64(len(vals)), cpuTime()-cpu0)
			if strings.HasPrefix(name, "consume=") {
				raw[strings.TrimPrefix(name, "consume=")] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
				return
			}
			per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			for _, k := range []string{"kgo", "kcat"} {
				if r := raw[k]; r > 0 {
					b.ReportMetric(per/r, "x-"+k)
				}
			}
		})
	}
	run("consume=kgo", func(b *testing.B) {
		for range b.N {
			if n := consumeRaw(b, addr, topic); n != int64(len(vals)) {
				b.Fatalf("consumed %d records, want %d", n, len(vals))
			}
		}
	})
	if kcat, err := exec.LookPath("kcat"); err == nil {
		run("consume=kcat", func(b *testing.B) {
			for range b.N {
				cmd := exec.Command(kcat, "-C", "-b", addr, "-t", topic, "-o", "beginning", "-e", "-q",
					"-X", "broker.address.family=v4", "-f", "%o\n")
				out, err := cmd.Output()
				if err != nil {
					b.Fatal(err)
				}
				if n := bytes.Count(out, []byte("\n")); n != len(vals) {
					b.Fatalf("kcat consumed %d records, want %d", n, len(vals))
				}
			}
		})
	}
	// Seed with 1 and 6 partitions, then robust (the command's default
	// profile) with 1, the command's default worker count, split in
	// shards (the default: the cores) and not.
	for _, c := range []struct {
		name    string
		profile string
		parts   int
		shards  int
	}{{"partitions=1", beacon.ProfileSeed, 1, 0}, {"partitions=6", beacon.ProfileSeed, 6, 0},
		{"robust/partitions=1", beacon.ProfileRobust, 1, 0}, {"robust/partitions=1/shards=1", beacon.ProfileRobust, 1, 1}} {
		parts, shards := c.parts, c.shards
		params, err := beacon.ProfileParams(c.profile)
		if err != nil {
			b.Fatal(err)
		}
		run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				res, err := Replay(context.Background(), ReplayOptions{Partitions: parts, Shards: shards},
					Brokers(addr), InputTopics(topic), Warmup(time.Hour), Params(params))
				if err != nil {
					b.Fatal(err)
				}
				if res.Events != int64(len(vals)) {
					b.Fatalf("replayed %d events, want %d", res.Events, len(vals))
				}
				if i == 0 {
					b.Logf("%d events, %d connections and %d domain records routed, %d alerts, %d beacons",
						res.Events, res.Connections, res.Domains, len(res.Alerts), len(res.Rows))
				}
			}
		})
	}
}

// BenchmarkConsumeRaw is the raw consume of BenchmarkReplay alone: the
// same topic read through kgo with no processing.
func BenchmarkConsumeRaw(b *testing.B) {
	vals := benchTwoDays(b)
	_, addr := newCluster(b, 1)
	topic := benchTopic6(b, addr, vals)
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		if n := consumeRaw(b, addr, topic); n != int64(len(vals)) {
			b.Fatalf("consumed %d records, want %d", n, len(vals))
		}
	}
	b.StopTimer()
	report(b, int64(len(vals)), cpuTime()-cpu0)
}

// benchTopic6 creates a 6-partition input topic and writes vals to it
// round robin.
func benchTopic6(b *testing.B, addr string, vals [][]byte) string {
	b.Helper()
	const topic = "events6"
	cl := newClient(b, addr, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerBatchMaxBytes(1<<20))
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 6, 1, nil, topic); err != nil {
		b.Fatal(err)
	}
	recs := make([]*kgo.Record, len(vals))
	for j, v := range vals {
		recs[j] = &kgo.Record{Topic: topic, Value: v}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		b.Fatal(err)
	}
	return topic
}

// consumeRaw reads every partition of topic from its start to its end
// offset with replay's fetch settings, touching each record's value, and
// returns how many records it read.
func consumeRaw(b *testing.B, addr, topic string) int64 {
	b.Helper()
	adm := newClient(b, addr)
	defer adm.Close()
	ends, err := kadm.NewClient(adm).ListEndOffsets(context.Background(), topic)
	if err != nil {
		b.Fatal(err)
	}
	left := map[int32]int64{}
	offs := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
			offs[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs}),
		kgo.FetchMaxWait(200*time.Millisecond), kgo.FetchMaxPartitionBytes(1<<20))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var n, size int64
	for len(left) > 0 {
		fs := cl.PollFetches(context.Background())
		if err := fs.Err0(); err != nil {
			b.Fatal(err)
		}
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			for _, r := range fp.Records {
				n++
				size += int64(len(r.Value))
				if end, ok := left[fp.Partition]; ok && r.Offset+1 >= end {
					delete(left, fp.Partition)
				}
			}
		})
	}
	if size == 0 {
		b.Fatal("nothing consumed")
	}
	return n
}

// cpuTime is the process's user+system CPU time. On a shared machine the
// wall clock says how busy the neighbours are; CPU per event says what
// the code costs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// report adds events/s of wall time and CPU per event to a benchmark of n
// events per op.
func report(b *testing.B, n int64, cpu time.Duration) {
	events := float64(n) * float64(b.N)
	b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/events, "cpu-ns/event")
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
