package mde

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Decode decodes one message — a Kafka record value, an Event Hubs Capture
// Body, a line of a file — in any JSON shape of the package doc, and calls
// emit once per DeviceNetworkEvents row, in order. It returns the number of
// events. Blank input, null and [] yield none and no error.
//
// A row whose values are wrong (a bad Timestamp, no Timestamp) is left out;
// in a container (envelope, array, API response) the others are kept and
// the first such error is returned after them, naming the row. Broken JSON
// ends the message at once.
//
// The strings of an emitted Event may alias value: copy them (Event.Clone)
// to keep them after value is reused; the Event itself is reused after
// emit returns.
func Decode(value []byte, emit func(*beacon.Event)) (int, error) {
	buf := eventBufs.Get().(*decodeBuf)
	d := decoder{tmpl: &buf.tmpl}
	evs, err := d.message(value, buf.evs[:0])
	for i := range evs {
		emit(&evs[i])
	}
	buf.evs = evs
	eventBufs.Put(buf)
	return len(evs), err
}

// decodeBuf is what Decode reuses: its event slice (a record decodes
// without allocating; emit must not keep the *Event it is given) and the
// key templates of the records it decoded.
type decodeBuf struct {
	evs  []beacon.Event
	tmpl templates
}

var eventBufs = sync.Pool{New: func() any { return new(decodeBuf) }}

// AppendEvents is Decode appending to dst instead of calling back: what a
// hot loop uses, since nothing escapes to the heap per event. queryOnly
// leaves out the optional columns the query does not read (SHA256, SHA1,
// FolderPath, CommandLine, ProcessId, ReportId), which saves unescaping
// paths and command lines.
//
// It reads each record along the key templates of the records decoded
// before it (as Decode does): ingest decodes records one at a time, and
// without them every key of every record was found by the object's loop.
// The last date parsed goes with them, so that a record's timestamp is
// read as its time of day when its date is the last record's.
func AppendEvents(dst []beacon.Event, value []byte, queryOnly bool) ([]beacon.Event, error) {
	st := appendPool.Get().(*appendState)
	d := decoder{queryOnly: queryOnly, tmpl: &st.tmpl, dateW: st.dateW, dateH: st.dateH, dateOK: st.dateOK, midnight: st.midnight}
	dst, err := d.message(value, dst)
	st.dateW, st.dateH, st.dateOK, st.midnight = d.dateW, d.dateH, d.dateOK, d.midnight
	appendPool.Put(st)
	return dst, err
}

// appendState is what AppendEvents keeps between records: the key
// templates and the last date (see decoder).
type appendState struct {
	tmpl     templates
	dateW    uint64
	dateH    uint16
	dateOK   bool
	midnight beacon.Time
}

var appendPool = sync.Pool{New: func() any { return new(appendState) }}

// SyntaxError is broken JSON, at a byte offset of the message.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("byte %d: %s", e.Offset, e.Msg) }

// RowError is a row that was left out because of its values; the rest of
// the message decoded. Offset is where the row starts in the message.
type RowError struct {
	Offset int
	Path   string // e.g. records[3], or "" for a message that is one row
	Err    error
}

func (e *RowError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *RowError) Unwrap() error { return e.Err }

var utf8BOM = []byte("\xef\xbb\xbf")

// decoder reads JSON by hand: keys are matched without allocating, values
// the query does not read are skipped without unescaping, and strings
// without escapes alias the input.
type decoder struct {
	b         []byte
	i         int
	depth     int // nesting, bounded so hostile input cannot exhaust the stack
	queryOnly bool
	rowErr    *RowError // first row error of the message
	collect   bool      // keep every row error in errs, not only the first
	errs      []*RowError
	other     int             // records of other tables, left out
	path      []pathSeg       // where the decoder is, for errors
	last      [numCols]string // each column's last plain string value (see plain)
	// The keys of the last objects seen at each depth (see keyAt), kept
	// across messages.
	tmpl *templates
	// inLine says that b goes on past the line being decoded (see
	// lineAt): a newline ends the input for ws and skipString.
	inLine bool
	// The last date timestamp parsed: its ten bytes and its midnight.
	dateW    uint64
	dateH    uint16
	dateOK   bool
	midnight beacon.Time
}

const maxDepth = 64

// message decodes all the JSON values of b (one, usually; concatenated
// values are read one after another).
func (d *decoder) message(b []byte, dst []beacon.Event) ([]beacon.Event, error) {
	d.b, d.i, d.rowErr, d.path, d.depth = bytes.TrimPrefix(b, utf8BOM), 0, nil, d.path[:0], 0
	for {
		d.ws()
		if d.i == len(d.b) {
			break
		}
		var err error
		if dst, err = d.value(dst); err != nil {
			return dst, err
		}
	}
	if d.rowErr != nil {
		return dst, d.rowErr
	}
	return dst, nil
}

