package fleet

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// world is what the actors share: devices and the Internet they talk to.
type world struct {
	devices []*device
	addrs   *addrs
	sites   []site // pages people browse
	cdns    []site // what pages load
	v6sites []int  // sites with an IPv6 address
	apps    []app
	ms      []msHost // Microsoft hosts Windows talks to irregularly
	dcs     []string // domain controllers and file servers
}

type app struct {
	file string
	site site
}

type msHost struct {
	file, account, domain string // "" account: the device's user
	site                  site
}

func newWorld(devRng, netRng *rand.Rand, n int) *world {
	w := &world{
		devices: newDevices(devRng, n),
		addrs:   &addrs{rng: netRng, used: map[string]bool{}},
	}
	nSites := min(300+10*n, 20000)
	w.sites = newSites(netRng, w.addrs, nSites)
	for i, s := range w.sites {
		if s.v6 != "" {
			w.v6sites = append(w.v6sites, i)
		}
	}
	w.cdns = newSites(netRng, w.addrs, min(60+n/2, 2000))
	for _, a := range []struct{ file, host, prefix string }{
		{"OUTLOOK.EXE", "outlook.office365.com", "40.99."},
		{"slack.exe", "wss-primary.slack.com", "54.230."},
		{"Spotify.exe", "spclient.wg.spotify.com", "35.186."},
		{"Zoom.exe", "us04web.zoom.us", "170.114."},
	} {
		s := site{host: a.host}
		for i := 0; i < 4; i++ {
			s.ips = append(s.ips, w.addrs.v4(a.prefix))
		}
		w.apps = append(w.apps, app{a.file, s})
	}
	for _, m := range []struct{ file, account, domain, host, prefix string }{
		{"svchost.exe", networkService, ntAuthority, "settings-win.data.microsoft.com", "20.44."},
		{"svchost.exe", systemAccount, ntAuthority, "v10.events.data.microsoft.com", "20.189."},
		{"svchost.exe", localService, ntAuthority, "ctldl.windowsupdate.com", "93.184."},
		{"svchost.exe", networkService, ntAuthority, "ocsp.digicert.com", "72.21."},
		{"SearchApp.exe", "", orgDomain, "www.bing.com", "204.79."},
		{"backgroundTaskHost.exe", "", orgDomain, "arc.msn.com", "20.50."},
		{"CompatTelRunner.exe", systemAccount, ntAuthority, "watson.telemetry.microsoft.com", "20.42."},
		{"msedgewebview2.exe", "", orgDomain, "login.microsoftonline.com", "40.126."},
	} {
		s := site{host: m.host}
		for i := 0; i < 3; i++ {
			s.ips = append(s.ips, w.addrs.v4(m.prefix))
		}
		w.ms = append(w.ms, msHost{m.file, m.account, m.domain, s})
	}
	w.dcs = []string{"10.0.0.10", "10.0.0.11", "10.0.1.20", "10.0.1.21", "10.0.2.5"}
	return w
}

// baseRecord is a ConnectionSuccess from d to a public address.
func baseRecord(d *device, rng *rand.Rand, t beacon.Time) Record {
	return Record{
		Event: beacon.Event{
			Timestamp:    t,
			DeviceId:     d.id,
			DeviceName:   d.name,
			ActionType:   "ConnectionSuccess",
			RemoteIPType: "Public",
			HasPort:      true,
		},
		LocalIP:   d.localIP,
		LocalPort: ephemeralPort(rng),
		Protocol:  "Tcp",
	}
}

func ephemeralPort(rng *rand.Rand) int32 { return 49152 + rng.Int32N(16384) }

func (d *device) localIP6() string {
	return fmt.Sprintf("2a02:8071:cafe:%x::%x", d.index/4096, d.index%4096+1)
}

// ticks converts a duration to Kusto ticks.
func ticks(d time.Duration) beacon.Time { return beacon.Time(d / 100) }

// expTicks draws an exponential gap of the given mean, at least one tick.
func expTicks(rng *rand.Rand, mean beacon.Time) beacon.Time {
	return 1 + beacon.Time(rng.ExpFloat64()*float64(mean))
}

