package mde

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// FuzzLineAt holds decodeChunk, which decodes each line in place before
// looking for its end (lineAt) and falls back to the line found by its
// newline, to decoding every line on its own: the same events, bad lines
// (line numbers and errors), line count and records of other tables,
// with and without QueryOnly. The seeds put what could carry a decode
// past a newline — whitespace, unterminated strings, strings with
// escapes, objects left open — at the ends of lines.
func FuzzLineAt(f *testing.F) {
	row := `{"Timestamp":"2024-05-01T10:00:00Z","DeviceId":"a","ActionType":"ConnectionSuccess","RemoteIP":"8.8.8.8","RemotePort":443}`
	f.Add([]byte(row + "\n" + row + "\r\n" + row + " \t\n" + row))
	f.Add([]byte(`{"Timestamp":"2024-05-01T10:00:00Z",` + "\n" + `"DeviceId":"a"}` + "\n" + row + "\n"))
	f.Add([]byte(`{"Timestamp":"2024-05-01T10:00:00Z","DeviceId":"a\` + "\n" + `b"}` + "\n" + row))
	f.Add([]byte(`{"Timestamp":"2024-05-01T10:00:00Z","X":"a\"` + "\n" + `","DeviceId":"b"}` + "\n" + row))
	f.Add([]byte(`{"Timestamp":"2024-05-01T10:00:00Z","X":{"a":` + "\n" + `1}}` + "\n" + row + "\n" + row + row + "\n[" + row + "]\n"))
	f.Add([]byte(`{"Timestamp":"bad"}` + "\n" + `{"records":[` + row + `,{"category":"x"}]}` + "\n" + `{"records":[` + row + "\n" + `]}`))
	seedShapes(f, "rows.jsonl", "storage-account.json", "envelope.jsonl", "bom-crlf.jsonl")
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, queryOnly := range []bool{true, false} {
			c := &chunk{data: data}
			decodeChunk(c, "fuzz", queryOnly, new(templates), nil)
			var want []beacon.Event
			var bad []string
			d := decoder{queryOnly: queryOnly}
			lines := bytes.Split(data, []byte{'\n'})
			if len(data) == 0 || data[len(data)-1] == '\n' {
				lines = lines[:len(lines)-1] // no line after the last newline
			}
			for i, l := range lines {
				var err error
				if want, err = d.message(l, want); err != nil {
					bad = append(bad, fmt.Sprintf("%d: %v", i+1, err))
				}
			}
			var got []string
			for _, b := range c.bad {
				got = append(got, fmt.Sprintf("%d: %v", b.Line, b.Err))
			}
			if c.lines != int64(len(lines)) || c.other != int64(d.other) ||
				strings.Join(got, "\n") != strings.Join(bad, "\n") || !reflect.DeepEqual(c.events, want) {
				t.Fatalf("queryOnly %v, %q:\nin place: %d lines, %d other, bad %q, events %+v\nline by line: %d lines, %d other, bad %q, events %+v",
					queryOnly, data, c.lines, c.other, got, c.events, len(lines), d.other, bad, want)
			}
		}
	})
}
