package beacon

import (
	"strings"
	"testing"
)

// TestExplainSeed: the seed mapping of docs/semantics.md, worked by hand.
func TestExplainSeed(t *testing.T) {
	for _, tc := range []struct {
		name             string
		jitter           float64
		count, devices   int64
		score            float64
		severity         string
		reason0, reason2 string
	}{
		// R = 1 - 3/50 = 0.94, V = log10(1380)/3 = 1 (capped), B = 0: 0.6*0.94+0.4 = 0.964
		{"steady", 3, 1379, 1, 0.964, "critical", "jitter 3.0 %", "only this device"},
		// R = 0.5, V = log10(16)/3 = 0.4014, B = 0: 0.3+0.16056 = 0.461
		{"loose", 25, 15, 1, 0.461, "medium", "jitter 25.0 %", "only this device"},
		// R = 1, V = log10(100)/3 = 2/3, B = 0.2*4/9: 0.6+0.26667-0.08889 = 0.778
		{"shared", 0, 99, 5, 0.778, "high", "jitter 0.0 %", "5 devices"},
		// R = 0, V = log10(16)/3: 0.161
		{"noisy", 60, 15, 1, 0.161, "low", "jitter 60.0 %", "only this device"},
	} {
		deltas := make([]int64, tc.count)
		for i := range deltas {
			deltas[i] = 60
		}
		r := Row{Tuple: Tuple{FileName: "rundll32.exe", DeviceName: "wks-0042.contoso.local", RemoteIP: "159.136.251.253", RemotePort: 443},
			Stats: Stats{Count: tc.count, Avg: 60, Jitter: tc.jitter}, TimeDeltaList: deltas, DeviceCount: tc.devices}
		r.explainSeed()
		if r.Score != tc.score || r.Severity != tc.severity || r.Callbacks != tc.count+1 || r.PeriodSeconds != 60 {
			t.Errorf("%s: score %v %s, %d callbacks, period %v; want %v %s, %d, 60", tc.name, r.Score, r.Severity,
				r.Callbacks, r.PeriodSeconds, tc.score, tc.severity, tc.count+1)
		}
		if len(r.Reasons) != 3 || !strings.Contains(r.Reasons[0], tc.reason0) || !strings.Contains(r.Reasons[2], tc.reason2) {
			t.Errorf("%s: reasons %q", tc.name, r.Reasons)
		}
	}
}

// TestTitle: the example, to the character.
func TestTitle(t *testing.T) {
	deltas := make([]int64, 1379)
	for i := range deltas {
		deltas[i] = 60
	}
	r := Row{Tuple: Tuple{FileName: "rundll32.exe", DeviceName: "wks-0042.contoso.local", RemoteIP: "159.136.251.253", RemotePort: 443},
		Stats: Stats{Count: 1379, Avg: 60, Jitter: 3.2}, TimeDeltaList: deltas, DeviceCount: 1}
	r.explainSeed()
	want := "rundll32.exe on wks-0042 calls 159.136.251.253:443 every 60 s ±3 % — 1,380 callbacks in 23 h"
	if got := r.Title(); got != want {
		t.Errorf("title\n got %q\nwant %q", got, want)
	}
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1500: "-1,500"} {
		if got := FormatCount(in); got != want {
			t.Errorf("FormatCount(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[float64]string{60: "60 s", 0.5: "0.5 s", 1800: "30 min", 7200: "120 min", 4 * 3600: "4 h"} {
		if got := FormatPeriod(in); got != want {
			t.Errorf("FormatPeriod(%v) = %q, want %q", in, got, want)
		}
	}
}

// TestNewRowExplains: every row the query renders carries its explanation.
func TestNewRowExplains(t *testing.T) {
	ts := []Time{0, 60 * Second, 120 * Second, 181 * Second}
	c := &Candidate{Stats: Stats{Count: 3, Avg: 60.33, Jitter: 0.9}}
	r := NewRow(c, ts, nil, 1)
	if r.Callbacks != 4 || r.Severity == "" || r.Score <= 0 || len(r.Reasons) == 0 {
		t.Errorf("row not explained: %+v", r)
	}
}
