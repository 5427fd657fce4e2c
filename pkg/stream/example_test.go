package stream_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/beaconhunt/beacon/pkg/beacon"
	"github.com/beaconhunt/beacon/pkg/fleet"
	"github.com/beaconhunt/beacon/pkg/stream"
)

// Replay backtests the streaming detector on a topic's history: here an
// embedded Kafka broker on loopback holds 30 minutes of a process calling
// a public address every 60 s, and Replay returns the alert `beacon run`
// would have published and the beacon set at the end — what Hunt returns
// over the same events.
func ExampleReplay() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "events"))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	addr := cluster.ListenAddrs()[0] // 127.0.0.1:port

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("events"))
	if err != nil {
		panic(err)
	}
	start := beacon.TimeOf(time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC))
	for i := range 30 {
		r := fleet.Record{Event: beacon.Event{
			Timestamp: start.Add(time.Duration(i) * time.Minute), DeviceId: "dev-1", DeviceName: "wks-0042",
			ActionType: "ConnectionSuccess", RemoteIP: "159.136.251.253", RemoteIPType: "Public",
			RemotePort: 443, HasPort: true, AccountName: "alice", FileName: "rundll32.exe",
		}}
		// One flat Advanced Hunting JSON row per record, as a SIEM export
		// writes them (Streaming API envelopes and Avro are read too).
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: fleet.AppendJSON(nil, &r)}).FirstErr(); err != nil {
			panic(err)
		}
	}
	cl.Close()

	p := beacon.Seed()
	p.Lookback = time.Hour
	res, err := stream.Replay(context.Background(), stream.ReplayOptions{},
		stream.Brokers(addr), stream.InputTopics("events"), stream.Params(p),
		stream.Warmup(-1)) // alert at once: 30 minutes do not fill a one-hour window
	if err != nil {
		panic(err)
	}
	for _, a := range res.Alerts {
		fmt.Printf("alert at %s: %s\n", a.StreamTime, a.Title())
	}
	fmt.Printf("%d events; beacon set at now = %s:\n", res.Events, res.Now)
	for _, r := range res.Rows {
		fmt.Printf("  %s on %s -> %s:%d every %.0f s, %d deltas\n",
			r.FileName, r.DeviceName, r.RemoteIP, r.RemotePort, r.Avg, r.Count)
	}
	// Output:
	// alert at 2024-05-01T10:15:00Z: rundll32.exe on wks-0042 calls 159.136.251.253:443 every 60 s ±0 % — 16 callbacks in 15 min
	// 30 events; beacon set at now = 2024-05-01T10:29:01Z:
	//   rundll32.exe on wks-0042 -> 159.136.251.253:443 every 60 s, 29 deltas
}
