package mde

import (
	"bytes"
	"context"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

// The day benchmarks compare, in one run, hunt over a simulated day with
// just reading the same bytes: the file issue 8 measures, ~720k events in
// ~470 MB of Streaming API envelopes (beacon simulate --devices 365
// --format envelope). Set BEACON_BENCH_FILE to measure a file of your own
// (flat rows: beacon simulate --devices 375 --out day.jsonl). DayFileRead
// and DayFileHunt do what beacon hunt FILE does, from the file (a
// temporary one when BEACON_BENCH_FILE is not set); the others work on the
// bytes in memory.
//
//	go test ./pkg/mde -run XXX -bench Day -benchtime 3x

var day struct {
	once     sync.Once
	data     []byte
	events   int64
	fileOnce sync.Once
	file     string // the day written to a temporary file (dayFile)
	// BEACON_BENCH_FILE's events, counted by dayFile.
	fileEvents int64
}

func dayData(b *testing.B) ([]byte, int64) {
	day.once.Do(func() {
		if name := os.Getenv("BEACON_BENCH_FILE"); name != "" {
			var err error
			if day.data, err = os.ReadFile(name); err != nil {
				b.Fatal(err)
			}
		} else {
			cfg := fleet.DefaultConfig()
			cfg.Devices = 365
			g, err := fleet.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			var buf bytes.Buffer
			w, err := fleet.NewWriter(&buf, fleet.Envelope, fleet.WriterOptions{Batch: fleet.DefaultBatch, Tenant: fleet.DefaultTenant, Seed: 1})
			if err != nil {
				b.Fatal(err)
			}
			for r := range g.All() {
				if err := w.Write(&r); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			day.data = buf.Bytes()
		}
		st, err := Read(context.Background(), bytes.NewReader(day.data), "day", Options{QueryOnly: true, Concurrent: true}, func([]beacon.Event) {})
		if err != nil {
			b.Fatal(err)
		}
		day.events = st.Events
	})
	return day.data, day.events
}

// BenchmarkDayRead is the floor: copying the file through a 1 MiB buffer,
// as Read's reader does, with no decoding.
func BenchmarkDayRead(b *testing.B) {
	data, n := dayData(b)
	b.SetBytes(int64(len(data)))
	buf := make([]byte, chunkSize)
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		r := bytes.NewReader(data)
		for {
			if _, err := io.ReadFull(r, buf); err != nil {
				break
			}
		}
	}
	report(b, n, cpuTime()-cpu0)
}

// BenchmarkDayDecode decodes every event and drops it.
func BenchmarkDayDecode(b *testing.B) {
	data, n := dayData(b)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := Read(context.Background(), bytes.NewReader(data), "day", Options{QueryOnly: true, Concurrent: true},
			func([]beacon.Event) {}); err != nil {
			b.Fatal(err)
		}
	}
	report(b, n, cpuTime()-cpu0)
}

// BenchmarkDayHunt is beacon hunt over the day: decode, aggregate, query
// (at hunt's GOGC=400).
func BenchmarkDayHunt(b *testing.B) {
	data, n := dayData(b)
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		h := beacon.NewHunt(beacon.Seed())
		if _, err := Read(context.Background(), bytes.NewReader(data), "day", Options{QueryOnly: true, Concurrent: true},
			func(batch []beacon.Event) { h.AddBatch(batch) }); err != nil {
			b.Fatal(err)
		}
		now, _ := h.DefaultNow()
		if rows := h.Rows(now); len(rows) == 0 {
			b.Fatal("no beacons in the simulated day")
		}
	}
	report(b, n, cpuTime()-cpu0)
}

// dayFile is the day as a file: BEACON_BENCH_FILE, or the simulated day
// written to a temporary file once. A file of one's own is not read into
// memory (dayData): its events are counted by one untimed Read of the
// file, which also leaves it in the page cache as an earlier beacon hunt
// of it would, and the benchmark's heap holds no 470 MB copy that the
// page cache and the collector would compete with.
func dayFile(b *testing.B) (string, int64) {
	if name := os.Getenv("BEACON_BENCH_FILE"); name != "" {
		day.fileOnce.Do(func() {
			f, err := os.Open(name)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			st, err := Read(context.Background(), f, name, Options{QueryOnly: true, Concurrent: true}, func([]beacon.Event) {})
			if err != nil {
				b.Fatal(err)
			}
			day.fileEvents = st.Events
		})
		return name, day.fileEvents
	}
	data, n := dayData(b)
	day.fileOnce.Do(func() {
		f, err := os.CreateTemp("", "beacon-day-*.jsonl")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		day.file = f.Name()
	})
	return day.file, n
}

