package stream

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/beaconhunt/beacon/schemas"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite the alert format golden files in testdata")

// goldenAlert is sampleAlert with every field set to a fixed value, the
// product version pinned so that the golden files do not depend on the
// build.
func goldenAlert(t *testing.T) Alert {
	t.Helper()
	old := productVersion
	productVersion = "v0.0.0-golden"
	t.Cleanup(func() { productVersion = old })
	a := sampleAlert(t)
	a.DetectedAt = time.Date(2024, 5, 2, 3, 4, 5, 678900000, time.UTC)
	a.Pivots = Pivots{TenantId: "8f5d9a1e-1d2c-4c1b-9b5e-2f0d7e3a4b6c",
		SHA256: "0f6a2cfa3b5e3b2b6f4c1a0e6a0d7c9b8e5f4d3c2b1a09f8e7d6c5b4a3928170",
		SHA1:   "3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09", FolderPath: `c:\windows\system32\rundll32.exe`,
		CommandLine: `rundll32.exe C:\Users\Public\x.dll,Start`, ProcessId: 4242, ReportId: 98765}
	a.Link = "https://security.microsoft.com/machines/v2/" + a.Row.DeviceId + "/overview"
	return a
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run TestAlertGolden -update-golden writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (rerun with -update-golden if intended):\n got %s\nwant %s", name, got, want)
	}
}

func indent(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return append(out.Bytes(), '\n')
}

// TestAlertGolden: each format's bytes for one alert, against testdata;
// and each decodes back to the alert's tuple, times and explanation.
func TestAlertGolden(t *testing.T) {
	a := goldenAlert(t)
	avro, err := newAlertCodec(AlertAvro, -1)
	if err != nil {
		t.Fatal(err)
	}
	ab, err := avro.append(nil, &a)
	if err != nil {
		t.Fatal(err)
	}
	native, _, err := avro.codec.NativeFromBinary(ab)
	if err != nil {
		t.Fatal(err)
	}
	avroText, err := json.Marshal(native) // goavro's own text has no fixed field order
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		format AlertFormat
		golden string
		text   []byte // what the golden file holds
		value  []byte // the record's value
	}{
		{AlertJSON, "alert.json", indent(t, a.AppendJSON(nil)), a.AppendJSON(nil)},
		{AlertECS, "alert.ecs.json", indent(t, a.AppendECS(nil)), a.AppendECS(nil)},
		{AlertOCSF, "alert.ocsf.json", indent(t, a.AppendOCSF(nil)), a.AppendOCSF(nil)},
		{AlertAvro, "alert.avro.json", indent(t, avroText), ab},
	} {
		checkGolden(t, f.golden, f.text)
		back, err := DecodeAlert(f.format, f.value)
		if err != nil {
			t.Errorf("%s: %v", f.format, err)
			continue
		}
		r, br := &a.Row, &back.Row
		if back.ID != a.ID || br.Tuple != r.Tuple || back.StreamTime != a.StreamTime || back.Epoch != a.Epoch ||
			br.Severity != r.Severity || br.Score != r.Score || br.Callbacks != r.Callbacks ||
			!slices.Equal(br.Reasons, r.Reasons) || br.Avg != r.Avg || br.Jitter != r.Jitter ||
			back.Pivots != a.Pivots || back.Link != a.Link || back.Profile != a.Profile {
			t.Errorf("%s: decoded\n %+v\nwant\n %+v", f.format, back, a)
		}
		// OCSF times are milliseconds.
		if d := back.DetectedAt.Sub(a.DetectedAt); d <= -time.Millisecond || d >= time.Millisecond {
			t.Errorf("%s: DetectedAt %s, want %s", f.format, back.DetectedAt, a.DetectedAt)
		}
	}
}

