package beacon

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

// TestHuntHashCollisions keeps three bits of Hunt's tuple and pair hashes,
// so that nearly every tuple and (RemoteIP, RemoteUrl) shares its hash
// with others, and holds the rows to those of full hashes: a slot whose
// hash matches is checked against the entry. The fleet has beacons among noise that
// differs in one column at a time (port, process, account), and domains
// whose pairs differ only in the URL or only in the IP.
func TestHuntHashCollisions(t *testing.T) {
	var evs []Event
	for d := range 12 {
		dev := fmt.Sprintf("d%02d", d)
		ip := fmt.Sprintf("8.8.%d.%d", d%3, d%5)
		for k, ts := range series(t0, every(30, Time(60+d)*Second)...) {
			e := conn(dev, "implant.exe", ip, 443, ts)
			e.RemoteUrl = fmt.Sprintf("c%d.evil%d.example.com", k%4, d%3)
			evs = append(evs, e)
			// Neighbours of the beacon's tuple, one column changed.
			n := conn(dev, "implant.exe", ip, int32(444+k%3), ts+Second/3)
			n.RemoteUrl = e.RemoteUrl
			evs = append(evs, n)
			n = conn(dev, fmt.Sprintf("p%d.exe", k%5), ip, 443, ts+Second/2)
			n.AccountName = fmt.Sprintf("u%d", k%2)
			evs = append(evs, n)
			n = conn(dev, "implant.exe", fmt.Sprintf("9.9.%d.%d", k%7, d), 443, ts+2*Second/3)
			n.RemoteUrl = e.RemoteUrl
			evs = append(evs, n)
		}
	}
	run := func(weak bool) []Row {
		h := NewHunt(Seed())
		for _, sh := range h.shards {
			sh.hx.weak = weak
		}
		h.AddBatch(evs)
		now, _ := h.DefaultNow()
		return h.Rows(now.Add(time.Hour))
	}
	want, got := run(false), run(true)
	if len(want) == 0 {
		t.Fatal("no beacons: the test's fleet is wrong")
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("with colliding hashes:\n%+v\nwant\n%+v", got, want)
	}
	// Three bits make at most eight hashes: more keys than that share.
	h := NewHunt(Seed())
	h.AddBatch(evs)
	for k, sh := range h.shards {
		if len(sh.tuples) <= 8 || len(sh.urlSeen) <= 8 {
			t.Fatalf("shard %d: %d tuples, %d pairs: too few to collide", k, len(sh.tuples), len(sh.urlSeen))
		}
	}
}
