package stream

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/beaconhunt/beacon/internal/testkit"
	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
)

// longFleet is a fleet longer than lookback + 1 day (testParams' lookback
// is 1 h: 27 h of events), plus rows of other kinds — DNS and HTTP
// inspections, failed connections — carrying other URLs to the IPs of the
// beacons found at the end (implants or not) at times that matter for Domains: inside the window, a half day
// before it (inside the Domains day: only history brings them back), and
// more than a day before it (expired: they must be gone). Every record is
// in event-time order.
func longFleet(t testing.TB) []fleet.Record {
	rs, _ := records(t, fleet.Config{Seed: 11, Devices: 6, Duration: 27 * time.Hour,
		Sleeps: []time.Duration{30 * time.Second, time.Minute}, LateRate: -1})
	end := rs[len(rs)-1].Timestamp
	ips := map[string]bool{}
	for _, r := range huntAll(testParams(), rs) {
		ips[r.RemoteIP] = true
	}
	var extra []fleet.Record
	kinds := []string{"DnsConnectionInspected", "HttpConnectionInspected", "ConnectionFailed"}
	k := 0
	for ip := range ips {
		for _, back := range []time.Duration{30 * time.Minute, 12 * time.Hour, 20 * time.Hour, 26 * time.Hour, 26*time.Hour + 30*time.Minute} {
			k++
			e := beacon.Event{Timestamp: end.Add(-back), DeviceId: "dns", DeviceName: "dns.contoso.local",
				ActionType: kinds[k%len(kinds)], RemoteIP: ip, RemoteIPType: "Public", RemotePort: 53, HasPort: k%2 == 0,
				RemoteUrl: fmt.Sprintf("https://h%d.back%dm.example.org/x", k, int(back.Minutes()))}
			extra = append(extra, fleet.Record{Event: e})
		}
	}
	if k == 0 {
		t.Fatal("the fleet has no beacons at its end")
	}
	rs = append(rs, extra...)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Timestamp < rs[j].Timestamp })
	return rs
}