// TestAlertFormatFields: what a SIEM keys on, in each format.
func TestAlertFormatFields(t *testing.T) {
	a := goldenAlert(t)
	var j map[string]any
	json.Unmarshal(a.AppendJSON(nil), &j)
	for k, want := range map[string]any{"DetectedAt": "2024-05-02T03:04:05.6789Z", "StreamTime": a.StreamTime.String(),
		"FirstSeen": a.Row.MinTimestamp.String(), "Severity": a.Row.Severity, "Title": a.Title(),
		"SchemaVersion": AlertSchemaVersion, "TenantId": a.Pivots.TenantId, "InitiatingProcessSHA256": a.Pivots.SHA256,
		"InitiatingProcessId": float64(4242), "ReportId": float64(98765), "Link": a.Link} {
		if j[k] != want {
			t.Errorf("JSON %s = %v, want %v", k, j[k], want)
		}
	}
	if tac := j["Tactic"].(map[string]any); tac["Id"] != "TA0011" {
		t.Errorf("JSON Tactic %v", tac)
	}
	if rule := j["Rule"].(map[string]any); rule["Name"] != "Suspicious Network Beacons" || rule["Version"] != RuleVersion {
		t.Errorf("JSON Rule %v", rule)
	}
	if !strings.Contains(a.Title(), " on ") || !strings.Contains(a.Title(), "callbacks in") {
		t.Errorf("title %q", a.Title())
	}
	if last := a.LastSeen(); last <= a.Row.MaxTimestamp || last > a.StreamTime {
		t.Errorf("LastSeen %s: want after max_Timestamp %s, not after StreamTime %s", last, a.Row.MaxTimestamp, a.StreamTime)
	}

	var e map[string]any
	json.Unmarshal(a.AppendECS(nil), &e)
	get := func(m map[string]any, path string) any {
		var v any = m
		for _, p := range strings.Split(path, ".") {
			mm, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = mm[p]
		}
		return v
	}
	for path, want := range map[string]any{"@timestamp": "2024-05-02T03:04:05.6789Z", "event.kind": "alert",
		"event.severity": float64(ecsSeverity[a.Row.Severity]), "rule.name": "Suspicious Network Beacons",
		"host.name": a.Row.DeviceName, "host.id": a.Row.DeviceId, "user.name": a.Row.AccountName,
		"process.name": a.Row.FileName, "destination.ip": a.Row.RemoteIP, "destination.port": float64(a.Row.RemotePort),
		"process.hash.sha256": a.Pivots.SHA256, "threat.framework": "MITRE ATT&CK", "event.url": a.Link,
		"event.start": a.Row.MinTimestamp.Go().Format(time.RFC3339Nano)} {
		if got := get(e, path); got != want {
			t.Errorf("ECS %s = %v, want %v", path, got, want)
		}
	}
	if ids, _ := get(e, "threat.technique.id").([]any); len(ids) != 2 || ids[0] != "T1071" || ids[1] != "T1573" {
		t.Errorf("ECS threat.technique.id = %v", get(e, "threat.technique.id"))
	}
	if ids, _ := get(e, "threat.tactic.id").([]any); len(ids) != 1 || ids[0] != "TA0011" {
		t.Errorf("ECS threat.tactic.id = %v", get(e, "threat.tactic.id"))
	}

	var o map[string]any
	json.Unmarshal(a.AppendOCSF(nil), &o)
	for path, want := range map[string]any{"class_uid": float64(2004), "category_uid": float64(2), "type_uid": float64(200401),
		"time": float64(a.DetectedAt.UnixMilli()), "finding_info.title": a.Title(), "finding_info.uid": a.ID,
		"severity_id": float64(ocsfSeverity[a.Row.Severity].id), "metadata.product.name": "beacon",
		"metadata.version": OCSFVersion, "metadata.tenant_uid": a.Pivots.TenantId} {
		if got := get(o, path); got != want {
			t.Errorf("OCSF %s = %v, want %v", path, got, want)
		}
	}
	atk, _ := o["attacks"].([]any)
	if len(atk) != 2 || get(atk[0].(map[string]any), "technique.uid") != "T1071" || get(atk[0].(map[string]any), "tactic.uid") != "TA0011" {
		t.Errorf("OCSF attacks = %v", o["attacks"])
	}
	ev, _ := o["evidences"].([]any)
	if len(ev) != 1 || get(ev[0].(map[string]any), "dst_endpoint.ip") != a.Row.RemoteIP {
		t.Errorf("OCSF evidences = %v", o["evidences"])
	}
}

// readFieldList reads a vendored field list: names (first column) and the
// allowed/enum lines.
func readFieldList(t *testing.T, name string) (fields map[string]bool, values map[string][]string) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fields, values = map[string]bool{}, map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "allowed ") || strings.HasPrefix(l, "enum "):
			parts := strings.SplitN(l, " ", 3)
			values[parts[1]] = strings.Split(parts[2], ",")
		default:
			fields[strings.SplitN(l, "\t", 2)[0]] = true
		}
	}
	return fields, values
}

