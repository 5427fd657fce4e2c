package stream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

// TestPivotsFormat: the pivots section of a connection record round-trips
// in full, as a checksum, and with ReportId alone; a record without it (as
// written before pivots existed) still decodes, with none; bad sections
// are rejected and every truncation fails cleanly.
func TestPivotsFormat(t *testing.T) {
	ts := mustTime(t, "2024-05-01T10:00:00.1234567Z")
	e := beacon.Event{Timestamp: ts, DeviceId: "d1", DeviceName: "wks-1", AccountName: "alice", AccountDomain: "contoso",
		FileName: "rundll32.exe", RemoteIP: "45.77.1.10", RemotePort: 443, HasPort: true}
	old := appendConn(nil, &e, ts)
	p := Pivots{TenantId: "8f5d9a1e-1d2c-4c1b-9b5e-2f0d7e3a4b6c", SHA256: strings.Repeat("ab", 32), SHA1: strings.Repeat("cd", 20),
		FolderPath: `C:\Windows\System32\rundll32.exe`, CommandLine: `rundll32.exe C:\Users\Public\x.dll,Start`,
		ProcessId: 4242, ReportId: 98765}
	sum := sum0(&p)
	for _, c := range []struct {
		name string
		p    Pivots
		full bool
		want pivotItem
	}{
		{"full", p, true, pivotItem{flags: pvFull | pvReport, Pivots: p}}, // a full section's sum is computed when kept
		{"checksum", p, false, pivotItem{flags: pvSame | pvReport, sum: sum, Pivots: Pivots{ReportId: p.ReportId}}},
		{"full without ReportId", Pivots{SHA256: p.SHA256, ProcessId: -1}, true,
			pivotItem{flags: pvFull, Pivots: Pivots{SHA256: p.SHA256, ProcessId: -1}}},
		{"ReportId only", Pivots{ReportId: 7}, false, pivotItem{flags: pvSame | pvReport, sum: sum0(&Pivots{}), Pivots: Pivots{ReportId: 7}}},
	} {
		v := appendPivots(append([]byte(nil), old...), &c.p, sum0(&c.p), c.full)
		var it item
		if err := decodeItem([]byte(e.RemoteIP), v, &it); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if it.kind != kindConn || it.tupleKey() != e.Tuple() || it.pv != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, it.pv, c.want)
		}
		for i := len(old) + 1; i < len(v); i++ {
			if err := decodeItem(nil, v[:i], &it); err == nil {
				t.Errorf("%s: truncated to %d of %d bytes, decoded", c.name, i, len(v))
			}
		}
	}
	var pw pivotWriter
	if v := pw.append(nil, &e); len(v) != 0 {
		t.Errorf("no pivots: %x, want nothing", v)
	}
	var it item
	if err := decodeItem([]byte(e.RemoteIP), old, &it); err != nil || it.pv != (pivotItem{}) {
		t.Errorf("a record without pivots: %+v %v", it.pv, err)
	}
	full := appendPivots(append([]byte(nil), old...), &p, sum, true)
	for _, bad := range [][]byte{
		append(append([]byte(nil), old...), 0),                          // no flags
		append(append([]byte(nil), old...), 0x08),                       // unknown flag
		append(append([]byte(nil), old...), pvFull|pvSame),              // both
		append(append([]byte(nil), old...), pvReport, 0),                // ReportId 0 is written as none
		append(append([]byte(nil), full...), 0),                         // trailing bytes
		appendPivots(appendDomain(nil, ts, ts, "a.com"), &p, sum, true), // only connections carry pivots
	} {
		if err := decodeItem(nil, bad, &it); err == nil {
			t.Errorf("%x decoded", bad)
		}
	}
	if n := len(full) - len(old); n < 200 {
		t.Errorf("full pivots take %d bytes", n)
	} else if m := len(appendPivots(nil, &p, sum, false)); m > 10 {
		t.Errorf("unchanged pivots take %d bytes, want at most 10", m)
	} else {
		t.Logf("connection %d bytes; pivots in full +%d, unchanged +%d", len(old), n, m)
	}
}

