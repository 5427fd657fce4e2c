package stream

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Promises of the alert ID that consumers rely on: the same tuple in the
// same period under the same settings has the same ID in every release
// (consumers deduplicate across a restart, an upgrade and a replay), and
// different settings never share an ID.

// kat is the known-answer vector documented in docs/streaming.md (Alert
// IDs): the seed profile with a one-hour lookback, re-alerted hourly.
var kat = struct {
	profile     string
	reAlert     time.Duration
	tuple       beacon.Tuple
	streamTime  string
	epoch       int64
	fingerprint string
	id          string
}{
	profile: "seed",
	reAlert: time.Hour,
	tuple: beacon.Tuple{DeviceId: "1a559033aeb04135b87a4d3f4d12be1aa26f226b", DeviceName: "wks-0008.contoso.local",
		AccountName: "mgarcia", AccountDomain: "contoso", FileName: "mshta.exe", RemoteIP: "82.12.75.151", RemotePort: 443},
	streamTime: "2024-05-01T02:59:57.8898349Z",
	epoch:      476258,
	fingerprint: "lookback=3600000000000;end=1000000000;tdmin=1000000;min=15;max=3599000;jitter=50;omax=2;ocount=3;" +
		"olow=-3;devices=10;actions=ConnectionSuccess,CsonnectionFailed,CsonnectionRequest;sleep=0,0",
	id: "da63e590b968a23da8eef5ec546e94c6",
}

func katParams() beacon.Params {
	p := beacon.Seed()
	p.Lookback = time.Hour
	return p
}

// TestAlertIDKnownAnswer: the documented vector, computed by AlertID, and
// again from the documented layout alone, so the code, the docs and every
// earlier release agree.
func TestAlertIDKnownAnswer(t *testing.T) {
	p := katParams()
	st, err := beacon.ParseTime([]byte(kat.streamTime))
	if err != nil {
		t.Fatal(err)
	}
	if e := EpochOf(st, kat.reAlert); e != kat.epoch {
		t.Errorf("EpochOf(%s, 1h) = %d, the vector says %d", kat.streamTime, e, kat.epoch)
	}
	if fp := ParamsFingerprint(&p); fp != kat.fingerprint {
		t.Errorf("ParamsFingerprint changed: every alert ID changes with it\n got %s\nwant %s", fp, kat.fingerprint)
	}
	if id := AlertID(kat.profile, &p, kat.reAlert, &kat.tuple, kat.epoch); id != kat.id {
		t.Errorf("AlertID = %s, the documented vector is %s", id, kat.id)
	}
	// The layout of docs/streaming.md: strings as uvarint length + bytes,
	// numbers as zigzag varints; the re-alert interval in nanoseconds.
	var buf []byte
	str := func(s string) { buf = append(binary.AppendUvarint(buf, uint64(len(s))), s...) }
	str("beacon-alert/v1")
	str(kat.profile)
	str(kat.fingerprint)
	buf = binary.AppendVarint(buf, int64(kat.reAlert))
	tu := kat.tuple
	for _, s := range []string{tu.DeviceId, tu.DeviceName, tu.AccountName, tu.AccountDomain, tu.FileName, tu.RemoteIP} {
		str(s)
	}
	buf = binary.AppendVarint(buf, int64(tu.RemotePort))
	buf = binary.AppendVarint(buf, kat.epoch)
	sum := sha256.Sum256(buf)
	if got := hex.EncodeToString(sum[:16]); got != kat.id {
		t.Errorf("the documented layout gives %s, the vector says %s", got, kat.id)
	}
}

// changeField sets v (a settable field) to a value different from its
// current one, or reports that it does not know how.
func changeField(v reflect.Value) bool {
	switch {
	case v.Type() == reflect.TypeOf(time.Duration(0)):
		v.SetInt(v.Int() + int64(time.Second))
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		v.SetInt(v.Int() + 1)
	case v.Kind() >= reflect.Uint && v.Kind() <= reflect.Uint64:
		v.SetUint(v.Uint() + 1)
	case v.Kind() == reflect.Float32 || v.Kind() == reflect.Float64:
		v.SetFloat(v.Float()*2 + 1.25)
	case v.Kind() == reflect.Bool:
		v.SetBool(!v.Bool())
	case v.Kind() == reflect.String:
		v.SetString(v.String() + "x")
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Float64:
		x := 1.75 // not any default (the seed's low bound is −OutlierCountMax)
		v.Set(reflect.ValueOf(&x))
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		v.Set(reflect.Append(v, reflect.ValueOf("ConnectionFailed")))
	case v.Kind() == reflect.Slice:
		e := reflect.New(v.Type().Elem()).Elem()
		if !changeField(e) {
			return false
		}
		v.Set(reflect.Append(v, e))
	default:
		return false
	}
	return true
}

