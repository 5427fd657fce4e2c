package mde

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// BadLine is an input line (or Avro record) that did not decode. The read
// goes on without it.
type BadLine struct {
	Source string // file name, "-" for stdin
	Line   int64  // 1-based; for JSON values spanning lines, the line the value (or row) starts at
	Err    error
}

func (b BadLine) Error() string { return fmt.Sprintf("%s:%d: %v", b.Source, b.Line, b.Err) }

// Options tune Read.
type Options struct {
	// Workers decode JSON lines in parallel; 0 means GOMAXPROCS.
	Workers int
	// QueryOnly leaves out the columns the seed query does not read (see
	// AppendEvents). Use it for hunt; leave it off when a profile needs
	// the process's hashes, path or command line.
	QueryOnly bool
	// Concurrent lets Read call fn from several goroutines at once, with
	// batches in no particular order. Use it when the consumer does not
	// care about order (beacon.Hunt): no goroutine waits for another's
	// chunk. Bad lines and progress are still reported in input order.
	Concurrent bool
	// OnBad is called, in input order, for each line that does not decode.
	OnBad func(BadLine)
	// OnProgress is called after each chunk with the bytes read so far
	// (compressed bytes for gzip input).
	OnProgress func(read int64)
}

// Stats count what Read read.
type Stats struct {
	Lines  int64 // lines of text (Avro: records)
	Events int64 // DeviceNetworkEvents rows
	Bad    int64 // lines, rows or records reported to OnBad
	Other  int64 // records of other tables (category or Type), left out
	Shape  Shape // what the input was
}

// Shape is the kind of file Read found.
type Shape string

// Shapes of input files.
const (
	ShapeLines  Shape = "json-lines"  // one JSON value per line (rows, records, envelopes, responses)
	ShapeValues Shape = "json-values" // pretty-printed or concatenated values, arrays
	ShapeCSV    Shape = "csv"
	ShapeAvro   Shape = "avro" // Event Hubs Capture, or rows of schemas/DeviceNetworkEvent.avsc
)

const chunkSize = 1 << 20

// Read decodes events from r, whatever its shape (see the package doc):
// gzip-compressed or not, with or without a BOM; JSON lines, JSON values
// spanning lines, CSV or an Avro container file, told by the first bytes.
// It calls fn with batches of events; in input order unless
// opt.Concurrent. The events' strings alias buffers that are reused once
// fn returns: copy what you keep (Event.Clone).
//
// A truncated gzip stream or Avro file is an error, as is a CSV file that
// lacks a column the query needs; bad lines are not (see OnBad).
func Read(ctx context.Context, r io.Reader, source string, opt Options, fn func([]beacon.Event)) (Stats, error) {
	counted := &countingReader{r: r}
	br := bufio.NewReaderSize(counted, 64<<10)
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return Stats{}, fmt.Errorf("%s: %w", source, err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 64<<10)
	}
	if head, _ := br.Peek(3); bytes.Equal(head, utf8BOM) {
		br.Discard(3)
	}
	head, _ := br.Peek(64 << 10)
	var st Stats
	var err error
	switch {
	case bytes.HasPrefix(head, []byte("Obj\x01")):
		st, err = readAvro(ctx, br, source, opt, counted, fn)
	case spansLines(head):
		st, err = readValues(ctx, br, source, opt, counted, fn)
	case isCSV(head):
		st, err = readCSV(ctx, br, source, opt, counted, fn)
	default:
		st, err = readLines(ctx, br, source, opt, counted, fn)
	}
	if err != nil {
		return st, err
	}
	return st, ctx.Err()
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// spansLines tells whether the first JSON value of head goes on past its
// first line: pretty-printed JSON, which is read value by value, not line
// by line.
func spansLines(head []byte) bool {
	d := decoder{b: head}
	d.ws()
	if d.i >= len(d.b) || (d.b[d.i] != '{' && d.b[d.i] != '[') {
		return false
	}
	nl := bytes.IndexByte(head[d.i:], '\n')
	if nl < 0 {
		return false // one line, or a value longer than head: lines
	}
	nl += d.i
	err := d.skip()
	if err == nil {
		return d.i > nl
	}
	// Broken: pretty-printed if it broke after its first line.
	return d.i > nl
}

