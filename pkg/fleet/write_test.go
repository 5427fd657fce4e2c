package fleet

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/linkedin/goavro/v2"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// records returns a few thousand records that include every kind of row.
func records(t testing.TB) []Record {
	t.Helper()
	rs, _ := generate(t, Config{Seed: 21, Devices: 12, Duration: 2 * time.Hour, Start: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)})
	// and some hostile strings
	r := rs[0]
	r.RemoteUrl = "http://ex,ample.com/a\"b\\c\n\r\t\x01é€😀"
	r.AccountName = " leading space"
	r.FileName = "bad\xffutf8.exe"
	rs = append(rs, r)
	r = rs[1]
	r.HasPort, r.RemotePort, r.LocalPort, r.ProcessId = false, 0, 0, 0
	r.RemoteIP, r.RemoteIPType, r.RemoteUrl = "", "", ""
	r.Timestamp = beacon.TimeOf(time.Date(2024, 5, 1, 12, 0, 1, 0, time.UTC)) // no fraction
	rs = append(rs, r)
	return rs
}

func write(t testing.TB, f Format, opt WriterOptions, rs []Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, f, opt)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rs {
		if err := w.Write(&rs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sanitize is what a JSON round trip does to a string: every byte of
// invalid UTF-8 becomes U+FFFD.
func sanitize(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// checkColumns compares decoded columns (strings, with "" for null, and
// ports as strings) with a record.
func checkColumns(t *testing.T, where string, got map[string]string, r *Record, json bool) {
	t.Helper()
	port := func(ok bool, v int64) string {
		if !ok {
			return ""
		}
		return strconv.FormatInt(v, 10)
	}
	want := map[string]string{
		"DeviceId": r.DeviceId, "DeviceName": r.DeviceName, "ActionType": r.ActionType,
		"RemoteIP": r.RemoteIP, "RemotePort": port(r.HasPort, int64(r.RemotePort)),
		"RemoteUrl": r.RemoteUrl, "RemoteIPType": r.RemoteIPType,
		"InitiatingProcessFileName": r.FileName, "InitiatingProcessAccountName": r.AccountName,
		"InitiatingProcessAccountDomain": r.AccountDomain, "LocalIP": r.LocalIP,
		"LocalPort": port(r.LocalPort != 0, int64(r.LocalPort)), "Protocol": r.Protocol,
		"InitiatingProcessId": port(r.ProcessId != 0, r.ProcessId),
	}
	if len(got) != len(Columns) {
		t.Errorf("%s: %d columns, want %d: %v", where, len(got), len(Columns), got)
	}
	ts, err := beacon.ParseTime([]byte(got["Timestamp"]))
	if err != nil || ts != r.Timestamp {
		t.Errorf("%s: Timestamp %q parses to %v (%v), want %v", where, got["Timestamp"], ts, err, r.Timestamp)
	}
	if got["Timestamp"] != r.Timestamp.String() {
		t.Errorf("%s: Timestamp %q, Kusto renders %q", where, got["Timestamp"], r.Timestamp.String())
	}
	for k, v := range want {
		if json {
			v = sanitize(v)
		}
		if got[k] != v {
			t.Errorf("%s: %s = %q, want %q", where, k, got[k], v)
		}
	}
}

// jsonColumns flattens a decoded JSON object; RemotePort etc. must be
// numbers or null.
func jsonColumns(t *testing.T, m map[string]any, nullStrings bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			out[k] = ""
		case string:
			if nullStrings && v == "" {
				t.Errorf("%s is \"\", want null", k)
			}
			out[k] = v
		case json.Number:
			if k != "RemotePort" && k != "LocalPort" && k != "InitiatingProcessId" {
				t.Errorf("%s is a number", k)
			}
			out[k] = v.String()
		default:
			t.Errorf("%s has type %T", k, v)
		}
	}
	for _, k := range []string{"RemotePort", "LocalPort", "InitiatingProcessId"} {
		if _, ok := m[k].(string); ok {
			t.Errorf("%s is a string, want a number", k)
		}
	}
	return out
}

func decodeJSON(t *testing.T, line []byte, v any) {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
}

func TestWriteJSONL(t *testing.T) {
	rs := records(t)
	out := write(t, JSONL, WriterOptions{}, rs)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	i := 0
	for ; sc.Scan(); i++ {
		var m map[string]any
		decodeJSON(t, sc.Bytes(), &m)
		checkColumns(t, fmt.Sprintf("line %d", i+1), jsonColumns(t, m, false), &rs[i], true)
		// AppendJSON is what the writer writes.
		if got := AppendJSON(nil, &rs[i]); !bytes.Equal(got, sc.Bytes()) {
			t.Errorf("AppendJSON gives %s, the writer %s", got, sc.Bytes())
		}
		if i == 0 {
			// The column order is Columns'.
			var pos []int
			for _, c := range Columns {
				pos = append(pos, bytes.Index(sc.Bytes(), []byte(`"`+c+`":`)))
			}
			for j := 1; j < len(pos); j++ {
				if pos[j] <= pos[j-1] {
					t.Errorf("column %s out of order in %s", Columns[j], sc.Bytes())
				}
			}
		}
	}
	if i != len(rs) {
		t.Errorf("%d lines for %d records", i, len(rs))
	}
}

func TestWriteEnvelope(t *testing.T) {
	rs := records(t)
	out := write(t, Envelope, WriterOptions{Batch: 7, Tenant: "tenant-1"}, rs)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 4<<20)
	i, lines := 0, 0
	for sc.Scan() {
		lines++
		var msg struct {
			Records []struct {
				Time          string
				TenantId      string
				OperationName string
				Category      string
				Properties    map[string]any
			}
		}
		decodeJSON(t, sc.Bytes(), &msg)
		if n := len(msg.Records); n != 7 && i+n != len(rs) {
			t.Errorf("line %d has %d records", lines, n)
		}
		for _, e := range msg.Records {
			r := &rs[i]
			if e.TenantId != "tenant-1" || e.OperationName != "Publish" || e.Category != "AdvancedHunting-DeviceNetworkEvents" {
				t.Errorf("envelope %+v", e)
			}
			if tm, err := beacon.ParseTime([]byte(e.Time)); err != nil || tm != r.Reported {
				t.Errorf("time %q, want %v", e.Time, r.Reported)
			}
			checkColumns(t, fmt.Sprintf("record %d", i), jsonColumns(t, e.Properties, true), r, true)
			i++
		}
	}
	if i != len(rs) || lines != (len(rs)+6)/7 {
		t.Errorf("%d records in %d lines, wrote %d", i, lines, len(rs))
	}
	// AppendEnvelope gives the same message as the writer.
	first := out[:bytes.IndexByte(out, '\n')]
	if got := AppendEnvelope(nil, "tenant-1", rs[:7]); !bytes.Equal(got, first) {
		t.Errorf("AppendEnvelope:\n%s\nwriter:\n%s", got, first)
	}
}

