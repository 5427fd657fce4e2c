package mde

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

func decodeAll(t *testing.T, line string) ([]beacon.Event, error) {
	t.Helper()
	var evs []beacon.Event
	_, err := Decode([]byte(line), func(e *beacon.Event) { evs = append(evs, e.Clone()) })
	return evs, err
}

func TestDecodeFlat(t *testing.T) {
	evs, err := decodeAll(t, `{"Timestamp":"2024-05-01T10:00:00.1234567Z","DeviceId":"abc","DeviceName":"wks-1",`+
		`"ActionType":"ConnectionSuccess","RemoteIP":"8.8.8.8","RemotePort":443,"RemoteUrl":"https:\/\/x.example.com\/",`+
		`"RemoteIPType":"Public","InitiatingProcessFileName":"rundll32.exe","InitiatingProcessAccountName":"alice",`+
		`"InitiatingProcessAccountDomain":"contoso","LocalIP":"10.0.0.5","Extra":{"nested":[1,{"a":null}]}}`)
	if err != nil {
		t.Fatal(err)
	}
	want := beacon.Event{Timestamp: mustTime("2024-05-01T10:00:00.1234567Z"), DeviceId: "abc", DeviceName: "wks-1",
		ActionType: "ConnectionSuccess", RemoteIP: "8.8.8.8", RemotePort: 443, HasPort: true,
		RemoteUrl: "https://x.example.com/", RemoteIPType: "Public", FileName: "rundll32.exe",
		AccountName: "alice", AccountDomain: "contoso"}
	if len(evs) != 1 || evs[0] != want {
		t.Fatalf("got %+v\nwant %+v", evs, want)
	}
}

func TestDecodeNullsAndTypes(t *testing.T) {
	evs, err := decodeAll(t, `{"Timestamp":"2024-05-01T10:00:00Z","DeviceName":null,"RemotePort":null,"RemoteUrl":null}`)
	if err != nil || len(evs) != 1 || evs[0].HasPort || evs[0].DeviceName != "" {
		t.Fatalf("nulls: %+v %v", evs, err)
	}
	evs, err = decodeAll(t, `{"Timestamp":"2024-05-01T10:00:00Z","RemotePort":"8443"}`)
	if err != nil || !evs[0].HasPort || evs[0].RemotePort != 8443 {
		t.Fatalf("port as a string: %+v %v", evs, err)
	}
	evs, err = decodeAll(t, `{"Timestamp":"2024-05-01T10:00:00Z","RemotePort":443.0}`)
	if err != nil || !evs[0].HasPort || evs[0].RemotePort != 443 {
		t.Fatalf("port as an integral float: %+v %v", evs, err)
	}
	if _, err = decodeAll(t, `{"Timestamp":"2024-05-01T10:00:00Z","RemotePort":443.5}`); err == nil {
		t.Fatal("a fractional port must be an error")
	}
	evs, err = decodeAll(t, `{"Timestamp":"2024-05-01T10:00:00Z","DeviceName":"caf\u00e9 \ud83d\ude00"}`)
	if err != nil || evs[0].DeviceName != "café 😀" {
		t.Fatalf("unicode escapes: %+v %v", evs, err)
	}
}

func TestDecodeEnvelope(t *testing.T) {
	line := `{"records":[` +
		`{"time":"2024-05-01T10:00:05Z","tenantId":"t","operationName":"Publish","category":"AdvancedHunting-DeviceNetworkEvents",` +
		`"properties":{"Timestamp":"2024-05-01T10:00:00Z","DeviceId":"a","RemoteIP":"1.2.3.4","RemotePort":80}},` +
		`{"time":"2024-05-01T10:00:06Z","properties":{"Timestamp":"2024-05-01T10:00:01.5Z","DeviceId":"b","RemotePort":81}}]}`
	evs, err := decodeAll(t, line)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].DeviceId != "a" || evs[1].DeviceId != "b" ||
		evs[0].Timestamp != mustTime("2024-05-01T10:00:00Z") || evs[1].Timestamp != mustTime("2024-05-01T10:00:01.5Z") {
		t.Fatalf("envelope: %+v (properties.Timestamp, not time, is the event time)", evs)
	}
}

