package mde

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestKeyWords holds the hand-written key words to colNames, and the fast
// key path to the slow one: every known key, every prefix and extension
// of one, and spacing around the colon, read by keyCol, give colOf's
// answer and leave the decoder at the value.
func TestKeyWords(t *testing.T) {
	word := func(s string) uint64 {
		var b [8]byte
		copy(b[:], s)
		return binary.LittleEndian.Uint64(b[:])
	}
	for w, s := range map[uint64]string{
		wTimestam: "Timestam", wDeviceId: "DeviceId", wDeviceNa: "DeviceNa", wActionTy: "ActionTy",
		wRemoteIP: "RemoteIP", wRemotePo: "RemotePo", wRemoteUr: "RemoteUr", wInitiati: "Initiati",
		wAddition: "Addition", wReportId: "ReportId", wRecords: `records"`, wResultsU: `Results"`,
		wResults: `results"`, wProperti: "properti", wTenantId: "tenantId", wCategory: "category",
		wLocalIP: `LocalIP"`, wLocalPor: "LocalPor", wProtocol: "Protocol", wOperatio: "operatio",
		w5Time: `time"`, w5Type: `Type"`,
	} {
		if word(s) != w {
			t.Errorf("word of %q is %#x, want %#x", s, word(s), w)
		}
	}
	var keys []string
	for c := colTimestamp; c < numCols; c++ {
		n := colNames[c]
		if colOf([]byte(n)) != c {
			t.Errorf("colOf(%q) = %d, want %d", n, colOf([]byte(n)), c)
		}
		keys = append(keys, n, n+"x", n+"T", n[:len(n)-1], "x"+n, strings.ToLower(n), n[:len(n)-1]+"#")
		for k := 8; k < len(n); k++ { // the first word matches, the rest does not
			keys = append(keys, n[:k]+"#"+n[k+1:])
		}
	}
	keys = append(keys, "InitiatingProcess", "InitiatingProcessS", "InitiatingProcessSHA", "InitiatingProcessAccount", "InitiatingProcessF", "")
	for _, k := range keys {
		for _, sep := range []string{":", " :", ": ", ":\n\t"} {
			line := `"` + k + `"` + sep + `1}`
			d := decoder{b: []byte(line)}
			c, err := d.keyCol()
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if want := colOf([]byte(k)); c != want {
				t.Errorf("%s: col %d, want %d", line, c, want)
			}
			if d.b[d.i] != '1' {
				t.Errorf("%s: left at %q, want the value", line, d.b[d.i:])
			}
		}
	}
	// Escapes take the slow path to the same column.
	d := decoder{b: []byte(`"Time\u0073tamp":1`)}
	if c, err := d.keyCol(); err != nil || c != colTimestamp {
		t.Errorf("escaped Timestamp: col %d, %v", c, err)
	}
}

