package mde

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

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
// fn returns, or a mapping of the file that is gone once Read returns:
// copy what you keep (Event.Clone). A regular, uncompressed *os.File of
// JSON lines or values of 4 MiB or more is read through a read-only
// mapping (no copy; see readMapped).
//
// A truncated gzip stream or Avro file is an error, as is a CSV file that
// lacks a column the query needs; bad lines are not (see OnBad).
func Read(ctx context.Context, r io.Reader, source string, opt Options, fn func([]beacon.Event)) (Stats, error) {
	if f, ok := r.(*os.File); ok {
		if st, ok, err := readMapped(ctx, f, source, opt, fn); ok {
			if err != nil {
				return st, err
			}
			return st, ctx.Err()
		}
	}
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
	if head, _ := br.Peek(2); isUTF16(head) {
		// UTF-16, as Windows PowerShell 5.1 writes with Out-File and >.
		br.Discard(2)
		br = bufio.NewReaderSize(&utf16Reader{r: br, big: head[0] == 0xfe}, 64<<10)
	}
	if head, _ := br.Peek(3); bytes.Equal(head, utf8BOM) {
		br.Discard(3)
	}
	if head, _ := br.Peek(64 << 10); bytes.HasPrefix(head, psTypeLine) {
		// Export-Csv's type line (Windows PowerShell 5.1 writes it unless
		// told -NoTypeInformation) before the CSV header.
		if i := bytes.IndexByte(head, '\n'); i >= 0 {
			br.Discard(i + 1)
		}
	}
	head, _ := br.Peek(64 << 10)
	if len(head) == 64<<10 && bytes.IndexByte(head, '\n') < 0 {
		// A first line longer than the buffer: an array of rows, many to
		// a line, or a response on one line. spansLines must see the line
		// end to tell them apart: the line (up to longLine) is read ahead
		// and put back before the rest, under a buffer of the usual size
		// (one of longLine would copy every chunk through it).
		var line []byte
		for len(line) < longLine {
			b, err := br.ReadSlice('\n')
			line = append(line, b...)
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil && err != io.EOF {
				return Stats{}, fmt.Errorf("%s: %w", source, err)
			}
			break
		}
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(line), br), 64<<10)
		head = line
		br.Peek(64 << 10) // buffered, as readLines expects of a big input
	}
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

// headMax is how far into the input spansLines judges values: the
// values that start in it. longLine is how much of a longer first line it
// sees (Read's buffer grows to it; a longer line is read as a line).
const (
	headMax  = 64 << 10
	longLine = 16 << 20
)

// spansLines tells whether the input, whose start is head, must be read
// value by value instead of line by line (JSON lines decode in parallel;
// values in one goroutine): a value that starts in head's first headMax
// bytes goes on past its line (pretty-printed JSON, an array of rows
// split over lines). What is not JSON, or a broken line, ends the
// judging with lines (the line reader reports it), as does a first line
// that head cuts (one long line: an API response on one line is read as
// a line).
func spansLines(head []byte) bool {
	d := decoder{b: head, inLine: true} // skip stops at a line's end
	for n := 0; ; n++ {
		for d.i < len(head) && isBlank(head[d.i]) {
			d.i++
		}
		if d.i >= len(head) || d.i >= headMax || (head[d.i] != '{' && head[d.i] != '[') {
			return false
		}
		start := d.i
		eol := bytes.IndexByte(head[start:], '\n')
		if eol < 0 {
			return false // cut by head's end, or the last line
		}
		eol += start
		if err := d.skip(); err != nil {
			if d.i < eol {
				return false // broken inside its line
			}
			// The value is not done at its line's end: it goes on, unless
			// the next line starts a value of its own (this line was cut
			// short; the first value's next line may be an array's
			// element).
			next := eol + 1
			for next < len(head) && isBlank(head[next]) {
				next++
			}
			return n == 0 || next >= len(head) || (head[next] != '{' && head[next] != '[')
		}
		// More values on the line are the line reader's too (message
		// loops over them): the next line.
		d.i = eol + 1
	}
}

// isBlank tells JSON's whitespace.
func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// isUTF16 tells whether head starts with a UTF-16 byte order mark
// (FF FE little-endian, FE FF big-endian).
func isUTF16(head []byte) bool {
	return len(head) >= 2 && (head[0] == 0xff && head[1] == 0xfe || head[0] == 0xfe && head[1] == 0xff)
}