type chunk struct {
	data      []byte
	firstLine int64
	read      int64
	lines     int64
	events    []beacon.Event
	nEvents   int64 // events decoded (with opt.Concurrent, handed over in small batches)
	bad       []BadLine
	other     int64
	done      chan struct{}
}

// readLines decodes JSON lines in parallel: a reader fills reused 1 MiB
// chunks cut at line ends, workers decode them, and fn sees each chunk's
// events (in order, or at once with opt.Concurrent).
func readLines(ctx context.Context, br *bufio.Reader, source string, opt Options, counted *countingReader, fn func([]beacon.Event)) (Stats, error) {
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	free := make(chan *chunk, 2*workers+2)
	for range cap(free) {
		free <- &chunk{done: make(chan struct{}, 1)} // data allocated on first use
	}
	jobs := make(chan *chunk, workers)
	order := make(chan *chunk, cap(free))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			tmpl := new(templates)
			var flush func([]beacon.Event)
			if opt.Concurrent {
				flush = fn
			}
			for c := range jobs {
				decodeChunk(c, source, opt.QueryOnly, tmpl, flush)
				c.done <- struct{}{}
			}
		})
	}
	var readErr error
	stop := make(chan struct{})
	go func() {
		defer close(order)
		defer close(jobs)
		line := int64(1)
		var carry []byte
		for ctx.Err() == nil {
			var c *chunk
			select {
			case c = <-free:
			case <-stop:
				return
			}
			if c.data == nil {
				size := chunkSize
				if n := br.Buffered(); n < br.Size() && len(carry) == 0 && line == 1 {
					// The whole input may already be buffered: a small
					// file needs no megabyte.
					size = max(n+1, 4096)
				}
				c.data = make([]byte, 0, size)
			}
			buf := append(c.data[:0], carry...)
			n, err := fill(br, buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			eof := err == io.EOF
			if err != nil && !eof {
				readErr = err
				free <- c
				return
			}
			end := len(buf)
			if !eof {
				end = bytes.LastIndexByte(buf, '\n') + 1
				if end == 0 { // a line longer than the chunk: grow and read on
					carry = buf
					c.data = make([]byte, 0, 2*cap(buf))
					free <- c
					continue
				}
			}
			carry = append(carry[:0], buf[end:]...)
			c.data, c.firstLine, c.read = buf[:end], line, counted.n
			line += int64(bytes.Count(c.data, []byte{'\n'}))
			order <- c
			jobs <- c
			if eof {
				return
			}
		}
	}()
	st := Stats{Shape: ShapeLines}
	for c := range order {
		<-c.done
		st.Lines += c.lines
		st.Events += c.nEvents
		st.Bad += int64(len(c.bad))
		st.Other += c.other
		if opt.OnBad != nil {
			for _, b := range c.bad {
				opt.OnBad(b)
			}
		}
		if !opt.Concurrent && len(c.events) > 0 {
			fn(c.events)
		}
		if opt.OnProgress != nil {
			opt.OnProgress(c.read)
		}
		free <- c
	}
	close(stop)
	wg.Wait()
	if readErr != nil {
		return st, fmt.Errorf("%s: %w", source, readErr)
	}
	return st, nil
}

