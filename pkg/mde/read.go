package beacon

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
)

// BadLine is an input line that did not decode. The run goes on without it.
type BadLine struct {
	Source string // file name, "-" for stdin
	Line   int64  // 1-based
	Err    error
}

func (b BadLine) Error() string { return fmt.Sprintf("%s:%d: %v", b.Source, b.Line, b.Err) }

// ReadOptions tune ReadEvents.
type ReadOptions struct {
	// Workers decode JSON lines in parallel; 0 means GOMAXPROCS.
	Workers int
	// OnBad is called, in input order, for each line that does not decode.
	OnBad func(BadLine)
	// OnProgress is called after each chunk with the bytes read so far
	// (compressed bytes for gzip input).
	OnProgress func(read int64)
}

// ReadStats count what ReadEvents read.
type ReadStats struct {
	Lines, Events, Bad int64
}

const chunkSize = 1 << 20

// ReadEvents decodes events from r — JSON lines (flat objects or Streaming
// API envelopes, told apart per line) or an Advanced Hunting CSV export
// with a header row, gzip-compressed or not (told by the first bytes) —
// and calls fn with batches of events in input order. The events' strings
// alias buffers that are not reused, so fn may keep them, but copying is
// cheaper for the garbage collector when most are dropped.
func ReadEvents(ctx context.Context, r io.Reader, source string, opt ReadOptions, fn func([]Event)) (ReadStats, error) {
	counted := &countingReader{r: r}
	br := bufio.NewReaderSize(counted, 64<<10)
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return ReadStats{}, fmt.Errorf("%s: %w", source, err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 64<<10)
	}
	if isCSV(br) {
		return readCSV(ctx, br, source, opt, counted, fn)
	}
	return readJSON(ctx, br, source, opt, counted, fn)
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

// isCSV tells an Advanced Hunting CSV export from JSON lines by its first
// line: a header naming Timestamp that is not a JSON object. Anything else
// is read as JSON lines, so that a garbled first line is reported as a bad
// line rather than failing the file.
func isCSV(br *bufio.Reader) bool {
	head, _ := br.Peek(64 << 10)
	head = bytes.TrimPrefix(head, []byte("\xef\xbb\xbf"))
	if i := bytes.IndexByte(head, '\n'); i >= 0 {
		head = head[:i]
	}
	head = bytes.TrimSpace(head)
	return len(head) > 0 && head[0] != '{' && bytes.Contains(head, []byte("Timestamp"))
}

type chunk struct {
	data      []byte
	firstLine int64
	read      int64
	events    []Event
	bad       []BadLine
	lines     int64
	done      chan struct{}
}

func readJSON(ctx context.Context, br *bufio.Reader, source string, opt ReadOptions, counted *countingReader, fn func([]Event)) (ReadStats, error) {
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	jobs := make(chan *chunk)
	order := make(chan *chunk, workers*2)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c := range jobs {
				decodeChunk(c, source)
				close(c.done)
			}
		})
	}
	var readErr error
	go func() {
		defer close(order)
		defer close(jobs)
		line := int64(1)
		var carry []byte
		for ctx.Err() == nil {
			buf := make([]byte, len(carry), len(carry)+chunkSize)
			copy(buf, carry)
			n, err := io.ReadFull(br, buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			eof := err == io.EOF || err == io.ErrUnexpectedEOF
			if err != nil && !eof {
				readErr = err
				return
			}
			end := len(buf)
			if !eof {
				end = bytes.LastIndexByte(buf, '\n') + 1
				if end == 0 { // a line longer than the chunk: read on
					carry = buf
					continue
				}
			}
			carry = append([]byte(nil), buf[end:]...)
			c := &chunk{data: buf[:end], firstLine: line, read: counted.n, done: make(chan struct{})}
			line += int64(bytes.Count(c.data, []byte{'\n'}))
			order <- c
			jobs <- c
			if eof {
				return
			}
		}
	}()
	var st ReadStats
	for c := range order {
		<-c.done
		st.Lines += c.lines
		st.Events += int64(len(c.events))
		st.Bad += int64(len(c.bad))
		if opt.OnBad != nil {
			for _, b := range c.bad {
				opt.OnBad(b)
			}
		}
		if len(c.events) > 0 {
			fn(c.events)
		}
		if opt.OnProgress != nil {
			opt.OnProgress(c.read)
		}
	}
	wg.Wait()
	if readErr != nil {
		return st, fmt.Errorf("%s: %w", source, readErr)
	}
	return st, ctx.Err()
}