func TestWriteCSV(t *testing.T) {
	rs := records(t)
	out := write(t, CSV, WriterOptions{}, rs)
	rows, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rows[0]) != fmt.Sprint(Columns) {
		t.Fatalf("header %v", rows[0])
	}
	if len(rows) != len(rs)+1 {
		t.Fatalf("%d rows for %d records", len(rows)-1, len(rs))
	}
	for i, row := range rows[1:] {
		m := map[string]string{}
		for j, c := range Columns {
			m[c] = row[j]
		}
		checkColumns(t, fmt.Sprintf("row %d", i+1), m, &rs[i], false)
	}
	// An empty file still has its header.
	if got := write(t, CSV, WriterOptions{}, nil); string(got) != string(AppendCSVHeader(nil)) {
		t.Errorf("empty CSV: %q", got)
	}
}

func avroColumns(t *testing.T, native any) map[string]string {
	t.Helper()
	m, ok := native.(map[string]any)
	if !ok {
		t.Fatalf("decoded %T", native)
	}
	out := map[string]string{}
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			out[k] = ""
		case string:
			out[k] = v
		case map[string]any:
			for typ, x := range v {
				switch x := x.(type) {
				case string:
					out[k] = x
				case int32:
					out[k] = strconv.Itoa(int(x))
				case int64:
					out[k] = strconv.FormatInt(x, 10)
				default:
					t.Errorf("%s: %s %T", k, typ, x)
				}
			}
		default:
			t.Errorf("%s has type %T", k, v)
		}
	}
	return out
}

