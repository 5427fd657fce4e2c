package beacon

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// DecodeJSON decodes one line of JSON: a flat DeviceNetworkEvents object
// (Advanced Hunting export, or a pipeline that unwrapped the envelope), or a
// Defender Streaming API envelope {"records":[{"properties":{…}}, …]}, whose
// properties.Timestamp is the event time. It calls emit once per event, in
// order, and returns the number of events. A blank line yields none.
//
// The strings of an emitted Event may alias line: copy them (Event.Clone)
// to keep them after line is reused.
func DecodeJSON(line []byte, emit func(*Event)) (int, error) {
	d := jsonDec{b: bytes.TrimPrefix(line, utf8BOM)}
	d.ws()
	if d.i == len(d.b) {
		return 0, nil
	}
	if d.b[d.i] != '{' {
		return 0, d.errf("want a JSON object")
	}
	var ev Event
	var f fieldSet
	n := 0
	envelope := false
	err := d.object(func(key []byte) error {
		if string(key) == "records" {
			envelope = true
			return d.records(func(e *Event) { n++; emit(e) })
		}
		return d.field(key, &ev, &f)
	})
	if err != nil {
		return n, err
	}
	d.ws()
	if d.i != len(d.b) {
		return n, d.errf("unexpected data after the object")
	}
	if envelope {
		return n, nil
	}
	if err := f.check(); err != nil {
		return 0, err
	}
	emit(&ev)
	return 1, nil
}

var utf8BOM = []byte("\xef\xbb\xbf")

// fieldSet records which required columns an object had.
type fieldSet struct{ timestamp bool }

func (f fieldSet) check() error {
	if !f.timestamp {
		return errors.New("no Timestamp")
	}
	return nil
}

// Clone returns an event whose strings share nothing with decoder input.
func (e *Event) Clone() Event {
	c := *e
	c.DeviceId = cloneString(e.DeviceId)
	c.DeviceName = cloneString(e.DeviceName)
	c.ActionType = cloneString(e.ActionType)
	c.RemoteIP = cloneString(e.RemoteIP)
	c.RemoteIPType = cloneString(e.RemoteIPType)
	c.RemoteUrl = cloneString(e.RemoteUrl)
	c.AccountName = cloneString(e.AccountName)
	c.AccountDomain = cloneString(e.AccountDomain)
	c.FileName = cloneString(e.FileName)
	return c
}

func cloneString(s string) string {
	if s == "" {
		return ""
	}
	return string(append([]byte(nil), s...))
}

type jsonDec struct {
	b     []byte
	i     int
	depth int // nesting of skipped values, bounded so hostile input cannot exhaust the stack
}

const maxJSONDepth = 64

// JSONError is a decoding error with the byte offset in the line.
type JSONError struct {
	Offset int
	Msg    string
}

func (e *JSONError) Error() string { return fmt.Sprintf("byte %d: %s", e.Offset, e.Msg) }

func (d *jsonDec) errf(format string, a ...any) error {
	return &JSONError{Offset: d.i, Msg: fmt.Sprintf(format, a...)}
}

func (d *jsonDec) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\r', '\n':
			d.i++
		default:
			return
		}
	}
}

