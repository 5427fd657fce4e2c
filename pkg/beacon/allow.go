package beacon

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// AllowList suppresses known-good beacons after scoring: periodic software
// is real, and analysts dismiss it once. The file format (docs/robust.md):
// one entry per line, `KIND VALUE`, `#` starts a comment:
//
//	process  teamviewer_service.exe   InitiatingProcessFileName, case-insensitive
//	ip       203.0.113.7              RemoteIP, or a CIDR: 13.107.0.0/16, 2603:1000::/24
//	port     5938                     RemotePort
//	domain   dropbox.com              a Domains entry equal to it or ending in .dropbox.com
//	device   wks-0042.contoso.local   DeviceName (case-insensitive) or DeviceId
//
// A row is suppressed when any entry matches it.
type AllowList struct {
	processes map[string]bool
	prefixes  []netip.Prefix
	ports     map[int32]bool
	domains   []string
	devices   map[string]bool
	n         int
}

// ReadAllowList parses an allow list; errors name the line.
func ReadAllowList(r io.Reader, name string) (*AllowList, error) {
	a := &AllowList{processes: map[string]bool{}, ports: map[int32]bool{}, devices: map[string]bool{}}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("%s:%d: want KIND VALUE, got %q", name, line, strings.TrimSpace(text))
		}
		kind, v := strings.ToLower(f[0]), f[1]
		switch kind {
		case "process":
			a.processes[strings.ToLower(v)] = true
		case "ip":
			p, err := netip.ParsePrefix(v)
			if err != nil {
				addr, err2 := netip.ParseAddr(v)
				if err2 != nil {
					return nil, fmt.Errorf("%s:%d: ip %q is neither an address nor a CIDR", name, line, v)
				}
				p = netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen())
			}
			a.prefixes = append(a.prefixes, p.Masked())
		case "port":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: port %q: want 0..65535", name, line, v)
			}
			a.ports[int32(n)] = true
		case "domain":
			a.domains = append(a.domains, strings.ToLower(strings.TrimPrefix(v, ".")))
		case "device":
			a.devices[strings.ToLower(v)] = true
		default:
			return nil, fmt.Errorf("%s:%d: unknown kind %q (want process, ip, port, domain or device)", name, line, f[0])
		}
		a.n++
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return a, nil
}

// Len is the number of entries.
func (a *AllowList) Len() int { return a.n }

// Allowed reports whether an entry matches the row.
func (a *AllowList) Allowed(r *Row) bool {
	if a.processes[strings.ToLower(r.FileName)] || a.ports[r.RemotePort] ||
		a.devices[strings.ToLower(r.DeviceName)] || a.devices[strings.ToLower(r.DeviceId)] {
		return true
	}
	if len(a.prefixes) > 0 {
		if ip, err := netip.ParseAddr(r.RemoteIP); err == nil {
			ip = ip.Unmap()
			for _, p := range a.prefixes {
				if p.Contains(ip) {
					return true
				}
			}
		}
	}
	for _, d := range r.Domains {
		d = strings.ToLower(d)
		for _, s := range a.domains {
			if d == s || strings.HasSuffix(d, "."+s) {
				return true
			}
		}
	}
	return false
}

// Filter removes allowed rows in place, keeping order, and returns the
// rows kept and how many were suppressed.
func (a *AllowList) Filter(rows []Row) ([]Row, int) {
	kept := rows[:0]
	for i := range rows {
		if !a.Allowed(&rows[i]) {
			kept = append(kept, rows[i])
		}
	}
	return kept, len(rows) - len(kept)
}
