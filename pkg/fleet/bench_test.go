package fleet

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var (
	benchOnce sync.Once
	benchRecs []Record
)

// benchRecords is a default-sized slice of a default fleet: 40 devices over
// 24 hours (~90k records).
func benchRecords(b *testing.B) []Record {
	benchOnce.Do(func() {
		benchRecs, _ = generate(b, Config{Seed: 1, Devices: 40})
	})
	return benchRecs
}

// benchWrite writes b.N records to a file (and, to separate encoding from
// I/O, to io.Discard) and reports events/s.
func benchWrite(b *testing.B, f Format) {
	b.Run("file", func(b *testing.B) { benchWriteTo(b, f, true) })
	b.Run("discard", func(b *testing.B) { benchWriteTo(b, f, false) })
}

func benchWriteTo(b *testing.B, f Format, toFile bool) {
	rs := benchRecords(b)
	file, err := os.Create(filepath.Join(b.TempDir(), "out"))
	if err != nil {
		b.Fatal(err)
	}
	defer file.Close()
	var out io.Writer = file
	if !toFile {
		out = io.Discard
	}
	w, err := NewWriter(out, f, WriterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := w.Write(&rs[i%len(rs)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if st, err := file.Stat(); err == nil && toFile {
		b.ReportMetric(float64(st.Size())/float64(b.N), "B/event")
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}

func BenchmarkWriteJSON(b *testing.B)     { benchWrite(b, JSONL) }
func BenchmarkWriteEnvelope(b *testing.B) { benchWrite(b, Envelope) }
func BenchmarkWriteCSV(b *testing.B)      { benchWrite(b, CSV) }
func BenchmarkWriteAvro(b *testing.B)     { benchWrite(b, Avro) }

// BenchmarkGenerate measures the generator alone.
func BenchmarkGenerate(b *testing.B) {
	b.ReportAllocs()
	n := 0
	start := time.Now()
	for n < b.N {
		g, err := New(Config{Seed: int64(n), Devices: 40})
		if err != nil {
			b.Fatal(err)
		}
		for _, ok := g.NextRecord(); ok && n < b.N; _, ok = g.NextRecord() {
			n++
		}
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkSimulateJSON is the generator and the JSON writer together, to
// a buffered file: what `beacon simulate --out x.jsonl` does.
func BenchmarkSimulateJSON(b *testing.B) {
	file, err := os.Create(filepath.Join(b.TempDir(), "out"))
	if err != nil {
		b.Fatal(err)
	}
	defer file.Close()
	bw := bufio.NewWriterSize(file, 1<<20)
	w, _ := NewWriter(bw, JSONL, WriterOptions{})
	b.ReportAllocs()
	n := 0
	start := time.Now()
	for n < b.N {
		g, err := New(Config{Seed: int64(n), Devices: 40})
		if err != nil {
			b.Fatal(err)
		}
		for r, ok := g.NextRecord(); ok && n < b.N; r, ok = g.NextRecord() {
			w.Write(&r)
			n++
		}
	}
	w.Close()
	bw.Flush()
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkAppendAvro is the raw Avro encoding a Kafka producer uses.
func BenchmarkAppendAvro(b *testing.B) {
	rs := benchRecords(b)
	b.ReportAllocs()
	var buf []byte
	start := time.Now()
	for i := 0; i < b.N; i++ {
		buf = AppendAvro(buf[:0], &rs[i%len(rs)])
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
