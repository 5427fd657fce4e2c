package mde

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/linkedin/goavro/v2"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

var update = flag.Bool("update", false, "rewrite testdata/shapes, testdata/golden.json and the fuzz seed corpus")

// kv is one key of a JSON object, in the order the producer wrote it.
type kv struct {
	k string
	v json.RawMessage
}

// obj is a JSON object that keeps its key order.
type obj []kv

func (o obj) get(k string) json.RawMessage {
	for _, e := range o {
		if e.k == k {
			return e.v
		}
	}
	return nil
}

func (o obj) set(k string, v any) obj {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	out := append(obj(nil), o...)
	for i := range out {
		if out[i].k == k {
			out[i].v = b
			return out
		}
	}
	return append(out, kv{k, b})
}

func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(e.k)
		b.Write(k)
		b.WriteByte(':')
		b.Write(e.v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func parseObj(t testing.TB, b []byte) obj {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("want an object: %v", err)
	}
	var o obj
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		o = append(o, kv{tok.(string), v})
	}
	return o
}

// record is a Streaming API record: the envelope's keys and the row.
type record struct {
	env   obj // without properties
	props obj
}

func (r record) json() obj {
	return append(append(obj(nil), r.env...), kv{"properties", mustJSON(r.props)})
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// loadRecord reads testdata/record.json: one DeviceNetworkEvents record as
// the Streaming API writes it to a storage account, every column present.
func loadRecord(t testing.TB) record {
	b, err := os.ReadFile("testdata/record.json")
	if err != nil {
		t.Fatal(err)
	}
	full := parseObj(t, b)
	var r record
	for _, e := range full {
		if e.k == "properties" {
			r.props = parseObj(t, e.v)
		} else {
			r.env = append(r.env, e)
		}
	}
	return r
}

// goldenRecords are the real-shaped record, an hourly aggregated report
// (AdditionalFields a JSON-encoded string), an ICMP row (null port,
// ReportId as a string), and a record of another table, which every shape
// leaves out.
func goldenRecords(t testing.TB) []record {
	base := loadRecord(t)
	agg := record{base.env.set("time", "2024-05-01T11:01:40.1Z"), base.props.
		set("Timestamp", "2024-05-01T11:00:00Z").
		set("ActionType", "ConnectionSuccessAggregatedReport").
		set("AdditionalFields", `{"uniqueEventsAggregated":42,"firstSeen":"2024-05-01T10:00:03.1234567Z","lastSeen":"2024-05-01T10:59:03Z"}`).
		set("ReportId", 4294983452)}
	icmp := record{base.env, base.props.
		set("Timestamp", "2024-05-01T10:00:07Z").
		set("ActionType", "ConnectionFailed").
		set("RemotePort", nil).
		set("RemoteUrl", "").
		set("Protocol", "Icmp").
		set("ReportId", "4294983453")}
	other := record{base.env.set("category", "AdvancedHunting-DeviceProcessEvents"), obj{}.
		set("Timestamp", "2024-05-01T10:00:09Z").
		set("DeviceId", "c2f5a3e6a1e44d2a9b7f3c0e6d8a1b2c3d4e5f60").
		set("ActionType", "ProcessCreated").
		set("FileName", "whoami.exe")}
	return []record{base, agg, icmp, other}
}

// shape writes records in one of the shapes users have.
type shape struct {
	name  string
	write func(t testing.TB, recs []record) []byte
	// rowsOnly shapes carry rows, not records: a record of another table
	// cannot be written in them.
	rowsOnly bool
}

func network(recs []record, rowsOnly bool) []record {
	if !rowsOnly {
		return recs
	}
	var out []record
	for _, r := range recs {
		if string(r.env.get("category")) == `"AdvancedHunting-DeviceNetworkEvents"` {
			out = append(out, r)
		}
	}
	return out
}

func lines(vals []json.RawMessage, eol string) []byte {
	var b bytes.Buffer
	for _, v := range vals {
		b.Write(v)
		b.WriteString(eol)
	}
	return b.Bytes()
}

func rowsOf(recs []record) []json.RawMessage {
	var out []json.RawMessage
	for _, r := range recs {
		out = append(out, mustJSON(r.props))
	}
	return out
}

func recordsOf(recs []record) []json.RawMessage {
	var out []json.RawMessage
	for _, r := range recs {
		out = append(out, mustJSON(r.json()))
	}
	return out
}

func indent(t testing.TB, v json.RawMessage) []byte {
	var b bytes.Buffer
	if err := json.Indent(&b, v, "", "  "); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzipped(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// captureSchema is the Avro schema of Event Hubs Capture files.
const captureSchema = `{"type":"record","name":"EventData","namespace":"Microsoft.ServiceBus.Messaging","fields":[
{"name":"SequenceNumber","type":"long"},{"name":"Offset","type":"string"},{"name":"EnqueuedTimeUtc","type":"string"},
{"name":"SystemProperties","type":{"type":"map","values":["long","double","string","bytes"]}},
{"name":"Properties","type":{"type":"map","values":["long","double","string","bytes","null"]}},
{"name":"Body","type":["null","bytes"]}]}`

func shapes() []shape {
	return []shape{
		{"storage-account.json", func(t testing.TB, recs []record) []byte { return lines(recordsOf(recs), "\r\n") }, false},
		{"rows.jsonl", func(t testing.TB, recs []record) []byte { return lines(rowsOf(recs), "\n") }, true},
		{"bom-crlf.jsonl", func(t testing.TB, recs []record) []byte {
			return append([]byte("\ufeff"), lines(rowsOf(recs), "\r\n")...)
		}, true},
		{"envelope.jsonl", func(t testing.TB, recs []record) []byte {
			var out [][]byte
			for i := 0; i < len(recs); i += 2 {
				out = append(out, mustJSON(map[string]any{"records": recordsOf(recs[i:min(i+2, len(recs))])}))
			}
			return append(bytes.Join(out, []byte("\n")), '\n')
		}, false},
		{"pretty.json", func(t testing.TB, recs []record) []byte {
			var b bytes.Buffer
			for _, r := range recordsOf(recs) {
				b.Write(indent(t, r))
				b.WriteByte('\n')
			}
			return b.Bytes()
		}, false},
		{"rows-array.json", func(t testing.TB, recs []record) []byte { return indent(t, mustJSON(rowsOf(recs))) }, true},
		{"records-array.json", func(t testing.TB, recs []record) []byte { return mustJSON(recordsOf(recs)) }, false},
		{"advanced-hunting-api.json", func(t testing.TB, recs []record) []byte {
			var schema []map[string]string
			for _, c := range recs[0].props {
				schema = append(schema, map[string]string{"Name": c.k, "Type": "String"})
			}
			return indent(t, mustJSON(obj{}.set("Schema", schema).set("Results", rowsOf(recs))))
		}, true},
		{"graph-hunting.json", func(t testing.TB, recs []record) []byte {
			var schema []map[string]string
			for _, c := range recs[0].props {
				schema = append(schema, map[string]string{"name": c.k, "type": "String"})
			}
			return indent(t, mustJSON(obj{}.
				set("@odata.context", "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults").
				set("schema", schema).set("results", rowsOf(recs))))
		}, true},
		{"splunk-body.json", func(t testing.TB, recs []record) []byte {
			// Splunk's add-on for Microsoft Cloud Services: a message in
			// "body" with the Event Hubs system properties beside it; here
			// records alone and in envelopes of two, alternately.
			var out []json.RawMessage
			for i := 0; i < len(recs); {
				var body any = recordsOf(recs[i : i+1])[0]
				n := 1
				if len(out)%2 == 1 {
					n = min(2, len(recs)-i)
					body = map[string]any{"records": recordsOf(recs[i : i+n])}
				}
				out = append(out, mustJSON(obj{}.set("body", body).set("x-opt-sequence-number", 4100+i).
					set("x-opt-offset", strconv.Itoa(8_590_000_000+i*4096)).set("x-opt-enqueued-time", 1714557790000+i)))
				i += n
			}
			return lines(out, "\n")
		}, false},
		{"export.csv", writeCSV, false},
		{"powershell.csv", func(t testing.TB, recs []record) []byte {
			// Windows PowerShell 5.1's Export-Csv, -NoTypeInformation forgotten.
			return append([]byte("#TYPE System.Management.Automation.PSCustomObject\r\n"), bytes.TrimPrefix(writeCSV(t, recs), utf8BOM)...)
		}, false},
		{"powershell-utf16.json", func(t testing.TB, recs []record) []byte {
			// ConvertTo-Json > file in Windows PowerShell 5.1: UTF-16LE with
			// its byte order mark, CRLF.
			text := bytes.ReplaceAll(indent(t, mustJSON(rowsOf(recs))), []byte("\n"), []byte("\r\n"))
			b := []byte{0xff, 0xfe}
			for _, u := range utf16.Encode([]rune(string(text))) {
				b = binary.LittleEndian.AppendUint16(b, u)
			}
			return b
		}, true},
		{"rows-many-a-line.json", func(t testing.TB, recs []record) []byte {
			// An array of rows, fifty to a line: the first line is longer
			// than Read's buffer.
			var b bytes.Buffer
			b.WriteByte('[')
			for i, r := range rowsOf(recs) {
				if i > 0 {
					b.WriteByte(',')
					if i%50 == 0 {
						b.WriteByte('\n')
					}
				}
				b.Write(r)
			}
			b.WriteString("]\n")
			return b.Bytes()
		}, true},
		{"compact-then-pretty.json", func(t testing.TB, recs []record) []byte {
			// Values one to a line, then indented (files concatenated).
			var b bytes.Buffer
			for i, r := range recordsOf(recs) {
				if i%2 == 0 {
					b.Write(r)
				} else {
					b.Write(indent(t, r))
				}
				b.WriteByte('\n')
			}
			return b.Bytes()
		}, false},
		{"rows.jsonl.gz", func(t testing.TB, recs []record) []byte { return gzipped(lines(rowsOf(recs), "\n")) }, true},
		{"capture.avro", func(t testing.TB, recs []record) []byte {
			codec, err := goavro.NewCodec(captureSchema)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			w, err := goavro.NewOCFWriter(goavro.OCFConfig{W: &b, Codec: codec, CompressionName: "deflate"})
			if err != nil {
				t.Fatal(err)
			}
			var data []any
			for i := 0; i < len(recs); i += 2 {
				body := mustJSON(map[string]any{"records": recordsOf(recs[i:min(i+2, len(recs))])})
				data = append(data, map[string]any{"SequenceNumber": int64(i), "Offset": strconv.Itoa(i * 1000),
					"EnqueuedTimeUtc": "5/1/2024 10:01:13 AM", "SystemProperties": map[string]any{},
					"Properties": map[string]any{}, "Body": goavro.Union("bytes", []byte(body))})
			}
			if err := w.Append(data); err != nil {
				t.Fatal(err)
			}
			return b.Bytes()
		}, false},
	}
}

// writeCSV writes a portal-style export of a union of tables: a BOM, CRLF,
// every column of every table (here Type and FileName besides the network
// columns), empty cells for missing values.
func writeCSV(t testing.TB, recs []record) []byte {
	var cols []string
	for _, c := range recs[0].props {
		cols = append(cols, c.k)
	}
	cols = append(cols, "FileName", "Type")
	var b bytes.Buffer
	b.WriteString("\ufeff")
	b.WriteString(strings.Join(cols, ",") + "\r\n")
	for _, r := range recs {
		typ := strings.TrimPrefix(strings.Trim(string(r.env.get("category")), `"`), "AdvancedHunting-")
		for i, c := range cols {
			if i > 0 {
				b.WriteByte(',')
			}
			v := r.props.get(c)
			if c == "Type" {
				v = mustJSON(typ)
			}
			var s string
			var x any
			if v != nil {
				json.Unmarshal(v, &x)
			}
			switch x := x.(type) {
			case nil:
			case string:
				s = x
			case float64:
				s = strconv.FormatFloat(x, 'f', -1, 64)
			default:
				s = string(v)
			}
			if strings.ContainsAny(s, "\",\r\n") {
				s = `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
			}
			b.WriteString(s)
		}
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

func readFile(t testing.TB, name string, data []byte) ([]beacon.Event, []BadLine, Stats) {
	t.Helper()
	var evs []beacon.Event
	var bad []BadLine
	st, err := Read(context.Background(), bytes.NewReader(data), name, Options{Workers: 2,
		OnBad: func(b BadLine) { bad = append(bad, b) }},
		func(b []beacon.Event) {
			for i := range b {
				evs = append(evs, b[i].Clone())
			}
		})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return evs, bad, st
}

// TestGoldenShapes decodes the real-shaped records written in every shape
// (testdata/shapes, regenerated with -update) and checks each against
// testdata/golden.json: the same three events, every field filled as the
// record had it, and the other table's record left out.
func TestGoldenShapes(t *testing.T) {
	recs := goldenRecords(t)
	if *update {
		os.MkdirAll("testdata/shapes", 0o755)
		for _, s := range shapes() {
			if err := os.WriteFile(filepath.Join("testdata/shapes", s.name), s.write(t, network(recs, s.rowsOnly)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if *update {
		defer writeFuzzCorpus(t)
	}
	wantJSON, err := os.ReadFile("testdata/golden.json")
	if err != nil && !*update {
		t.Fatal(err)
	}
	for _, s := range shapes() {
		t.Run(s.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/shapes", s.name))
			if err != nil {
				t.Fatal(err)
			}
			evs, bad, st := readFile(t, s.name, data)
			if len(bad) != 0 {
				t.Fatalf("bad lines: %v", bad)
			}
			got, _ := json.MarshalIndent(evs, "", "  ")
			got = append(got, '\n')
			if *update && s.name == "storage-account.json" {
				os.WriteFile("testdata/golden.json", got, 0o644)
				wantJSON = got
			}
			want := wantJSON
			if s.rowsOnly || strings.HasSuffix(s.name, ".csv") { // rows carry no envelope, so no tenantId
				want = bytes.ReplaceAll(want, []byte(`"TenantId": "4f2b9c1e-7d3a-4e8b-9a61-0c5d2e7f8b13"`), []byte(`"TenantId": ""`))
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s decodes to\n%s\nwant (testdata/golden.json)\n%s", s.name, got, want)
			}
			if wantOther := int64(len(recs) - len(network(recs, true))); !s.rowsOnly && st.Other != wantOther {
				t.Errorf("other tables: %d, want %d", st.Other, wantOther)
			}
		})
	}
	// The golden file itself says what a reviewer checks by eye.
	var want []beacon.Event
	if err := json.Unmarshal(wantJSON, &want); err != nil || len(want) != 3 {
		t.Fatalf("golden.json: %d events, %v", len(want), err)
	}
	if w := want[0]; w.TenantId != "4f2b9c1e-7d3a-4e8b-9a61-0c5d2e7f8b13" || w.ReportId != 4294983451 || w.ProcessId != 6412 ||
		w.FolderPath != `c:\windows\system32\rundll32.exe` || !strings.HasPrefix(w.CommandLine, `rundll32.exe "C:\Users`) ||
		w.SHA256 == "" || w.SHA1 == "" || !w.HasPort || w.RemotePort != 443 {
		t.Errorf("golden row 0: %+v", w)
	}
	if want[1].AggregatedCount != 42 || want[2].HasPort || want[2].ReportId != 4294983453 {
		t.Errorf("golden rows 1, 2: %+v %+v", want[1], want[2])
	}
}

// beaconRecords are a day of a 60 s beacon (±2 s) hidden in browsing noise,
// built from the real-shaped record.
func beaconRecords(t testing.TB) []record {
	base := loadRecord(t)
	r := rand.New(rand.NewPCG(7, 7))
	var recs []record
	start := mustTime("2024-05-01T00:00:00Z")
	for i := range 300 {
		ts := start + beacon.Time(i)*60*beacon.Second + beacon.Time(r.Int64N(4_000))*beacon.Second/1000
		recs = append(recs, record{base.env, base.props.set("Timestamp", ts.String()).set("ReportId", 1000+i)})
	}
	for range 500 {
		ts := start + beacon.Time(r.Int64N(int64(5*3600*beacon.Second)))
		site := r.IntN(40)
		recs = append(recs, record{base.env, base.props.set("Timestamp", ts.String()).
			set("RemoteIP", fmt.Sprintf("20.%d.1.%d", site, 1+r.IntN(3))).
			set("RemoteUrl", fmt.Sprintf("www.site%d.example.com", site)).
			set("InitiatingProcessFileName", "msedge.exe")})
	}
	return recs
}

// TestBeaconOncePerShape is the acceptance test: a 60 s beacon written in
// every shape is found once by the hunt, in each file.
func TestBeaconOncePerShape(t *testing.T) {
	recs := beaconRecords(t)
	for _, s := range shapes() {
		t.Run(s.name, func(t *testing.T) {
			data := s.write(t, recs)
			h := beacon.NewHunt(beacon.Seed())
			st, err := Read(context.Background(), bytes.NewReader(data), s.name, Options{QueryOnly: true, Concurrent: true},
				func(b []beacon.Event) { h.AddBatch(b) })
			if err != nil || st.Bad != 0 || st.Events != int64(len(recs)) {
				t.Fatalf("read %+v, %v; want %d events", st, err, len(recs))
			}
			now, _ := h.DefaultNow()
			rows := h.Rows(now)
			if len(rows) != 1 || rows[0].RemoteIP != "45.77.10.23" || rows[0].RemotePort != 443 ||
				rows[0].FileName != "rundll32.exe" {
				t.Fatalf("%s: rows %+v, want the one beacon", s.name, rows)
			}
		})
	}
}

// TestTruncated: a cut gzip stream or Avro file is an error, not a short
// read; so is a CSV header without the query's columns.
func TestTruncated(t *testing.T) {
	for _, name := range []string{"rows.jsonl.gz", "capture.avro"} {
		data, err := os.ReadFile(filepath.Join("testdata/shapes", name))
		if err != nil {
			t.Fatal(err)
		}
		for _, cut := range []int{len(data) - 1, len(data) - 9, len(data) / 2} {
			_, err := Read(context.Background(), bytes.NewReader(data[:cut]), name, Options{}, func([]beacon.Event) {})
			if err == nil {
				t.Errorf("%s cut to %d of %d bytes: no error", name, cut, len(data))
			}
		}
	}
	csv := "Timestamp,DeviceId,ActionType,RemoteIP\n2024-05-01T10:00:00Z,d,ConnectionSuccess,8.8.8.8\n"
	_, err := Read(context.Background(), strings.NewReader(csv), "x.csv", Options{}, func([]beacon.Event) {})
	var mc *MissingColumnsError
	if !errors.As(err, &mc) || !strings.Contains(err.Error(), "x.csv:1: CSV header lacks DeviceName, RemotePort, InitiatingProcessFileName") {
		t.Errorf("CSV without columns: %v", err)
	}
}

// TestValuesReportLines: in pretty-printed input a bad row is named by the
// line it starts at, and reading resumes after broken JSON.
func TestValuesReportLines(t *testing.T) {
	in := "[\n" +
		"  {\"Timestamp\": \"2024-05-01T10:00:00Z\", \"RemotePort\": 1},\n" +
		"  {\n    \"Timestamp\": \"yesterday\"\n  },\n" +
		"  {\"Timestamp\": \"2024-05-01T10:00:02Z\"}\n" +
		"]\n" +
		"{\n  \"Timestamp\": \"2024-05-01T10:00:03Z\",\n  \"DeviceId\": \n}\n" +
		"{\n  \"Timestamp\": \"2024-05-01T10:00:04Z\"\n}\n"
	evs, bad, st := readFile(t, "in.json", []byte(in))
	if st.Shape != ShapeValues || len(evs) != 3 || len(bad) != 2 || bad[0].Line != 3 || bad[1].Line != 8 {
		t.Fatalf("shape %s, %d events, bad %v", st.Shape, len(evs), bad)
	}
	if !strings.Contains(bad[0].Error(), "in.json:3: [1]: Timestamp") {
		t.Errorf("bad row: %v", bad[0])
	}
}