type chunk struct {
	data    []byte
	read    int64
	lines   int64
	events  []beacon.Event
	nEvents int64 // events decoded (with opt.Concurrent, handed over in small batches)
	bad     []BadLine
	other   int64
	fault   error // the mapped file faulted while this chunk was decoded
	done    chan struct{}
}

// readLines decodes JSON lines in parallel: a reader fills reused 1 MiB
// chunks cut at line ends, workers decode them, and fn sees each chunk's
// events (in order, or at once with opt.Concurrent).
func readLines(ctx context.Context, br *bufio.Reader, source string, opt Options, counted *countingReader, fn func([]beacon.Event)) (Stats, error) {
	var carry []byte
	first := true
	produce := func(c *chunk) (bool, error) {
		for {
			if c.data == nil {
				size := chunkSize
				if n := br.Buffered(); first && n < br.Size() {
					// The whole input may already be buffered: a small
					// file needs no megabyte.
					size = max(n+1, 4096)
				}
				c.data = make([]byte, 0, size)
			}
			first = false
			buf := append(c.data[:0], carry...)
			n, err := fill(br, buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			eof := err == io.EOF
			if err != nil && !eof {
				return false, err
			}
			end := len(buf)
			if !eof {
				end = bytes.LastIndexByte(buf, '\n') + 1
				if end == 0 { // a line longer than the chunk: grow and read on
					carry = buf
					c.data = make([]byte, 0, 2*cap(buf))
					continue
				}
			}
			carry = append(carry[:0], buf[end:]...)
			c.data, c.read = buf[:end], counted.n
			return eof, nil
		}
	}
	return decodeLines(ctx, source, opt, fn, produce, nil, nil)
}

// readMappedLines is readLines over a mapped file: the chunks are slices
// of the mapping, cut at line ends, so nothing is copied.
func readMappedLines(ctx context.Context, whole []byte, skip int, source string, opt Options, fn func([]beacon.Event)) (Stats, error) {
	data, base := whole[skip:], int64(skip)
	off := 0
	produce := func(c *chunk) (bool, error) {
		end := min(off+chunkSize, len(data))
		if end < len(data) {
			if j := bytes.LastIndexByte(data[off:end], '\n'); j >= 0 {
				end = off + j + 1
			} else if j := bytes.IndexByte(data[end:], '\n'); j >= 0 {
				end += j + 1 // a line longer than a chunk
			} else {
				end = len(data)
			}
		}
		c.data, c.read = data[off:end], base+int64(end)
		off = end
		return off == len(data), nil
	}
	// Pages every chunk before has been decoded from are let go (the page
	// cache keeps them): the mapping does not count in the process's
	// resident memory beyond the chunks in flight.
	released := 0
	release := func(read int64) {
		if end := int(read) &^ (os.Getpagesize() - 1); end > released {
			releasePages(whole[released:end]) // whole is page-aligned: mmap's
			released = end
		}
	}
	return decodeLines(ctx, source, opt, fn, produce, whole, release)
}

// decodeLines runs the pipeline of readLines: produce fills a chunk (and
// says whether the input ended), workers decode chunks, and the chunks
// are counted and their bad lines reported in input order. A chunk's line
// numbers are counted by the worker that decodes it and made absolute
// here, so the reader never scans a chunk. A mapping says the chunks
// alias a mapped file: a fault reading it (the file was truncated
// meanwhile) is an error, not a crash, and release is told how far the
// input is done with after each chunk.
func decodeLines(ctx context.Context, source string, opt Options, fn func([]beacon.Event), produce func(*chunk) (eof bool, err error), mapping []byte, release func(read int64)) (Stats, error) {
	mapped := mapping != nil
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	inFlight := 2*workers + 2
	if mapped {
		// A mapped chunk is only a slice: let more be decoded while the
		// collector waits for a slow one, so no worker idles for it.
		inFlight = 8*workers + 2
	}
	free := make(chan *chunk, inFlight)
	for range cap(free) {
		free <- &chunk{done: make(chan struct{}, 1)} // data allocated on first use
	}
	jobs := make(chan *chunk, workers)
	order := make(chan *chunk, cap(free))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			if mapped {
				defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			}
			tmpl := new(templates)
			var flush func([]beacon.Event)
			if opt.Concurrent {
				flush = fn
			}
			for c := range jobs {
				c.fault = nil
				if mapped {
					c.fault = catchFault(mapping, func() { decodeChunk(c, source, opt.QueryOnly, tmpl, flush) })
				} else {
					decodeChunk(c, source, opt.QueryOnly, tmpl, flush)
				}
				c.done <- struct{}{}
			}
		})
	}
	var readErr error
	stop := make(chan struct{})
	go func() {
		defer close(order)
		defer close(jobs)
		if mapped {
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		}
		for ctx.Err() == nil {
			var c *chunk
			select {
			case c = <-free:
			case <-stop:
				return
			}
			var eof bool
			var err error
			if mapped {
				if ferr := catchFault(mapping, func() { eof, err = produce(c) }); ferr != nil {
					err = ferr
				}
			} else {
				eof, err = produce(c)
			}
			if err != nil {
				readErr = err
				free <- c
				return
			}
			order <- c
			jobs <- c
			if eof {
				return
			}
		}
	}()
	st := Stats{Shape: ShapeLines}
	line := int64(1) // the first line of the next chunk
	var fault error
	if mapped && !opt.Concurrent {
		// fn runs here and reads strings that alias the mapping: a fault
		// in it is the file's too (TestMappedFileTruncatedInCallback).
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	}
	for c := range order {
		<-c.done
		if c.fault != nil && fault == nil {
			fault = c.fault
		}
		st.Lines += c.lines
		st.Events += c.nEvents
		st.Bad += int64(len(c.bad))
		st.Other += c.other
		if opt.OnBad != nil {
			for _, b := range c.bad {
				b.Line += line - 1
				opt.OnBad(b)
			}
		}
		line += c.lines
		if !opt.Concurrent && len(c.events) > 0 && fault == nil {
			if mapped {
				fault = catchFault(mapping, func() { fn(c.events) })
			} else {
				fn(c.events)
			}
		}
		if opt.OnProgress != nil {
			opt.OnProgress(c.read)
		}
		if mapped {
			release(c.read)
		}
		free <- c
	}
	close(stop)
	wg.Wait()
	if readErr == nil {
		readErr = fault
	}
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
	line := int64(1) // within the chunk: the collector adds the lines before it
	c.events, c.bad, c.lines, c.other, c.nEvents = c.events[:0], c.bad[:0], 0, 0, 0
	d := decoder{queryOnly: queryOnly, tmpl: tmpl}
	for len(data) > 0 {
		if flush != nil && len(c.events) >= flushBatch {
			c.nEvents += int64(len(c.events))
			flush(c.events)
			c.events = c.events[:0]
		}
		if evs, n, ok := d.lineAt(data, c.events); ok {
			c.events = evs
			c.lines++
			line++
			data = data[min(n+1, len(data)):]
			continue
		} else {
			c.events = evs
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
	data, err := io.ReadAll(br)
	if err != nil {
		return Stats{Shape: ShapeValues}, fmt.Errorf("%s: %w", source, err)
	}
	return decodeValues(ctx, data, source, opt, fn, func() int64 { return counted.n }), nil
}

// decodeValues is readValues over the whole input in memory (read, or a
// mapped file); read gives the bytes read for OnProgress.
func decodeValues(ctx context.Context, data []byte, source string, opt Options, fn func([]beacon.Event), read func() int64) Stats {
	st := Stats{Shape: ShapeValues}
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
		opt.OnProgress(read())
	}
	return st
}