// object parses {"k": v, …}, calling fn with each key positioned at its
// value; fn must consume the value.
func (d *jsonDec) object(fn func(key []byte) error) error {
	d.ws()
	if d.i >= len(d.b) || d.b[d.i] != '{' {
		return d.errf("want an object")
	}
	d.i++
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == '}' {
		d.i++
		return nil
	}
	for {
		d.ws()
		key, _, err := d.str()
		if err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.b) || d.b[d.i] != ':' {
			return d.errf("want ':' after a key")
		}
		d.i++
		d.ws()
		if err := fn(key); err != nil {
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

// array parses [v, …], calling fn with each element's index, positioned
// at the element; fn must consume it.
func (d *jsonDec) array(fn func(idx int) error) error {
	if d.i >= len(d.b) || d.b[d.i] != '[' {
		return d.errf("want an array")
	}
	d.i++
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == ']' {
		d.i++
		return nil
	}
	for idx := 0; ; idx++ {
		d.ws()
		if err := fn(idx); err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.b) {
			return d.errf("unterminated array")
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case ']':
			d.i++
			return nil
		default:
			return d.errf("want ',' or ']'")
		}
	}
}

// records parses the envelope's records array. A record whose values are
// wrong (no properties, a bad Timestamp or RemotePort) is left out and the
// others are kept: the first such error is returned after the array, so the
// line is still reported. Broken JSON ends the line at once.
func (d *jsonDec) records(emit func(*Event)) error {
	if d.i >= len(d.b) || d.b[d.i] != '[' {
		return d.errf("records: want an array")
	}
	var bad error
	err := d.array(func(idx int) error {
		var ev Event
		var f fieldSet
		props := false
		var recErr error
		err := d.object(func(key []byte) error {
			if string(key) != "properties" {
				return d.skip()
			}
			props = true
			return d.object(func(k []byte) error {
				err := d.field(k, &ev, &f)
				var je *JSONError
				if err != nil && !errors.As(err, &je) {
					// A value error (the value is consumed): note the
					// first, read on.
					if recErr == nil {
						recErr = err
					}
					return nil
				}
				return err
			})
		})
		switch {
		case err != nil:
			return fmt.Errorf("records[%d]: %w", idx, err)
		case recErr != nil:
		case !props:
			recErr = errors.New("no properties")
		default:
			recErr = f.check()
		}
		if recErr != nil {
			if bad == nil {
				bad = fmt.Errorf("records[%d]: %w", idx, recErr)
			}
			return nil
		}
		emit(&ev)
		return nil
	})
	if err != nil {
		return err
	}
	return bad
}

// field stores the value of a DeviceNetworkEvents column; other keys are
// skipped.
func (d *jsonDec) field(key []byte, ev *Event, f *fieldSet) error {
	var dst *string
	switch string(key) {
	case "Timestamp":
		v, null, err := d.scalar()
		if err != nil {
			return err
		}
		if null {
			return errors.New("Timestamp is null")
		}
		t, err := ParseTime(v)
		if err != nil {
			return fmt.Errorf("Timestamp %q: %w", v, err)
		}
		ev.Timestamp = t
		f.timestamp = true
		return nil
	case "RemotePort":
		v, null, err := d.scalar()
		if err != nil {
			return err
		}
		if null || len(v) == 0 {
			ev.RemotePort, ev.HasPort = 0, false
			return nil
		}
		p, err := parsePort(v)
		if err != nil {
			return err
		}
		ev.RemotePort, ev.HasPort = p, true
		return nil
	case "DeviceId":
		dst = &ev.DeviceId
	case "DeviceName":
		dst = &ev.DeviceName
	case "ActionType":
		dst = &ev.ActionType
	case "RemoteIP":
		dst = &ev.RemoteIP
	case "RemoteIPType":
		dst = &ev.RemoteIPType
	case "RemoteUrl":
		dst = &ev.RemoteUrl
	case "InitiatingProcessAccountName":
		dst = &ev.AccountName
	case "InitiatingProcessAccountDomain":
		dst = &ev.AccountDomain
	case "InitiatingProcessFileName":
		dst = &ev.FileName
	default:
		return d.skip()
	}
	v, null, err := d.scalar()
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if null {
		*dst = "" // Kusto strings have no null
		return nil
	}
	*dst = bytesString(v)
	return nil
}

// parsePort reads RemotePort: an integer, or a number with an integral
// value (443.0), as a pipeline that went through floating point writes it.
func parsePort(v []byte) (int32, error) {
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

// bytesString aliases b as a string without copying.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// scalar reads a string, number, boolean or null and returns its text.
func (d *jsonDec) scalar() (v []byte, null bool, err error) {
	if d.i >= len(d.b) {
		return nil, false, d.errf("want a value")
	}
	switch c := d.b[d.i]; {
	case c == '"':
		s, _, err := d.str()
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

func (d *jsonDec) lit(s string) error {
	if len(d.b)-d.i < len(s) || string(d.b[d.i:d.i+len(s)]) != s {
		return d.errf("bad literal")
	}
	d.i += len(s)
	return nil
}

func (d *jsonDec) number() error {
	start := d.i
	if d.b[d.i] == '-' {
		d.i++
	}
	digits := func() int {
		n := 0
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
			n++
		}
		return n
	}
	if digits() == 0 {
		return d.errf("bad number")
	}
	if d.i < len(d.b) && d.b[d.i] == '.' {
		d.i++
		if digits() == 0 {
			return d.errf("bad number")
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i++
		if d.i < len(d.b) && (d.b[d.i] == '+' || d.b[d.i] == '-') {
			d.i++
		}
		if digits() == 0 {
			return d.errf("bad number")
		}
	}
	if d.i == start {
		return d.errf("bad number")
	}
	return nil
}

// str reads a JSON string. Without escapes it aliases the input; with them
// it returns a fresh, unescaped copy (escaped reports which).
func (d *jsonDec) str() (s []byte, escaped bool, err error) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, false, d.errf("want a string")
	}
	d.i++
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			s = d.b[start:d.i]
			d.i++
			return s, false, nil
		case c == '\\':
			return d.unescape(start)
		case c < 0x20:
			return nil, false, d.errf("control character in string")
		}
		d.i++
	}
	return nil, false, d.errf("unterminated string")
}

func (d *jsonDec) unescape(start int) ([]byte, bool, error) {
	out := append([]byte(nil), d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return out, true, nil
		case c < 0x20:
			return nil, false, d.errf("control character in string")
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
				return nil, false, d.errf("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if d.i+1 < len(d.b) && d.b[d.i] == '\\' && d.b[d.i+1] == 'u' {
					save := d.i
					d.i += 2
					var ok2 bool
					if r2, ok2 = d.hex4(); !ok2 {
						return nil, false, d.errf("bad \\u escape")
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
			return nil, false, d.errf("bad escape")
		}
	}
	return nil, false, d.errf("unterminated string")
}

func (d *jsonDec) hex4() (rune, bool) {
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

// skip consumes any JSON value.
func (d *jsonDec) skip() error {
	if d.i >= len(d.b) {
		return d.errf("want a value")
	}
	if c := d.b[d.i]; c == '{' || c == '[' {
		if d.depth++; d.depth > maxJSONDepth {
			return d.errf("nested deeper than %d", maxJSONDepth)
		}
		defer func() { d.depth-- }()
	}
	switch d.b[d.i] {
	case '{':
		return d.object(func([]byte) error { return d.skip() })
	case '[':
		return d.array(func(int) error { return d.skip() })
	}
	_, _, err := d.scalar()
	return err
}
