package fleet

import (
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Columns are the DeviceNetworkEvents columns the writers emit, in order:
// beacon.Columns, then the extra columns of Record.
var Columns = append(append([]string(nil), beacon.Columns...),
	"LocalIP", "LocalPort", "Protocol", "InitiatingProcessId")

// Format is an output format.
type Format string

// Formats of files and messages.
const (
	// JSONL is one flat JSON object per line, as Advanced Hunting exports
	// rows: empty strings are "", a missing port or process id is null.
	JSONL Format = "jsonl"
	// Envelope is the Defender Streaming API message, several records per
	// line: {"records":[{"time":…,"tenantId":…,"operationName":"Publish",
	// "category":"AdvancedHunting-DeviceNetworkEvents","properties":{…}}]}.
	// Missing values, empty strings included, are null.
	Envelope Format = "envelope"
	// CSV has a header row of Columns and quotes fields per RFC 4180;
	// missing values are empty.
	CSV Format = "csv"
	// Avro is an Avro object container file of schemas/DeviceNetworkEvent.avsc
	// records (Writer) or raw Avro binary per record (AvroEncoder).
	Avro Format = "avro"
)

// ParseFormat accepts jsonl (or json), envelope, csv and avro.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "jsonl", "json":
		return JSONL, nil
	case "envelope", "csv", "avro":
		return Format(s), nil
	}
	return "", fmt.Errorf("unknown format %q (want jsonl, envelope, csv or avro)", s)
}

// DefaultTenant is the envelope's tenantId unless WriterOptions says
// otherwise.
const DefaultTenant = "4f2b9c1e-7d3a-4e8b-9a61-0c5d2e7f8b13"

// DefaultBatch is how many records an envelope line holds by default.
const DefaultBatch = 100

// WriterOptions tune a Writer.
type WriterOptions struct {
	Batch  int    // envelope records per line (default DefaultBatch)
	Tenant string // envelope tenantId (default DefaultTenant)
	Seed   int64  // seeds the Avro container's sync marker, so files are reproducible
}

// Writer writes records in one format, buffering; call Close (or Flush) at
// the end. It does not close the underlying writer.
type Writer struct {
	w       io.Writer
	format  Format
	batch   int
	tenant  string
	buf     []byte
	inBatch int
	header  bool
	avro    *avroFile
	err     error
}

const flushAt = 256 << 10

// NewWriter returns a writer of records to w in the given format.
func NewWriter(w io.Writer, f Format, opt WriterOptions) (*Writer, error) {
	if opt.Batch <= 0 {
		opt.Batch = DefaultBatch
	}
	if opt.Tenant == "" {
		opt.Tenant = DefaultTenant
	}
	wr := &Writer{w: w, format: f, batch: opt.Batch, tenant: opt.Tenant, buf: make([]byte, 0, flushAt+4096)}
	switch f {
	case JSONL, Envelope, CSV:
	case Avro:
		a, err := newAvroFile(w, opt.Seed)
		if err != nil {
			return nil, err
		}
		wr.avro = a
	default:
		return nil, fmt.Errorf("unknown format %q", f)
	}
	return wr, nil
}

// Write appends one record.
func (w *Writer) Write(r *Record) error {
	if w.err != nil {
		return w.err
	}
	switch w.format {
	case JSONL:
		w.buf = AppendJSON(w.buf, r)
		w.buf = append(w.buf, '\n')
	case CSV:
		if !w.header {
			w.buf = AppendCSVHeader(w.buf)
			w.header = true
		}
		w.buf = AppendCSV(w.buf, r)
	case Envelope:
		if w.inBatch == 0 {
			w.buf = append(w.buf, `{"records":[`...)
		} else {
			w.buf = append(w.buf, ',')
		}
		w.buf = appendEnvelopeRecord(w.buf, w.tenant, r)
		w.inBatch++
		if w.inBatch == w.batch {
			w.buf = append(w.buf, "]}\n"...)
			w.inBatch = 0
		}
	case Avro:
		w.err = w.avro.write(r)
		return w.err
	}
	if len(w.buf) >= flushAt {
		return w.flushBuf()
	}
	return nil
}

func (w *Writer) flushBuf() error {
	if len(w.buf) > 0 {
		_, w.err = w.w.Write(w.buf)
		w.buf = w.buf[:0]
	}
	return w.err
}

// Flush ends an open envelope line and writes out everything buffered.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if w.format == Avro {
		w.err = w.avro.flush()
		return w.err
	}
	if w.format == CSV && !w.header {
		w.buf = AppendCSVHeader(w.buf)
		w.header = true
	}
	if w.inBatch > 0 {
		w.buf = append(w.buf, "]}\n"...)
		w.inBatch = 0
	}
	return w.flushBuf()
}

// Close flushes. It does not close the underlying writer.
func (w *Writer) Close() error { return w.Flush() }

// AppendJSON appends r as a flat JSON object (no newline).
func AppendJSON(b []byte, r *Record) []byte {
	b = append(b, '{')
	return append(appendProperties(b, r, false), '}')
}

// AppendEnvelope appends one Streaming API message holding rs (no newline).
func AppendEnvelope(b []byte, tenant string, rs []Record) []byte {
	if tenant == "" {
		tenant = DefaultTenant
	}
	b = append(b, `{"records":[`...)
	for i := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendEnvelopeRecord(b, tenant, &rs[i])
	}
	return append(b, "]}"...)
}

func appendEnvelopeRecord(b []byte, tenant string, r *Record) []byte {
	b = append(b, `{"time":"`...)
	b = appendTime(b, r.Reported)
	b = append(b, `","tenantId":`...)
	b = appendJSONString(b, tenant)
	b = append(b, `,"operationName":"Publish","category":"AdvancedHunting-DeviceNetworkEvents","properties":{`...)
	b = appendProperties(b, r, true)
	return append(b, "}}"...)
}