// TestEveryParamChangesFingerprint: changing any field of beacon.Params —
// found by reflection, so a field added later must be handled here and in
// ParamsFingerprint — changes the fingerprint, and so every alert ID and
// the state's check that it was built with the same parameters. Fields of
// a nested struct (a profile's own parameters) are changed under that
// profile.
func TestEveryParamChangesFingerprint(t *testing.T) {
	base := beacon.Seed()
	seen := map[string]string{ParamsFingerprint(&base): "Seed()"}
	var walk func(path []int, names string, typ reflect.Type)
	walk = func(path []int, names string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			idx := append(append([]int(nil), path...), i)
			name := names + f.Name
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Time{}) {
				walk(idx, name+".", f.Type)
				continue
			}
			p := beacon.Seed()
			pv := reflect.ValueOf(&p).Elem()
			if len(path) > 0 {
				// A nested struct holds a profile's own parameters
				// (Robust for "robust"): change them under that profile.
				if prof := pv.FieldByName("Profile"); prof.IsValid() && prof.Kind() == reflect.String {
					prof.SetString(strings.ToLower(typ.Name()[:1]) + strings.TrimSuffix(typ.Name()[1:], "Params"))
				}
			}
			before := ParamsFingerprint(&p)
			if name == "Profile" {
				pv.FieldByIndex(idx).SetString("robust")
			} else if !changeField(pv.FieldByIndex(idx)) {
				t.Errorf("Params.%s (%s): this test does not know how to change it; teach changeField", name, f.Type)
				continue
			}
			after := ParamsFingerprint(&p)
			if after == before {
				t.Errorf("changing Params.%s leaves the fingerprint %q", name, after)
				continue
			}
			if other, dup := seen[after]; dup {
				t.Errorf("changing Params.%s gives the fingerprint of %s", name, other)
			}
			seen[after] = "Params." + name
			tu := kat.tuple
			b := beacon.Seed()
			if AlertID("seed", &p, time.Hour, &tu, 1) == AlertID("seed", &b, time.Hour, &tu, 1) && name != "Profile" {
				t.Errorf("changing Params.%s leaves the alert ID", name)
			}
		}
	}
	walk(nil, "", reflect.TypeOf(base))
	if len(seen) < 12 {
		t.Fatalf("only %d fingerprints: Params has fewer fields than the query's parameters?", len(seen))
	}
}

// connEvent is a connection that passes every filter of the query.
func connEvent(dev, ip string, ts beacon.Time) beacon.Event {
	return beacon.Event{Timestamp: ts, DeviceId: dev, DeviceName: dev + ".contoso.local", ActionType: "ConnectionSuccess",
		RemoteIP: ip, RemoteIPType: "Public", RemotePort: 443, HasPort: true, RemoteUrl: "c2.example.org",
		AccountName: "alice", AccountDomain: "contoso", FileName: "implant.exe"}
}

// TestWarmupExactlyReached: alerts wait until a partition's stream time is
// the warm-up past its first connection — "at least", so a beacon whose
// last callback lands exactly at the end of the warm-up is alerted, and
// one a tick earlier is not (the stream then ends: no later evaluation
// point could hide an off-by-one).
func TestWarmupExactlyReached(t *testing.T) {
	p := testParams()
	const warm = 20 * time.Minute
	t0 := mustTime(t, "2024-05-01T10:00:00Z")
	for _, c := range []struct {
		name   string
		last   beacon.Time
		alerts int
	}{
		{"last callback exactly at the warm-up's end", t0.Add(warm), 1},
		{"a tick before", t0.Add(warm) - beacon.Tick, 0},
	} {
		var evs []beacon.Event
		for ts := t0; ts < t0.Add(warm); ts = ts.Add(time.Minute) {
			evs = append(evs, connEvent("dev1", "45.77.1.10", ts))
		}
		evs = append(evs, connEvent("dev1", "45.77.1.10", c.last))
		if rows := huntEvents(p, evs); len(rows) != 1 {
			t.Fatalf("%s: the batch query finds %d rows; the case needs the beacon in the set", c.name, len(rows))
		}
		cl := testkit.NewCluster(t, []testkit.Topic{{Name: tInput, Partitions: 1}})
		cl.ProduceEvents(t, tInput, evs)
		res := replayOf(t, cl.Addr, ReplayOptions{Partitions: 1}, Params(p), Warmup(warm))
		if len(res.Alerts) != c.alerts {
			t.Errorf("%s: %d alerts, want %d (stream time %s, first connection %s, warm-up %s)",
				c.name, len(res.Alerts), c.alerts, res.Now, t0, warm)
		}
	}
}

// huntEvents is `beacon hunt` with its default now.
func huntEvents(p beacon.Params, evs []beacon.Event) []beacon.Row {
	h := beacon.NewHunt(p)
	for i := range evs {
		h.Add(&evs[i])
	}
	now, ok := h.DefaultNow()
	if !ok {
		return nil
	}
	return h.Rows(now)
}