// timer is anything that calls home on a timer: an implant, an updater, a
// fleet service. Its gaps are uniform in [lo, hi].
type timer struct {
	rng      *rand.Rand
	dev      *device
	rec      Record // template: the tuple and its constant columns
	url      string
	urlRate  float64
	failRate float64
	lo, hi   beacon.Time
	label    int
	work     bool // pauses outside working hours
	// Implant traits (traits.go); zero for every other timer.
	burst              int     // up to this many extra connections per callback
	dupRate, dropRate  float64 // near-duplicates and extra sensor drops
	aggregated         bool    // one row per hour, an aggregated report
	hasHour            bool
	lastHour           beacon.Time
	switchAt, lo2, hi2 beacon.Time // from switchAt, gaps are in [lo2, hi2]
}

func (tm *timer) fire(g *Generator, t beacon.Time) beacon.Time {
	g.labels[tm.label].Callbacks++
	r := tm.rec
	r.Timestamp = t
	r.LocalPort = ephemeralPort(tm.rng)
	if tm.url != "" && tm.rng.Float64() < tm.urlRate {
		r.RemoteUrl = tm.url
	}
	if tm.rng.Float64() < tm.failRate {
		r.ActionType = "ConnectionFailed"
	}
	switch {
	case tm.dropRate > 0 && tm.rng.Float64() < tm.dropRate:
		g.stats.Dropped++
	case tm.traitFire(g, &r):
		g.emit(&r, tm.label)
		tm.traitExtra(g, &r)
	}
	lo, hi := tm.lo, tm.hi
	if tm.switchAt > 0 && t >= tm.switchAt {
		lo, hi = tm.lo2, tm.hi2
	}
	next := t + lo + beacon.Time(tm.rng.Int64N(int64(hi-lo)+1))
	if tm.work {
		next = tm.dev.nextActive(next)
	}
	return next
}

// gapBounds returns the gap range of a framework's sleep/jitter rule.
func gapBounds(framework string, sleep beacon.Time, jitter float64) (lo, hi beacon.Time) {
	switch framework {
	case Sliver:
		return sleep, sleep + beacon.Time(jitter*float64(beacon.Second))
	case CobaltStrike:
		return sleep - beacon.Time(jitter*float64(sleep)), sleep
	default: // Empire, Mythic and benign timers
		j := beacon.Time(jitter * float64(sleep))
		return sleep - j, sleep + j
	}
}

// addTimer registers a labelled timer whose first callback is at first.
func (g *Generator) addTimer(tm *timer, l Label, first beacon.Time) {
	if first < g.start || first >= g.end {
		return
	}
	l.Tuple = tm.rec.Event.Tuple()
	l.FirstEvent = first
	l.GapMin = time.Duration(tm.lo) * 100
	l.GapMax = time.Duration(tm.hi) * 100
	l.WorkHoursOnly = tm.work
	if l.RemoteUrl == "" {
		l.RemoteUrl = tm.url
	}
	tm.label = len(g.labels)
	g.labels = append(g.labels, l)
	g.schedule(tm, first)
}

func shuffled[T any](rng *rand.Rand, s []T) []T {
	s = append([]T(nil), s...)
	rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}

func pick[T any](rng *rand.Rand, s ...T) T { return s[rng.IntN(len(s))] }

