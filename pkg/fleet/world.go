package fleet

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Accounts of the processes Windows runs itself.
const (
	ntAuthority    = "nt authority"
	systemAccount  = "system"
	networkService = "network service"
	localService   = "local service"
	orgDomain      = "contoso"
	dnsSuffix      = ".contoso.local"
)

// device is one machine of the fleet.
type device struct {
	index    int
	id       string // DeviceId: 40 hex digits
	name     string // DeviceName: wks-0042.contoso.local
	user     string // the primary user's account name
	server   bool
	localIP  string
	tz       beacon.Time // offset of local time from UTC
	browser  string
	seed     uint64      // for per-day randomness without state
	workFrom beacon.Time // usual start of the working day, local time of day
	workTo   beacon.Time // usual end
	pids     map[string]int64
}

// pid returns the device's process id for a file name, stable for a run.
func (d *device) pid(rng *rand.Rand, file string) int64 {
	if p, ok := d.pids[file]; ok {
		return p
	}
	p := 4 * (100 + rng.Int64N(4000))
	d.pids[file] = p
	return p
}

const day = 86400 * beacon.Second

// window returns the device's working hours (UTC ticks) on local day
// dayIndex (days since 1970-01-01), or ok=false when nobody works that day.
func (d *device) window(dayIndex int64) (from, to beacon.Time, ok bool) {
	h := splitmix(d.seed ^ uint64(dayIndex)*0x9e3779b97f4a7c15)
	dow := (dayIndex + 4) % 7 // 1970-01-01 was a Thursday; 0 = Sunday
	if dow < 0 {
		dow += 7
	}
	base := beacon.Time(dayIndex)*day - d.tz
	if dow == 0 || dow == 6 {
		if h%100 >= 12 { // most people do not work weekends
			return 0, 0, false
		}
		from = base + 10*3600*beacon.Second + beacon.Time(h>>8%(4*3600))*beacon.Second
		return from, from + beacon.Time(1800+h>>24%7200)*beacon.Second, true
	}
	if h%100 < 4 { // a day off
		return 0, 0, false
	}
	from = base + d.workFrom + beacon.Time(int64(h>>8%3600)-1800)*beacon.Second
	to = base + d.workTo + beacon.Time(int64(h>>24%5400)-1800)*beacon.Second
	return from, to, true
}

// nextActive returns the first instant at or after t inside a working
// window of the device.
func (d *device) nextActive(t beacon.Time) beacon.Time {
	di := int64((t + d.tz) / day)
	for i := 0; i < 30; i++ {
		if from, to, ok := d.window(di); ok {
			if t < from {
				return from
			}
			if t < to {
				return t
			}
		}
		di++
	}
	return t + 30*day
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

var firstNames = []string{
	"adam", "alice", "amir", "anna", "ben", "carla", "chen", "david", "elena", "emma",
	"farid", "grace", "hana", "ivan", "jack", "julia", "kenji", "laura", "liam", "maria",
	"mark", "nina", "omar", "paul", "priya", "rosa", "sam", "sara", "tom", "yuki",
}

var lastNames = []string{
	"adams", "baker", "chen", "diaz", "evans", "fischer", "garcia", "hughes", "ito", "jones",
	"kim", "lopez", "martin", "novak", "olsen", "patel", "quinn", "rossi", "smith", "tanaka",
	"ueda", "vargas", "walker", "xu", "young", "zimmer", "brown", "clark", "müller", "nguyen",
}

// timezone offsets of the offices, in hours.
var offices = []float64{0, 1, 1, -5, -5, -8, 5.5, 9}

func newDevices(rng *rand.Rand, n int) []*device {
	devs := make([]*device, n)
	users := map[string]int{}
	for i := range devs {
		d := &device{index: i, seed: rng.Uint64(), pids: map[string]int64{}}
		var id [20]byte
		for j := range id {
			id[j] = byte(rng.Uint32())
		}
		d.id = fmt.Sprintf("%x", id[:])
		d.server = n >= 10 && rng.IntN(100) < 5
		if d.server {
			d.name = fmt.Sprintf("srv-%04d%s", i+1, dnsSuffix)
			d.user = "svc_" + []string{"backup", "sql", "web", "deploy", "print"}[rng.IntN(5)]
		} else {
			d.name = fmt.Sprintf("wks-%04d%s", i+1, dnsSuffix)
			f, l := firstNames[rng.IntN(len(firstNames))], lastNames[rng.IntN(len(lastNames))]
			u := f[:1] + l
			if k := users[u]; k > 0 {
				users[u] = k + 1
				u += strconv.Itoa(k + 1)
			} else {
				users[u] = 1
			}
			d.user = u
		}
		d.localIP = fmt.Sprintf("10.%d.%d.%d", 16+i/60000, i/250%240, 10+i%250)
		d.tz = beacon.Time(offices[rng.IntN(len(offices))] * 3600 * float64(beacon.Second))
		switch r := rng.IntN(100); {
		case r < 55:
			d.browser = "chrome.exe"
		case r < 90:
			d.browser = "msedge.exe"
		default:
			d.browser = "firefox.exe"
		}
		d.workFrom = beacon.Time(7*3600+rng.Int64N(2*3600)) * beacon.Second
		d.workTo = beacon.Time(16*3600+rng.Int64N(3*3600)) * beacon.Second
		devs[i] = d
	}
	return devs
}

// publicFirstOctets are /8s that hold only public unicast addresses.
var publicFirstOctets = []int{
	3, 5, 8, 13, 18, 20, 23, 31, 34, 35, 37, 40, 45, 46, 51, 52, 54, 62, 64, 66, 69, 78,
	80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 91, 93, 94, 95, 104, 107, 108, 129, 130, 131,
	134, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152,
	157, 158, 159, 162, 163, 164, 165, 173, 176, 178, 185, 188, 193, 194, 195, 199, 204,
	205, 206, 207, 208, 209, 212, 213, 216, 217,
}

// addrs hands out distinct public addresses.
type addrs struct {
	rng  *rand.Rand
	used map[string]bool
}

// v4 returns an unused public IPv4 address, in prefix (e.g. "52.112.") when
// it is not empty.
func (a *addrs) v4(prefix string) string {
	for {
		var s string
		if prefix != "" {
			s = prefix
			for i := strings.Count(prefix, "."); i < 3; i++ {
				s += strconv.Itoa(a.rng.IntN(256)) + "."
			}
			s += strconv.Itoa(1 + a.rng.IntN(254))
		} else {
			s = fmt.Sprintf("%d.%d.%d.%d", publicFirstOctets[a.rng.IntN(len(publicFirstOctets))],
				a.rng.IntN(256), a.rng.IntN(256), 1+a.rng.IntN(254))
		}
		if !a.used[s] {
			a.used[s] = true
			return s
		}
	}
}

// v6 returns an unused global IPv6 address under prefix (e.g. "2603:1030:").
func (a *addrs) v6(prefix string) string {
	for {
		s := prefix
		for i := strings.Count(prefix, ":"); i < 7; i++ {
			s += strconv.FormatUint(uint64(a.rng.IntN(0x10000)), 16) + ":"
		}
		s += strconv.FormatUint(uint64(1+a.rng.IntN(0xfffe)), 16)
		if !a.used[s] {
			a.used[s] = true
			return s
		}
	}
}

var syllables = []string{
	"al", "ba", "ce", "do", "en", "fi", "ga", "ho", "ix", "ju", "ka", "lo", "mi", "no", "or",
	"pa", "qu", "ri", "so", "ta", "ul", "ve", "wa", "xe", "yo", "za", "tek", "net", "sun",
	"max", "dex", "ly", "ra", "zo", "vi", "mo", "ne", "tu", "pi", "ke",
}

var tlds = []string{"com", "com", "com", "net", "org", "io", "de", "fr", "co.uk", "info", "app"}

var hostPrefixes = []string{"www", "www", "www", "api", "cdn", "static", "img", "m", "app", "login", "assets"}

// word returns a pronounceable name of n syllables.
func word(rng *rand.Rand, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(syllables[rng.IntN(len(syllables))])
	}
	return b.String()
}