// mapMin is the smallest file Read maps rather than reads: below it the
// mapping costs more than the copy it saves.
const mapMin = 4 << 20

// readMapped reads a regular, uncompressed file of JSON lines or values
// from a read-only mapping of it, instead of copying it through buffers:
// the chunks of lines and the values are slices of the mapping (a file
// of values is not read into the heap whole). ok is false when f is not
// such a file (a pipe, gzip, CSV, Avro, a small file, mapping refused),
// with f untouched: Read then reads it. A fault on the mapping — the file
// was truncated while it was read — is an error naming the file.
func readMapped(ctx context.Context, f *os.File, source string, opt Options, fn func([]beacon.Event)) (st Stats, ok bool, err error) {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < mapMin || int64(int(fi.Size())) != fi.Size() {
		return st, false, nil
	}
	if pos, err := f.Seek(0, io.SeekCurrent); err != nil || pos != 0 {
		return st, false, nil
	}
	data, err := mapFile(f, fi.Size())
	if err != nil {
		return st, false, nil
	}
	defer unmapFile(data)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	skip, values := 0, false
	other := false // a shape Read reads through buffers: f is untouched
	if ferr := catchFault(data, func() {
		head := data
		if bytes.HasPrefix(head, utf8BOM) {
			skip = len(utf8BOM)
		}
		head = head[skip:min(len(head), skip+headMax+longLine)]
		switch {
		case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b, isUTF16(head),
			bytes.HasPrefix(head, []byte("Obj\x01")), bytes.HasPrefix(head, psTypeLine):
			other = true
		case spansLines(head):
			values = true
		case isCSV(head[:min(len(head), headMax)]):
			other = true
		}
	}); ferr != nil {
		return st, true, fmt.Errorf("%s: %w", source, ferr)
	}
	if other {
		return st, false, nil
	}
	if values {
		if ferr := catchFault(data, func() {
			st = decodeValues(ctx, data[skip:], source, opt, fn, func() int64 { return int64(len(data)) })
		}); ferr != nil {
			return st, true, fmt.Errorf("%s: %w", source, ferr)
		}
		return st, true, nil
	}
	st, err = readMappedLines(ctx, data, skip, source, opt, fn)
	return st, true, err
}

