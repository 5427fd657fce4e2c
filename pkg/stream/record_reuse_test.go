package stream

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// reuseSeeds are repartition values of every kind and shape: connections
// with and without pivots (full, same, a report id), released or not, a
// null port, a shard's shadow with pivots, domains, a watermark, and bad
// values (a truncation that stops inside each kind).
func reuseSeeds() [][]byte {
	e := beacon.Event{Timestamp: 7, DeviceId: "d", DeviceName: "n", AccountName: "a", AccountDomain: "ad",
		FileName: "f.exe", RemoteIP: "45.77.1.10", RemotePort: 443, HasPort: true}
	vs := [][]byte{appendConn(nil, &e, 7), appendConn(nil, &e, 9)}
	vs = append(vs, pivotSeeds()...)
	np := e
	np.HasPort = false
	vs = append(vs, appendConn(nil, &np, 7), appendConn(nil, &np, 8))
	vs = append(vs, shadowOf(nil, appendConn(nil, &e, 9)), shadowOf(nil, appendDomain(nil, 7, 7, "x.com")))
	vs = append(vs, appendDomain(nil, 7, 7, "api.evil.com"), appendDomain(nil, 7, 12, ""))
	vs = append(vs, appendWatermark(nil, "profile=seed;actions=", []source{
		{topic: "in", part: 0, flags: wmOwned | wmHasTime, time: 5}, {topic: "in", part: 1, flags: wmIdle}}))
	for _, v := range slicesOf(vs) {
		vs = append(vs, v[:len(v)/2], v[:len(v)-1])
	}
	return vs
}

func slicesOf(vs [][]byte) [][]byte { return append([][]byte(nil), vs...) }

// TestDecodeItemReused: decoding into the item the previous record was
// decoded into (as the workers do) gives what decoding into a zero item
// gives, for every pair of record shapes, the stored fuzz corpus's
// included: nothing of the previous record shows through item.reset. And
// peekRelease agrees with decodeItem on every one (checkPeek).
func TestDecodeItemReused(t *testing.T) {
	vs := reuseSeeds()
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzRepartitionRecord", "*"))
	for _, f := range files {
		if v, ok := corpusValue(t, f); ok {
			vs = append(vs, v)
		}
	}
	key := []byte("45.77.1.10")
	for _, v := range vs {
		checkPeek(t, key, v)
	}
	decoded := 0
	for i, prev := range vs {
		for j, v := range vs {
			var want item
			wantErr := decodeItem(key, v, &want)
			var got item
			decodeItem([]byte("10.1.2.3"), prev, &got)
			gotErr := decodeItem(key, v, &got)
			if (wantErr == nil) != (gotErr == nil) {
				t.Fatalf("value %d after %d: error %v, into a zero item %v", j, i, gotErr, wantErr)
			}
			if wantErr != nil {
				continue
			}
			decoded++
			if len(got.sources) != len(want.sources) || len(got.sources) > 0 && !reflect.DeepEqual(got.sources, want.sources) {
				t.Fatalf("value %d after %d: sources %+v, want %+v", j, i, got.sources, want.sources)
			}
			got.sources, want.sources = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("value %d (%x) after %d (%x):\n got %+v\nwant %+v", j, v, i, prev, got, want)
			}
		}
	}
	if decoded < len(vs) {
		t.Fatalf("only %d of %d×%d pairs decoded: the seeds lost their valid shapes", decoded, len(vs), len(vs))
	}
}

// checkPeek: peekRelease finds the release time decodeItem finds in a
// data record, and fails only where decodeItem does (a worker holds a
// replay's record on it, and decodes it when released).
func checkPeek(t *testing.T, key, v []byte) {
	t.Helper()
	var it item
	err := decodeItem(key, v, &it)
	rel, ok := peekRelease(v)
	switch {
	case ok && err == nil && rel != it.release:
		t.Fatalf("%x: peekRelease %d, decodeItem %d", v, rel, it.release)
	case ok && err == nil && it.kind == kindWatermark:
		t.Fatalf("%x: peekRelease takes a watermark", v)
	case !ok && err == nil && it.kind != kindWatermark:
		t.Fatalf("%x: peekRelease fails on a %#x record that decodes", v, it.kind)
	}
}

// corpusValue reads the value of a stored fuzz input (go test fuzz v1:
// key, then value, as Go byte-slice literals).
func corpusValue(t *testing.T, path string) ([]byte, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 {
		return nil, false
	}
	s, ok := strings.CutPrefix(lines[2], "[]byte(")
	if !ok {
		return nil, false
	}
	u, err := strconv.Unquote(strings.TrimSuffix(s, ")"))
	if err != nil {
		return nil, false
	}
	return []byte(u), true
}