// lineAt decodes the line that starts data — a line of JSON lines whose
// end has not been looked for — when it is one object and decodes
// without an error: it returns the events appended and the length of the
// line, its newline excluded. Otherwise ok is false, dst and d are as
// before (but for what only speeds decoding up: templates, dates), and
// the caller decodes the line with message. The decoder reads the object
// from data with inLine set, so nothing it consumes is past a newline
// (JSON strings hold none; whitespace does, and inLine stops ws there):
// what it reads is what message would read from the line alone, without
// a pass to find the line's end first.
func (d *decoder) lineAt(data []byte, dst []beacon.Event) (_ []beacon.Event, n int, ok bool) {
	if len(data) == 0 || data[0] != '{' {
		return dst, 0, false
	}
	mark, other := len(dst), d.other
	d.b, d.i, d.rowErr, d.path, d.depth = data, 0, nil, d.path[:0], 0
	d.inLine = true
	out, err := d.object(dst)
	d.inLine = false
	if err == nil && d.rowErr == nil {
		j := d.i
		for j < len(data) && (data[j] == ' ' || data[j] == '\t' || data[j] == '\r') {
			j++
		}
		if j == len(data) || data[j] == '\n' {
			return out, j, true
		}
	}
	d.other = other
	return out[:mark], 0, false
}

// value decodes one top-level value: an object (row, record, envelope or
// API response), an array of them, or null.
func (d *decoder) value(dst []beacon.Event) ([]beacon.Event, error) {
	switch d.b[d.i] {
	case '{':
		return d.object(dst)
	case '[':
		return d.rows(dst)
	case 'n':
		return dst, d.lit("null")
	}
	return dst, d.errf("want a JSON object or array")
}

// rows decodes an array of objects: rows, records or envelopes.
func (d *decoder) rows(dst []beacon.Event) ([]beacon.Event, error) {
	if d.depth++; d.depth > maxDepth {
		return dst, d.errf("nested deeper than %d", maxDepth)
	}
	defer func() { d.depth-- }()
	d.i++ // '['
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == ']' {
		d.i++
		return dst, nil
	}
	for idx := 0; ; idx++ {
		d.ws()
		if d.i >= len(d.b) || d.b[d.i] != '{' {
			if d.i < len(d.b) && d.b[d.i] == 'n' { // a null element: nothing
				if err := d.lit("null"); err != nil {
					return dst, err
				}
			} else {
				return dst, d.errf("%s[%d]: want an object", d.pathString(), idx)
			}
		} else {
			var err error
			d.path = append(d.path, pathSeg{idx: idx})
			dst, err = d.object(dst)
			d.path = d.path[:len(d.path)-1]
			if err != nil {
				return dst, err
			}
		}
		d.ws()
		if d.i >= len(d.b) {
			return dst, d.errf("unterminated array")
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			return dst, nil
		default:
			return dst, d.errf("want ',' or ']'")
		}
	}
}

// row is what an object told about itself besides its columns.
type row struct {
	timestamp bool
	container bool // it held records or results: not a row itself
	category  []byte
	// catNet says category is known to be DeviceNetworkEvents's: it was
	// its template key's last value, checked when it was kept (see
	// network). Whatever sets category sets it.
	catNet  bool
	addl    []byte // AdditionalFields: the raw string body or object
	addlStr bool
	escaped bool // addl is a string body with escapes
	err     error
}

// object decodes one object: a flat row, a Streaming API record (its row
// in properties), an envelope ({"records":[…]}) or an Advanced Hunting or
// Graph response ({"Results":[…]} / {"results":[…]}; the schema is not
// needed since rows are keyed by column name).
func (d *decoder) object(dst []beacon.Event) ([]beacon.Event, error) {
	if d.depth++; d.depth > maxDepth {
		return dst, d.errf("nested deeper than %d", maxDepth)
	}
	defer func() { d.depth-- }()
	start := d.i
	var ev beacon.Event
	var r row
	d.i++ // '{'
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == '}' {
		d.i++
		d.rowDone(&ev, &r, start)
		return dst, nil
	}
	k0, end, err := d.fastKeys(&ev, &r, true)
	if err != nil {
		return dst, err
	}
	if end {
		d.rowDone(&ev, &r, start)
		if r.err == nil && r.network() {
			dst = append(dst, ev)
		}
		return dst, nil
	}
	for k := k0; ; k++ {
		d.ws()
		c, err := d.keyAt(k)
		if err != nil {
			return dst, err
		}
		if off := stringCols[c]; off != 0 && !(d.queryOnly && optionalCol[c]) {
			// A plain string column, the most common case, without a call
			// to column.
			if v, ok := d.plain(c); ok {
				*(*string)(unsafe.Add(unsafe.Pointer(&ev), off)) = bytesString(v)
			} else {
				err = d.column(c, &ev, &r)
			}
		} else if c <= colAdditionalFields || c >= colTime {
			// Another column, or a key that is skipped.
			err = d.column(c, &ev, &r)
		} else {
			err = d.container(c, &ev, &r, &dst)
		}
		if err != nil {
			return dst, err
		}
		d.ws()
		if d.i >= len(d.b) {
			return dst, d.errf("unterminated object")
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			if r.container {
				return dst, nil
			}
			d.rowDone(&ev, &r, start)
			if r.err == nil && r.network() {
				dst = append(dst, ev)
			}
			return dst, nil
		default:
			return dst, d.errf("want ',' or '}'")
		}
	}
}