// catchFault runs f and turns a memory fault in it on the mapping (with
// debug.SetPanicOnFault on: a page of a mapped file that is gone) into
// an error; any other panic, a fault elsewhere included, goes on.
func catchFault(mapping []byte, f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if fault, isFault := r.(interface{ Addr() uintptr }); isFault && len(mapping) > 0 {
				lo := uintptr(unsafe.Pointer(unsafe.SliceData(mapping)))
				if a := fault.Addr(); a >= lo && a-lo < uintptr(len(mapping)) {
					err = errFileChanged
					return
				}
			}
			panic(r)
		}
	}()
	f()
	return nil
}

var errFileChanged = errors.New("the file changed (was truncated?) while it was read")

// psTypeLine starts the line Windows PowerShell 5.1's Export-Csv writes
// before the header unless told -NoTypeInformation.
var psTypeLine = []byte("#TYPE ")

// utf16Reader reads UTF-16 text (after its byte order mark) as UTF-8:
// big is big-endian. An unpaired surrogate, or a cut last unit, becomes
// U+FFFD, as unicode/utf16 decodes it.
type utf16Reader struct {
	r   io.Reader
	big bool
	in  []byte // read; in[:n] not yet decoded (an odd byte, a high surrogate)
	n   int
	out []byte // decoded; out[off:] not yet returned
	off int
	err error
}

func (u *utf16Reader) Read(p []byte) (int, error) {
	for u.off == len(u.out) {
		if u.err != nil {
			if u.n == 0 || u.err != io.EOF {
				return 0, u.err
			}
			u.out, u.off, u.n = utf8.AppendRune(u.out[:0], utf8.RuneError), 0, 0
			break
		}
		if u.in == nil {
			u.in = make([]byte, 32<<10)
		}
		m, err := u.r.Read(u.in[u.n:])
		u.n += m
		u.err = err
		var used int
		u.out, used = u.decode(u.out[:0], u.in[:u.n], err != nil)
		u.off, u.n = 0, copy(u.in, u.in[used:u.n])
	}
	k := copy(p, u.out[u.off:])
	u.off += k
	return k, nil
}

// decode appends the UTF-8 of b's code units to out and says how many
// bytes it used: all but an odd last byte, or a high surrogate whose pair
// is still to come (unless last: then it is U+FFFD).
func (u *utf16Reader) decode(out, b []byte, last bool) (_ []byte, used int) {
	unit := func(i int) rune {
		if u.big {
			return rune(b[i])<<8 | rune(b[i+1])
		}
		return rune(b[i+1])<<8 | rune(b[i])
	}
	i := 0
	for ; i+1 < len(b); i += 2 {
		r := unit(i)
		if utf16.IsSurrogate(r) {
			switch {
			case r >= 0xdc00: // a low one alone
			case i+3 < len(b):
				if r2 := unit(i + 2); r2 >= 0xdc00 && r2 < 0xe000 {
					out = utf8.AppendRune(out, utf16.DecodeRune(r, r2))
					i += 2
					continue
				}
			case !last:
				return out, i // its pair is in the next read
			}
			r = utf8.RuneError
		}
		out = utf8.AppendRune(out, r)
	}
	return out, i
}
