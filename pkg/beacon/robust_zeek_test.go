package beacon

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Captures converted from Zeek connection logs (conn.log) are the other
// real-world input the robust profile must handle: Zeek sees hosts and
// 5-tuples, not processes or accounts, so a conversion fills DeviceId and
// DeviceName from the originator's address and leaves the process and
// account columns empty, and Zeek's connection states become ActionTypes.
// These tests write conn.log text as Zeek does (tab-separated, #fields
// header, epoch timestamps with microseconds), convert it, and hunt with
// the robust defaults.

// zeekHeader is the head of a Zeek conn.log (the columns the conversion
// reads and a few it ignores).
const zeekHeader = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n" +
	"#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\thistory\n" +
	"#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tstring\n"

// zeekLog accumulates conn.log lines.
type zeekLog struct {
	b   strings.Builder
	rng *rand.Rand
	n   int
}

func newZeekLog(seed uint64) *zeekLog {
	z := &zeekLog{rng: rand.New(rand.NewPCG(seed, seed+1))}
	z.b.WriteString(zeekHeader)
	return z
}

// conn writes one connection record. state is Zeek's conn_state: SF
// (normal), S0 (no reply), REJ (rejected), RSTO, OTH…
func (z *zeekLog) conn(at time.Time, orig, resp string, port int, proto, service, state string) {
	z.n++
	dur, ob, rb, hist := "-", "-", "-", "S"
	switch state {
	case "SF", "RSTO", "S1":
		dur = fmt.Sprintf("%.6f", 0.05+z.rng.Float64()*2)
		ob, rb, hist = strconv.Itoa(200+z.rng.IntN(800)), strconv.Itoa(300+z.rng.IntN(4000)), "ShADadFf"
	case "REJ":
		dur, ob, rb, hist = fmt.Sprintf("%.6f", z.rng.Float64()*0.001), "0", "0", "Sr"
	case "S0":
		ob, rb = "0", "0"
	}
	if service == "" {
		service = "-"
	}
	fmt.Fprintf(&z.b, "%d.%06d\tC%015x\t%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
		at.Unix(), at.Nanosecond()/1000, z.rng.Uint64()>>4, orig, 49152+z.rng.IntN(16000), resp, port,
		proto, service, dur, ob, rb, state, hist)
}

// zeekAction maps a Zeek connection state to a DeviceNetworkEvents
// ActionType as a conversion does: established connections succeed, an
// unanswered SYN is an attempt, a rejected one failed.
func zeekAction(state string) string {
	switch state {
	case "S0", "SH", "OTH":
		return "ConnectionAttempt"
	case "REJ", "RSTOS0", "RSTRH":
		return "ConnectionFailed"
	}
	return "ConnectionSuccess"
}