// fastKeys reads the keys of the object whose first key is at d.i, in
// the order of the template of its depth (see templates), as long as the
// JSON is compact (no space around ':' and ',') and each value is of the
// common kind for its key: a plain string, a Defender timestamp, a port of
// a few digits, a skipped string, integer or null. It stops at the first
// key that is not so and returns that key's index, with d.i back at the
// key's quote, for the object's own loop to go on from; end says it read
// the whole object, its closing brace included. What it stores is what
// the object's loop (top: object; else columns, which skips the
// container keys) would store for the same key and value: it is that
// loop with the dispatch, the whitespace and the error paths left out.
func (d *decoder) fastKeys(ev *beacon.Event, r *row, top bool) (k int, end bool, err error) {
	t := d.tmpl
	if t == nil || d.depth >= len(t) {
		return 0, false, nil
	}
	ks := t[d.depth]
	n := len(d.b)
	if n == 0 {
		return 0, false, nil
	}
	// Every read of d.b below is at an index checked against n: the loads
	// are unchecked (the compiler cannot see that) and the position is a
	// local, written back to d.i only where the loop stops.
	base := unsafe.Pointer(unsafe.SliceData(d.b))
	at := func(i int) byte { return *(*byte)(unsafe.Add(base, i)) }
	q := 0
	if d.queryOnly {
		q = 1
	}
	i := d.i
	for k = 0; k < len(ks); k++ {
		e := &ks[k]
		key := i
		kn := len(e.raw)
		if key+kn >= n {
			break // the key and at least one byte of its value
		}
		p := unsafe.Add(base, key)
		switch {
		case e.nw == 0:
			// A key of fewer than eight bytes ("time":): one masked word
			// when eight bytes are there.
			if kn < 8 {
				if key+8 > n || load64(p, 0)&e.mask != e.w[0] {
					d.i = key
					return k, false, nil
				}
			} else if unsafe.String((*byte)(p), kn) != e.raw { // longer than e.w holds
				d.i = key
				return k, false, nil
			}
		case e.nw <= 2:
			if load64(p, 0) != e.w[0] || load64(p, uintptr(kn-8)) != e.w[e.nw-1] {
				d.i = key
				return k, false, nil
			}
		default:
			if load64(p, 0) != e.w[0] || load64(p, uintptr(kn-8)) != e.w[e.nw-1] {
				d.i = key
				return k, false, nil
			}
			for w := 1; w < e.nw-1; w++ {
				if load64(p, uintptr(8*w)) != e.w[w] {
					d.i = key
					return k, false, nil
				}
			}
		}
		i = key + kn // at the value: i < n
		c := at(i)
		ok := false
		switch e.act[q] {
		case actString:
			if c == '"' {
				if j := quoteEnd(base, i+1, n); j < n && at(j) == '"' {
					*(*string)(unsafe.Add(unsafe.Pointer(ev), e.off)) = unsafe.String((*byte)(unsafe.Add(base, i+1)), j-i-1)
					i, ok = j+1, true
				}
			} else if c == 'n' && i+4 <= n && load32(base, i) == word4null { // null is "" (see stringValue)
				*(*string)(unsafe.Add(unsafe.Pointer(ev), e.off)) = ""
				i, ok = i+4, true
			}
		case actTimestamp:
			if c == '"' {
				if j := quoteEnd(base, i+1, n); j < n && at(j) == '"' && j > i+1 {
					if ts, err := d.timestamp(unsafe.Slice((*byte)(unsafe.Add(base, i+1)), j-i-1)); err == nil {
						ev.Timestamp, r.timestamp, i, ok = ts, true, j+1, true
					}
				}
			}
		case actPort:
			if c-'0' <= 9 {
				var v int32
				j := i
				for j < n && j-i <= 9 {
					x := at(j) - '0'
					if x > 9 {
						break
					}
					v = v*10 + int32(x)
					j++
				}
				if j-i <= 9 && j < n {
					if x := at(j); x != '.' && x != 'e' && x != 'E' && x-'0' > 9 {
						i, ok = j, true
						ev.RemotePort, ev.HasPort = v, true
					}
				}
			} else if c == 'n' && i+4 <= n && load32(base, i) == word4null {
				i, ok = i+4, true
				ev.RemotePort, ev.HasPort = 0, false
			}
		case actTenant, actCategory:
			if !top {
				i, ok = skipFastAt(base, i, n)
				break
			}
			if c == '"' {
				// A record's tenantId and category repeat from record to
				// record: the last value (a copy, scanned when it was
				// new, so it holds no quote, escape or control byte) and
				// a closing quote after it is the value, one compare
				// instead of a scan.
				j := i + 1 + len(e.last)
				net := e.lastNet // the value is e.last's
				if e.last == "" || j >= n || at(j) != '"' || !eqAt(unsafe.Add(base, i+1), e.last) {
					if j = quoteEnd(base, i+1, n); j >= n || at(j) != '"' {
						break
					}
					net = false
					if j-i-1 <= maxLast {
						e.last = string(unsafe.Slice((*byte)(unsafe.Add(base, i+1)), j-i-1))
						e.lastNet = isNetworkCategory(unsafe.Slice(unsafe.StringData(e.last), len(e.last)))
						net = e.lastNet
					}
				}
				if e.c == colTenantId {
					ev.TenantId = unsafe.String((*byte)(unsafe.Add(base, i+1)), j-i-1)
				} else {
					r.category, r.catNet = unsafe.Slice((*byte)(unsafe.Add(base, i+1)), j-i-1), net
				}
				i, ok = j+1, true
			}
		case actContainer:
			if !top {
				i, ok = skipFastAt(base, i, n)
			} else if e.c == colProperties && c == '{' {
				// A record's row: what container does, its errors the
				// object's (nothing of the record is left to redo).
				d.i = i
				if err := d.columns(ev, r); err != nil {
					return k, false, err
				}
				i, ok = d.i, true
			}
		case actSkip:
			// skipFastAt, its strings and integers inline: one call (the
			// scan) or none instead of two.
			if c == '"' {
				if j := quoteEnd(base, i+1, n); j < n && at(j) == '"' {
					i, ok = j+1, true
				}
			} else if c-'0' <= 9 {
				j := i + 1
				for j < n && at(j)-'0' <= 9 {
					j++
				}
				if j < n {
					if x := at(j); x != '.' && x != 'e' && x != 'E' {
						i, ok = j, true
					}
				}
			} else {
				i, ok = skipFastAt(base, i, n)
			}
		}
		if !ok || i >= n {
			d.i = key
			return k, false, nil
		}
		switch at(i) {
		case ',':
			i++
		case '}':
			d.i = i + 1
			return k + 1, true, nil
		default:
			d.i = key
			return k, false, nil
		}
	}
	d.i = i
	return k, false, nil
}