func (g *Generator) plantImplants(w *world, rng *rand.Rand) {
	fws := shuffled(rng, g.cfg.Frameworks)
	sleeps := shuffled(rng, g.cfg.Sleeps)
	for i := 0; i < g.cfg.Implants; i++ {
		fw := fws[i%len(fws)]
		sleep := ticks(sleeps[i%len(sleeps)])
		var jitter float64
		switch fw {
		case CobaltStrike:
			jitter = pick(rng, 0, 0.1, 0.2, 0.3, 0.5)
		case Sliver:
			jitter = pick[float64](rng, 0, 5, 10, 30)
		case Empire:
			jitter = pick(rng, 0, 0.1, 0.2, 0.5)
		default:
			jitter = pick(rng, 0.1, 0.2, 0.3, 0.5)
		}
		lo, hi := gapBounds(fw, sleep, jitter)
		d := w.devices[rng.IntN(len(w.devices))]
		file := implantName(rng)
		account, domain := d.user, orgDomain
		if rng.IntN(3) == 0 {
			account, domain = systemAccount, ntAuthority
		}
		tm := &timer{rng: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())), dev: d, lo: lo, hi: hi, failRate: 0.005, urlRate: 0.7}
		tm.rec = baseRecord(d, rng, 0)
		tm.rec.RemoteIP = w.addrs.v4("")
		tm.rec.RemotePort = pick[int32](rng, 443, 443, 443, 80, 8443, 8080)
		tm.rec.AccountName, tm.rec.AccountDomain, tm.rec.FileName = account, domain, file
		tm.rec.ProcessId = d.pid(rng, file)
		if rng.IntN(2) == 0 {
			tm.url = c2Host(rng)
		}
		first := g.start + beacon.Time(rng.Int64N(int64(g.end-g.start)*3/10+1))
		trait := ""
		if len(g.cfg.Traits) > 0 {
			trait = g.cfg.Traits[i%len(g.cfg.Traits)]
			sleep = g.applyTrait(w, rng, tm, trait, fw, sleep, jitter)
			if tm.switchAt < 0 {
				tm.switchAt = first + (g.end-first)/2
			}
			if tm.work {
				first = d.nextActive(first)
			}
		}
		g.addTimer(tm, Label{Class: ClassImplant, Name: fw, Framework: fw, Trait: trait, Sleep: time.Duration(sleep) * 100, Jitter: jitter}, first)
		if trait == TraitCDN {
			g.plantCDNPollers(w, rng, tm)
		}
	}
}

// product is a benign program that polls its vendor on a timer.
type product struct {
	name, file, host string
	system           bool
	port             int32
	sleep            time.Duration
	jitter           float64
}

var updaterCatalog = []product{
	{"teamviewer", "TeamViewer_Service.exe", "router12.teamviewer.com", true, 5938, 2 * time.Minute, 0.02},
	{"google-update", "GoogleUpdate.exe", "update.googleapis.com", true, 443, time.Hour, 0.05},
	{"adobe-arm", "AdobeARM.exe", "armmf.adobe.com", false, 443, 30 * time.Minute, 0.1},
	{"java-update", "jusched.exe", "javadl-esd-secure.oracle.com", false, 443, time.Hour, 0},
	{"dropbox", "Dropbox.exe", "bolt.dropbox.com", false, 443, 90 * time.Second, 0.1},
	{"anyconnect", "vpnagent.exe", "vpn.contoso.com", true, 443, 5 * time.Minute, 0.05},
	{"splashtop", "SRService.exe", "relay.splashtop.com", true, 443, 5 * time.Minute, 0.1},
	{"logmein", "LogMeIn.exe", "control.logmein.com", true, 443, 2 * time.Minute, 0.05},
	{"zoom-updater", "ZoomUpdater.exe", "zoom.us", false, 443, 10 * time.Minute, 0.1},
	{"crashplan", "CrashPlanService.exe", "central.crashplan.com", true, 4287, 15 * time.Minute, 0.02},
}

func (g *Generator) installUpdaters(w *world, rng *rand.Rand) {
	for _, p := range shuffled(rng, updaterCatalog)[:g.cfg.Updaters] {
		ip := w.addrs.v4("")
		sleep := ticks(p.sleep)
		lo, hi := gapBounds("", sleep, p.jitter)
		n := min(1+rng.IntN(5), len(w.devices))
		for _, di := range rng.Perm(len(w.devices))[:n] {
			d := w.devices[di]
			tm := &timer{rng: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())), dev: d, lo: lo, hi: hi, failRate: 0.002, url: p.host, urlRate: 0.5}
			tm.rec = baseRecord(d, rng, 0)
			tm.rec.RemoteIP, tm.rec.RemotePort, tm.rec.FileName = ip, p.port, p.file
			tm.rec.AccountName, tm.rec.AccountDomain = d.user, orgDomain
			if p.system {
				tm.rec.AccountName, tm.rec.AccountDomain = systemAccount, ntAuthority
			}
			tm.rec.ProcessId = d.pid(rng, p.file)
			first := g.start + beacon.Time(rng.Int64N(int64(sleep)+1))
			g.addTimer(tm, Label{Class: ClassUpdater, Name: p.name, Sleep: p.sleep, Jitter: p.jitter}, first)
		}
	}
}