// TestRowsEqualHuntPastTheDomainsDay: over a fleet longer than lookback +
// 1 day, the detector's rows (every column, Domains included) equal the
// batch query's per partition — once while it ran live, and again from a
// second detector that had no state and rebuilt every partition from the
// repartition topic. A rebuild that reads back less than lookback + 1 day,
// domain observations forwarded only for connections, domains that never
// expire, or records lost by ingest each change some row.
func TestRowsEqualHuntPastTheDomainsDay(t *testing.T) {
	const parts = 2
	cl := testkit.NewCluster(t, []testkit.Topic{{Name: tInput, Partitions: 3}, {Name: tRepart, Partitions: parts},
		{Name: tAlerts, Partitions: 2}, {Name: tDead, Partitions: 1}})
	rs := longFleet(t)
	produceJSON(t, cl.Addr, rs)
	p := testParams()
	want := jsonl(huntByPartition(p, rs, parts))
	if n := len(huntByPartition(p, rs, parts)); n < 2 {
		t.Fatalf("the batch query finds %d rows: the fleet is too tame", n)
	}
	// The case is what it claims: a domain seen only a half day before the
	// window is in some row, and none seen more than a day before it.
	if !strings.Contains(want, "\"back720m.example.org\"") || strings.Contains(want, "back1560m.example.org") {
		t.Fatalf("hunt's rows do not show the Domains day (want back720m, not back1560m):\n%.2000s", want)
	}
	s := service(t, cl.Addr, t.TempDir(), testLogger(t), Params(p))
	stop := start(t, s)
	cl.WaitCommitted(t, 120*time.Second, "test.ingest", tInput)
	cl.WaitCommitted(t, 120*time.Second, "test.detect", tRepart)
	if got := getBeacons(t, s, ""); got != want {
		t.Errorf("live rows differ from hunt per partition:\n%s", diffLines(got, want))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// A new owner without state rebuilds each partition, muted, up to the
	// committed offset: the same rows.
	reg := prometheus.NewRegistry()
	again := service(t, cl.Addr, t.TempDir(), testLogger(t), Params(p), WithRole(RoleDetect), Registry(reg))
	stop = start(t, again)
	var last string
	testkit.WaitFor(t, 60*time.Second, "the rebuilt rows to equal hunt's", func() (bool, string) {
		last = getBeacons(t, again, "")
		return last == want, diffLines(last, want)
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := counterValue(t, reg, "beacon_partition_rebuilds_total", "", ""); n != parts {
		t.Errorf("partition_rebuilds_total = %v, want %d", n, parts)
	}
	t.Logf("%d records; rows equal hunt live and after a rebuild", len(rs))
}

// TestRowsEqualHuntAfterRetention: a detector that saw the first hour and
// went down; meanwhile the rest of a fleet longer than lookback + 1 day
// arrives and retention removes, from the repartition topic, everything
// older than the Domains day before its end — more than the detector had
// applied, so its state cannot be resumed across the hole. Back up, it
// rebuilds, and its rows equal the batch query's over every event: what
// retention removed was older than anything the rows depend on.
func TestRowsEqualHuntAfterRetention(t *testing.T) {
	const parts = 2
	cl := testkit.NewCluster(t, []testkit.Topic{{Name: tInput, Partitions: 3}, {Name: tRepart, Partitions: parts},
		{Name: tAlerts, Partitions: 2}, {Name: tDead, Partitions: 1}})
	rs := longFleet(t)
	p := testParams()
	end := rs[len(rs)-1].Timestamp
	firstHour := 0
	for firstHour < len(rs) && rs[firstHour].Timestamp < rs[0].Timestamp.Add(20*time.Minute) {
		firstHour++
	}
	dir := t.TempDir()
	produceJSON(t, cl.Addr, rs[:firstHour])
	ingestAll(t, cl.Addr, Params(p))
	first := service(t, cl.Addr, dir, testLogger(t), Params(p), WithRole(RoleDetect))
	stop := start(t, first)
	cl.WaitCommitted(t, 60*time.Second, "test.detect", tRepart)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	applied := cl.EndOffsets(t, tRepart)

	produceJSON(t, cl.Addr, rs[firstHour:])
	ingestAll(t, cl.Addr, Params(p))
	// Retention: the repartition records older than end − lookback − 1 d − 10 min.
	keep := end.Add(-p.Lookback - 24*time.Hour - 10*time.Minute).Go().UnixMilli()
	adm := cl.Admin(t)
	listed, err := adm.ListOffsetsAfterMilli(context.Background(), keep, tRepart)
	if err != nil {
		t.Fatal(err)
	}
	del := kadm.Offsets{}
	listed.Each(func(o kadm.ListedOffset) {
		// Watermark records carry their own timestamps: retention reaches
		// at least one record past what the detector applied (events of
		// its first 20 minutes, older than anything the rows depend on).
		del.Add(kadm.Offset{Topic: tRepart, Partition: o.Partition, At: max(o.Offset, applied[o.Partition]+1)})
	})
	if _, err := adm.DeleteRecords(context.Background(), del); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	again := service(t, cl.Addr, dir, testLogger(t), Params(p), WithRole(RoleDetect), Registry(reg))
	stop = start(t, again)
	cl.WaitCommitted(t, 60*time.Second, "test.detect", tRepart)
	want := jsonl(huntByPartition(p, rs, parts))
	var got string
	testkit.WaitFor(t, 30*time.Second, "the rows after retention to equal hunt's", func() (bool, string) {
		got = getBeacons(t, again, "")
		return got == want, diffLines(got, want)
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := counterValue(t, reg, "beacon_partition_rebuilds_total", "", ""); n != parts {
		t.Errorf("partition_rebuilds_total = %v, want %d (state older than retention is rebuilt)", n, parts)
	}
}