// eqAt tells whether the len(s) bytes at p are s, eight bytes a compare
// (the last word overlapping): what memequal does for a tenantId or a
// category, without its call.
func eqAt(p unsafe.Pointer, s string) bool {
	n := len(s)
	if n < 8 {
		return unsafe.String((*byte)(p), n) == s
	}
	q := unsafe.Pointer(unsafe.StringData(s))
	for o := uintptr(0); o+8 < uintptr(n); o += 8 {
		if load64(p, o) != load64(q, o) {
			return false
		}
	}
	return load64(p, uintptr(n-8)) == load64(q, uintptr(n-8))
}

// word4null is "null" as a little-endian 32-bit word.
const word4null = 'n' | 'u'<<8 | 'l'<<16 | 'l'<<24

// load32 reads the four bytes at p+i as a little-endian word.
func load32(p unsafe.Pointer, i int) uint32 {
	return binary.LittleEndian.Uint32(unsafe.Slice((*byte)(unsafe.Add(p, i)), 4))
}

// quoteEndGo is quoteEnd in Go, eight bytes at a time (scanPlain's SWAR):
// quoteEnd where there is no assembly, and the reference of its test.
func quoteEndGo(p unsafe.Pointer, j, n int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for ; j+8 <= n; j += 8 {
		x := *(*uint64)(unsafe.Add(p, j))
		t := ((x - lo*0x20) | ((x ^ lo*'"') - lo) | ((x ^ lo*'\\') - lo)) &^ x & hi
		if t != 0 {
			return j + bits.TrailingZeros64(t)/8
		}
	}
	for j < n && !special[*(*byte)(unsafe.Add(p, j))] {
		j++
	}
	return j
}

// skipFastAt is skipFast over the n bytes at p from i: the index after a
// plain string, a non-negative integer or null at i, and whether there
// was one.
func skipFastAt(p unsafe.Pointer, i, n int) (int, bool) {
	if i >= n {
		return i, false
	}
	switch c := *(*byte)(unsafe.Add(p, i)); {
	case c == '"':
		if j := quoteEnd(p, i+1, n); j < n && *(*byte)(unsafe.Add(p, j)) == '"' {
			return j + 1, true
		}
	case c-'0' <= 9:
		j := i + 1
		for j < n && *(*byte)(unsafe.Add(p, j))-'0' <= 9 {
			j++
		}
		if j < n {
			if x := *(*byte)(unsafe.Add(p, j)); x != '.' && x != 'e' && x != 'E' {
				return j, true
			}
		}
	case c == 'n':
		if i+4 <= n && load32(p, i) == word4null {
			return i + 4, true
		}
	}
	return i, false
}

// null consumes a null and tells whether there was one.
func (d *decoder) null() bool {
	if b, i := d.b, d.i; len(b)-i >= 4 && string(b[i:i+4]) == "null" {
		d.i = i + 4
		return true
	}
	return false
}

// skipFast skips the common values of skipped keys — a plain string, a
// non-negative integer, null — and tells whether it did.
func (d *decoder) skipFast() bool {
	b, i := d.b, d.i
	if i >= len(b) {
		return false
	}
	switch c := b[i]; {
	case c == '"':
		if j := scanPlain(b, i+1); j < len(b) && b[j] == '"' {
			d.i = j + 1
			return true
		}
	case c-'0' <= 9:
		if j := digitsEnd(b, i); j < len(b) && b[j] != '.' && b[j] != 'e' && b[j] != 'E' {
			d.i = j
			return true
		}
	case c == 'n':
		return d.null()
	}
	return false
}