// service is something every managed device polls.
type service struct {
	name, file, host, prefix string
	system                   bool
	sleep                    time.Duration
	jitter                   float64
	workHours                bool
	servers                  bool
}

var fleetServices = []service{
	{"windows-update", "svchost.exe", "fe3cr.delivery.mp.microsoft.com", "13.107.4.", true, 45 * time.Minute, 0.1, false, true},
	{"defender-cloud", "MsMpEng.exe", "wdcp.microsoft.com", "20.42.", true, 15 * time.Minute, 0.05, false, true},
	{"teams", "Teams.exe", "teams.microsoft.com", "52.112.", false, 5 * time.Minute, 0.2, true, false},
	{"onedrive", "OneDrive.exe", "g.live.com", "13.107.42.", false, 10 * time.Minute, 0.3, false, false},
}

func (g *Generator) startFleetServices(w *world, rng *rand.Rand) {
	for _, s := range fleetServices {
		// Few enough addresses that each serves well over 10 devices.
		pool := make([]string, max(1, len(w.devices)/40))
		for i := range pool {
			pool[i] = w.addrs.v4(s.prefix)
		}
		sleep := ticks(s.sleep)
		lo, hi := gapBounds("", sleep, s.jitter)
		for _, d := range w.devices {
			if d.server && !s.servers || rng.IntN(100) >= 95 {
				continue
			}
			tm := &timer{rng: rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())), dev: d, lo: lo, hi: hi, failRate: 0.003, url: s.host, urlRate: 0.6, work: s.workHours}
			tm.rec = baseRecord(d, rng, 0)
			tm.rec.RemoteIP, tm.rec.RemotePort, tm.rec.FileName = pool[rng.IntN(len(pool))], 443, s.file
			tm.rec.AccountName, tm.rec.AccountDomain = d.user, orgDomain
			if s.system {
				tm.rec.AccountName, tm.rec.AccountDomain = systemAccount, ntAuthority
			}
			tm.rec.ProcessId = d.pid(rng, s.file)
			first := g.start + beacon.Time(rng.Int64N(int64(sleep)+1))
			if s.workHours {
				first = d.nextActive(first)
			}
			g.addTimer(tm, Label{Class: ClassFleetService, Name: s.name, Sleep: s.sleep, Jitter: s.jitter}, first)
		}
	}
}

// browsing is a person at a workstation: bursts of page views during
// working hours, each loading resources from CDNs, and chat and mail apps.
type browsing struct {
	rng        *rand.Rand
	dev        *device
	w          *world
	sites      *rand.Zipf
	cdns       *rand.Zipf
	browserPID int64
}

func newBrowsing(rng *rand.Rand, d *device, w *world) *browsing {
	return &browsing{
		rng:        rng,
		dev:        d,
		w:          w,
		sites:      rand.NewZipf(rng, 1.15, 3, uint64(len(w.sites)-1)),
		cdns:       rand.NewZipf(rng, 1.3, 1, uint64(len(w.cdns)-1)),
		browserPID: d.pid(rng, d.browser),
	}
}

func (b *browsing) fire(g *Generator, t beacon.Time) beacon.Time {
	rng := b.rng
	if rng.IntN(8) == 0 {
		a := &b.w.apps[rng.IntN(len(b.w.apps))]
		for n := 1 + rng.IntN(3); n > 0; n-- {
			b.conn(g, t+beacon.Time(rng.Int64N(int64(2*beacon.Second))), &a.site, a.file, b.dev.pid(rng, a.file))
		}
	} else {
		s := &b.w.sites[b.sites.Uint64()]
		b.conn(g, t, s, b.dev.browser, b.browserPID)
		for n := rng.IntN(7); n > 0; n-- {
			r := s
			if rng.IntN(3) != 0 {
				r = &b.w.cdns[b.cdns.Uint64()]
			}
			b.conn(g, t+1+beacon.Time(rng.Int64N(int64(3*beacon.Second))), r, b.dev.browser, b.browserPID)
		}
	}
	next := t + expTicks(rng, 45*beacon.Second)
	if rng.IntN(20) == 0 { // a meeting, lunch, a long read
		next += expTicks(rng, 20*60*beacon.Second)
	}
	return b.dev.nextActive(next)
}