// domain returns a registrable domain such as kavolo.com or rimo.co.uk.
func domain(rng *rand.Rand) string {
	return word(rng, 2+rng.IntN(2)) + "." + tlds[rng.IntN(len(tlds))]
}

// host returns a host name of 2 to 4 labels under a fresh domain.
func host(rng *rand.Rand) string {
	d := domain(rng)
	switch r := rng.IntN(10); {
	case r < 3:
		return d
	case r < 8 || strings.Count(d, ".") > 1:
		return hostPrefixes[rng.IntN(len(hostPrefixes))] + "." + d
	default:
		return hostPrefixes[rng.IntN(len(hostPrefixes))] + "." + word(rng, 1) + "." + d
	}
}

// site is a destination of browsing: a host name behind a few addresses.
type site struct {
	host string
	ips  []string
	v6   string // "" when the site has no IPv6 address
}

func newSites(rng *rand.Rand, a *addrs, n int) []site {
	sites := make([]site, n)
	seen := map[string]bool{}
	for i := range sites {
		h := host(rng)
		for seen[h] {
			h = host(rng)
		}
		seen[h] = true
		s := site{host: h}
		for j := 1 + rng.IntN(3); j > 0; j-- {
			s.ips = append(s.ips, a.v4(""))
		}
		if rng.IntN(4) == 0 {
			s.v6 = a.v6([]string{"2606:4700:", "2a00:1450:", "2600:1f18:", "2a04:4e42:"}[rng.IntN(4)])
		}
		sites[i] = s
	}
	return sites
}

// implantNames are the file names implants run as: living-off-the-land
// binaries, look-alikes and random names.
var implantNames = []string{
	"rundll32.exe", "powershell.exe", "regsvr32.exe", "dllhost.exe", "mshta.exe",
	"svch0st.exe", "explorer32.exe", "MicrosoftEdgeUpdateCore.exe", "WindowsUpdateAgent.exe",
}

func implantName(rng *rand.Rand) string {
	if rng.IntN(3) == 0 {
		const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
		b := make([]byte, 5+rng.IntN(4))
		for i := range b {
			b[i] = alnum[rng.IntN(len(alnum))]
		}
		return string(b) + ".exe"
	}
	return implantNames[rng.IntN(len(implantNames))]
}

// c2Host returns a host name a C2 operator might register.
func c2Host(rng *rand.Rand) string {
	switch rng.IntN(4) {
	case 0:
		return "cdn-" + word(rng, 2) + ".azureedge.net"
	case 1:
		return "update." + word(rng, 2) + "-cloud.com"
	case 2:
		return word(rng, 3) + ".io"
	default:
		return "api." + word(rng, 2) + "-telemetry.net"
	}
}