// container reads the value of a key of an object that is not a column:
// records or results (rows of a container, appended to *dst), properties
// (a record's row), body (a wrapped message's events, appended to *dst),
// tenantId, category or Type.
func (d *decoder) container(c col, ev *beacon.Event, r *row, dst *[]beacon.Event) error {
	var err error
	switch c {
	case colRecords, colResultsUpper, colResults:
		if d.i < len(d.b) && d.b[d.i] == '[' {
			r.container = true
			d.path = append(d.path, pathSeg{key: colNames[c], idx: -1})
			*dst, err = d.rows(*dst)
			d.path = d.path[:len(d.path)-1]
			return err
		}
		return d.skip()
	case colProperties:
		if d.i < len(d.b) && d.b[d.i] == '{' {
			return d.columns(ev, r)
		}
		return d.skip()
	case colBody:
		// Splunk's add-on for Microsoft Cloud Services keeps an Event Hubs
		// message as {"body": message, "x-opt-…": …}: the message is a
		// record or an envelope.
		// A row whose Timestamp came first keeps body as an unknown key.
		if d.i < len(d.b) && d.b[d.i] == '{' && !r.timestamp {
			r.container = true
			d.path = append(d.path, pathSeg{key: colNames[c], idx: -1})
			*dst, err = d.object(*dst)
			d.path = d.path[:len(d.path)-1]
			return err
		}
		return d.skip()
	case colTenantId:
		if v, ok := d.plain(c); ok {
			ev.TenantId = bytesString(v)
			return nil
		}
		v, err := d.stringValue()
		if err != nil {
			return err
		}
		ev.TenantId = v
		return nil
	case colCategory, colType:
		r.catNet = false
		if v, ok := d.plain(c); ok {
			r.category = v
			return nil
		}
		v, _, err := d.scalar()
		if err != nil {
			return err
		}
		r.category = v
		return nil
	}
	return d.column(c, ev, r)
}

// pathSeg is one step into a message: a container key or an index.
type pathSeg struct {
	key string // records, Results, results or body; "" for an index
	idx int
}

// pathString renders the path, e.g. records[3]; only errors need it.
func (d *decoder) pathString() string {
	var b []byte
	for _, p := range d.path {
		if p.key != "" {
			if len(b) > 0 {
				b = append(b, '.')
			}
			b = append(b, p.key...)
		} else {
			b = append(b, '[')
			b = strconv.AppendInt(b, int64(p.idx), 10)
			b = append(b, ']')
		}
	}
	return string(b)
}

// isNetworkCategory tells whether a record's category (Streaming API) or
// Type (a union export) is DeviceNetworkEvents. Records of other tables
// share Event Hubs and exports; they are not errors.
func isNetworkCategory(c []byte) bool {
	return len(c) == 0 || string(c) == "AdvancedHunting-DeviceNetworkEvents" || string(c) == "DeviceNetworkEvents"
}

// network tells whether the row is of DeviceNetworkEvents by its
// category or Type (isNetworkCategory), without comparing the value again
// when fastKeys found it to be its template key's last one.
func (r *row) network() bool { return r.catNet || isNetworkCategory(r.category) }

// rowDone checks a finished row: it notes the row's error (a row error
// leaves the row out, the rest of the message goes on) and counts records
// of other tables.
func (d *decoder) rowDone(ev *beacon.Event, r *row, start int) {
	if r.category != nil && !r.network() {
		d.other++
		return
	}
	if r.err == nil && !r.timestamp {
		r.err = errors.New("no Timestamp")
	}
	if r.err == nil && r.addl != nil && hasSuffix(ev.ActionType, "AggregatedReport") {
		n, err := aggregatedCount(r)
		if err != nil {
			r.err = err
		}
		ev.AggregatedCount = n
	}
	if r.err != nil {
		re := &RowError{Offset: start, Path: d.pathString(), Err: r.err}
		if d.collect {
			d.errs = append(d.errs, re)
		} else if d.rowErr == nil {
			d.rowErr = re
		}
	}
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}

// aggregatedCount reads uniqueEventsAggregated from AdditionalFields,
// which is a JSON-encoded string or an object.
func aggregatedCount(r *row) (int64, error) {
	body := r.addl
	if r.addlStr {
		if r.escaped {
			u := decoder{b: append(append([]byte{'"'}, body...), '"')}
			s, err := u.str()
			if err != nil {
				return 0, fmt.Errorf("AdditionalFields: %w", err)
			}
			body = s
		}
		if len(bytes.TrimSpace(body)) == 0 {
			return 0, nil
		}
	}
	sub := decoder{b: body}
	sub.ws()
	if sub.i >= len(sub.b) || sub.b[sub.i] != '{' {
		return 0, errors.New("AdditionalFields: want a JSON object")
	}
	var n int64
	sub.i++
	sub.ws()
	if sub.i < len(sub.b) && sub.b[sub.i] == '}' {
		return 0, nil
	}
	for {
		sub.ws()
		key, err := sub.key()
		if err != nil {
			return 0, fmt.Errorf("AdditionalFields: %w", err)
		}
		if string(key) == "uniqueEventsAggregated" {
			v, null, err := sub.scalar()
			if err != nil {
				return 0, fmt.Errorf("AdditionalFields: %w", err)
			}
			if !null && len(v) > 0 {
				if n, err = parseInt(v); err != nil || n < 0 {
					return 0, fmt.Errorf("AdditionalFields.uniqueEventsAggregated %q is not a count", v)
				}
			}
		} else if err := sub.skip(); err != nil {
			return 0, fmt.Errorf("AdditionalFields: %w", err)
		}
		sub.ws()
		if sub.i >= len(sub.b) {
			return 0, errors.New("AdditionalFields: unterminated object")
		}
		switch sub.b[sub.i] {
		case ',':
			sub.i++
		case '}':
			return n, nil
		default:
			return 0, errors.New("AdditionalFields: want ',' or '}'")
		}
	}
}