var urlPaths = []string{"/", "/index.html", "/news", "/api/v1/items", "/search?q=report", "/login", "/img/logo.png"}

func (b *browsing) conn(g *Generator, t beacon.Time, s *site, file string, pid int64) {
	rng := b.rng
	r := baseRecord(b.dev, rng, t)
	r.FileName, r.ProcessId = file, pid
	r.AccountName, r.AccountDomain = b.dev.user, orgDomain
	r.RemoteIP = s.ips[rng.IntN(len(s.ips))]
	if s.v6 != "" && rng.IntN(3) == 0 {
		r.RemoteIP, r.LocalIP = s.v6, b.dev.localIP6()
	}
	r.RemotePort = 443
	if rng.IntN(12) == 0 {
		r.RemotePort = 80
	}
	if rng.IntN(10) < 7 {
		r.RemoteUrl = s.host
		if r.RemotePort == 80 && rng.IntN(3) == 0 {
			r.RemoteUrl = "http://" + s.host + urlPaths[rng.IntN(len(urlPaths))]
		}
	}
	if rng.IntN(60) == 0 {
		r.ActionType = "ConnectionFailed"
	}
	g.emit(&r, -1)
}

// noise is everything else a device's sensor logs, around the clock:
// intranet traffic, loopback, link-local, IPv6, failures, inbound
// connections, listeners, and Windows talking to Microsoft.
type noise struct {
	rng *rand.Rand
	dev *device
	w   *world
}

func (n *noise) gap() beacon.Time {
	if n.dev.server {
		return expTicks(n.rng, 90*beacon.Second)
	}
	return expTicks(n.rng, 4*60*beacon.Second)
}

var (
	loopbackProcs  = []string{"node.exe", "java.exe", "Code.exe", "svchost.exe", "python.exe"}
	listenProcs    = []string{"svchost.exe", "spoolsv.exe", "lsass.exe", "System", "wininit.exe"}
	intranetPorts  = []int32{53, 88, 135, 389, 445, 445, 3268}
	inboundPorts   = []int32{445, 3389, 5985, 135}
	listeningPorts = []int32{135, 445, 5040, 7680, 49664, 49665, 49666}
)