func TestAvro(t *testing.T) {
	rs := records(t)
	enc, err := NewAvroEncoder()
	if err != nil {
		t.Fatal(err)
	}
	schema := enc.Codec().Schema()
	for _, want := range []string{`"DeviceNetworkEvent"`, `"io.github.beaconhunt"`} {
		if !bytes.Contains([]byte(schema), []byte(want)) {
			t.Errorf("schema lacks %s", want)
		}
	}
	// Raw binary, one record per message.
	for i := range rs {
		b, err := enc.Append(nil, &rs[i])
		if err != nil {
			t.Fatal(err)
		}
		ref, err := enc.Codec().BinaryFromNative(nil, AvroNative(&rs[i]))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, ref) {
			t.Fatalf("record %d: AppendAvro gives\n%q\ngoavro gives\n%q", i, b, ref)
		}
		native, rest, err := enc.Codec().NativeFromBinary(b)
		if err != nil || len(rest) != 0 {
			t.Fatalf("record %d: %v, %d bytes left", i, err, len(rest))
		}
		checkColumns(t, fmt.Sprintf("record %d", i), avroColumns(t, native), &rs[i], false)
	}
	// A container file.
	out := write(t, Avro, WriterOptions{Seed: 3}, rs)
	if again := write(t, Avro, WriterOptions{Seed: 3}, rs); !bytes.Equal(out, again) {
		t.Error("Avro container files differ between runs")
	}
	ocf, err := goavro.NewOCFReader(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for ocf.Scan() {
		native, err := ocf.Read()
		if err != nil {
			t.Fatal(err)
		}
		checkColumns(t, fmt.Sprintf("file record %d", i), avroColumns(t, native), &rs[i], false)
		i++
	}
	if ocf.Err() != nil || i != len(rs) {
		t.Errorf("read %d of %d records: %v", i, len(rs), ocf.Err())
	}
}

func TestAppendTime(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var vals []beacon.Time
	for _, s := range []string{"1970-01-01T00:00:00Z", "1900-03-01T00:00:00Z", "2000-02-29T23:59:59.9999999Z",
		"2024-12-31T23:59:59.1Z", "9999-12-31T23:59:59.9999999Z", "1969-12-31T23:59:59.5Z", "0001-01-01T00:00:00Z"} {
		v, err := beacon.ParseTime([]byte(s))
		if err != nil {
			t.Fatal(s, err)
		}
		vals = append(vals, v)
	}
	for i := 0; i < 100000; i++ {
		v := beacon.Time(rng.Int64N(int64(400*365*day))) - 100*365*day
		switch i % 4 {
		case 1:
			v -= v % beacon.Second
		case 2:
			v -= v % 10000
		}
		vals = append(vals, v)
	}
	for _, v := range vals {
		if got, want := string(appendTime(nil, v)), v.String(); got != want {
			t.Fatalf("appendTime(%d) = %s, AppendKusto gives %s", int64(v), got, want)
		}
	}
}

func TestJSONStringEscaping(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "ctl\x00\x1f\x7f", "nl\n\r\t", "é€😀", "bad\xff\xfe", "\u2028\u2029", "<script>&"} {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("%q: %s does not parse: %v", s, b, err)
			continue
		}
		if want := sanitize(s); got != want {
			t.Errorf("%q: round trip gives %q", s, got)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, s := range []string{"jsonl", "json", "envelope", "csv", "avro"} {
		if _, err := ParseFormat(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseFormat("xml"); err == nil {
		t.Error("xml accepted")
	}
}

// errWriter fails after n bytes.
type errWriter struct{ n int }

func (w *errWriter) Write(b []byte) (int, error) {
	if w.n -= len(b); w.n < 0 {
		return 0, io.ErrShortWrite
	}
	return len(b), nil
}

func TestWriterErrors(t *testing.T) {
	rs := records(t)
	w, err := NewWriter(&errWriter{n: 1000}, JSONL, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var werr error
	for i := range rs {
		if werr = w.Write(&rs[i]); werr != nil {
			break
		}
	}
	if werr == nil {
		werr = w.Close()
	}
	if werr == nil {
		t.Error("write error not reported")
	}
	if _, err := NewWriter(io.Discard, "xml", WriterOptions{}); err == nil {
		t.Error("unknown format accepted")
	}
}