// FuzzKeyTemplate holds the key templates (keyAt, and fastKeys, which
// reads an object along its template) to the decoder without them: every
// line of the input, decoded by one decoder that carries its templates
// from line to line, gives the events and the error of a fresh decoder
// that finds every key by keyCol, with and without QueryOnly.
func FuzzKeyTemplate(f *testing.F) {
	row := `{"Timestamp":"2024-05-01T10:00:00Z","DeviceId":"a","ActionType":"ConnectionSuccess","RemoteIP":"8.8.8.8","RemotePort":443,"LocalIP":"10.0.0.1","InitiatingProcessFileName":"x.exe"}`
	f.Add([]byte(row + "\n" + row + "\n" +
		`{"DeviceId":"b","Timestamp":"2024-05-01T10:00:01Z","RemotePort":"443","Timestamp2":1,"LocalIP":"x"}` + "\n" +
		`{"Timestamp" :"2024-05-01T10:00:00Z", "DeviceId":"c","Device\u0049d":"d","RemoteIP": "1.2.3.4"}` + "\n" + row + "\n" +
		// The keys of row, each but its last byte: a prediction is the whole key.
		strings.NewReplacer(`Timestamp"`, `Timestamq"`, `ActionType"`, `ActionTypf"`, `RemoteIP"`, `RemoteIQ"`).Replace(row)))
	f.Add([]byte(`{"records":[{"time":"t","tenantId":"x","category":"AdvancedHunting-DeviceNetworkEvents","properties":{"Timestamp":"2024-05-01T10:00:00Z","RemotePort":1}},` +
		`{"time":"t","tenantId":"y","category":"AdvancedHunting-DeviceProcessEvents","properties":{"Timestamp":"2024-05-01T10:00:00Z"}}]}` + "\n" +
		`{"time":"t","tenantId":"x","properties":{"RemotePort":2,"Timestamp":"2024-05-01T10:00:02Z"}}` + "\n" +
		`{"Results":[{"Timestamp":"2024-05-01T10:00:00Z","RemotePort":3}],"Schema":[]}`))
	// A record's tenantId and category as the last ones, then as the last
	// ones and more (an escape, a quote, other bytes), then back.
	rec := func(tenant, category string) string {
		return `{"time":"t","tenantId":"` + tenant + `","category":"` + category + `","properties":{"Timestamp":"2024-05-01T10:00:00Z","RemotePort":1}}`
	}
	const cat = "AdvancedHunting-DeviceNetworkEvents"
	f.Add([]byte(`{"records":[` + rec("x", cat) + `,` + rec("x", cat) + `,` + rec(`x\"y`, cat) + `,` + rec("xy", cat+"s") + `,` + rec("x", cat) + `]}` + "\n" +
		rec("x", cat) + "\n" + rec(`x\u0041`, cat) + "\n" + rec("", "") + "\n" + rec("x", cat)))
	// Categories that change from record to record (the last one kept
	// says whether it is DeviceNetworkEvents's), a record with two, and
	// Type.
	rec2 := func(category, more string) string {
		return `{"time":"t","category":"` + category + `"` + more + `,"properties":{"Timestamp":"2024-05-01T10:00:00Z","RemotePort":1}}`
	}
	const other = "AdvancedHunting-DeviceProcessEvents"
	f.Add([]byte(`{"records":[` + rec2(cat, "") + `,` + rec2(other, "") + `,` + rec2(other, "") + `,` + rec2(cat, "") + `,` +
		rec2(cat, `,"category":"`+other+`"`) + `,` + rec2(cat, `,"category":"`+cat+`"`) + `,` + rec2(other, `,"category":"`+cat+`"`) + `,` +
		rec2(cat, `,"category":null`) + `,` + rec2("DeviceNetworkEvents", "") + `,` + rec2(cat, `,"Type":"`+other+`"`) + `,` +
		rec2(strings.Repeat("c", 70), "") + `,` + rec2(cat, "") + `,` + rec2("", "") + `]}` + "\n" +
		rec2(other, "") + "\n" + rec2(cat, "")))
	// Nulls where fastKeys reads strings and ports, and other values after them.
	nulls := `{"Timestamp":"2024-05-01T10:00:00Z","RemoteUrl":null,"RemotePort":null,"DeviceName":"n","LocalPort":null}`
	f.Add([]byte(nulls + "\n" + nulls + "\n" + strings.NewReplacer(`null`, `nul`).Replace(nulls) + "\n" +
		strings.NewReplacer(`"RemotePort":null`, `"RemotePort":true`, `"RemoteUrl":null`, `"RemoteUrl":nullx`).Replace(nulls) + "\n" + nulls))
	// Dates that change from record to record, back and forth (AppendEvents
	// keeps the last date between calls).
	day := func(ts string) string { return `{"Timestamp":"` + ts + `","RemotePort":1}` }
	f.Add([]byte(day("2024-05-01T10:00:00Z") + "\n" + day("2024-05-02T10:00:00.5Z") + "\n" + day("2024-05-02T23:59:59Z") + "\n" +
		day("2024-05-01T00:00:00Z") + "\n" + day("2024-05-01 10:00:00") + "\n" + day("2024-05-01T10:00:00+02:00") + "\n" + day("2024-05-01T10:00:00Z")))
	seedShapes(f, "rows.jsonl", "storage-account.json", "envelope.jsonl", "bom-crlf.jsonl")
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, queryOnly := range []bool{true, false} {
			tmpl := new(templates)
			with := decoder{queryOnly: queryOnly, tmpl: tmpl}
			for _, line := range bytes.Split(data, []byte{'\n'}) {
				other := with.other
				got, gotErr := with.message(line, nil)
				without := decoder{queryOnly: queryOnly}
				want, wantErr := without.message(line, nil)
				if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
					t.Fatalf("queryOnly %v, line %q:\nwith templates %+v, %v\nwithout %+v, %v", queryOnly, line, got, gotErr, want, wantErr)
				}
				// AppendEvents, which ingest decodes each record with, keeps
				// its templates and last date between calls.
				app, appErr := AppendEvents(nil, line, queryOnly)
				if fmt.Sprint(appErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(app, want) {
					t.Fatalf("queryOnly %v, line %q:\nAppendEvents %+v, %v\nwithout templates %+v, %v", queryOnly, line, app, appErr, want, wantErr)
				}
				if with.other-other != without.other {
					t.Fatalf("queryOnly %v, line %q: %d records of other tables with templates, %d without", queryOnly, line, with.other-other, without.other)
				}
			}
		}
	})
}
