package stream

import (
	"errors"
	"testing"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// TestInputReasons: a record that does not decode is dead-lettered with a
// reason naming what it looked like, and JSON with a BOM, arrays and single
// Streaming API records decode.
func TestInputReasons(t *testing.T) {
	d, err := newInputDecoder(InputAuto, -1)
	if err != nil {
		t.Fatal(err)
	}
	const row = `{"Timestamp":"2024-05-01T10:00:00Z","DeviceId":"d","RemoteIP":"8.8.8.8","RemotePort":443}`
	for in, want := range map[string]string{
		"2024-05-01 10:00:00 connection from 10.0.0.1": reasonText,
		"Timestamp,DeviceId\n2024-05-01T10:00:00Z,d":   reasonText,
		"\x02\x01\xff\xfe":                             reasonAvro,
		"null":                                         reasonEmpty,
		"[]":                                           reasonEmpty,
		"\xef\xbb\xbf[]":                               reasonEmpty,
		"  \r\n":                                       reasonEmpty,
		"":                                             reasonEmpty,
		`{"Timestamp":`:                                reasonJSON,
		`[1]`:                                          reasonJSON,
		"\xef\xbb\xbf" + row:                           "",
		"[" + row + "," + row + "]":                    "",
		`{"time":"2024-05-01T10:00:40Z","tenantId":"t","category":"AdvancedHunting-DeviceNetworkEvents","properties":` + row + "}\r\n": "",
	} {
		n, err := d.decode([]byte(in), func(*beacon.Event) {})
		var de *decodeError
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", in, err)
		case want == "" && n == 0:
			t.Errorf("%q: no event", in)
		case want != "" && (!errors.As(err, &de) || de.reason != want):
			t.Errorf("%q: %v, want reason %s", in, err, want)
		}
	}
}