// appendProperties appends the columns as JSON members. With nulls, empty
// strings are written as null.
func appendProperties(b []byte, r *Record, nulls bool) []byte {
	str := func(b []byte, key, v string) []byte {
		b = append(b, key...)
		if nulls && v == "" {
			return append(b, "null"...)
		}
		return appendJSONString(b, v)
	}
	b = append(b, `"Timestamp":"`...)
	b = appendTime(b, r.Timestamp)
	b = append(b, '"')
	b = str(b, `,"DeviceId":`, r.DeviceId)
	b = str(b, `,"DeviceName":`, r.DeviceName)
	b = str(b, `,"ActionType":`, r.ActionType)
	b = str(b, `,"RemoteIP":`, r.RemoteIP)
	b = append(b, `,"RemotePort":`...)
	if r.HasPort {
		b = strconv.AppendInt(b, int64(r.RemotePort), 10)
	} else {
		b = append(b, "null"...)
	}
	b = str(b, `,"RemoteUrl":`, r.RemoteUrl)
	b = str(b, `,"RemoteIPType":`, r.RemoteIPType)
	b = str(b, `,"InitiatingProcessFileName":`, r.FileName)
	b = str(b, `,"InitiatingProcessAccountName":`, r.AccountName)
	b = str(b, `,"InitiatingProcessAccountDomain":`, r.AccountDomain)
	b = str(b, `,"LocalIP":`, r.LocalIP)
	b = append(b, `,"LocalPort":`...)
	b = appendNullableInt(b, int64(r.LocalPort))
	b = str(b, `,"Protocol":`, r.Protocol)
	b = append(b, `,"InitiatingProcessId":`...)
	return appendNullableInt(b, r.ProcessId)
}

func appendNullableInt(b []byte, v int64) []byte {
	if v == 0 {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, v, 10)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	if plain(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain reports whether s is ASCII without control characters, quotes or
// backslashes, so that it can be copied into JSON as it is. It looks at 8
// bytes at a time.
func plain(s string) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		q := x ^ ('"' * ones)
		bs := x ^ ('\\' * ones)
		if (x|(x-0x20*ones)|(q-ones)&^q|(bs-ones)&^bs)&highs != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// AppendCSVHeader appends the header row.
func AppendCSVHeader(b []byte) []byte {
	for i, c := range Columns {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, c...)
	}
	return append(b, '\n')
}

// AppendCSV appends r as a CSV row, with a newline.
func AppendCSV(b []byte, r *Record) []byte {
	b = appendTime(b, r.Timestamp)
	b = appendCSVField(append(b, ','), r.DeviceId)
	b = appendCSVField(append(b, ','), r.DeviceName)
	b = appendCSVField(append(b, ','), r.ActionType)
	b = appendCSVField(append(b, ','), r.RemoteIP)
	b = append(b, ',')
	if r.HasPort {
		b = strconv.AppendInt(b, int64(r.RemotePort), 10)
	}
	b = appendCSVField(append(b, ','), r.RemoteUrl)
	b = appendCSVField(append(b, ','), r.RemoteIPType)
	b = appendCSVField(append(b, ','), r.FileName)
	b = appendCSVField(append(b, ','), r.AccountName)
	b = appendCSVField(append(b, ','), r.AccountDomain)
	b = appendCSVField(append(b, ','), r.LocalIP)
	b = append(b, ',')
	if r.LocalPort != 0 {
		b = strconv.AppendInt(b, int64(r.LocalPort), 10)
	}
	b = appendCSVField(append(b, ','), r.Protocol)
	b = append(b, ',')
	if r.ProcessId != 0 {
		b = strconv.AppendInt(b, r.ProcessId, 10)
	}
	return append(b, '\n')
}

// appendCSVField quotes a field that holds a comma, quote, CR or LF, or
// starts with a space (RFC 4180; encoding/csv quotes the same ones).
func appendCSVField(b []byte, s string) []byte {
	quote := len(s) > 0 && (s[0] == ' ' || s[0] == '\t')
	for i := 0; i < len(s) && !quote; i++ {
		switch s[i] {
		case ',', '"', '\n', '\r':
			quote = true
		}
	}
	if !quote {
		return append(b, s...)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			b = append(b, '"')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// appendTime appends t as beacon.Time.AppendKusto does, without going
// through time.Time.
func appendTime(b []byte, t beacon.Time) []byte {
	secs := t.Seconds()
	days := secs / 86400
	if secs%86400 < 0 {
		days--
	}
	y, m, d := civilFromDays(days)
	if y < 0 || y > 9999 {
		return t.AppendKusto(b)
	}
	sod := secs - days*86400
	b = append(b,
		byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+m/10), byte('0'+m%10), '-', byte('0'+d/10), byte('0'+d%10), 'T',
		byte('0'+sod/36000), byte('0'+sod/3600%10), ':',
		byte('0'+sod%3600/600), byte('0'+sod%3600/60%10), ':',
		byte('0'+sod%60/10), byte('0'+sod%10))
	frac := int64(t) - secs*int64(beacon.Second)
	if frac != 0 {
		var digits [8]byte
		digits[0] = '.'
		for i := 7; i >= 1; i-- {
			digits[i] = byte('0' + frac%10)
			frac /= 10
		}
		n := 8
		for digits[n-1] == '0' {
			n--
		}
		b = append(b, digits[:n]...)
	}
	return append(b, 'Z')
}

// civilFromDays is Howard Hinnant's algorithm: the date of a day number
// (days since 1970-01-01).
func civilFromDays(z int64) (y, m, d int64) {
	z += 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	if mp < 10 {
		m = mp + 3
	} else {
		m = mp - 9
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}
