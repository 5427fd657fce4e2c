package state

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// benchTuples returns n tuples over n/100 destinations (100 devices each),
// with realistic column lengths.
func benchTuples(n int) []beacon.Tuple {
	out := make([]beacon.Tuple, n)
	for i := range out {
		out[i] = beacon.Tuple{
			DeviceId:      fmt.Sprintf("%040x", i%100+1000*(i/100)),
			DeviceName:    fmt.Sprintf("ws-%06d.corp.example.com", i%100),
			AccountName:   "svc_account",
			AccountDomain: "CORP",
			FileName:      "svchost.exe",
			RemoteIP:      fmt.Sprintf("20.%d.%d.%d", i/100/65536%256, i/100/256%256, i/100%256),
			RemotePort:    443,
		}
	}
	return out
}

func benchStore(b *testing.B, p beacon.Params) (*Store, *Partition) {
	b.Helper()
	s, err := Open(b.TempDir(), p)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	part, err := s.Partition(0)
	if err != nil {
		b.Fatal(err)
	}
	return s, part
}

// feedInOrder applies count events round-robin over tuples, step apart in
// event time starting at *clock, in batches of batch.
func feedInOrder(b *testing.B, part *Partition, tuples []beacon.Tuple, count, batch int, step beacon.Time, clock *beacon.Time, k *int) {
	conns := make([]Conn, 0, batch)
	for done := 0; done < count; {
		conns = conns[:0]
		for ; len(conns) < batch && done < count; done++ {
			*clock += step
			conns = append(conns, Conn{Tuple: tuples[*k%len(tuples)], Time: *clock})
			*k++
		}
		if _, err := part.Apply(conns, nil, int64(*k), nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyInOrder: in-order traffic over 100k tuples in batches of
// 1000 (each tuple gets an event every 100 s of event time; 24 h lookback,
// so nothing is evicted). The tuples exist before the timer starts.
func BenchmarkApplyInOrder(b *testing.B) {
	tuples := benchTuples(100_000)
	_, part := benchStore(b, beacon.Seed())
	clock, k := testBase, 0
	feedInOrder(b, part, tuples, len(tuples), 1000, beacon.Second/1000, &clock, &k)
	b.ResetTimer()
	start := time.Now()
	feedInOrder(b, part, tuples, b.N, 1000, beacon.Second/1000, &clock, &k)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkApplySteady: in-order traffic over 100k tuples in batches of
// 1000 once windows are full: with a 1000 s lookback and an event per tuple
// every 100 s, every event also evicts one (10 timestamps per tuple).
// This is the long-run cost of an event: its insert and, a lookback later,
// its eviction.
func BenchmarkApplySteady(b *testing.B) {
	tuples := benchTuples(100_000)
	_, part := benchStore(b, testParams(1000*time.Second, time.Second))
	clock, k := testBase, 0
	feedInOrder(b, part, tuples, 11*len(tuples), 1000, beacon.Second/1000, &clock, &k)
	b.ResetTimer()
	start := time.Now()
	feedInOrder(b, part, tuples, b.N, 1000, beacon.Second/1000, &clock, &k)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkApplyOutOfOrder: one event that splits a delta (a neighbour
// lookup in Pebble each) — in batches of 1000 over 1000 tuples, and alone
// in its own Apply (the whole commit path).
func BenchmarkApplyOutOfOrder(b *testing.B) {
	for _, batch := range []int{1000, 1} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			tuples := benchTuples(1000)
			_, part := benchStore(b, beacon.Seed())
			clock, k := testBase, 0
			// 100 timestamps per tuple, 10 s apart.
			feedInOrder(b, part, tuples, 100*len(tuples), 1000, 10*beacon.Second/1000, &clock, &k)
			rng := rand.New(rand.NewPCG(1, 1))
			conns := make([]Conn, 0, batch)
			b.ResetTimer()
			for i := 0; i < b.N; {
				conns = conns[:0]
				for ; len(conns) < batch && i < b.N; i++ {
					// Inside the window, strictly between two timestamps.
					t := testBase + 10*beacon.Second + beacon.Time(rng.Int64N(int64(980*beacon.Second)))
					conns = append(conns, Conn{Tuple: tuples[rng.IntN(len(tuples))], Time: t})
				}
				st, err := part.Apply(conns, nil, int64(i), nil)
				if err != nil {
					b.Fatal(err)
				}
				if st.Applied+st.Duplicate != len(conns) {
					b.Fatalf("%+v", st)
				}
			}
		})
	}
}

// BenchmarkEvict: the cost per timestamp evicted. 1000 tuples hold one
// timestamp per second; each AdvanceTo by 1 s evicts one from each.
func BenchmarkEvict(b *testing.B) {
	const tuplesN = 1000
	p := testParams(10*time.Minute, time.Second)
	tuples := benchTuples(tuplesN)
	_, part := benchStore(b, p)
	clock, k := testBase, 0
	seconds := b.N/tuplesN + 1
	feedInOrder(b, part, tuples, (seconds+600)*tuplesN, 1000, beacon.Second/tuplesN, &clock, &k)
	st, _ := part.StreamTime()
	evicted := 0
	b.ResetTimer()
	for i := range seconds {
		before := part.ntuples
		if err := part.AdvanceTo(st + beacon.Time(i+1)*beacon.Second); err != nil {
			b.Fatal(err)
		}
		_ = before
		evicted += tuplesN
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(evicted), "ns/evicted")
}

// BenchmarkEvaluate: the cost of Evaluate on a destination whose tuples
// hold n timestamps each (a 1 s beacon with up to 300 ms of jitter).
//
//	decide: one device; its candidate statistics are computed from the
//	  summary and SelectDestination rejects it (sleep filter): no row, no
//	  timestamp read — the cost must not grow with n.
//	kept:   one device, kept: the row is rendered, which reads the n
//	  timestamps (TimeDeltaList) — linear in n.
//	capped: twelve devices, over the device cap: settled from the
//	  destination's device count alone.
//
// Each iteration marks the tuples changed, so Params.Candidate is asked
// again as after a batch.
func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{8_640, 86_400} {
		for _, mode := range []string{"decide", "kept", "capped"} {
			b.Run(fmt.Sprintf("%s/timestamps=%d", mode, n), func(b *testing.B) {
				p := beacon.Seed()
				devices, wantRows := 1, 1
				switch mode {
				case "decide":
					p.SleepMin, wantRows = 2, 0
				case "capped":
					devices, wantRows = 12, 0
				}
				_, part := benchStore(b, p)
				tuples := make([]beacon.Tuple, devices)
				for i := range tuples {
					tuples[i] = beacon.Tuple{DeviceId: fmt.Sprintf("dev%02d", i), DeviceName: "h", AccountName: "a",
						AccountDomain: "d", FileName: "implant.exe", RemoteIP: "203.0.113.7", RemotePort: 443}
				}
				rng := rand.New(rand.NewPCG(2, 2))
				conns := make([]Conn, 0, 1000)
				for j := range n {
					for _, tu := range tuples {
						t := testBase + beacon.Time(j)*beacon.Second + beacon.Time(rng.Int64N(int64(3*beacon.Second/10)))
						conns = append(conns, Conn{Tuple: tu, Time: t})
					}
					if len(conns) >= 1000 || j == n-1 {
						if _, err := part.Apply(conns, nil, int64(j), nil); err != nil {
							b.Fatal(err)
						}
						conns = conns[:0]
					}
				}
				d := tuples[0].Destination()
				ds := part.destByKey(d)
				rows, err := part.Evaluate(d)
				if err != nil {
					b.Fatal(err)
				}
				if len(rows) != wantRows || len(ds.cands) != devices {
					b.Fatalf("%d rows, %d candidates", len(rows), len(ds.cands))
				}
				var mine []*tuple
				for _, tp := range part.allTuples() {
					if tp.dest == ds.idx {
						mine = append(mine, tp)
					}
				}
				b.ResetTimer()
				for range b.N {
					for _, tp := range mine {
						part.touch(tp)
					}
					if _, err := part.Evaluate(d); err != nil {
						b.Fatal(err)
					}
				}
				var buf [2]beacon.Bin
				sum := part.summary(part.tup(ds.cands[0]), &buf)
				b.ReportMetric(float64(len(sum.Hist)), "bins")
			})
		}
	}
}

// fleetTuples returns devices×dests tuples: every device (and its one
// account) talks to every destination, as a fleet's agents talk to the same
// services — the columns of a device are shared by its tuples.
func fleetTuples(devices, dests int) []beacon.Tuple {
	out := make([]beacon.Tuple, 0, devices*dests)
	for d := range devices {
		id := fmt.Sprintf("%040x", d*7919+1)
		name := fmt.Sprintf("ws-%06d.corp.example.com", d)
		for x := range dests {
			out = append(out, beacon.Tuple{DeviceId: id, DeviceName: name, AccountName: "svc_account", AccountDomain: "CORP",
				FileName: []string{"svchost.exe", "chrome.exe", "updater.exe"}[x%3],
				RemoteIP: fmt.Sprintf("20.%d.%d.%d", x/65536%256, x/256%256, x%256), RemotePort: 443})
		}
	}
	return out
}

// feedBeacons applies rounds of a 60 s beacon with ±6 s of jitter and a
// random phase and sub-second (100 ns ticks, as Defender's timestamps have)
// to every tuple, in batches of 1000, round after round.
func feedBeacons(b *testing.B, part *Partition, tuples []beacon.Tuple, rounds int, rng *rand.Rand, phase []beacon.Time, k *int) {
	conns := make([]Conn, 0, 1000)
	for r := range rounds {
		for i := range tuples {
			t := testBase + phase[i] + beacon.Time(r)*60*beacon.Second + beacon.Time(rng.Int64N(int64(12*beacon.Second)))
			conns = append(conns, Conn{Tuple: tuples[i], Time: t})
			if len(conns) == cap(conns) || i == len(tuples)-1 {
				*k += len(conns)
				if _, err := part.Apply(conns, nil, int64(*k), nil); err != nil {
					b.Fatal(err)
				}
				conns = conns[:0]
			}
		}
	}
}

func phases(rng *rand.Rand, n int) []beacon.Time {
	out := make([]beacon.Time, n)
	for i := range out {
		out[i] = beacon.Time(rng.Int64N(int64(48 * beacon.Second)))
	}
	return out
}

// BenchmarkFootprint measures the state's size: Pebble bytes per tuple and
// per timestamp, in sstables after a flush and a compaction (what a
// long-running store holds on disk), and Go heap per tuple. Two fills of
// 100k tuples (1000 devices × 100 destinations) with 1 and with 41
// timestamps each of a jittered 60 s beacon at 100 ns precision separate the
// two costs.
func BenchmarkFootprint(b *testing.B) {
	tuples := fleetTuples(1000, 100)
	n := len(tuples)
	var disk [2]float64
	var heap, index float64
	const more = 40
	for run, rounds := range []int{1, 1 + more} {
		s, part := benchStore(b, beacon.Seed())
		rng := rand.New(rand.NewPCG(7, 7))
		ph := phases(rng, n)
		runtime.GC()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		k := 0
		feedBeacons(b, part, tuples, rounds, rng, ph, &k)
		if run == 0 {
			runtime.GC()
			var m1 runtime.MemStats
			runtime.ReadMemStats(&m1)
			heap = float64(m1.HeapAlloc-m0.HeapAlloc) / float64(n)
			index = (float64(m1.HeapAlloc-m0.HeapAlloc) - float64(s.cached.Load())) / float64(n)
		}
		if err := s.db.Flush(); err != nil {
			b.Fatal(err)
		}
		lo, hi := partitionSpan(0)
		if err := s.db.Compact(b.Context(), lo, hi, false); err != nil {
			b.Fatal(err)
		}
		u, err := s.db.EstimateDiskUsage(lo, hi)
		if err != nil {
			b.Fatal(err)
		}
		disk[run] = float64(u)
		runtime.KeepAlive(part)
	}
	perTS := (disk[1] - disk[0]) / float64(more*n)
	b.ReportMetric(perTS, "disk-B/timestamp")
	b.ReportMetric(disk[0]/float64(n)-perTS, "disk-B/tuple")
	b.ReportMetric(heap, "heap-B/tuple")
	b.ReportMetric(index, "index-B/tuple")
	for range b.N {
	}
}

// fleetTuple is tuple i of fleetTuples(devices, dests), built on demand:
// a benchmark of a million tuples must not hold a million inputs itself
// (≈ 110 MB), or its RSS says more about the test than the state.
func fleetTuple(i, dests int) beacon.Tuple {
	d, x := i/dests, i%dests
	return beacon.Tuple{DeviceId: fmt.Sprintf("%040x", d*7919+1), DeviceName: fmt.Sprintf("ws-%06d.corp.example.com", d),
		AccountName: "svc_account", AccountDomain: "CORP", FileName: []string{"svchost.exe", "chrome.exe", "updater.exe"}[x%3],
		RemoteIP: fmt.Sprintf("20.%d.%d.%d", x/65536%256, x/256%256, x%256), RemotePort: 443}
}

// BenchmarkMillionTuples measures memory with 1M live tuples (10k devices
// × 100 destinations, two timestamps each of a jittered 60 s beacon, the
// rounds of feedBeacons with tuples built on demand) after an evaluation
// point, with the store's default options and with WithMemoryBudget(128
// MiB): Go heap grown per tuple with the block cache (full: it is bounded
// by its budget, 64 MiB by default, 32 MiB of the 128 MiB budget) and
// without it (index-B/tuple), process RSS, and how fast tuples are created.
// Run each alone under /usr/bin/time -v for the peak RSS.
func BenchmarkMillionTuples(b *testing.B) {
	if testing.Short() {
		b.Skip("long")
	}
	for _, c := range []struct {
		name string
		opts []Option
	}{{"default", nil}, {"budget=128MiB", []Option{WithMemoryBudget(128 << 20)}}} {
		b.Run(c.name, func(b *testing.B) {
			const devices, dests = 10_000, 100
			n := devices * dests
			for range b.N {
				s, err := Open(b.TempDir(), beacon.Seed(), c.opts...)
				if err != nil {
					b.Fatal(err)
				}
				part, err := s.Partition(0)
				if err != nil {
					b.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(8, 8))
				ph := phases(rng, n)
				runtime.GC()
				var m0 runtime.MemStats
				runtime.ReadMemStats(&m0)
				rss0 := rss()
				k := 0
				start := time.Now()
				conns := make([]Conn, 0, 1000)
				for r := range 2 {
					for i := range n {
						t := testBase + ph[i] + beacon.Time(r)*60*beacon.Second + beacon.Time(rng.Int64N(int64(12*beacon.Second)))
						conns = append(conns, Conn{Tuple: fleetTuple(i, dests), Time: t})
						if len(conns) == cap(conns) || i == n-1 {
							k += len(conns)
							if _, err := part.Apply(conns, nil, int64(k), nil); err != nil {
								b.Fatal(err)
							}
							conns = conns[:0]
						}
					}
				}
				took := time.Since(start)
				// An evaluation point, as the detection worker has after a batch.
				for _, d := range part.Dirty() {
					if _, err := part.Evaluate(d); err != nil {
						b.Fatal(err)
					}
				}
				if part.ntuples != n {
					b.Fatalf("%d tuples, want %d", part.ntuples, n)
				}
				runtime.GC()
				var m1 runtime.MemStats
				runtime.ReadMemStats(&m1)
				grown := float64(m1.HeapAlloc - m0.HeapAlloc)
				b.ReportMetric(grown/float64(n), "heap-B/tuple")
				b.ReportMetric((grown-float64(s.cached.Load()))/float64(n), "index-B/tuple")
				b.ReportMetric(float64(s.cached.Load())/(1<<20), "block-cache-MiB")
				b.ReportMetric(float64(rss()-rss0)/(1<<20), "rss-growth-MiB")
				b.ReportMetric(float64(rss())/(1<<20), "rss-MiB")
				b.ReportMetric(float64(2*n)/took.Seconds(), "events/s")
				runtime.KeepAlive(part)
				s.Close()
			}
		})
	}
}

// rss is the process's resident set in bytes (Linux).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