// TestPivotsNewest: ingest writes a tuple's pivots in full when they
// change and every pivotRefresh, otherwise their checksum; a partition
// keeps the newest event's (greatest Timestamp, not the last to arrive),
// applies a checksum only to the pivots it matches, forgets them when
// that event leaves the window, and both stay bounded.
func TestPivotsNewest(t *testing.T) {
	t0 := mustTime(t, "2024-05-01T10:00:00Z")
	ev := func(sec int, cmd string, report int64) *beacon.Event {
		return &beacon.Event{Timestamp: t0 + beacon.Time(sec)*beacon.Second, DeviceId: "d1", DeviceName: "wks-1",
			FileName: "rundll32.exe", RemoteIP: "45.77.1.10", RemotePort: 443, HasPort: true,
			TenantId: "t1", SHA256: "aa", CommandLine: cmd, ProcessId: 10, ReportId: report}
	}
	var pw pivotWriter
	const lookback = 2 * time.Hour
	ps := pivotStore{lookback: lookback}
	send := func(e *beacon.Event) (flags byte) {
		v := pw.append(appendConn(nil, e, e.Timestamp), e)
		var it item
		if err := decodeItem([]byte(e.RemoteIP), v, &it); err != nil {
			t.Fatal(err)
		}
		ps.observe(&it)
		return it.pv.flags &^ pvReport
	}
	tu := ev(0, "", 0).Tuple()
	check := func(step, cmd string, report int64) {
		t.Helper()
		if got := ps.get(&tu); got.CommandLine != cmd || got.ReportId != report || got.TenantId != "t1" {
			t.Errorf("%s: pivots %+v, want command line %q, report %d", step, got, cmd, report)
		}
	}
	for i, c := range []struct {
		e      *beacon.Event
		flags  byte
		cmd    string
		report int64
		step   string
	}{
		{ev(0, "a", 1), pvFull, "a", 1, "first"},
		{ev(60, "a", 2), pvSame, "a", 2, "unchanged"},
		{ev(120, "b", 3), pvFull, "b", 3, "changed"},
		{ev(30, "c", 4), pvFull, "b", 3, "older, changed: ingest writes it, the partition keeps the newer"},
		{ev(180, "c", 5), pvSame, "b", 3, "a checksum of pivots the partition does not hold as newest"},
		{ev(240, "b", 6), pvFull, "b", 6, "changed back"},
		{ev(240+int(pivotRefresh/beacon.Second), "b", 7), pvFull, "b", 7, "refresh"},
		{ev(241+int(pivotRefresh/beacon.Second), "b", 0), pvSame, "b", 0, "no ReportId"},
	} {
		if f := send(c.e); f != c.flags {
			t.Errorf("%d %s: flags %#x, want %#x", i, c.step, f, c.flags)
		}
		check(c.step, c.cmd, c.report)
	}

	// The window: the newest connection the partition takes, its own or
	// another shard's, moves it; pivots whose event left it are gone,
	// and a checksum does not bring them back.
	last := 241 + int(pivotRefresh/beacon.Second)
	ps.advance(t0 + beacon.Time(last)*beacon.Second + beacon.Time(lookback/100))
	check("at the window's start", "b", 0)
	ps.advance(t0 + beacon.Time(last+1)*beacon.Second + beacon.Time(lookback/100))
	if got := ps.get(&tu); got != (Pivots{}) {
		t.Errorf("out of the window: pivots %+v", got)
	}
	tu2 := tu
	tu2.DeviceId = "d2"
	e2 := ev(last+1+int(lookback/time.Second), "b", 9)
	e2.DeviceId = "d2"
	send(e2) // another tuple's record moves the window too
	if f := send(ev(last+2+int(lookback/time.Second), "b", 10)); f != pvFull {
		t.Errorf("a tuple quiet for the window: flags %#x, want in full", f) // past pivotRefresh
	}
	check("back in full", "b", 10)

	// A fresh partition (a restart) learns nothing from checksums.
	ps = pivotStore{lookback: lookback}
	send(ev(last+3+int(lookback/time.Second), "b", 11)) // within the refresh: a checksum
	if got := ps.get(&tu); got != (Pivots{}) {
		t.Errorf("after a restart, a checksum gave %+v", got)
	}

	// Bounded: many tuples, one a minute of event time; the store holds
	// those of the window, the writer those of the last pivotRefresh
	// (and at most maxPivots).
	ps, pw = pivotStore{lookback: lookback}, pivotWriter{}
	e := ev(0, "x", 1)
	n := 4 * int(lookback/time.Minute)
	for i := range n {
		e.DeviceId = strconv.Itoa(i)
		e.Timestamp = t0 + beacon.Time(i)*60*beacon.Second
		v := pw.append(appendConn(nil, e, e.Timestamp), e)
		var it item
		if err := decodeItem([]byte(e.RemoteIP), v, &it); err != nil {
			t.Fatal(err)
		}
		ps.observe(&it)
		ps.apply()
	}
	// A rebuild makes 2 to 4 slots per live entry, and the next one
	// comes when ¾ are used.
	if held, want := ps.m.used, int(lookback/time.Minute)+1; held > 3*(want+1) || len(ps.m.slots) > 4*(want+1) {
		t.Errorf("the store holds %d tuples in %d slots, the window %d", held, len(ps.m.slots), want)
	}
	if held, want := pw.sent.used, int(pivotRefresh/(60*beacon.Second))+1; held > 3*(want+1) || len(pw.sent.slots) > 4*(want+1) {
		t.Errorf("the writer holds %d tuples in %d slots, %d were written in the last %v", held, len(pw.sent.slots), want, pivotRefresh)
	}
	newest, gone := e.Tuple(), ev(0, "", 0).Tuple()
	gone.DeviceId = strconv.Itoa(n - 1 - int(lookback/time.Minute) - 1)
	if got := ps.get(&newest); got.CommandLine != "x" {
		t.Errorf("the newest tuple's pivots are gone: %+v", got)
	}
	if got := ps.get(&gone); got != (Pivots{}) {
		t.Errorf("a tuple out of the window has pivots %+v", got)
	}
	defer func(n int) { maxPivots = n }(maxPivots)
	maxPivots = 64
	pw = pivotWriter{}
	for i := range 10 * maxPivots {
		e.DeviceId = strconv.Itoa(i)
		pw.append(nil, e) // one event time: none is older than pivotRefresh
		if pw.sent.used > 2*maxPivots {
			t.Fatalf("the writer holds %d tuples, more than %d", pw.sent.used, 2*maxPivots)
		}
	}
}

