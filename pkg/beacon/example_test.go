package beacon_test

import (
	"fmt"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// A process that calls a public address every 60 s for 20 minutes is what
// the seed query finds; Hunt is the query as a batch.
func ExampleHunt() {
	start := beacon.TimeOf(time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC))
	h := beacon.NewHunt(beacon.Seed())
	for i := range 20 {
		h.Add(&beacon.Event{
			Timestamp:    start.Add(time.Duration(i) * time.Minute),
			DeviceId:     "dev-1",
			DeviceName:   "wks-0042",
			ActionType:   "ConnectionSuccess",
			RemoteIP:     "159.136.251.253",
			RemoteIPType: "Public",
			RemotePort:   443,
			HasPort:      true,
			AccountName:  "alice",
			FileName:     "rundll32.exe",
		})
	}
	now, _ := h.DefaultNow() // the newest connection + 1 s, as the stream's clock
	for _, r := range h.Rows(now) {
		fmt.Printf("%s on %s -> %s:%d every %.0f s, jitter %.0f %%, %d deltas\n",
			r.FileName, r.DeviceName, r.RemoteIP, r.RemotePort, r.Avg, r.Jitter, r.Count)
	}
	// Output:
	// rundll32.exe on wks-0042 -> 159.136.251.253:443 every 60 s, jitter 0 %, 19 deltas
}

// The robust profile counts callbacks, not connections: a burst of
// connections is one callback, and a missed callback supports the period.
func ExampleRobust() {
	start := beacon.TimeOf(time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC))
	h := beacon.NewHunt(beacon.Robust())
	for i := range 120 {
		if i == 50 || i == 51 {
			continue // two missed callbacks
		}
		at := start.Add(time.Duration(i) * time.Minute)
		for _, burst := range []time.Duration{0, time.Second} { // two connections per callback
			h.Add(&beacon.Event{
				Timestamp: at.Add(burst), DeviceId: "dev-1", DeviceName: "wks-0042",
				ActionType: "ConnectionFailed", RemoteIP: "2001:4860:4860::8888", RemoteIPType: "Public",
				RemotePort: 443, HasPort: true, AccountName: "Alice", FileName: "RunDLL32.exe",
			})
		}
	}
	now, _ := h.DefaultNow()
	for _, r := range h.Rows(now) {
		fmt.Printf("%s -> [%s]:%d period %.0f s, %d callbacks, severity %s\n",
			r.FileName, r.RemoteIP, r.RemotePort, r.PeriodSeconds, r.Callbacks, r.Severity)
	}
	// Output:
	// rundll32.exe -> [2001:4860:4860::8888]:443 period 59 s, 118 callbacks, severity critical
}