func decodeChunk(c *chunk, source string) {
	data := c.data
	line := c.firstLine
	c.events = make([]Event, 0, len(data)/300)
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		var l []byte
		if i < 0 {
			l, data = data, nil
		} else {
			l, data = data[:i], data[i+1:]
		}
		c.lines++
		if _, err := DecodeJSON(l, func(e *Event) { c.events = append(c.events, *e) }); err != nil {
			c.bad = append(c.bad, BadLine{source, line, err})
		}
		line++
	}
}

// errCSVHeader explains a CSV file without the columns the query needs.
var errCSVHeader = errors.New("CSV header lacks Timestamp (want an Advanced Hunting export of DeviceNetworkEvents)")

func readCSV(ctx context.Context, br *bufio.Reader, source string, opt ReadOptions, counted *countingReader, fn func([]Event)) (ReadStats, error) {
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	var st ReadStats
	header, err := cr.Read()
	if err != nil {
		return st, fmt.Errorf("%s: reading CSV header: %w", source, err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.TrimPrefix(strings.TrimSpace(h), "\ufeff")
		col[h] = i
	}
	if _, ok := col["Timestamp"]; !ok {
		return st, fmt.Errorf("%s:1: %w", source, errCSVHeader)
	}
	st.Lines = 1
	batch := make([]Event, 0, 4096)
	flush := func() {
		if len(batch) > 0 {
			fn(batch)
			batch = make([]Event, 0, 4096)
		}
		if opt.OnProgress != nil {
			opt.OnProgress(counted.n)
		}
	}
	for ctx.Err() == nil {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		st.Lines++
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return st, fmt.Errorf("%s: %w", source, err)
			}
			st.Bad++
			if opt.OnBad != nil {
				opt.OnBad(BadLine{source, int64(pe.StartLine), pe.Err})
			}
			continue
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != len(header) {
			st.Bad++
			if opt.OnBad != nil {
				opt.OnBad(BadLine{source, int64(line), fmt.Errorf("%d fields, header has %d", len(rec), len(header))})
			}
			continue
		}
		ev, err := csvEvent(rec, col)
		if err != nil {
			st.Bad++
			if opt.OnBad != nil {
				opt.OnBad(BadLine{source, int64(line), err})
			}
			continue
		}
		st.Events++
		batch = append(batch, ev)
		if len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	return st, ctx.Err()
}

func csvEvent(rec []string, col map[string]int) (Event, error) {
	get := func(name string) string {
		if i, ok := col[name]; ok {
			return strings.Clone(rec[i]) // rec is reused
		}
		return ""
	}
	var ev Event
	ts := get("Timestamp")
	if ts == "" {
		return ev, errors.New("no Timestamp")
	}
	t, err := ParseTime([]byte(ts))
	if err != nil {
		return ev, fmt.Errorf("Timestamp %q: %w", ts, err)
	}
	ev.Timestamp = t
	if p := strings.TrimSpace(get("RemotePort")); p != "" {
		if ev.RemotePort, err = parsePort([]byte(p)); err != nil {
			return ev, err
		}
		ev.HasPort = true
	}
	ev.DeviceId = get("DeviceId")
	ev.DeviceName = get("DeviceName")
	ev.ActionType = get("ActionType")
	ev.RemoteIP = get("RemoteIP")
	ev.RemoteIPType = get("RemoteIPType")
	ev.RemoteUrl = get("RemoteUrl")
	ev.AccountName = get("InitiatingProcessAccountName")
	ev.AccountDomain = get("InitiatingProcessAccountDomain")
	ev.FileName = get("InitiatingProcessFileName")
	return ev, nil
}