// fill reads into p until it is full or the input ends. Unlike
// io.ReadFull, a short input is io.EOF and a truncated gzip stream stays
// io.ErrUnexpectedEOF.
func fill(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// flushBatch is how many events a worker decodes before it hands them to
// fn when the order does not matter: the batch (≈ 260 bytes an event) is
// still in the L1/L2 cache when the consumer reads it, instead of a whole
// chunk's events (≈ 550 KB) evicting the consumer's tables and being
// evicted by them.
const flushBatch = 64

// decodeChunk decodes c's lines into c.events; with flush (opt.Concurrent)
// it hands them over every flushBatch events and at the end instead, and
// c.events is left empty.
func decodeChunk(c *chunk, source string, queryOnly bool, tmpl *templates, flush func([]beacon.Event)) {
	data := c.data
	line := c.firstLine
	c.events, c.bad, c.lines, c.other, c.nEvents = c.events[:0], c.bad[:0], 0, 0, 0
	d := decoder{queryOnly: queryOnly, tmpl: tmpl}
	for len(data) > 0 {
		if flush != nil && len(c.events) >= flushBatch {
			c.nEvents += int64(len(c.events))
			flush(c.events)
			c.events = c.events[:0]
		}
		i := bytes.IndexByte(data, '\n')
		var l []byte
		if i < 0 {
			l, data = data, nil
		} else {
			l, data = data[:i], data[i+1:]
		}
		c.lines++
		var err error
		if c.events, err = d.message(l, c.events); err != nil {
			c.bad = append(c.bad, BadLine{source, line, err})
		}
		line++
	}
	c.nEvents += int64(len(c.events))
	if flush != nil && len(c.events) > 0 {
		flush(c.events)
		c.events = c.events[:0]
	}
	c.other = int64(d.other)
}

// readValues decodes JSON values that span lines — pretty-printed rows,
// records, envelopes, arrays, API responses, one after another — from the
// whole input in memory. Each bad row is reported by the line it starts
// at; after broken JSON, reading resumes at the next line that starts with
// '{' or '['.
func readValues(ctx context.Context, br *bufio.Reader, source string, opt Options, counted *countingReader, fn func([]beacon.Event)) (Stats, error) {
	st := Stats{Shape: ShapeValues}
	data, err := io.ReadAll(br)
	if err != nil {
		return st, fmt.Errorf("%s: %w", source, err)
	}
	st.Lines = int64(bytes.Count(data, []byte{'\n'}))
	if len(data) > 0 && data[len(data)-1] != '\n' {
		st.Lines++
	}
	// lineAt maps offsets, asked in increasing order, to 1-based lines.
	lastOff, lastLine := 0, int64(1)
	lineAt := func(off int) int64 {
		if off < lastOff {
			return int64(bytes.Count(data[:off], []byte{'\n'})) + 1
		}
		lastLine += int64(bytes.Count(data[lastOff:off], []byte{'\n'}))
		lastOff = off
		return lastLine
	}
	bad := func(off int, err error) {
		st.Bad++
		if opt.OnBad != nil {
			opt.OnBad(BadLine{source, lineAt(off), err})
		}
	}
	d := decoder{b: data, queryOnly: opt.QueryOnly, collect: true}
	batch := make([]beacon.Event, 0, 4096)
	for ctx.Err() == nil {
		d.ws()
		if d.i >= len(d.b) {
			break
		}
		start := d.i
		var err error
		batch, err = d.value(batch)
		for _, re := range d.errs {
			bad(re.Offset, re)
		}
		d.errs = d.errs[:0]
		if err != nil {
			var se *SyntaxError
			if errors.As(err, &se) {
				bad(start, fmt.Errorf("%w (the value starts here)", err))
			} else {
				bad(start, err)
			}
			// Resume at the next line that starts a value.
			next := len(d.b)
			for j := max(d.i, start+1); j < len(d.b); j++ {
				if d.b[j-1] == '\n' && (d.b[j] == '{' || d.b[j] == '[') {
					next = j
					break
				}
			}
			d.i, d.depth = next, 0
		}
		if len(batch) >= cap(batch)/2 {
			st.Events += int64(len(batch))
			fn(batch)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		st.Events += int64(len(batch))
		fn(batch)
	}
	st.Other = int64(d.other)
	if opt.OnProgress != nil {
		opt.OnProgress(counted.n)
	}
	return st, nil
}
