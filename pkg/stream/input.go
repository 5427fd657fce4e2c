package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/linkedin/goavro/v2"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/mde"
	"github.com/beaconhunt/beacon/schemas"
)

// InputFormat says how input records are encoded.
type InputFormat string

// Input formats. Auto tells them apart per record: JSON starts with '{'
// or '[' (after a BOM and blanks; or is null), the Confluent wire format
// with a zero magic byte, and anything else is read as raw Avro binary.
// The three cannot be confused for valid records: raw Avro of
// DeviceNetworkEvent starts with the length of the Timestamp string, which
// is neither 0 nor the zigzag of '{' or '['. A record that is none of them
// is dead-lettered with a reason naming what it looked like (text, avro).
const (
	InputAuto      InputFormat = "auto"
	InputJSON      InputFormat = "json"      // any JSON shape of pkg/mde: rows, records, envelopes, arrays
	InputAvro      InputFormat = "avro"      // raw Avro binary of schemas/DeviceNetworkEvent.avsc
	InputConfluent InputFormat = "confluent" // magic byte 0, 4-byte schema id, Avro binary
)

// ParseInputFormat accepts auto, json (or jsonl, the name the other
// commands use for JSON), avro and confluent.
func ParseInputFormat(s string) (InputFormat, error) {
	switch f := InputFormat(strings.ToLower(s)); f {
	case InputAuto, InputJSON, InputAvro, InputConfluent:
		return f, nil
	case "jsonl":
		return InputJSON, nil
	}
	return "", fmt.Errorf("unknown input format %q (want auto, jsonl, avro or confluent)", s)
}

// Dead-letter reasons: the value of the beacon.reason header and of the
// reason label of beacon_events_dropped_total.
const (
	reasonOversized = "oversized"
	reasonEmpty     = "empty"
	reasonJSON      = "json" // looked like JSON, did not decode
	reasonText      = "text" // printable text that is neither JSON nor Avro
	reasonAvro      = "avro" // binary that is not Avro of our schema
	reasonSchema    = "schema"
	reasonFormat    = "format"
	reasonRecord    = "repartition" // a repartition record we did not write
)

// decodeError is a record that does not decode, with a reason for the
// dead-letter topic.
type decodeError struct {
	reason string
	err    error
}

func (e *decodeError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// inputDecoder turns input record values into events.
type inputDecoder struct {
	format   InputFormat
	codec    *goavro.Codec
	schemaID int32 // Confluent schema id to accept; -1 accepts any
}

const avroSchemaFile = "DeviceNetworkEvent.avsc"

func newInputDecoder(format InputFormat, schemaID int32) (*inputDecoder, error) {
	d := &inputDecoder{format: format, schemaID: schemaID}
	if format == InputJSON {
		return d, nil
	}
	text, err := schemas.FS.ReadFile(avroSchemaFile)
	if err != nil {
		return nil, fmt.Errorf("avro schema: %w", err)
	}
	if d.codec, err = goavro.NewCodec(string(text)); err != nil {
		return nil, fmt.Errorf("avro schema %s: %w", avroSchemaFile, err)
	}
	return d, nil
}

// decode calls emit for every event of value. Events emitted before an
// error are valid (an envelope whose third record is bad yields two); the
// caller keeps them and dead-letters the record.
func (d *inputDecoder) decode(value []byte, emit func(*beacon.Event)) (int, error) {
	format := d.format
	if format == InputAuto {
		format = sniff(value)
	}
	switch format {
	case InputJSON:
		n, err := mde.Decode(value, emit)
		if err != nil {
			return n, &decodeError{reasonJSON, err}
		}
		if n == 0 {
			return 0, &decodeError{reasonEmpty, errors.New("no event in record (blank, null, [] or an empty envelope)")}
		}
		return n, nil
	case InputConfluent:
		if len(value) < 5 || value[0] != 0 {
			return 0, &decodeError{reasonFormat, errors.New("not the Confluent wire format (want magic byte 0 and a 4-byte schema id)")}
		}
		id := int32(binary.BigEndian.Uint32(value[1:5]))
		if d.schemaID >= 0 && id != d.schemaID {
			return 0, &decodeError{reasonSchema, fmt.Errorf("schema id %d, want %d", id, d.schemaID)}
		}
		return d.avro(value[5:], emit)
	default:
		return d.avro(value, emit)
	}
}

// appendEvents is decode appending the events to dst: JSON records decode
// straight into it, with nothing copied or called per event.
func (d *inputDecoder) appendEvents(dst []beacon.Event, value []byte) ([]beacon.Event, error) {
	format := d.format
	if format == InputAuto {
		format = sniff(value)
	}
	if format != InputJSON {
		_, err := d.decode(value, func(e *beacon.Event) { dst = append(dst, *e) })
		return dst, err
	}
	n := len(dst)
	dst, err := mde.AppendEvents(dst, value, false)
	if err != nil {
		return dst, &decodeError{reasonJSON, err}
	}
	if len(dst) == n {
		return dst, &decodeError{reasonEmpty, errors.New("no event in record (blank, null, [] or an empty envelope)")}
	}
	return dst, nil
}

// sniff guesses the format of one record (see InputAuto).
func sniff(v []byte) InputFormat {
	t := bytes.TrimPrefix(v, utf8BOM)
	for _, c := range t {
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			continue
		}
		if c == '{' || c == '[' {
			return InputJSON
		}
		break
	}
	if t = bytes.TrimSpace(t); len(t) == 0 && len(v) > 0 || string(t) == "null" {
		return InputJSON // blank or null: JSON of nothing
	}
	if len(v) > 0 && v[0] == 0 {
		return InputConfluent
	}
	return InputAvro
}

var utf8BOM = []byte("\xef\xbb\xbf")

// looksLikeText tells a record that failed as Avro but is printable text
// (a log line, CSV, a JSON fragment): its dead-letter reason is text. Raw
// Avro of our schema starts with a length byte and a timestamp, which is
// printable too, so that prefix stays avro.
func looksLikeText(v []byte) bool {
	if !utf8.Valid(v) {
		return false
	}
	for _, c := range v {
		if c < 0x20 && c != '\t' && c != '\r' && c != '\n' || c == 0x7f {
			return false
		}
	}
	if len(v) >= 6 && isDigits(v[1:5]) && v[5] == '-' {
		return false // <length>2024-…: a truncated DeviceNetworkEvent
	}
	return true
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (d *inputDecoder) avro(b []byte, emit func(*beacon.Event)) (int, error) {
	if len(b) == 0 {
		return 0, &decodeError{reasonEmpty, errors.New("empty Avro body")}
	}
	native, rest, err := d.codec.NativeFromBinary(b)
	if err != nil {
		if looksLikeText(b) {
			return 0, &decodeError{reasonText, fmt.Errorf("neither JSON nor Avro: text starting %q", truncate(b, 40))}
		}
		return 0, &decodeError{reasonAvro, err}
	}
	if len(rest) != 0 {
		return 0, &decodeError{reasonSchema, fmt.Errorf("%d bytes left after a DeviceNetworkEvent: written with another schema?", len(rest))}
	}
	m, ok := native.(map[string]any)
	if !ok {
		return 0, &decodeError{reasonAvro, errors.New("not a record")}
	}
	var e beacon.Event
	if err := mde.FromAvro(m, &e); err != nil {
		return 0, &decodeError{reasonSchema, err}
	}
	emit(&e)
	return 1, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// bytesString aliases b as a string without copying; b must not change
// while the string is in use.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