// leaves flattens a JSON document to dotted paths, arrays looked through;
// objects are listed too (OCSF lists object attributes). Paths under a
// free-form prefix are left out.
func leaves(v any, prefix string, free []string, out map[string][]any) {
	for _, f := range free {
		if prefix == f || strings.HasPrefix(prefix, f+".") {
			if prefix == f {
				out[prefix] = append(out[prefix], v)
			}
			return
		}
	}
	switch x := v.(type) {
	case map[string]any:
		if prefix != "" {
			out[prefix] = append(out[prefix], x)
		}
		for k, c := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			leaves(c, p, free, out)
		}
	case []any:
		for _, c := range x {
			leaves(c, prefix, free, out)
		}
		if len(x) == 0 {
			out[prefix] = append(out[prefix], x)
		}
	default:
		out[prefix] = append(out[prefix], x)
	}
}

// TestAlertFieldNames: every field of an ECS alert is an ECS 8.11 field
// (beacon.* aside) and every attribute of an OCSF alert an OCSF 1.1
// attribute (unmapped and evidences.data are free-form), per the lists
// vendored in testdata; enumerated values are allowed ones.
func TestAlertFieldNames(t *testing.T) {
	a := goldenAlert(t)
	for _, f := range []struct {
		list    string
		doc     []byte
		free    []string
		objects bool // the list names objects as well as leaves
	}{
		{"ecs-fields.txt", a.AppendECS(nil), []string{"beacon"}, false},
		{"ocsf-fields.txt", a.AppendOCSF(nil), []string{"unmapped", "evidences.data"}, true},
	} {
		fields, values := readFieldList(t, f.list)
		var m map[string]any
		if err := json.Unmarshal(f.doc, &m); err != nil {
			t.Fatal(err)
		}
		paths := map[string][]any{}
		leaves(m, "", f.free, paths)
		var names []string
		for p := range paths {
			names = append(names, p)
		}
		sort.Strings(names)
		n := 0
		for _, p := range names {
			if _, isObj := paths[p][0].(map[string]any); isObj && !f.objects {
				continue
			}
			free := false
			for _, fr := range f.free {
				free = free || p == fr && !f.objects
			}
			if free {
				continue
			}
			n++
			if !fields[p] {
				t.Errorf("%s: %s is not in the vendored field list", f.list, p)
			}
			allowed, ok := values[p]
			if !ok {
				continue
			}
			for _, v := range paths[p] {
				s := fmt.Sprint(v)
				if num, isNum := v.(float64); isNum {
					s = strconv.FormatFloat(num, 'f', -1, 64)
				}
				okv := false
				for _, al := range allowed {
					okv = okv || al == s || strings.HasPrefix(al, s+"=")
				}
				if !okv {
					t.Errorf("%s: %s = %v is not an allowed value (%v)", f.list, p, v, allowed)
				}
			}
		}
		if n < 30 {
			t.Errorf("%s: only %d fields checked", f.list, n)
		}
		// Every named enumeration's name matches its id.
		if f.objects {
			for path, want := range map[string]string{"class_uid": "class_name", "category_uid": "category_name",
				"severity_id": "severity", "status_id": "status", "activity_id": "activity_name"} {
				id := strconv.FormatFloat(m[path].(float64), 'f', -1, 64)
				if !slices.Contains(values[path], id+"="+fmt.Sprint(m[want])) {
					t.Errorf("%s: %s %s with %s %q", f.list, path, id, want, m[want])
				}
			}
		}
	}
}

// resolve is Avro schema resolution (spec 1.11, "Schema Resolution") for
// the record types of BeaconAlert: a datum written with one schema, read
// with another. A reader field the writer lacks takes its default (an
// error without one); a writer field the reader lacks is skipped; types
// of fields in both must match.
func resolve(t *testing.T, reader map[string]any, datum map[string]any) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, fa := range reader["fields"].([]any) {
		f := fa.(map[string]any)
		name := f["name"].(string)
		v, ok := datum[name]
		if !ok {
			def, has := f["default"]
			if !has {
				t.Fatalf("reader field %s has no default and the writer does not write it", name)
			}
			v = defaultNative(f["type"], def)
		} else if rec, isRec := f["type"].(map[string]any); isRec && rec["type"] == "record" {
			v = resolve(t, rec, v.(map[string]any))
		}
		out[name] = v
	}
	return out
}