// convertZeek reads conn.log text into events: DeviceId and DeviceName are
// the originator's address, RemoteUrl empty (conn.log has no host names),
// process and account columns empty unless file names one for a host.
func convertZeek(t *testing.T, log string, file map[string]string) []Event {
	t.Helper()
	var out []Event
	var cols map[string]int
	sc := bufio.NewScanner(strings.NewReader(log))
	for line := 1; sc.Scan(); line++ {
		s := sc.Text()
		if rest, ok := strings.CutPrefix(s, "#fields\t"); ok {
			cols = map[string]int{}
			for i, c := range strings.Split(rest, "\t") {
				cols[c] = i
			}
			continue
		}
		if strings.HasPrefix(s, "#") || s == "" {
			continue
		}
		f := strings.Split(s, "\t")
		get := func(c string) string { return f[cols[c]] }
		ts, err := strconv.ParseFloat(get("ts"), 64)
		if err != nil {
			t.Fatalf("conn.log line %d: ts: %v", line, err)
		}
		port, err := strconv.Atoi(get("id.resp_p"))
		if err != nil {
			t.Fatalf("conn.log line %d: id.resp_p: %v", line, err)
		}
		sec, frac := int64(ts), ts-float64(int64(ts))
		at := Time(sec)*Second + Time(frac*float64(Second)+0.5)
		orig, resp := get("id.orig_h"), get("id.resp_h")
		typ := "Public"
		if !PublicIP(resp) {
			typ = "Private"
		}
		out = append(out, Event{Timestamp: at, DeviceId: orig, DeviceName: orig, ActionType: zeekAction(get("conn_state")),
			RemoteIP: resp, RemoteIPType: typ, RemotePort: int32(port), HasPort: true, FileName: file[orig]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// zeekBrowsing writes a person's browsing from host: bursts of
// connections to a few popular sites at random times in working hours,
// and DNS to the resolver around each.
func (z *zeekLog) browsing(host string, from time.Time, d time.Duration) {
	sites := []string{"142.250.185.78", "157.240.17.35", "151.101.65.140", "104.16.132.229", "13.107.42.14",
		"52.84.150.39", "23.215.0.136", "185.199.108.153", "140.82.121.4", "20.190.159.0"}
	for at := from; at.Before(from.Add(d)); at = at.Add(time.Duration(z.rng.ExpFloat64() * float64(7*time.Minute))) {
		if h := at.Hour(); h < 8 || h >= 19 {
			continue
		}
		site := sites[z.rng.IntN(len(sites))]
		z.conn(at, host, "8.8.8.8", 53, "udp", "dns", "SF")
		for k := range 1 + z.rng.IntN(6) {
			z.conn(at.Add(time.Duration(k)*time.Duration(50+z.rng.IntN(900))*time.Millisecond), host, site, 443, "tcp", "ssl", "SF")
		}
	}
}

// robustFlagged hunts events with the robust defaults and returns the rows.
func robustFlagged(t *testing.T, evs []Event) []Row {
	t.Helper()
	p := Robust()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	h := NewHunt(p)
	for i := range evs {
		h.Add(&evs[i])
	}
	now, ok := h.DefaultNow()
	if !ok {
		t.Fatalf("no event passed the robust row filters")
	}
	return h.Rows(now)
}

// TestRobustZeekHTTPBeaconAmongScanning: three days of one infected host
// that scans the internet (thousands of addresses and ports, each touched
// once or twice, mostly unanswered or rejected), browses, and runs an HTTP
// beacon every 60 s ±20 % whose callbacks are sometimes missed, sometimes
// ride a kept-alive connection for two or three periods (Zeek logs one
// connection for them) and sometimes open two or three connections at once.
// Robust with defaults flags the beacon, with empty process and account.
func TestRobustZeekHTTPBeaconAmongScanning(t *testing.T) {
	z := newZeekLog(42)
	start := time.Date(2011, 8, 10, 9, 0, 0, 0, time.UTC)
	days := 72 * time.Hour
	const host, c2, other = "147.32.84.165", "195.88.191.59", "147.32.84.191"
	// The HTTP beacon.
	var at time.Time
	for at = start.Add(17 * time.Second); at.Before(start.Add(days)); {
		switch x := z.rng.Float64(); {
		case x < 0.03: // missed callback
		case x < 0.15: // kept-alive: the next 1–2 callbacks ride this connection
			z.conn(at, host, c2, 80, "tcp", "http", "SF")
			for range 1 + z.rng.IntN(2) {
				at = at.Add(time.Duration(60 * (0.8 + 0.4*z.rng.Float64()) * float64(time.Second)))
			}
		case x < 0.25: // two or three connections per callback
			for k := range 2 + z.rng.IntN(2) {
				z.conn(at.Add(time.Duration(k*(100+z.rng.IntN(700)))*time.Millisecond), host, c2, 80, "tcp", "http", "SF")
			}
		default:
			z.conn(at, host, c2, 80, "tcp", "http", "SF")
		}
		at = at.Add(time.Duration(60 * (0.8 + 0.4*z.rng.Float64()) * float64(time.Second)))
	}
	// Internet scanning: bursts of SYNs to random addresses and a few ports.
	ports := []int{22, 23, 80, 445, 1433, 3389, 8080}
	for at = start.Add(3 * time.Minute); at.Before(start.Add(days)); at = at.Add(time.Duration(z.rng.ExpFloat64() * float64(25*time.Minute))) {
		port := ports[z.rng.IntN(len(ports))]
		for k := range 200 + z.rng.IntN(400) {
			ip := fmt.Sprintf("%d.%d.%d.%d", 1+z.rng.IntN(223), z.rng.IntN(256), z.rng.IntN(256), 1+z.rng.IntN(254))
			when := at.Add(time.Duration(k) * time.Duration(5+z.rng.IntN(40)) * time.Millisecond)
			state := "S0"
			if z.rng.IntN(10) == 0 {
				state = "REJ"
			}
			z.conn(when, host, ip, port, "tcp", "", state)
			if z.rng.IntN(4) == 0 { // a second probe of the same address
				z.conn(when.Add(time.Duration(1+z.rng.IntN(5))*time.Second), host, ip, port, "tcp", "", state)
			}
		}
	}
	z.browsing(host, start, days)
	z.browsing(other, start, days) // a neighbour that only browses
	evs := convertZeek(t, z.b.String(), nil)
	if z.n < 50000 {
		t.Fatalf("fixture has %d connections; want a capture with heavy scanning", z.n)
	}
	rows := robustFlagged(t, evs)
	var found bool
	for _, r := range rows {
		if r.RemoteIP == c2 && r.RemotePort == 80 && r.DeviceId == host {
			found = true
			if r.FileName != "" || r.AccountName != "" || r.DeviceName != host {
				t.Errorf("tuple columns %+v: want the host's address as device and empty process and account", r.Tuple)
			}
			if r.PeriodSeconds < 54 || r.PeriodSeconds > 66 {
				t.Errorf("period %v s, want about 60", r.PeriodSeconds)
			}
			t.Logf("beacon: score %.3f %s, %d callbacks, reasons %q", r.Score, r.Severity, r.Callbacks, r.Reasons)
		} else if r.RemoteIP != "8.8.8.8" {
			t.Errorf("flagged a tuple that is neither the beacon nor DNS: %v score %.3f %q", r.Tuple, r.Score, r.Reasons)
		}
	}
	if !found {
		t.Fatalf("the HTTP beacon to %s:80 is not flagged among %d connections; rows %v", c2, z.n, rows)
	}
}

// TestRobustZeekDeadC2RAT: a RAT calls its C2 every ~10 s, but the server
// is down: every connection is unanswered (S0) or rejected (REJ), and after
// a rejection the RAT retries once or twice within a second or two. Flagged
// with defaults, with the process and account empty (a plain conversion)
// and with a process name whose case varies between rows.
func TestRobustZeekDeadC2RAT(t *testing.T) {
	for _, tc := range []struct {
		name string
		file func(i int) string
	}{
		{"no process", func(int) string { return "" }},
		{"process name in odd case", func(i int) string {
			return []string{"SvcHost.EXE", "svchost.exe", "SVCHOST.exe"}[i%3]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			z := newZeekLog(7)
			start := time.Date(2019, 3, 4, 13, 20, 0, 0, time.UTC)
			const host, c2 = "192.168.1.121", "46.246.84.18"
			for at := start; at.Before(start.Add(6 * time.Hour)); {
				if z.rng.IntN(3) == 0 {
					z.conn(at, host, c2, 1604, "tcp", "", "S0")
				} else {
					z.conn(at, host, c2, 1604, "tcp", "", "REJ")
					for k := range z.rng.IntN(3) {
						z.conn(at.Add(time.Duration(k+1)*time.Duration(300+z.rng.IntN(700))*time.Millisecond), host, c2, 1604, "tcp", "", "REJ")
					}
				}
				at = at.Add(time.Duration(10*(0.9+0.2*z.rng.Float64())*float64(time.Second)) + 500*time.Millisecond)
			}
			z.browsing(host, start, 6*time.Hour)
			evs := convertZeek(t, z.b.String(), nil)
			for i := range evs {
				if evs[i].RemoteIP == c2 {
					evs[i].FileName = tc.file(i)
				}
			}
			rows := robustFlagged(t, evs)
			var found bool
			for _, r := range rows {
				if r.RemoteIP == c2 && r.DeviceId == host {
					found = true
					if r.PeriodSeconds < 9 || r.PeriodSeconds > 12 {
						t.Errorf("period %v s, want about 10.5", r.PeriodSeconds)
					}
					t.Logf("RAT: %v score %.3f %s, %d callbacks, reasons %q", r.Tuple, r.Score, r.Severity, r.Callbacks, r.Reasons)
				} else if r.RemoteIP != "8.8.8.8" {
					t.Errorf("flagged a tuple that is not the RAT: %v score %.3f %q", r.Tuple, r.Score, r.Reasons)
				}
			}
			if !found {
				t.Fatalf("the dead-C2 RAT to %s:1604 is not flagged; rows %v", c2, rows)
			}
			if n := countTuples(rows, c2); n != 1 {
				t.Errorf("the RAT forms %d tuples, want one (names compared case-insensitively)", n)
			}
		})
	}
}

func countTuples(rows []Row, ip string) int {
	n := 0
	for _, r := range rows {
		if r.RemoteIP == ip {
			n++
		}
	}
	return n
}
