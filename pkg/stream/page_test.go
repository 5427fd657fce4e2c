package stream

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "rewrite docs/img/page.png from the browser test")

// chromium finds the browser: $BEACON_CHROMIUM, else Debian's chromium
// (.ci/run installs it) or another Chrome on PATH. No browser is a
// failure, not a skip: the page is only tested in a real one.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BEACON_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	for _, p := range []string{"/usr/bin/chromium", "/usr/lib/chromium/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("no chromium found: the page test needs a real browser. Install Debian's chromium (apt-get install -y chromium; .ci/run does) or set BEACON_CHROMIUM to a Chrome binary")
	return ""
}

// explainedRow is what the test reads from /beacons.
type explainedRow struct {
	DeviceName string
	FileName   string `json:"InitiatingProcessFileName"`
	RemoteIP   string
	RemotePort int
	Title      string
	Severity   string
	Score      float64
	Reasons    []string
	TupleId    string
}

func (r explainedRow) key() string {
	return r.DeviceName + "|" + r.FileName + "|" + r.RemoteIP + ":" + strconv.Itoa(r.RemotePort)
}

// pageRowJS is a row as the browser shows it.
type pageRowJS struct {
	Tuple, Device, Process, Remote string
	Hidden                         bool
	Score                          float64
	Bars, Ticks                    int
}

const readRowsJS = `Array.prototype.map.call(document.querySelectorAll('#beacons tbody tr'), function(r){
  return {Tuple:r.dataset.tuple, Device:r.dataset.device, Process:r.dataset.process, Remote:r.dataset.remote, Hidden:r.hidden,
    Score:parseFloat(r.querySelector('[data-key=score]').dataset.v),
    Bars:r.querySelectorAll('svg.hist rect').length, Ticks:r.querySelectorAll('svg.timeline rect.cb').length}})`

