package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"github.com/linkedin/goavro/v2"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/mde"
	"github.com/beaconhunt/beacon/schemas"
)

// InputFormat says how input records are encoded.
type InputFormat string

// Input formats. Auto tells them apart per record: JSON starts with '{'
// (after blanks), the Confluent wire format with a zero magic byte, and
// anything else is read as raw Avro binary. The three cannot be confused
// for valid records: raw Avro of DeviceNetworkEvent starts with the length
// of the Timestamp string, which is neither 0 nor the zigzag of '{'.
const (
	InputAuto      InputFormat = "auto"
	InputJSON      InputFormat = "json"      // flat objects or Streaming API envelopes
	InputAvro      InputFormat = "avro"      // raw Avro binary of schemas/DeviceNetworkEvent.avsc
	InputConfluent InputFormat = "confluent" // magic byte 0, 4-byte schema id, Avro binary
)

// ParseInputFormat accepts auto, json, avro and confluent.
func ParseInputFormat(s string) (InputFormat, error) {
	switch f := InputFormat(strings.ToLower(s)); f {
	case InputAuto, InputJSON, InputAvro, InputConfluent:
		return f, nil
	}
	return "", fmt.Errorf("unknown input format %q (want auto, json, avro or confluent)", s)
}

// Dead-letter reasons: the value of the beacon.reason header and of the
// reason label of beacon_events_dropped_total.
const (
	reasonOversized = "oversized"
	reasonEmpty     = "empty"
	reasonJSON      = "json"
	reasonAvro      = "avro"
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
			return 0, &decodeError{reasonEmpty, errors.New("no event in record")}
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

// sniff guesses the format of one record (see InputAuto).
func sniff(v []byte) InputFormat {
	for _, c := range v {
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			continue
		}
		if c == '{' {
			return InputJSON
		}
		break
	}
	if len(v) > 0 && v[0] == 0 {
		return InputConfluent
	}
	return InputAvro
}

func (d *inputDecoder) avro(b []byte, emit func(*beacon.Event)) (int, error) {
	if len(b) == 0 {
		return 0, &decodeError{reasonEmpty, errors.New("empty Avro body")}
	}
	native, rest, err := d.codec.NativeFromBinary(b)
	if err != nil {
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
	ts, _ := m["Timestamp"].(string)
	if e.Timestamp, err = beacon.ParseTime([]byte(ts)); err != nil {
		return 0, &decodeError{reasonSchema, fmt.Errorf("Timestamp %q: %w", ts, err)}
	}
	e.DeviceId = avroString(m["DeviceId"])
	e.DeviceName = avroString(m["DeviceName"])
	e.ActionType = avroString(m["ActionType"])
	e.RemoteIP = avroString(m["RemoteIP"])
	e.RemoteIPType = avroString(m["RemoteIPType"])
	e.RemoteUrl = avroString(m["RemoteUrl"])
	e.AccountName = avroString(m["InitiatingProcessAccountName"])
	e.AccountDomain = avroString(m["InitiatingProcessAccountDomain"])
	e.FileName = avroString(m["InitiatingProcessFileName"])
	if u, ok := m["RemotePort"].(map[string]any); ok {
		if p, ok := u["int"].(int32); ok {
			e.RemotePort, e.HasPort = p, true
		}
	}
	emit(&e)
	return 1, nil
}

// avroString reads a ["null","string"] union: null is "", as in Kusto.
func avroString(v any) string {
	switch u := v.(type) {
	case map[string]any:
		s, _ := u["string"].(string)
		return s
	case string:
		return u
	}
	return ""
}

// bytesString aliases b as a string without copying; b must not change
// while the string is in use.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