// columns reads a properties object into ev.
func (d *decoder) columns(ev *beacon.Event, r *row) error {
	if d.depth++; d.depth > maxDepth {
		return d.errf("nested deeper than %d", maxDepth)
	}
	defer func() { d.depth-- }()
	d.i++ // '{'
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == '}' {
		d.i++
		return nil
	}
	k0, end, err := d.fastKeys(ev, r, false)
	if err != nil {
		return err
	}
	if end {
		return nil
	}
	for k := k0; ; k++ {
		d.ws()
		c, err := d.keyAt(k)
		if err != nil {
			return err
		}
		if err := d.column(c, ev, r); err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.b) {
			return d.errf("unterminated object")
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return d.errf("want ',' or '}'")
		}
	}
}

// key reads "key" and the colon after it, and leaves d at the value.
func (d *decoder) key() ([]byte, error) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, d.errf("want a key")
	}
	var key []byte
	b := d.b
	j := scanPlain(b, d.i+1)
	if j < len(b) && b[j] == '"' {
		key = b[d.i+1 : j]
		d.i = j + 1
	} else {
		var err error
		if key, err = d.str(); err != nil {
			return nil, err
		}
	}
	if d.i+1 < len(b) && b[d.i] == ':' && b[d.i+1] > ' ' {
		d.i++
		return key, nil // the common case: "key":value
	}
	if d.i < len(b) && b[d.i] == ':' {
		d.i++
	} else {
		d.ws()
		if d.i >= len(d.b) || d.b[d.i] != ':' {
			return nil, d.errf("want ':' after a key")
		}
		d.i++
	}
	d.ws()
	if d.i >= len(d.b) {
		return nil, d.errf("want a value")
	}
	return key, nil
}

// column stores the value of a DeviceNetworkEvents column; other keys are
// skipped. A wrong value is noted in r (the value is consumed); the error
// returned is a syntax error.
func (d *decoder) column(c col, ev *beacon.Event, r *row) error {
	if off := stringCols[c]; off != 0 {
		if d.queryOnly && optionalCol[c] {
			return d.skip()
		}
		dst := (*string)(unsafe.Add(unsafe.Pointer(ev), off))
		if v, ok := d.plain(c); ok {
			*dst = bytesString(v)
			return nil
		}
		v, err := d.stringValue()
		if err != nil {
			return err
		}
		*dst = v
		return nil
	}
	switch c {
	case colTimestamp:
		v, null, err := d.scalar()
		if err != nil {
			return err
		}
		if null || len(v) == 0 {
			r.fail(errors.New("Timestamp is null"))
			return nil
		}
		t, err := d.timestamp(v)
		if err != nil {
			r.fail(fmt.Errorf("Timestamp %q: %w", v, err))
			return nil
		}
		ev.Timestamp = t
		r.timestamp = true
		return nil
	case colRemotePort:
		// The common case, a JSON integer of at most nine digits: what
		// ParsePort reads from it, without the number's text.
		if b, i := d.b, d.i; i < len(b) && b[i]-'0' <= 9 {
			j := digitsEnd(b, i)
			if j-i <= 9 && (j == len(b) || (b[j] != '.' && b[j] != 'e' && b[j] != 'E')) {
				var p int32
				for _, c := range b[i:j] {
					p = p*10 + int32(c-'0')
				}
				d.i = j
				ev.RemotePort, ev.HasPort = p, true
				return nil
			}
		}
		v, null, err := d.scalar()
		if err != nil {
			return err
		}
		if null || len(v) == 0 {
			ev.RemotePort, ev.HasPort = 0, false
			return nil
		}
		p, err := ParsePort(v)
		if err != nil {
			r.fail(err)
			return nil
		}
		ev.RemotePort, ev.HasPort = p, true
		return nil
	case colAdditionalFields:
		switch d.b[d.i] {
		case '"':
			start := d.i + 1
			esc, err := d.skipString()
			if err != nil {
				return err
			}
			r.addl, r.addlStr, r.escaped = d.b[start:d.i-1], true, esc
			return nil
		case '{':
			start := d.i
			if err := d.skip(); err != nil {
				return err
			}
			r.addl, r.addlStr = d.b[start:d.i], false
			return nil
		}
		return d.skip()
	case colProcessId, colReportId:
		if d.queryOnly {
			return d.skip()
		}
		v, null, err := d.scalar()
		if err != nil {
			return err
		}
		var n int64
		if !null && len(v) > 0 {
			if n, err = parseInt(v); err != nil {
				r.fail(fmt.Errorf("%s %q is not an integer", colNames[c], v))
				return nil
			}
		}
		if c == colReportId {
			ev.ReportId = n
		} else {
			ev.ProcessId = n
		}
		return nil
	default:
		return d.skip()
	}
}