// An envelope with a wrong record keeps the others and still reports the
// line, naming the record.
func TestDecodeEnvelopeKeepsGoodRecords(t *testing.T) {
	line := `{"records":[` +
		`{"properties":{"Timestamp":"2024-05-01T10:00:00Z","DeviceId":"a"}},` +
		`{"properties":{"Timestamp":"yesterday","DeviceId":"b"}},` +
		`{"properties":{"Timestamp":"2024-05-01T10:00:02Z","RemotePort":"x","DeviceId":"c"}},` +
		`{"time":"2024-05-01T10:00:03Z"},` +
		`{"properties":{"Timestamp":"2024-05-01T10:00:04Z","DeviceId":"e"}}]}`
	evs, err := decodeAll(t, line)
	if err == nil || !strings.HasPrefix(err.Error(), "records[1]: Timestamp") {
		t.Fatalf("err = %v, want the first bad record named", err)
	}
	if len(evs) != 2 || evs[0].DeviceId != "a" || evs[1].DeviceId != "e" {
		t.Fatalf("kept %+v, want records a and e", evs)
	}
	// Broken JSON ends the line: nothing after it can be trusted.
	evs, err = decodeAll(t, `{"records":[{"properties":{"Timestamp":"2024-05-01T10:00:00Z"}},{"properties":{"Timestamp":]}`)
	if err == nil || len(evs) != 1 {
		t.Fatalf("broken JSON: %d events, %v", len(evs), err)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, line := range []string{
		`{"Timestamp":"2024-05-01T10:00:00Z"`,                   // truncated
		`{"DeviceId":"a"}`,                                      // no Timestamp
		`{"Timestamp":null}`,                                    // null Timestamp
		`{"Timestamp":"yesterday"}`,                             // bad Timestamp
		`{"Timestamp":"2024-02-30T10:00:00Z"}`,                  // no such day
		`{"Timestamp":"2024-05-01T10:00:00Z","RemotePort":"x"}`, // bad port
		`{"Timestamp":"2024-05-01T10:00:00Z"} trailing`,
		`[1,2,3]`,
		`{"records":[{"time":"x"}]}`, // no properties
		`{"records":[{"properties":{"DeviceId":"a"}}]}`,
		`{"Timestamp":"2024-05-01T10:00:00Z","DeviceName":"a` + "\x01" + `"}`,
		`{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `,"Timestamp":"2024-05-01T10:00:00Z"}`,
	} {
		if _, err := decodeAll(t, line); err == nil {
			t.Errorf("no error for %q", line)
		}
	}
	if evs, err := decodeAll(t, "   \r"); err != nil || len(evs) != 0 {
		t.Errorf("blank line: %v %v", evs, err)
	}
}

func readAll(t *testing.T, data []byte) ([]beacon.Event, []BadLine, Stats) {
	t.Helper()
	var evs []beacon.Event
	var bad []BadLine
	st, err := Read(context.Background(), bytes.NewReader(data), "in.jsonl",
		Options{Workers: 2, OnBad: func(b BadLine) { bad = append(bad, b) }},
		func(b []beacon.Event) { evs = append(evs, b...) })
	if err != nil {
		t.Fatal(err)
	}
	return evs, bad, st
}

func TestReadNamesBadLines(t *testing.T) {
	var buf bytes.Buffer
	const n = 30000 // spans several chunks
	for i := 1; i <= n; i++ {
		switch {
		case i%1000 == 7:
			buf.WriteString(`{"Timestamp":"broken"` + "\n")
		default:
			fmt.Fprintf(&buf, `{"Timestamp":"2024-05-01T10:00:00Z","DeviceId":"d%d","RemotePort":%d}`+"\n", i, i%65536)
		}
	}
	evs, bad, st := readAll(t, buf.Bytes())
	if len(evs) != n-30 || len(bad) != 30 || st.Bad != 30 || st.Lines != n {
		t.Fatalf("events %d bad %d stats %+v", len(evs), len(bad), st)
	}
	for i, b := range bad {
		if b.Line != int64(1000*i+7) || b.Source != "in.jsonl" {
			t.Fatalf("bad line %d reported as %v", 1000*i+7, b)
		}
	}
	if !strings.HasPrefix(bad[0].Error(), "in.jsonl:7: ") {
		t.Fatalf("error text %q does not name file:line", bad[0].Error())
	}
	// Order is input order, even with parallel decoding.
	for i, e := range evs[:100] {
		if want := fmt.Sprintf("d%d", i+1); e.DeviceId != want && i < 6 {
			t.Fatalf("event %d is %s, want %s", i, e.DeviceId, want)
		}
	}
	// The same, gzipped, without a trailing newline.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	zw.Close()
	evs2, bad2, _ := readAll(t, gz.Bytes())
	if len(evs2) != len(evs) || len(bad2) != len(bad) {
		t.Fatalf("gzip: %d events %d bad", len(evs2), len(bad2))
	}
}

func TestReadCSV(t *testing.T) {
	csvData := "\ufeffTimestamp,DeviceId,DeviceName,ActionType,RemoteIP,RemotePort,RemoteUrl,RemoteIPType,InitiatingProcessFileName,InitiatingProcessAccountName,InitiatingProcessAccountDomain\n" +
		"2024-05-01T10:00:00.5Z,d1,wks,ConnectionSuccess,8.8.8.8,443,\"https://a.example.com/x,y\",Public,x.exe,alice,contoso\n" +
		"2024-05-01T10:00:01Z,d1,wks,ConnectionSuccess,8.8.8.8,,,Public,x.exe,alice,contoso\n" +
		"not a time,d1,wks,ConnectionSuccess,8.8.8.8,443,,Public,x.exe,alice,contoso\n" +
		"2024-05-01T10:00:02Z,d1\n" +
		"2024-05-01T10:00:03Z,d1,wks,ConnectionSuccess,8.8.8.8,443,,Public,x.exe,alice,contoso\n"
	evs, bad, _ := readAll(t, []byte(csvData))
	if len(evs) != 3 || len(bad) != 2 {
		t.Fatalf("events %d bad %v", len(evs), bad)
	}
	if bad[0].Line != 4 || bad[1].Line != 5 {
		t.Fatalf("bad lines %v, want lines 4 and 5", bad)
	}
	if evs[0].RemoteUrl != "https://a.example.com/x,y" || !evs[0].HasPort || evs[1].HasPort {
		t.Fatalf("csv fields: %+v", evs[:2])
	}
}

// FuzzDecode: arbitrary bytes never panic, and a line either decodes or
// is named with an error; what decodes re-encodes to the same events.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"Timestamp":"2024-05-01T10:00:00.1234567Z","DeviceId":"a","RemotePort":443}`))
	f.Add([]byte(`{"records":[{"properties":{"Timestamp":"2024-05-01T10:00:00Z","RemoteIP":"8.8.8.8"}}]}`))
	f.Add([]byte(`{"Timestamp":"2024-05-01T10:00:00Z","DeviceName":"\u00e9\"","x":[{"y":null}]}`))
	f.Add([]byte(`{"Timestamp":`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var evs []beacon.Event
		n, err := Decode(line, func(e *beacon.Event) { evs = append(evs, e.Clone()) })
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if n != len(evs) {
			t.Fatalf("returned %d, emitted %d", n, len(evs))
		}
		for _, e := range evs {
			// Re-encode as a Streaming API record carrying every field.
			props := map[string]any{"Timestamp": e.Timestamp.String(), "DeviceId": e.DeviceId, "DeviceName": e.DeviceName,
				"ActionType": e.ActionType, "RemoteIP": e.RemoteIP, "RemoteIPType": e.RemoteIPType, "RemoteUrl": e.RemoteUrl,
				"InitiatingProcessFileName": e.FileName, "InitiatingProcessAccountName": e.AccountName,
				"InitiatingProcessAccountDomain": e.AccountDomain, "InitiatingProcessSHA256": e.SHA256,
				"InitiatingProcessSHA1": e.SHA1, "InitiatingProcessFolderPath": e.FolderPath,
				"InitiatingProcessCommandLine": e.CommandLine, "InitiatingProcessId": e.ProcessId, "ReportId": e.ReportId,
				"AdditionalFields": map[string]any{"uniqueEventsAggregated": e.AggregatedCount}}
			if e.HasPort {
				props["RemotePort"] = e.RemotePort
			}
			obj := map[string]any{"tenantId": e.TenantId, "properties": props}
			b, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			again, err := decodeAll(t, string(b))
			if err != nil || len(again) != 1 {
				t.Fatalf("re-decoding %s: %v", b, err)
			}
			// encoding/json replaces invalid UTF-8; compare only valid input.
			valid := true
			for _, s := range []string{e.DeviceId, e.DeviceName, e.ActionType, e.RemoteIP, e.RemoteIPType, e.RemoteUrl,
				e.FileName, e.AccountName, e.AccountDomain, e.TenantId, e.SHA256, e.SHA1, e.FolderPath, e.CommandLine} {
				valid = valid && utf8.ValidString(s)
			}
			if valid && again[0] != e {
				t.Fatalf("round trip: %+v != %+v", again[0], e)
			}
		}
	})
}

