package beacon

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestToLower: toLower is strings.ToLower over strings of every length
// up to 40 made of the bytes around the upper-case letters, non-ASCII
// bytes and multi-byte runes, at every position.
func TestToLower(t *testing.T) {
	alphabet := []string{"@", "A", "M", "Z", "[", "`", "a", "z", "{", "0", ".", "\x7f", "\x80", "\xff", "É", "ß", "İ"}
	rnd := rand.New(rand.NewPCG(3, 4))
	for n := range 41 {
		for range 300 {
			var b strings.Builder
			for b.Len() < n {
				// Mostly plain lower-case names, as in events.
				if rnd.IntN(4) > 0 {
					b.WriteByte(byte('a' + rnd.IntN(26)))
				} else {
					b.WriteString(alphabet[rnd.IntN(len(alphabet))])
				}
			}
			s := b.String()
			if got, want := toLower(s), strings.ToLower(s); got != want {
				t.Fatalf("toLower(%q) = %q, want %q", s, got, want)
			}
		}
	}
}

// TestConnectionOf: ConnectionOf with the event's DomainIP is Connection,
// under both profiles, over addresses of every kind the filters tell
// apart, each RemoteIPType and ActionType. Ingest and Hunt's adders both
// filter with it, knowing DomainIP per address.
func TestConnectionOf(t *testing.T) {
	ips := []string{"", "0.0.0.0", "8.8.8.8", "10.1.2.3", "172.16.0.1", "172.32.0.1", "192.168.1.1", "127.0.0.1",
		"169.254.1.1", "100.64.0.1", "224.0.0.1", "255.255.255.255", "203.0.113.7", "45.77.1.10", "08.8.8.8",
		"2606:4700::1", "fe80::1", "fc00::1", "::ffff:8.8.8.8", "::ffff:10.0.0.1", "::1", "not an ip", "1.2.3",
		"192.0.2.1", "2001:4860::8888", "2001:db8::1", "fd00::1", "8.8.8.8/24", "8.8.8", "1.2.3.4.5", "256.1.1.1", "01.2.3.4"}
	types := []string{"", "Public", "Private", "Reserved", "LinkLocal", "Loopback", "Other", "FourToSixMapping", "public"}
	actions := []string{"ConnectionSuccess", "CsonnectionRequest", "ConnectionFailed", "InboundConnectionAccepted", "",
		"CsonnectionFailed", "ConnectionAttempt", "ConnectionSuccessAggregatedReport", "connectionsuccess"}
	n := 0
	for _, p := range []Params{Seed(), Robust()} {
		for _, ip := range ips {
			for _, ty := range types {
				for _, a := range actions {
					e := Event{RemoteIP: ip, RemoteIPType: ty, ActionType: a}
					want := p.Connection(&e)
					if got := p.ConnectionOf(&e, p.DomainIP(ip)); got != want {
						t.Fatalf("profile %q, %+v: ConnectionOf %v, Connection %v", p.Profile, e, got, want)
					}
					if want {
						n++
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no event passed: the test tells nothing")
	}
}