// stringCols are the offsets in beacon.Event of the string columns (0:
// not a string column), so that column stores one without a switch.
var stringCols = [numCols]uintptr{
	colDeviceId:      unsafe.Offsetof(beacon.Event{}.DeviceId),
	colDeviceName:    unsafe.Offsetof(beacon.Event{}.DeviceName),
	colActionType:    unsafe.Offsetof(beacon.Event{}.ActionType),
	colRemoteIP:      unsafe.Offsetof(beacon.Event{}.RemoteIP),
	colRemoteIPType:  unsafe.Offsetof(beacon.Event{}.RemoteIPType),
	colRemoteUrl:     unsafe.Offsetof(beacon.Event{}.RemoteUrl),
	colAccountName:   unsafe.Offsetof(beacon.Event{}.AccountName),
	colAccountDomain: unsafe.Offsetof(beacon.Event{}.AccountDomain),
	colFileName:      unsafe.Offsetof(beacon.Event{}.FileName),
	colSHA256:        unsafe.Offsetof(beacon.Event{}.SHA256),
	colSHA1:          unsafe.Offsetof(beacon.Event{}.SHA1),
	colFolderPath:    unsafe.Offsetof(beacon.Event{}.FolderPath),
	colCommandLine:   unsafe.Offsetof(beacon.Event{}.CommandLine),
}

// optionalCol are the string columns QueryOnly leaves out.
var optionalCol = [numCols]bool{colSHA256: true, colSHA1: true, colFolderPath: true, colCommandLine: true}

// plain reads a string value without escapes, the common case, and tells
// whether it did; anything else is left to the caller's slow path. The
// column's last plain value is tried first: when the same bytes and a
// closing quote follow, the value is those bytes (they hold no quote,
// escape or control character, or its scan would have stopped in them),
// one comparison instead of a scan.
func (d *decoder) plain(c col) ([]byte, bool) {
	b, i := d.b, d.i
	if i >= len(b) || b[i] != '"' {
		return nil, false
	}
	if p := d.last[c]; len(p) > 0 {
		end := i + 1 + len(p)
		if end < len(b) && b[end] == '"' && (len(p) < 8 || binary.LittleEndian.Uint64(b[i+1:]) == binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(p), 8))) &&
			string(b[i+1:end]) == p {
			d.i = end + 1
			return b[i+1 : end], true
		}
	}
	j := scanPlain(b, i+1)
	if j >= len(b) || b[j] != '"' {
		return nil, false
	}
	d.i = j + 1
	d.last[c] = bytesString(b[i+1 : j])
	return b[i+1 : j], true
}

func (r *row) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// stringValue reads a string column: null is "" (Kusto strings have no
// null); a number or boolean is kept as its text.
func (d *decoder) stringValue() (string, error) {
	v, null, err := d.scalar()
	if err != nil {
		return "", err
	}
	if null {
		return "", nil
	}
	return bytesString(v), nil
}

// ParsePort reads RemotePort: an integer, or a number with an integral
// value (443.0), as a pipeline that went through floating point writes it.
func ParsePort(v []byte) (int32, error) {
	if n, ok := smallUint(v); ok && n <= math.MaxInt32 {
		return int32(n), nil
	}
	p, err := strconv.ParseInt(string(v), 10, 32)
	if err == nil {
		return int32(p), nil
	}
	f, ferr := strconv.ParseFloat(string(v), 64)
	if ferr != nil || f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32 {
		return 0, fmt.Errorf("RemotePort %q is not an integer", v)
	}
	return int32(f), nil
}

// smallUint parses up to 18 decimal digits without allocating.
func smallUint(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseInt reads an int64 given as a JSON number (integral) or string.
func parseInt(v []byte) (int64, error) {
	if n, ok := smallUint(v); ok {
		return n, nil
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
	if err == nil {
		return n, nil
	}
	f, ferr := strconv.ParseFloat(string(v), 64)
	if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, err
	}
	return int64(f), nil
}

// bytesString aliases b as a string without copying.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func (d *decoder) errf(format string, a ...any) error {
	return &SyntaxError{Offset: d.i, Msg: fmt.Sprintf(format, a...)}
}

func (d *decoder) ws() {
	if d.i < len(d.b) && d.b[d.i] > ' ' {
		return
	}
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case '\n':
			if d.inLine {
				return // the line ends here (see lineAt)
			}
			d.i++
		case ' ', '\t', '\r':
			d.i++
		default:
			return
		}
	}
}

// scalar reads a string, number, boolean or null and returns its text.
func (d *decoder) scalar() (v []byte, null bool, err error) {
	if d.i >= len(d.b) {
		return nil, false, d.errf("want a value")
	}
	switch c := d.b[d.i]; {
	case c == '"':
		s, err := d.str()
		return s, false, err
	case c == 'n':
		return nil, true, d.lit("null")
	case c == 't':
		return []byte("true"), false, d.lit("true")
	case c == 'f':
		return []byte("false"), false, d.lit("false")
	case c == '-' || (c >= '0' && c <= '9'):
		start := d.i
		if err := d.number(); err != nil {
			return nil, false, err
		}
		return d.b[start:d.i], false, nil
	}
	return nil, false, d.errf("want a string, number, boolean or null")
}

func (d *decoder) lit(s string) error {
	if len(d.b)-d.i < len(s) || string(d.b[d.i:d.i+len(s)]) != s {
		return d.errf("bad literal")
	}
	d.i += len(s)
	return nil
}