func (n *noise) fire(g *Generator, t beacon.Time) beacon.Time {
	rng, d, w := n.rng, n.dev, n.w
	r := baseRecord(d, rng, t)
	r.AccountName, r.AccountDomain = systemAccount, ntAuthority
	r.FileName = "svchost.exe"
	switch k := rng.IntN(100); {
	case k < 22: // domain controllers and file servers
		r.RemoteIP, r.RemoteIPType = w.dcs[rng.IntN(len(w.dcs))], "Private"
		r.RemotePort = intranetPorts[rng.IntN(len(intranetPorts))]
		switch r.RemotePort {
		case 53:
			r.Protocol = "Udp"
		case 88, 389, 3268:
			r.FileName = "lsass.exe"
		case 445:
			r.FileName = "System"
		}
	case k < 27: // home routers, VPN, printers
		r.RemoteIPType = "Private"
		if rng.IntN(2) == 0 {
			r.RemoteIP = fmt.Sprintf("172.%d.%d.%d", 16+rng.IntN(16), rng.IntN(256), 1+rng.IntN(254))
		} else {
			r.RemoteIP = "192.168." + strconv.Itoa(rng.IntN(3)) + "." + strconv.Itoa(1+rng.IntN(254))
		}
		r.RemotePort = pick[int32](rng, 53, 80, 443, 631, 9100)
	case k < 34: // loopback
		r.RemoteIPType = "Loopback"
		r.RemoteIP = pick(rng, "127.0.0.1", "127.0.0.1", "::1")
		r.LocalIP = r.RemoteIP
		r.RemotePort = pick[int32](rng, 5432, 8080, 9229, 3000, 1025+rng.Int32N(60000))
		r.FileName = loopbackProcs[rng.IntN(len(loopbackProcs))]
		r.AccountName, r.AccountDomain = d.user, orgDomain
	case k < 38: // link-local
		r.RemoteIPType = "LinkLocal"
		if rng.IntN(2) == 0 {
			r.RemoteIP, r.RemotePort = fmt.Sprintf("169.254.%d.%d", rng.IntN(256), 1+rng.IntN(254)), 80
		} else {
			r.RemoteIP, r.RemotePort, r.Protocol = fmt.Sprintf("fe80::%x:%x", rng.IntN(0x10000), rng.IntN(0x10000)), 5355, "Udp"
			r.LocalIP = fmt.Sprintf("fe80::%x", 1+d.index)
		}
	case k < 46 && len(w.v6sites) > 0: // IPv6 on the Internet
		s := &w.sites[w.v6sites[rng.IntN(len(w.v6sites))]]
		r.RemoteIP, r.LocalIP, r.RemotePort = s.v6, d.localIP6(), 443
		if rng.IntN(2) == 0 {
			r.RemoteUrl = s.host
		}
		if !d.server {
			r.FileName = d.browser
			r.AccountName, r.AccountDomain = d.user, orgDomain
		}
	case k < 54: // failures
		r.ActionType = "ConnectionFailed"
		s := &w.sites[rng.IntN(len(w.sites))]
		r.RemoteIP = s.ips[rng.IntN(len(s.ips))]
		r.RemotePort = pick[int32](rng, 443, 443, 80, 8080, 1024+rng.Int32N(64000))
	case k < 59: // requests (UDP, or answers never seen)
		r.ActionType = "ConnectionRequest"
		m := &w.ms[rng.IntN(len(w.ms))]
		r.RemoteIP, r.RemotePort, r.Protocol = m.site.ips[rng.IntN(len(m.site.ips))], pick[int32](rng, 443, 123), "Udp"
	case k < 69: // inbound
		r.ActionType = "InboundConnectionAccepted"
		r.RemoteIPType = "Private"
		r.RemoteIP = fmt.Sprintf("10.%d.%d.%d", 16+rng.IntN(2), rng.IntN(240), 10+rng.IntN(250))
		r.RemotePort = ephemeralPort(rng)
		r.LocalPort = inboundPorts[rng.IntN(len(inboundPorts))]
		if r.LocalPort == 445 {
			r.FileName = "System"
		}
	case k < 73: // listeners: no remote end at all
		r.ActionType = "ListeningConnectionCreated"
		r.RemoteIP, r.RemoteIPType, r.RemotePort, r.HasPort = "", "", 0, false
		r.LocalIP = pick(rng, "0.0.0.0", "::", d.localIP)
		r.LocalPort = listeningPorts[rng.IntN(len(listeningPorts))]
		r.FileName = listenProcs[rng.IntN(len(listenProcs))]
	case k < 76: // multicast, broadcast
		r.Protocol = "Udp"
		switch rng.IntN(3) {
		case 0:
			r.RemoteIP, r.RemotePort, r.RemoteIPType = "224.0.0.251", 5353, "Multicast"
		case 1:
			r.RemoteIP, r.RemotePort, r.RemoteIPType = "239.255.255.250", 1900, "Multicast"
		default:
			r.RemoteIP, r.RemotePort, r.RemoteIPType = "255.255.255.255", 67, "Broadcast"
		}
	case k < 78: // IPv4-mapped IPv6
		s := &w.sites[rng.IntN(len(w.sites))]
		r.RemoteIP, r.RemoteIPType, r.RemotePort = "::ffff:"+s.ips[0], "FourToSixMapping", 443
		r.LocalIP = "::ffff:" + d.localIP
	default: // Windows and Office talking to Microsoft, irregularly
		m := &w.ms[rng.IntN(len(w.ms))]
		r.RemoteIP, r.RemotePort = m.site.ips[rng.IntN(len(m.site.ips))], 443
		r.FileName = m.file
		r.AccountName, r.AccountDomain = m.account, m.domain
		if m.account == "" {
			r.AccountName = d.user
		}
		if rng.IntN(2) == 0 {
			r.RemoteUrl = m.site.host
		}
	}
	if r.ProcessId == 0 {
		if r.FileName == "System" {
			r.ProcessId = 4
		} else {
			r.ProcessId = d.pid(rng, r.FileName)
		}
	}
	g.emit(&r, -1)
	return t + n.gap()
}
