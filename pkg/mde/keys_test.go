package mde

import (
	"encoding/binary"
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