func (d *decoder) number() error {
	b, i := d.b, d.i
	if b[i] == '-' {
		i++
	}
	j := digitsEnd(b, i)
	if j == i {
		d.i = j
		return d.errf("bad number")
	}
	i = j
	if i < len(b) && b[i] == '.' {
		j = digitsEnd(b, i+1)
		if j == i+1 {
			d.i = j
			return d.errf("bad number")
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j = digitsEnd(b, i)
		if j == i {
			d.i = j
			return d.errf("bad number")
		}
		i = j
	}
	d.i = i
	return nil
}

// digitsEnd returns the index of the first non-digit at or after i.
func digitsEnd(b []byte, i int) int {
	for i < len(b) && b[i]-'0' <= 9 {
		i++
	}
	return i
}

// str reads a JSON string. Without escapes it aliases the input; with them
// it returns a fresh, unescaped copy.
func (d *decoder) str() ([]byte, error) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, d.errf("want a string")
	}
	start := d.i + 1
	b := d.b
	j := scanPlain(b, start)
	if j < len(b) && b[j] == '"' {
		d.i = j + 1
		return b[start:j], nil
	}
	d.i = start
	return d.unescape(start)
}

// scanPlain returns the index of the first byte at or after j that ends
// the fast scan of a string (see special), or len(b). It tests eight bytes
// at a time: the lowest flagged byte of each word is exact.
func scanPlain(b []byte, j int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for ; j+8 <= len(b); j += 8 {
		x := binary.LittleEndian.Uint64(b[j:])
		q := x ^ (lo * '"')
		e := x ^ (lo * '\\')
		t := ((x - lo*0x20) | (q - lo) | (e - lo)) &^ x & hi
		// (q-lo)&^q and (e-lo)&^e flag zero bytes of q and e; &^x is the
		// same as &^q and &^e on the high bit once x < 0x80, and bytes
		// >= 0x80 are never special.
		if t != 0 {
			return j + bits.TrailingZeros64(t)/8
		}
	}
	for j < len(b) && !special[b[j]] {
		j++
	}
	return j
}

// special marks the bytes that end the fast scan of a string: the closing
// quote, an escape, a control character.
var special = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// skipString consumes a string without unescaping it and tells whether it
// had escapes.
func (d *decoder) skipString() (escaped bool, err error) {
	if j := scanPlain(d.b, d.i+1); j < len(d.b) && d.b[j] == '"' {
		d.i = j + 1 // no escape, no control character: the common case
		return false, nil
	}
	j := d.i + 1
	for {
		end := bytes.IndexByte(d.b[j:], '"')
		if end < 0 {
			d.i = len(d.b)
			return false, d.errf("unterminated string")
		}
		q := j + end
		// The quote ends the string unless an odd run of backslashes precedes it.
		n := 0
		for k := q - 1; k > d.i && d.b[k] == '\\'; k-- {
			n++
		}
		if n > 0 {
			escaped = true
		}
		if n%2 == 0 {
			if d.inLine && bytes.IndexByte(d.b[d.i+1:q], '\n') >= 0 {
				d.i = len(d.b)
				return false, d.errf("unterminated string") // at the end of the line (see lineAt)
			}
			if !escaped && bytes.IndexByte(d.b[d.i+1:q], '\\') >= 0 {
				escaped = true
			}
			d.i = q + 1
			return escaped, nil
		}
		j = q + 1
	}
}

func (d *decoder) unescape(start int) ([]byte, error) {
	out := make([]byte, 0, 64)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return out, nil
		case c < 0x20:
			return nil, d.errf("control character in string")
		case c != '\\':
			out = append(out, c)
			d.i++
			continue
		}
		d.i++
		if d.i >= len(d.b) {
			break
		}
		e := d.b[d.i]
		d.i++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return nil, d.errf("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				if d.i+1 < len(d.b) && d.b[d.i] == '\\' && d.b[d.i+1] == 'u' {
					save := d.i
					d.i += 2
					r2, ok2 := d.hex4()
					if !ok2 {
						return nil, d.errf("bad \\u escape")
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
					} else {
						d.i = save
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, d.errf("bad escape")
		}
	}
	return nil, d.errf("unterminated string")
}

func (d *decoder) hex4() (rune, bool) {
	if len(d.b)-d.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range d.b[d.i : d.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	d.i += 4
	return r, true
}

// skip consumes any JSON value without unescaping or copying.
func (d *decoder) skip() error {
	if d.i >= len(d.b) {
		return d.errf("want a value")
	}
	switch d.b[d.i] {
	case '"':
		_, err := d.skipString()
		return err
	case '{', '[':
	default:
		_, _, err := d.scalar()
		return err
	}
	if d.depth++; d.depth > maxDepth {
		return d.errf("nested deeper than %d", maxDepth)
	}
	defer func() { d.depth-- }()
	closer := byte('}')
	if d.b[d.i] == '[' {
		closer = ']'
	}
	d.i++
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == closer {
		d.i++
		return nil
	}
	for {
		d.ws()
		if closer == '}' {
			if d.i >= len(d.b) || d.b[d.i] != '"' {
				return d.errf("want a key")
			}
			if _, err := d.skipString(); err != nil {
				return err
			}
			d.ws()
			if d.i >= len(d.b) || d.b[d.i] != ':' {
				return d.errf("want ':' after a key")
			}
			d.i++
			d.ws()
		}
		if err := d.skip(); err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.b) {
			return d.errf("unterminated value")
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case closer:
			d.i++
			return nil
		default:
			return d.errf("want ',' or '%c'", closer)
		}
	}
}