// defaultNative turns a JSON default into goavro's native form.
func defaultNative(typ, def any) any {
	if s, ok := typ.(string); ok {
		switch s {
		case "long":
			return int64(def.(float64))
		case "int":
			return int32(def.(float64))
		}
	}
	return def
}

func fieldTypes(t *testing.T, schema map[string]any) map[string]string {
	out := map[string]string{}
	for _, fa := range schema["fields"].([]any) {
		f := fa.(map[string]any)
		b, _ := json.Marshal(f["type"])
		out[f["name"].(string)] = string(b)
	}
	return out
}

// TestAlertSchemaCompatible: schemas/BeaconAlert.avsc evolved from the
// first version (testdata/BeaconAlert.v1.avsc) compatibly both ways: a
// reader of the old schema reads new records, and a reader of the new one
// reads old records (new fields take their defaults), with goavro doing
// the encoding and decoding under each schema.
func TestAlertSchemaCompatible(t *testing.T) {
	oldText, err := os.ReadFile("testdata/BeaconAlert.v1.avsc")
	if err != nil {
		t.Fatal(err)
	}
	newText, err := schemas.FS.ReadFile(alertSchemaFile)
	if err != nil {
		t.Fatal(err)
	}
	var oldS, newS map[string]any
	json.Unmarshal(oldText, &oldS)
	json.Unmarshal(newText, &newS)
	oldTypes, newTypes := fieldTypes(t, oldS), fieldTypes(t, newS)
	for name, typ := range oldTypes {
		if nt, ok := newTypes[name]; !ok {
			t.Errorf("field %s was removed", name)
		} else if nt != typ {
			t.Errorf("field %s changed type: %s → %s", name, typ, nt)
		}
	}
	if len(newTypes) <= len(oldTypes) {
		t.Fatalf("the new schema adds no field")
	}
	oldC, err := goavro.NewCodec(string(oldText))
	if err != nil {
		t.Fatal(err)
	}
	newC, err := goavro.NewCodec(string(newText))
	if err != nil {
		t.Fatal(err)
	}
	a := goldenAlert(t)

	// New writer, old reader.
	nb, err := newC.BinaryFromNative(nil, alertNative(&a))
	if err != nil {
		t.Fatal(err)
	}
	written, _, err := newC.NativeFromBinary(nb)
	if err != nil {
		t.Fatal(err)
	}
	asOld := resolve(t, oldS, written.(map[string]any))
	ob, err := oldC.BinaryFromNative(nil, asOld)
	if err != nil {
		t.Fatalf("the old schema cannot hold a new record read with it: %v", err)
	}
	readOld, _, err := oldC.NativeFromBinary(ob)
	if err != nil {
		t.Fatal(err)
	}
	if rm := readOld.(map[string]any); rm["AlertId"] != a.ID || rm["RemoteIP"] != a.Row.RemoteIP || rm["count_"] != a.Row.Count {
		t.Errorf("old reader of a new record: %v", rm)
	}

	// Old writer, new reader: every new field takes its default.
	oldDatum := map[string]any{}
	for k, v := range written.(map[string]any) {
		if _, ok := oldTypes[k]; ok {
			oldDatum[k] = v
		}
	}
	ob2, err := oldC.BinaryFromNative(nil, oldDatum)
	if err != nil {
		t.Fatal(err)
	}
	writtenOld, _, err := oldC.NativeFromBinary(ob2)
	if err != nil {
		t.Fatal(err)
	}
	asNew := resolve(t, newS, writtenOld.(map[string]any))
	nb2, err := newC.BinaryFromNative(nil, asNew)
	if err != nil {
		t.Fatalf("the new schema cannot hold an old record read with it: %v", err)
	}
	readNew, _, err := newC.NativeFromBinary(nb2)
	if err != nil {
		t.Fatal(err)
	}
	rn := readNew.(map[string]any)
	if rn["AlertId"] != a.ID || rn["SchemaVersion"] != "1" || rn["Severity"] != "" || rn["Callbacks"] != int64(0) ||
		!reflect.DeepEqual(rn["Tactic"], map[string]any{"Id": "TA0011", "Name": "Command and Control"}) {
		t.Errorf("new reader of an old record: %v", rn)
	}
	// And the decoder reads such a record as an alert.
	if back, err := DecodeAlert(AlertAvro, nb2); err != nil || back.ID != a.ID || back.Row.Tuple != a.Row.Tuple {
		t.Errorf("DecodeAlert of an old record: %v %+v", err, back.Row.Tuple)
	}
}