// pivotsOf is the test fleet's pivots of an event: the hash of its binary,
// a command line and a process id that change every 20 minutes, a report
// id per event, and a tenant per device.
// TestPivotsProcessIdAloneBetween: pivots with strings, then a process id
// alone (written in full without the writer's table), then the first
// pivots again: the third goes in full, and the partition holds it — a
// checksum of the first would be ignored by a partition holding the
// second, and alerts would carry the second's pivots for up to
// pivotRefresh.
func TestPivotsProcessIdAloneBetween(t *testing.T) {
	t0 := mustTime(t, "2024-05-01T10:00:00Z")
	ev := func(sec int, cmd string, report int64) *beacon.Event {
		return &beacon.Event{Timestamp: t0 + beacon.Time(sec)*beacon.Second, DeviceId: "d1", DeviceName: "wks-1",
			FileName: "rundll32.exe", RemoteIP: "45.77.1.10", RemotePort: 443, HasPort: true,
			CommandLine: cmd, ProcessId: 10, ReportId: report}
	}
	var pw pivotWriter
	ps := pivotStore{lookback: 2 * time.Hour}
	tu := ev(0, "", 0).Tuple()
	for i, c := range []struct {
		e     *beacon.Event
		flags byte
	}{{ev(0, "x", 1), pvFull}, {ev(60, "", 2), pvFull}, {ev(120, "x", 3), pvFull}, {ev(180, "x", 4), pvSame}} {
		v := pw.append(appendConn(nil, c.e, c.e.Timestamp), c.e)
		var it item
		if err := decodeItem([]byte(c.e.RemoteIP), v, &it); err != nil {
			t.Fatal(err)
		}
		ps.observe(&it)
		if f := it.pv.flags &^ pvReport; f != c.flags {
			t.Errorf("record %d: flags %#x, want %#x", i, f, c.flags)
		}
		if got := ps.get(&tu); got.CommandLine != c.e.CommandLine || got.ReportId != c.e.ReportId {
			t.Errorf("after record %d: pivots %+v, want command line %q, report %d", i, got, c.e.CommandLine, c.e.ReportId)
		}
	}
}

