package beacon

import (
	"strings"
	"testing"
)

func TestAllowList(t *testing.T) {
	a, err := ReadAllowList(strings.NewReader(`
# known-good
process TeamViewer_Service.exe
ip 13.107.0.0/16
ip 2603:1000::/24
ip 8.8.8.8
port 5938
domain .dropbox.com
device WKS-0042.contoso.local   # the build server
`), "allow.txt")
	if err != nil {
		t.Fatal(err)
	}
	if a.Len() != 7 {
		t.Fatalf("%d entries, want 7", a.Len())
	}
	row := func(file, ip string, port int32, dev string, domains ...string) Row {
		return Row{Tuple: Tuple{DeviceId: "id", DeviceName: dev, FileName: file, RemoteIP: ip, RemotePort: port}, Domains: domains}
	}
	for _, c := range []struct {
		r    Row
		want bool
	}{
		{row("teamviewer_service.exe", "1.1.1.1", 443, "x"), true},
		{row("a.exe", "13.107.4.50", 443, "x"), true},
		{row("a.exe", "2603:1030::1", 443, "x"), true},
		{row("a.exe", "::ffff:8.8.8.8", 443, "x"), true},
		{row("a.exe", "1.1.1.1", 5938, "x"), true},
		{row("a.exe", "1.1.1.1", 443, "x", "", "bolt.dropbox.com"), true},
		{row("a.exe", "1.1.1.1", 443, "x", "dropbox.com"), true},
		{row("a.exe", "1.1.1.1", 443, "x", "notdropbox.com"), false},
		{row("a.exe", "1.1.1.1", 443, "wks-0042.contoso.local"), true},
		{row("a.exe", "13.108.0.1", 443, "x"), false},
	} {
		if got := a.Allowed(&c.r); got != c.want {
			t.Errorf("Allowed(%s %s:%d %s %v) = %v, want %v", c.r.FileName, c.r.RemoteIP, c.r.RemotePort, c.r.DeviceName, c.r.Domains, got, c.want)
		}
	}
	rows := []Row{row("teamviewer_service.exe", "1.1.1.1", 1, "x"), row("a.exe", "1.1.1.1", 1, "x"), row("b.exe", "8.8.8.8", 1, "x")}
	kept, n := a.Filter(rows)
	if n != 2 || len(kept) != 1 || kept[0].FileName != "a.exe" {
		t.Errorf("Filter: kept %v, suppressed %d", kept, n)
	}
	for _, bad := range []string{"process", "ip nope", "port 70000", "color red", "process a b"} {
		if _, err := ReadAllowList(strings.NewReader("# x\n"+bad+"\n"), "f"); err == nil || !strings.Contains(err.Error(), "f:2:") {
			t.Errorf("%q: error %v, want one naming f:2", bad, err)
		}
	}
}