// TestWriteAlertsAvroFile: replay's --alerts in Avro is a container file
// any Avro reader opens, with the schema in its header.
func TestWriteAlertsAvroFile(t *testing.T) {
	a := goldenAlert(t)
	b := a
	b.ID = "second"
	var buf bytes.Buffer
	if err := WriteAlerts(&buf, AlertAvro, []Alert{a, b}); err != nil {
		t.Fatal(err)
	}
	r, err := goavro.NewOCFReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for r.Scan() {
		d, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.(map[string]any)["AlertId"].(string))
	}
	if !slices.Equal(ids, []string{a.ID, "second"}) {
		t.Errorf("container holds %v", ids)
	}
	for _, f := range []AlertFormat{AlertJSON, AlertECS, AlertOCSF} {
		buf.Reset()
		if err := WriteAlerts(&buf, f, []Alert{a, b}); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != 2 {
			t.Fatalf("%s: %d lines", f, len(lines))
		}
		if back, err := DecodeAlert(f, []byte(lines[1])); err != nil || back.ID != "second" {
			t.Errorf("%s: line 2 decodes to %v %q", f, err, back.ID)
		}
	}
}

// TestAlertLink: both template forms, escaping, and errors at start.
func TestAlertLink(t *testing.T) {
	a := goldenAlert(t)
	a.Row.DeviceName = "wks 1&2"
	for tmpl, want := range map[string]string{
		"https://security.microsoft.com/machines/v2/{DeviceId}/overview":     "https://security.microsoft.com/machines/v2/" + a.Row.DeviceId + "/overview",
		"https://x/?host={DeviceName}&ip={RemoteIP}":                         "https://x/?host=wks+1%262&ip=" + a.Row.RemoteIP,
		"https://x/{{.DeviceName | path}}/{{.RemotePort}}?tid={{.TenantId}}": "https://x/wks%201&2/443?tid=" + a.Pivots.TenantId,
		"https://x/{{if .SHA256}}file/{{.SHA256}}{{else}}none{{end}}":        "https://x/file/" + a.Pivots.SHA256,
	} {
		tm, err := linkTemplate(tmpl)
		if err != nil {
			t.Fatalf("%s: %v", tmpl, err)
		}
		if got, err := renderLink(tm, &a); err != nil || got != want {
			t.Errorf("%s:\n got %q %v\nwant %q", tmpl, got, err, want)
		}
	}
	for _, bad := range []string{"https://x/{Nope}", "https://x/{{.DeviceId", "https://x/{{.Nope}}"} {
		if err := CheckAlertLink(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	if _, err := New(Brokers("127.0.0.1:1"), StateDir(t.TempDir()), AlertLink("{Nope}")); err == nil {
		t.Error("New accepted a bad link template")
	}
}

// TestLiveAlertsECS: beacon run with --alert-format ecs publishes ECS
// alert documents, keyed by tuple, with @timestamp the wall clock at
// detection (live, not event time), the same alert IDs as JSON alerts,
// and the link rendered.
func TestLiveAlertsECS(t *testing.T) {
	_, addr := newCluster(t, 2)
	rs, _ := records(t, testFleet(3))
	produceJSON(t, addr, rs)
	began := time.Now()
	s := service(t, addr, t.TempDir(), testLogger(t), Params(testParams()), Warmup(-1), WithAlertFormat(AlertECS),
		AlertLink("https://security.microsoft.com/machines/v2/{DeviceId}/overview"))
	stop := start(t, s)
	waitDrained(t, addr, 90*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	ended := time.Now()
	got := alertsAs(t, addr, tAlerts, AlertECS)
	if len(got) < 3 {
		t.Fatalf("%d ECS alerts", len(got))
	}
	p := testParams()
	for _, a := range got {
		if a.DetectedAt.Before(began) || a.DetectedAt.After(ended) {
			t.Errorf("%s: detected at %s, not between %s and %s", a.ID, a.DetectedAt, began, ended)
		}
		if a.ID != AlertID("seed", &p, p.Lookback, &a.Row.Tuple, a.Epoch) {
			t.Errorf("%s is not the alert ID of its tuple and epoch", a.ID)
		}
		if a.Link != "https://security.microsoft.com/machines/v2/"+a.Row.DeviceId+"/overview" || a.Row.Severity == "" {
			t.Errorf("%s: link %q, severity %q", a.ID, a.Link, a.Row.Severity)
		}
	}
}