func pivotsOf(r *fleet.Record) Pivots {
	gen := int64(r.Timestamp / (20 * 60 * beacon.Second))
	h := sha256.Sum256([]byte(r.FileName))
	return Pivots{
		TenantId: "tenant-" + r.DeviceId[len(r.DeviceId)-1:], SHA256: hex.EncodeToString(h[:]),
		SHA1: hex.EncodeToString(h[:20]), FolderPath: `C:\Windows\System32\` + r.FileName,
		CommandLine: fmt.Sprintf(`%s -k beacon --gen %d`, r.FileName, gen), ProcessId: 1000 + gen%5000,
		ReportId: int64(r.Timestamp / beacon.Second),
	}
}

// produceWithPivots writes the fleet's records as Streaming API envelopes
// of up to 20 records, each with its pivots.
func produceWithPivots(t *testing.T, addr string, rs []fleet.Record) {
	t.Helper()
	cl := newClient(t, addr, kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerBatchMaxBytes(256<<10))
	var recs []*kgo.Record
	for i := 0; i < len(rs); i += 20 {
		b := []byte(`{"records":[`)
		for j := i; j < min(i+20, len(rs)); j++ {
			if j > i {
				b = append(b, ',')
			}
			p := pivotsOf(&rs[j])
			r := rs[j]
			r.ProcessId = p.ProcessId
			props := fleet.AppendJSON(nil, &r)
			extra, _ := json.Marshal(map[string]any{"InitiatingProcessSHA256": p.SHA256, "InitiatingProcessSHA1": p.SHA1,
				"InitiatingProcessFolderPath": p.FolderPath, "InitiatingProcessCommandLine": p.CommandLine, "ReportId": p.ReportId})
			props = append(append(props[:len(props)-1], ','), extra[1:]...) // both objects' members
			b = fmt.Appendf(b, `{"time":"2024-05-01T00:00:00Z","tenantId":%q,"operationName":"Publish","category":"AdvancedHunting-DeviceNetworkEvents","properties":%s}`,
				p.TenantId, props)
		}
		recs = append(recs, &kgo.Record{Topic: tInput, Value: append(b, "]}"...)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestAlertPivots: events carry tenantId, SHA256, SHA1, folder path,
// command line, process id and ReportId; a replay over 3 partitions alerts
// with the pivots of the tuple's newest event at the alert's stream time,
// and its ECS and OCSF documents carry them.
func TestAlertPivots(t *testing.T) {
	_, addr := newCluster(t, 2)
	rs := pivotFleet(t)
	produceWithPivots(t, addr, rs)
	res := replayOf(t, addr, ReplayOptions{Partitions: 3}, Params(testParams()), Warmup(30*time.Minute))
	checkPivots(t, rs, res.Alerts, true)
}

// TestLiveAlertPivots: the same through beacon run, its repartition topic
// and its alert topic, in ECS.
func TestLiveAlertPivots(t *testing.T) {
	_, addr := newCluster(t, 2)
	rs := pivotFleet(t)
	produceWithPivots(t, addr, rs)
	s := service(t, addr, t.TempDir(), testLogger(t), Params(testParams()), Warmup(30*time.Minute), WithAlertFormat(AlertECS))
	stop := start(t, s)
	waitDrained(t, addr, 90*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := alertsAs(t, addr, tAlerts, AlertECS)
	checkPivots(t, rs, got, false)
}

func pivotFleet(t *testing.T) []fleet.Record {
	cfg := testFleet(4)
	cfg.LateRate = -1 // so that an alert's partition has every event up to its stream time
	rs, _ := records(t, cfg)
	return rs
}

// checkPivots: every alert carries the pivots of its tuple's newest event
// at its stream time, in ECS and OCSF too; some tuple is alerted again
// with changed ones.
func checkPivots(t *testing.T, rs []fleet.Record, alerts []Alert, needChange bool) {
	t.Helper()
	if len(alerts) < 5 {
		t.Fatalf("only %d alerts", len(alerts))
	}
	p := testParams()
	byTuple := make(map[beacon.Tuple][]*fleet.Record)
	for i := range rs {
		if p.Connection(&rs[i].Event) && rs[i].HasPort {
			tu := rs[i].Tuple()
			byTuple[tu] = append(byTuple[tu], &rs[i])
		}
	}
	changed := 0
	seen := make(map[beacon.Tuple]string)
	for _, a := range alerts {
		var newest *fleet.Record
		for _, r := range byTuple[a.Row.Tuple] {
			if r.Timestamp <= a.StreamTime && (newest == nil || r.Timestamp > newest.Timestamp) {
				newest = r
			}
		}
		if newest == nil {
			t.Fatalf("alert %v at %s: no event", a.Row.Tuple, a.StreamTime)
		}
		want := pivotsOf(newest)
		if a.Pivots != want {
			t.Errorf("alert %v at %s:\n got %+v\nwant %+v (the event at %s)", a.Row.Tuple, a.StreamTime, a.Pivots, want, newest.Timestamp)
			continue
		}
		if prev, ok := seen[a.Row.Tuple]; ok && prev != want.CommandLine {
			changed++
		}
		seen[a.Row.Tuple] = want.CommandLine

		var ecs, ocsf map[string]any
		if err := json.Unmarshal(a.AppendECS(nil), &ecs); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(a.AppendOCSF(nil), &ocsf); err != nil {
			t.Fatal(err)
		}
		for path, v := range map[string]any{"process.hash.sha256": want.SHA256, "process.hash.sha1": want.SHA1,
			"process.command_line": want.CommandLine, "process.pid": float64(want.ProcessId),
			"process.executable": want.FolderPath, "organization.id": want.TenantId} {
			if got := lookup(ecs, path); got != v {
				t.Errorf("ECS %s = %v, want %v", path, got, v)
			}
		}
		for path, v := range map[string]any{"metadata.tenant_uid": want.TenantId,
			"evidences.0.actor.process.cmd_line": want.CommandLine, "evidences.0.actor.process.pid": float64(want.ProcessId),
			"evidences.0.actor.process.file.path":           want.FolderPath,
			"evidences.0.actor.process.file.hashes.0.value": want.SHA256} {
			if got := lookup(ocsf, path); got != v {
				t.Errorf("OCSF %s = %v, want %v", path, got, v)
			}
		}
		back, err := DecodeAlert(AlertOCSF, a.AppendOCSF(nil))
		if err != nil || back.Pivots != want {
			t.Errorf("OCSF decoded back: %+v %v", back.Pivots, err)
		}
	}
	if needChange && changed == 0 {
		t.Error("no tuple was alerted again with a changed command line: the test does not see pivots change")
	}
	t.Logf("%d alerts, %d re-alerts with a changed command line", len(alerts), changed)
}

// lookup follows a dotted path through decoded JSON; a number indexes an
// array.
func lookup(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// BenchmarkPivotWriter is ingest's cost per connection of the pivots
// section: unchanged pivots of a few tuples, in full ones of 64 tuples.
func BenchmarkPivotWriter(b *testing.B) {
	rs, _ := records(b, testFleet(3))
	evs := make([]beacon.Event, 0, 4096)
	for i := range rs {
		if rs[i].HasPort && len(evs) < cap(evs) {
			pv := pivotsOf(&rs[i])
			e := rs[i].Event
			e.TenantId, e.SHA256, e.SHA1, e.FolderPath, e.CommandLine, e.ProcessId, e.ReportId =
				pv.TenantId, pv.SHA256, pv.SHA1, pv.FolderPath, pv.CommandLine, pv.ProcessId, pv.ReportId
			evs = append(evs, e)
		}
	}
	var pw pivotWriter
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		buf = pw.append(buf[:0], &evs[i%len(evs)])
	}
}

// BenchmarkPivotStore is a detection partition's cost per connection of
// its pivots (observe, then apply with the segment): the records of
// BenchmarkPivotWriter's events, as ingest writes them.
func BenchmarkPivotStore(b *testing.B) {
	rs, _ := records(b, testFleet(3))
	var pw pivotWriter
	var its []item
	for i := range rs {
		if !rs[i].HasPort || len(its) == 4096 {
			continue
		}
		pv := pivotsOf(&rs[i])
		e := rs[i].Event
		e.TenantId, e.SHA256, e.SHA1, e.FolderPath, e.CommandLine, e.ProcessId, e.ReportId =
			pv.TenantId, pv.SHA256, pv.SHA1, pv.FolderPath, pv.CommandLine, pv.ProcessId, pv.ReportId
		var it item
		if err := decodeItem([]byte(e.RemoteIP), pw.append(appendConn(nil, &e, e.Timestamp), &e), &it); err != nil {
			b.Fatal(err)
		}
		its = append(its, it)
	}
	ps := pivotStore{lookback: time.Hour}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		ps.observe(&its[i%len(its)])
		if i%1000 == 999 {
			ps.apply()
		}
	}
	ps.apply()
}

func sum0(p *Pivots) uint32 { s, _ := pivotSum(p, nil); return s }

// pivotSeeds are connection records with pivots, in full and as a
// checksum, for FuzzRepartitionRecord.
func pivotSeeds() [][]byte {
	e := beacon.Event{Timestamp: 1, DeviceId: "d1", FileName: "rundll32.exe", RemoteIP: "45.77.1.10", RemotePort: 443, HasPort: true,
		TenantId: "t", SHA256: "ab", CommandLine: "x", ProcessId: 9, ReportId: 3}
	var pw pivotWriter
	full := pw.append(appendConn(nil, &e, 1), &e)
	e.Timestamp = 2
	same := pw.append(appendConn(nil, &e, 5), &e)
	return [][]byte{full, same}
}

// TestTimedTable: random lookups and adds over a few hundred keys, some
// sharing their low bits (one probe sequence), with a horizon that moves
// on, answer as a Go map does for the live entries (at or after the
// horizon), through the rebuilds that drop the others; and the table
// stays sized for its live entries.
func TestTimedTable(t *testing.T) {
	type entry struct {
		t beacon.Time
		v int
	}
	for _, keys := range []int{3, 40, 500} {
		rnd := rand.New(rand.NewPCG(uint64(keys), 7))
		var c timedTable[int]
		m := make(map[uint64]entry)
		var horizon beacon.Time
		for i := range 200_000 {
			k := tableKey(uint64(rnd.IntN(keys)))
			if rnd.IntN(4) == 0 {
				k <<= 40 // the same low bits
			}
			if rnd.IntN(8) == 0 {
				horizon += beacon.Time(rnd.IntN(3)) // entries at the horizon are live
			}
			s := c.lookup(k)
			me, ok := m[k]
			live := ok && me.t >= horizon
			switch {
			case live && (s == nil || s.t != me.t || s.v != me.v):
				t.Fatalf("%d keys, step %d: %#x is %+v, the table's %+v", keys, i, k, me, s)
			case !live && s != nil && s.t >= horizon:
				t.Fatalf("%d keys, step %d: %#x is not live, the table has it at %d (horizon %d)", keys, i, k, s.t, horizon)
			}
			if rnd.IntN(2) == 0 {
				continue
			}
			if s == nil {
				s = c.add(k, horizon, 0)
			}
			s.t, s.v = horizon+beacon.Time(rnd.IntN(20)), i
			m[k] = entry{s.t, s.v}
			n := 0
			for _, e := range m {
				if e.t >= horizon {
					n++
				}
			}
			if c.used < n || len(c.slots) > 16 && len(c.slots) > 4*(c.used+1) || 4*c.used > 3*len(c.slots) {
				t.Fatalf("%d keys, step %d: %d live, %d used in %d slots", keys, i, n, c.used, len(c.slots))
			}
		}
	}
}

// pivotModel is the pivot store's rule written out over a Go map, record
// by record: what pivotStore, its table and its batches must answer.
type pivotModel struct {
	held     map[beacon.Tuple]pivotHeld
	now      beacon.Time
	lookback time.Duration
}

type pivotHeld struct {
	t   beacon.Time
	sum uint32
	p   Pivots
}

func (m *pivotModel) observe(it *item) {
	m.now = max(m.now, it.time)
	if it.pv.flags == 0 {
		return
	}
	horizon := m.now.Add(-m.lookback)
	if it.time < horizon {
		return
	}
	tu := it.tupleKey()
	h, ok := m.held[tu]
	live := ok && h.t >= horizon
	if live && it.time < h.t {
		return
	}
	next := pivotHeld{t: it.time}
	if it.pv.flags&pvFull == 0 {
		if !live || h.sum != it.pv.sum {
			return
		}
		next.sum, next.p = h.sum, h.p
	} else {
		p := it.pv.Pivots
		p.ReportId = 0
		next.sum, next.p = sum0(&p), p
		if held := h.p; live {
			held.ReportId = 0
			if held == p {
				next.p = h.p // unchanged
			}
		}
	}
	next.p.ReportId = it.pv.ReportId
	m.held[tu] = next
}

func (m *pivotModel) get(tu *beacon.Tuple) Pivots {
	if h, ok := m.held[*tu]; ok && h.t >= m.now.Add(-m.lookback) {
		return h.p
	}
	return Pivots{}
}

// TestPivotStoreShards: a random stream of a partition's connections —
// pivots in full, changing, as checksums (some of pivots the partition
// does not hold), none, late records, null ports, tuples quiet for longer
// than the window — gives the model's pivots for every tuple at every
// evaluation, from the partition's one store and from each of K shards'
// stores that observe only their own tuples' records and advance with
// the others' (a replay shard's shadows): what a replay's alerts carry
// does not depend on the shards, and a store that drifted from the
// partition's would fail here.
func TestPivotStoreShards(t *testing.T) {
	const lookback = time.Hour
	rnd := rand.New(rand.NewPCG(11, 10))
	tuples := make([]beacon.Tuple, 60)
	for i := range tuples {
		tuples[i] = beacon.Tuple{DeviceId: fmt.Sprint("dev-", i%7), DeviceName: "wks", FileName: fmt.Sprint("p", i%5, ".exe"),
			RemoteIP: fmt.Sprint("10.0.", i%13, ".", i), RemotePort: 443}
	}
	procs := func(i, gen int) Pivots {
		return Pivots{TenantId: "t", SHA256: fmt.Sprint("sha-", i%5), CommandLine: fmt.Sprint("cmd ", gen), ProcessId: int64(100 + gen)}
	}
	model := pivotModel{held: make(map[beacon.Tuple]pivotHeld), lookback: lookback}
	var stores [4][]pivotStore // stores[K]: K shards
	for k := 1; k < len(stores); k++ {
		stores[k] = make([]pivotStore, k)
		for j := range stores[k] {
			stores[k][j].lookback = lookback
		}
	}
	gen := make([]int, len(tuples)) // each tuple's current pivots
	now := beacon.Time(1_000_000) * beacon.Second
	checked, expired, seen := 0, 0, 0
	for step := range 30_000 {
		if rnd.IntN(200) == 0 {
			now += beacon.Time(rnd.IntN(int(2*lookback/time.Second))) * beacon.Second // a quiet spell
		} else {
			now += beacon.Time(rnd.IntN(20)) * beacon.Second
		}
		ti := rnd.IntN(len(tuples))
		tu := tuples[ti]
		it := item{kind: kindConn, time: now, ip: tu.RemoteIP, port: tu.RemotePort,
			tuple: [5]string{tu.DeviceId, tu.DeviceName, tu.AccountName, tu.AccountDomain, tu.FileName}}
		if rnd.IntN(10) == 0 {
			it.time -= beacon.Time(rnd.IntN(int(2*lookback/time.Second))) * beacon.Second // late, perhaps past the window
		}
		if rnd.IntN(15) == 0 {
			gen[ti]++
		}
		p := procs(ti, gen[ti])
		switch r := rnd.IntN(10); {
		case r < 3:
			it.pv = pivotItem{flags: pvFull, Pivots: p}
		case r < 8:
			if rnd.IntN(6) == 0 {
				p = procs(ti, gen[ti]+1) // a checksum of pivots not yet seen in full
			}
			it.pv = pivotItem{flags: pvSame, sum: sum0(&p)}
		case r < 9:
			// no pivots section
		default:
			it.kind = kindNoPort // a null port: it moves the window only
		}
		if r := int64(rnd.IntN(3)); r > 0 && it.pv.flags != 0 {
			it.pv.flags |= pvReport
			it.pv.ReportId = int64(step)*10 + r
		}
		if it.kind == kindNoPort {
			model.now = max(model.now, it.time)
		} else {
			model.observe(&it)
		}
		for k := 1; k < len(stores); k++ {
			for j := range stores[k] {
				switch ps := &stores[k][j]; {
				case it.kind == kindConn && shardOf(tu.RemoteIP, k) == j:
					ps.observe(&it)
				default:
					ps.advance(it.time) // another shard's, or a null port: worker.take
				}
			}
		}
		if rnd.IntN(50) != 0 {
			continue
		}
		// An evaluation point: the segment is applied, alerts read pivots.
		for k := 1; k < len(stores); k++ {
			for j := range stores[k] {
				stores[k][j].apply()
			}
		}
		for i := range tuples {
			want := model.get(&tuples[i])
			if _, ok := model.held[tuples[i]]; ok && want == (Pivots{}) {
				expired++
			} else if want != (Pivots{}) {
				seen++
			}
			for k := 1; k < len(stores); k++ {
				got := stores[k][shardOf(tuples[i].RemoteIP, k)].get(&tuples[i])
				if got != want {
					t.Fatalf("step %d, %d shard(s): %+v has pivots\n%+v, want\n%+v", step, k, tuples[i], got, want)
				}
			}
			checked++
		}
	}
	if expired == 0 || seen == 0 {
		t.Fatalf("%d reads of held pivots, %d of expired ones: the stream does not exercise the window", seen, expired)
	}
	t.Logf("%d reads: %d with pivots, %d after they left the window", checked, seen, expired)
}

// TestTupleHash: the fleet's tuples, and tuples that differ only by where
// bytes sit between columns or by one bit, hash apart.
func TestTupleHash(t *testing.T) {
	rs, _ := records(t, testFleet(3))
	seen := make(map[uint64]beacon.Tuple)
	add := func(tu beacon.Tuple) {
		t.Helper()
		h := tupleHash(&tu)
		if o, ok := seen[h]; ok && o != tu {
			t.Fatalf("%+v and %+v hash alike", o, tu)
		}
		seen[h] = tu
	}
	for i := range rs {
		add(rs[i].Tuple())
	}
	base := beacon.Tuple{DeviceId: "0123456789abcdef", DeviceName: "wks-1", AccountName: "alice", FileName: "x.exe", RemoteIP: "1.2.3.4", RemotePort: 443}
	add(base)
	moved := base
	moved.DeviceId, moved.DeviceName = "0123456789abcdefw", "ks-1"
	add(moved)
	for i := range len(base.DeviceId) * 8 {
		b := []byte(base.DeviceId)
		b[i/8] ^= 1 << (i % 8)
		flip := base
		flip.DeviceId = string(b)
		add(flip)
	}
	port := base
	port.RemotePort++
	add(port)
	// A column word equal to what words are mixed with zeroes the
	// product and wipes every column hashed before it. These bytes were
	// that constant (wyhash's second prime, little endian) until the
	// review of session 6: tuples differing only before it hashed alike.
	const word = "\xdb\x28\xb4\xa0\xd1\x7e\x03\xe7"
	for i := range 4 {
		tu := base
		tu.DeviceId, tu.AccountName = fmt.Sprint("dev-", i), word
		add(tu)
	}
	t.Logf("%d tuples", len(seen))
}