// freshHeap starts an iteration of a file benchmark as a new beacon hunt
// process starts: the last iteration's garbage collected and its pages
// given back to the kernel (debug.FreeOSMemory), so that the heap this
// iteration grows is faulted in and zeroed afresh as the command's is,
// not reused for free. Untimed: neither its time nor its CPU (added to
// *cpu0, the CPU time the benchmark counts from) is the iteration's.
func freshHeap(b *testing.B, cpu0 *time.Duration) {
	b.StopTimer()
	t := cpuTime()
	debug.FreeOSMemory()
	*cpu0 += cpuTime() - t
	b.StartTimer()
}

// BenchmarkDayFileRead is the floor for beacon hunt FILE: the file read
// through a 1 MiB buffer with read(2), nothing decoded.
func BenchmarkDayFileRead(b *testing.B) {
	name, n := dayFile(b)
	buf := make([]byte, chunkSize)
	var size int64
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		f, err := os.Open(name)
		if err != nil {
			b.Fatal(err)
		}
		for {
			m, err := f.Read(buf)
			size += int64(m)
			if err != nil {
				break
			}
		}
		f.Close()
	}
	b.SetBytes(size / int64(b.N))
	report(b, n, cpuTime()-cpu0)
}

// BenchmarkDayFileHunt is beacon hunt FILE: the file opened and read by
// Read, the events added to a Hunt, the query run, with the collector's
// setting hunt runs with (GOGC=400, cmd/beacon/hunt.go).
func BenchmarkDayFileHunt(b *testing.B) {
	name, n := dayFile(b)
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		freshHeap(b, &cpu0)
		f, err := os.Open(name)
		if err != nil {
			b.Fatal(err)
		}
		h := beacon.NewHunt(beacon.Seed())
		if _, err := Read(context.Background(), f, name, Options{QueryOnly: true, Concurrent: true},
			func(batch []beacon.Event) { h.AddBatch(batch) }); err != nil {
			b.Fatal(err)
		}
		f.Close()
		now, _ := h.DefaultNow()
		if rows := h.Rows(now); len(rows) == 0 {
			b.Fatal("no beacons in the day")
		}
	}
	report(b, n, cpuTime()-cpu0)
}

// cpuTime is the process's user+system CPU time. On a shared machine the
// wall clock says how busy the neighbours are; CPU per event says what
// the code costs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func report(b *testing.B, n int64, cpu time.Duration) {
	events := float64(n) * float64(b.N)
	b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/events, "cpu-ns/event")
}

// BenchmarkDayLines decodes the first ~50 MB of the day line by line on
// one goroutine: the decoder alone, without the reader or the pipeline.
func BenchmarkDayLines(b *testing.B) {
	data, _ := dayData(b)
	data = data[:min(len(data), 50<<20)]
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	lines := bytes.Split(data[:len(data)-1], []byte{'\n'})
	b.SetBytes(int64(len(data)))
	var evs []beacon.Event
	var n int64
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		n = 0
		for _, l := range lines {
			evs, _ = AppendEvents(evs[:0], l, true)
			n += int64(len(evs))
		}
	}
	report(b, n, cpuTime()-cpu0)
}

// BenchmarkDayAdd is beacon.Hunt alone: the day's events, decoded once,
// added on one goroutine.
func BenchmarkDayAdd(b *testing.B) {
	data, _ := dayData(b)
	var evs []beacon.Event
	Read(context.Background(), bytes.NewReader(data), "day", Options{QueryOnly: true}, func(batch []beacon.Event) {
		for i := range batch {
			evs = append(evs, batch[i].Clone())
		}
	})
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		h := beacon.NewHunt(beacon.Seed())
		for i := 0; i < len(evs); i += 4096 {
			h.AddBatch(evs[i:min(i+4096, len(evs))])
		}
	}
	report(b, int64(len(evs)), cpuTime()-cpu0)
}

// TestMain removes the temporary day file the benchmarks wrote.
func TestMain(m *testing.M) {
	code := m.Run()
	if day.file != "" {
		os.Remove(day.file)
	}
	os.Exit(code)
}

// BenchmarkDayRows is the query's last step alone: the day added to a
// Hunt once (on every CPU, as hunt does), then Rows at the default now
// (the per-tuple tests, the Domains, the selection), what hunt runs after
// reading the file.
func BenchmarkDayRows(b *testing.B) {
	data, n := dayData(b)
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	h := beacon.NewHunt(beacon.Seed())
	if _, err := Read(context.Background(), bytes.NewReader(data), "day", Options{QueryOnly: true, Concurrent: true},
		func(batch []beacon.Event) { h.AddBatch(batch) }); err != nil {
		b.Fatal(err)
	}
	now, _ := h.DefaultNow()
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		if rows := h.Rows(now); len(rows) == 0 {
			b.Fatal("no beacons in the day")
		}
	}
	report(b, n, cpuTime()-cpu0)
}
