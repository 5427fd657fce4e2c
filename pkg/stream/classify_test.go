package stream

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// TestIngestClassify: what ingest writes of an event is the same whether
// the decode goroutines classified it (merger.classify, the replay's and
// ingest's path) or ingest.event did (class 0), under both profiles; a
// robust connection's account and process names are written lower-cased
// (Params.TupleOf), a seed one's as they came; an event that is no
// connection writes only its domain observation, and one to a private
// address nothing.
func TestIngestClassify(t *testing.T) {
	rows := []string{
		// A connection with names in upper case, and a URL.
		`{"Timestamp":"2024-05-01T10:00:00Z","DeviceId":"d1","DeviceName":"Host1","ActionType":"ConnectionSuccess","RemoteIP":"45.77.1.10","RemotePort":443,"RemoteUrl":"https://API.Evil.com/x","InitiatingProcessFileName":"RunDLL32.EXE","InitiatingProcessAccountName":"Alice","InitiatingProcessAccountDomain":"CORP"}`,
		// Another action type: a domain observation only.
		`{"Timestamp":"2024-05-01T10:00:01Z","DeviceId":"d1","DeviceName":"Host1","ActionType":"InboundConnectionAccepted","RemoteIP":"45.77.1.11","RemotePort":443,"RemoteUrl":"b.com","InitiatingProcessFileName":"X.exe","InitiatingProcessAccountName":"Bob","InitiatingProcessAccountDomain":"CORP"}`,
		// A private address: neither (robust), or no domain (seed).
		`{"Timestamp":"2024-05-01T10:00:02Z","DeviceId":"d1","DeviceName":"Host1","ActionType":"ConnectionSuccess","RemoteIP":"10.0.0.1","RemotePort":443,"RemoteUrl":"c.com","InitiatingProcessFileName":"Y.exe","InitiatingProcessAccountName":"Carol","InitiatingProcessAccountDomain":"CORP"}`,
		// A null port.
		`{"Timestamp":"2024-05-01T10:00:03Z","DeviceId":"d1","DeviceName":"Host1","ActionType":"ConnectionSuccess","RemoteIP":"45.77.1.10","RemoteUrl":"","InitiatingProcessFileName":"Z.exe","InitiatingProcessAccountName":"Dan","InitiatingProcessAccountDomain":"CORP"}`,
	}
	for _, profile := range []string{beacon.ProfileSeed, beacon.ProfileRobust} {
		p, err := beacon.ProfileParams(profile)
		if err != nil {
			t.Fatal(err)
		}
		var outs [2][]string
		for i, classified := range []bool{true, false} {
			s, err := New(Brokers("127.0.0.1:1"), StateDir(t.TempDir()), Params(p), DomainMargin(time.Nanosecond))
			if err != nil {
				t.Fatal(err)
			}
			in, err := newIngestCore(s)
			if err != nil {
				t.Fatal(err)
			}
			in.now = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			in.route = func(ip string, value []byte, _ beacon.Time) {
				var it item
				if err := decodeItem([]byte(ip), value, &it); err != nil {
					t.Fatalf("%s: ingest wrote %x: %v", profile, value, err)
				}
				it.pv = pivotItem{} // pivots.go's, tested there
				outs[i] = append(outs[i], fmt.Sprintf("%+v", it))
			}
			var m merger
			if classified {
				m.classify = in.classify
			}
			m.assign("in", 0, 0, int64(len(rows)))
			var recs []*kgo.Record
			for o, r := range rows {
				recs = append(recs, &kgo.Record{Topic: "in", Offset: int64(o), Value: []byte(r)})
			}
			m.add([]kgo.FetchTopicPartition{{Topic: "in", FetchPartition: kgo.FetchPartition{Partition: 0, HighWatermark: int64(len(rows)), Records: recs}}},
				in.decodeRecord, func(r *kgo.Record, _ string, err error) { t.Fatalf("%s: record %d: %v", profile, r.Offset, err) })
			m.emit(func(mp *mpart, e *beacon.Event, class uint8) {
				if (class != 0) != classified {
					t.Fatalf("%s: class %#x with classify set %v", profile, class, classified)
				}
				in.event(mp, e, class)
			}, func(*mpart, int32, int64) {})
		}
		if fmt.Sprint(outs[0]) != fmt.Sprint(outs[1]) {
			t.Errorf("%s: classified by the decoders\n%v\nby ingest.event\n%v", profile, outs[0], outs[1])
		}
		names := "tuple:[d1 Host1 Alice CORP RunDLL32.EXE]"
		if profile == beacon.ProfileRobust {
			names = "tuple:[d1 Host1 alice corp rundll32.exe]"
		}
		want := []string{"kind:3 ip:45.77.1.10", "kind:1 ip:45.77.1.10", names, "kind:3 ip:45.77.1.11", "domain:b.com", "kind:2 ip:45.77.1.10"}
		got := fmt.Sprint(outs[0])
		for _, w := range want {
			if !contains(got, w) {
				t.Errorf("%s: wrote %v, want %q in it", profile, outs[0], w)
			}
		}
		if contains(got, "kind:1 ip:45.77.1.11") {
			t.Errorf("%s: wrote %v, with a connection of an inbound event", profile, outs[0])
		}
		if contains(got, "ip:10.0.0.1") {
			t.Errorf("%s: wrote %v, with a record of a private address", profile, outs[0])
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