func mustTime(s string) beacon.Time {
	t, err := beacon.ParseTime([]byte(s))
	if err != nil {
		panic(err)
	}
	return t
}

// TestScanPlain holds the eight-bytes-at-a-time scan to the byte loop.
func TestScanPlain(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte{'a', 'Z', '"', '\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xa2, 0xdc, 0xff, '0', ':'}
	for range 20000 {
		b := make([]byte, r.IntN(70))
		for i := range b {
			if r.IntN(6) == 0 {
				b[i] = alphabet[r.IntN(len(alphabet))]
			} else {
				b[i] = byte(0x20 + r.IntN(0xe0))
			}
		}
		j := r.IntN(len(b) + 1)
		want := j
		for want < len(b) && !special[b[want]] {
			want++
		}
		if got := scanPlain(b, j); got != want {
			t.Fatalf("scanPlain(%q, %d) = %d, want %d", b, j, got, want)
		}
		if got := quoteEnd(unsafe.Pointer(unsafe.SliceData(b)), j, len(b)); got != want {
			t.Fatalf("quoteEnd(%q, %d) = %d, want %d", b, j, got, want)
		}
		if got := quoteEndGo(unsafe.Pointer(unsafe.SliceData(b)), j, len(b)); got != want {
			t.Fatalf("quoteEndGo(%q, %d) = %d, want %d", b, j, got, want)
		}
	}
}

func BenchmarkReadSmall(b *testing.B) {
	data := []byte("{\"Timestamp\":\"2024-05-01T10:00:00Z\"}\nbroken\n")
	for b.Loop() {
		Read(context.Background(), bytes.NewReader(data), "x", Options{Workers: 2}, func([]beacon.Event) {})
	}
}

// TestEqAt holds eqAt's word compares to ==, for every length up to past
// maxLast and a difference at every position.
func TestEqAt(t *testing.T) {
	b := make([]byte, 2*maxLast+16)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	for n := 0; n <= maxLast+9; n++ {
		s := string(b[:n])
		p := unsafe.Pointer(unsafe.SliceData(b))
		if !eqAt(p, s) {
			t.Fatalf("eqAt(%q, %q) = false", b[:n], s)
		}
		for d := range n {
			c := []byte(s)
			c[d] ^= 0x20
			if eqAt(p, string(c)) {
				t.Fatalf("eqAt(%q, %q) = true", b[:n], c)
			}
		}
	}
}
