package mde

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// synthJSONL writes n events of a day: 500 devices browsing to 30k sites
// (popular ones more often), and every 50th device with a 60 s ±10% beacon. It stands in for an
// export in benchmarks; beacon simulate makes realistic fleets.
func synthJSONL(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	var buf bytes.Buffer
	buf.Grow(n * 420)
	start := mustTime("2024-05-01T00:00:00Z")
	day := int64(24 * time.Hour / 100)
	calls := map[int]int64{}
	for i := 0; i < n; i++ {
		dev := r.IntN(500)
		ts := start + beacon.Time(r.Int64N(day))
		// Browsing: 30k sites, popular ones far more often (a squared draw).
		site := int(float64(30_000) * math.Pow(r.Float64(), 2))
		ip := fmt.Sprintf("%d.%d.%d.%d", 20+site%180, site/180%256, site*7%256, 1+site%254)
		port, proc, url := 443, "chrome.exe", fmt.Sprintf("www.site%d.example.com", site)
		if dev%50 == 0 && r.IntN(4) == 0 {
			ip, proc, url = fmt.Sprintf("45.77.%d.10", dev/50), "rundll32.exe", ""
			ts = start + beacon.Time(calls[dev]*60*int64(beacon.Second)+r.Int64N(6*int64(beacon.Second)))
			calls[dev]++
		}
		action := "ConnectionSuccess"
		if r.IntN(20) == 0 && proc != "rundll32.exe" {
			action = "ConnectionFailed"
		}
		fmt.Fprintf(&buf, `{"Timestamp":"%s","DeviceId":"%040x","DeviceName":"wks-%04d.contoso.local","ActionType":"%s",`+
			`"RemoteIP":"%s","RemotePort":%d,"RemoteUrl":"%s","RemoteIPType":"Public","LocalIP":"10.1.%d.%d","LocalPort":%d,`+
			`"Protocol":"Tcp","InitiatingProcessFileName":"%s","InitiatingProcessAccountName":"user%d",`+
			`"InitiatingProcessAccountDomain":"contoso","InitiatingProcessId":%d}`+"\n",
			ts, dev, dev, action, ip, port, url, dev/256, dev%256, 49152+r.IntN(16000), proc, dev, 1000+r.IntN(9000))
	}
	return buf.Bytes()
}

// BenchmarkHunt measures beacon hunt end to end on 750k events in memory:
// decode (parallel), aggregate, query. Reports events/s.
func BenchmarkHunt(b *testing.B) {
	const n = 750_000
	data := synthJSONL(n, 1)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		h := beacon.NewHunt(beacon.Seed())
		_, err := Read(context.Background(), bytes.NewReader(data), "bench", Options{},
			func(batch []beacon.Event) {
				h.AddBatch(batch)
			})
		if err != nil {
			b.Fatal(err)
		}
		now, _ := h.DefaultNow()
		if rows := h.Rows(now); len(rows) == 0 {
			b.Fatal("no beacons found in the synthetic day")
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecode measures the decoder alone on one core.
func BenchmarkDecode(b *testing.B) {
	data := synthJSONL(10_000, 2)
	lines := bytes.Split(bytes.TrimSpace(data), []byte{'\n'})
	b.SetBytes(int64(len(data)))
	var n int
	for b.Loop() {
		for _, l := range lines {
			Decode(l, func(*beacon.Event) { n++ })
		}
	}
	b.ReportMetric(float64(len(lines))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