// TestPageInBrowser: a detector over a simulated fleet serves / to a real
// headless Chromium, which shows exactly the beacons /beacons returns,
// each with a gap histogram and a callback timeline; sorting, filtering,
// refreshing and the per-tuple page work.
func TestPageInBrowser(t *testing.T) {
	browser := chromium(t)
	_, addr := newCluster(t, 2)
	rs, _ := records(t, testFleet(1))
	produceJSON(t, addr, rs)
	s := service(t, addr, t.TempDir(), testLogger(t), Params(testParams()), Warmup(-1))
	start(t, s)
	waitDrained(t, addr, 90*time.Second)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)

	// What /beacons says.
	resp, err := http.Get(srv.URL + "/beacons")
	if err != nil {
		t.Fatal(err)
	}
	var want []explainedRow
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var r explainedRow
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		want = append(want, r)
	}
	resp.Body.Close()
	if len(want) < 3 {
		t.Fatalf("/beacons has %d rows: too few to test the page", len(want))
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-proxy-server", true), chromedp.WindowSize(1400, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancelC := chromedp.NewContext(actx)
	defer cancelC()
	// Start the browser without a deadline (its life is bound to this
	// context), then give every step a generous but bounded one.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting %s: %v", browser, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start within 60 s", browser)
	}
	step := func(string) (context.Context, func()) {
		return context.WithTimeout(ctx, 30*time.Second)
	}
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := step(what)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("browser (%s, %s): %v", browser, what, err)
		}
	}
	readRows := func(what string) []pageRowJS {
		t.Helper()
		sctx, cancel := step(what)
		defer cancel()
		rows, err := chromedp.Run(sctx, chromedp.Evaluate[[]pageRowJS](readRowsJS))
		if err != nil {
			t.Fatalf("browser (%s, %s): %v", browser, what, err)
		}
		return rows
	}
	eval := func(what, expr string) float64 {
		t.Helper()
		sctx, cancel := step(what)
		defer cancel()
		v, err := chromedp.Run(sctx, chromedp.Evaluate[float64](expr))
		if err != nil {
			t.Fatalf("browser (%s, %s): %v", browser, what, err)
		}
		return v
	}
	text := func(what, sel string) string {
		t.Helper()
		sctx, cancel := step(what)
		defer cancel()
		v, err := chromedp.Run(sctx, chromedp.Text(chromedp.ID(sel)))
		if err != nil {
			t.Fatalf("browser (%s, %s): %v", browser, what, err)
		}
		return v
	}

	// The page shows the beacons /beacons returns, no more, no fewer.
	do("load /", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("beacons")))
	rows := readRows("read rows")
	keys := func(rs []pageRowJS, visibleOnly bool) []string {
		var out []string
		for _, r := range rs {
			if !visibleOnly || !r.Hidden {
				out = append(out, r.Device+"|"+r.Process+"|"+r.Remote)
			}
		}
		sort.Strings(out)
		return out
	}
	var wantKeys []string
	for _, r := range want {
		wantKeys = append(wantKeys, r.key())
	}
	sort.Strings(wantKeys)
	if got := keys(rows, true); !slices.Equal(got, wantKeys) {
		t.Fatalf("the page shows\n%s\n/beacons has\n%s", strings.Join(got, "\n"), strings.Join(wantKeys, "\n"))
	}
	for _, r := range rows {
		if r.Bars == 0 || r.Ticks < 2 {
			t.Errorf("%s: %d histogram bars, %d timeline ticks", r.Device, r.Bars, r.Ticks)
		}
	}

	// Sorting: by score, highest first on the first click.
	do("sort", chromedp.Click(chromedp.JSPath(`document.querySelector('#beacons th[data-key="score"]')`)))
	rows = readRows("read sorted rows")
	if !slices.IsSortedFunc(rows, func(a, b pageRowJS) int { return -cmpFloat(a.Score, b.Score) }) {
		t.Errorf("not sorted by score, descending: %v", rows)
	}

	// Filtering by an IP shows only the rows that mention it; a refresh
	// keeps the filter.
	ip := want[0].RemoteIP
	var wantIP []string
	for _, r := range want {
		if strings.Contains(strings.ToLower(r.Title+" "+r.DeviceName+" "+r.FileName+" "+r.RemoteIP), strings.ToLower(ip)) {
			wantIP = append(wantIP, r.key())
		}
	}
	sort.Strings(wantIP)
	do("filter", chromedp.SendKeys(chromedp.ID("q"), ip))
	rows = readRows("read filtered rows")
	if got := keys(rows, true); !slices.Equal(got, wantIP) {
		t.Errorf("filtered on %s: shows %v, want %v", ip, got, wantIP)
	}
	before := text("updated before", "updated")
	eval("refresh", `window.beaconRefresh(), 1`)
	do("wait", chromedp.Sleep(1500*time.Millisecond))
	rows = readRows("read refreshed rows")
	if got := keys(rows, true); !slices.Equal(got, wantIP) || len(keys(rows, false)) != len(want) {
		t.Errorf("after a refresh: shows %v of %d, want %v of %d", got, len(keys(rows, false)), wantIP, len(want))
	}
	t.Logf("%d beacons, %d shown filtered on %s; refreshed: updated %s → %s", len(want), len(wantIP), ip, before, text("updated after", "updated"))

	// The per-tuple page: its title, score and reasons, charts.
	w := want[0]
	do("tuple page", chromedp.Navigate(srv.URL+"/beacon/"+w.TupleId), chromedp.WaitVisible(chromedp.ID("title")))
	title := text("title", "title")
	reasons := int(eval("reasons", `document.querySelectorAll('#reasons li').length`))
	charts := int(eval("charts", `document.querySelectorAll('svg.hist rect, svg.timeline rect.cb').length`))
	if title != w.Title || reasons != len(w.Reasons) || reasons == 0 || charts < 3 {
		t.Errorf("tuple page: title %q (want %q), %d reasons (want %d), %d chart elements", title, w.Title, reasons, len(w.Reasons), charts)
	}
	// A member of the set was alerted (no warm-up): the page lists it.
	var alerted []string
	for _, a := range alertsOf(t, addr) {
		if TupleID(&a.Row.Tuple) == w.TupleId {
			alerted = append(alerted, a.ID)
		}
	}
	shown := int(eval("alerts", `document.querySelectorAll('#alerts tbody tr').length`))
	if len(alerted) == 0 || shown != len(alerted) {
		t.Errorf("tuple page lists %d alerts, the alert topic has %d for the tuple", shown, len(alerted))
	}

	if *updateScreenshot {
		do("screenshot page", chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("beacons")))
		sctx, cancel := step("screenshot")
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // quality 100: PNG
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("..", "..", "docs", "img", "page.png")
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestPageHandlers: the page without a browser: status codes, no external
// reference, the tuple page's 404, /beacons' explanation members.
func TestPageHandlers(t *testing.T) {
	_, addr := newCluster(t, 1)
	rs, _ := records(t, testFleet(2))
	produceJSON(t, addr, rs)
	s := service(t, addr, t.TempDir(), testLogger(t), Params(testParams()), Warmup(-1))
	start(t, s)
	waitDrained(t, addr, 90*time.Second)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		b, _ := io.ReadAll(rec.Body)
		return rec.Code, string(b)
	}
	code, page := get("/")
	if code != 200 || !strings.Contains(page, `<table id="beacons">`) || !strings.Contains(page, "<svg") {
		t.Fatalf("/: %d %.300s", code, page)
	}
	for _, ext := range []string{`src="http`, `href="http`, `@import`, `url(http`} {
		if strings.Contains(page, ext) {
			t.Errorf("/ references something external: %s", ext)
		}
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope: %d", code)
	}
	if code, _ := get("/beacon/0123"); code != 404 {
		t.Errorf("/beacon/0123: %d", code)
	}
	_, body := get("/beacons")
	line := strings.SplitN(body, "\n", 2)[0]
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"Title", "Severity", "Score", "PeriodSeconds", "Callbacks", "Reasons", "TupleId", "TimeDeltaInSeconds_avg"} {
		if _, ok := m[k]; !ok {
			t.Errorf("/beacons lacks %s: %s", k, line)
		}
	}
	if code, tp := get("/beacon/" + m["TupleId"].(string)); code != 200 || !strings.Contains(tp, `id="reasons"`) {
		t.Errorf("tuple page: %d %.300s", code, tp)
	}
}
