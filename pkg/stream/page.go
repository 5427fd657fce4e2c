package stream

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// The page (/ and /beacon/ID): the current beacon set as /beacons returns
// it, for people. Everything is in the response — inline CSS, inline SVG,
// a few lines of inline script to sort, filter and refresh — so it works
// offline and behind any proxy. The script only reads the page's own URL.
//
//	/             every beacon: severity, score, title, period, jitter, callbacks,
//	              a histogram of its gaps and a timeline of its callbacks;
//	              sortable (click a heading), filterable (text, severity), refreshed every 5 s
//	/beacon/ID    one tuple (ID: TupleID): its explanation, columns, larger
//	              charts, and the alerts this process published for it

// TupleID names a tuple in URLs: the first 16 bytes of SHA-256 of its
// record key (Alert.Key), in hex. It is stable across processes.
func TupleID(t *beacon.Tuple) string {
	h := sha256.Sum256(appendTupleKey(nil, t))
	return hex.EncodeToString(h[:16])
}

// recentAlerts keeps the last alerts this process published, for the
// page: bounded, newest last.
type recentAlerts struct {
	mu     sync.Mutex
	alerts []Alert
}

const recentMax = 1000

func (r *recentAlerts) add(as []Alert) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.alerts = append(r.alerts, as...)
	if n := len(r.alerts); n > recentMax {
		r.alerts = append(r.alerts[:0], r.alerts[n-recentMax:]...)
	}
}

func (r *recentAlerts) of(id string) []Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Alert
	for i := len(r.alerts) - 1; i >= 0; i-- {
		if TupleID(&r.alerts[i].Row.Tuple) == id {
			out = append(out, r.alerts[i])
		}
	}
	return out
}

// writeExplainedJSONL writes /beacons' JSON lines: each row as hunt
// writes it (the query's columns, in its order), then the explanation
// alerts carry: Title, Severity, Score, PeriodSeconds, Callbacks, Reasons,
// and TupleId (the page's /beacon/ID).
func writeExplainedJSONL(w io.Writer, rows []beacon.Row) error {
	bw := bufio.NewWriter(w)
	var b []byte
	for i := range rows {
		b = appendExplainedJSON(b[:0], &rows[i])
		b = append(b, '\n')
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func appendExplainedJSON(b []byte, r *beacon.Row) []byte {
	b = r.AppendJSON(b)
	b = b[:len(b)-1] // the closing brace
	reasons := r.Reasons
	if reasons == nil {
		reasons = []string{}
	}
	ex, _ := json.Marshal(struct {
		Title         string
		Severity      string
		Score         float64
		PeriodSeconds float64
		Callbacks     int64
		Reasons       []string
		TupleId       string
	}{r.Title(), r.Severity, finite(r.Score), finite(r.PeriodSeconds), r.Callbacks, reasons, TupleID(&r.Tuple)})
	b = append(b, ',')
	return append(b, ex[1:]...)
}

// pageRow is a beacon as the page shows it.
type pageRow struct {
	ID, Title, Severity, Device, Account, Process, Remote string
	Domains                                               string
	Score, Period, Jitter                                 float64
	Callbacks, Devices                                    int64
	First, Last                                           string
	FirstV, LastV                                         int64
	Hist, Timeline                                        template.HTML
	Search                                                string
	SevRank                                               int
}

var sevRank = map[string]int{"low": 1, "medium": 2, "high": 3, "critical": 4}

func newPageRow(r *beacon.Row, w, h int) pageRow {
	acct := r.Account()
	var doms []string
	for _, d := range r.Domains {
		if d != "" {
			doms = append(doms, d)
		}
	}
	last := r.MinTimestamp
	for _, d := range r.TimeDeltaList {
		last += beacon.Time(d) * beacon.Second
	}
	remote := r.RemoteIP + ":" + strconv.Itoa(int(r.RemotePort))
	p := pageRow{
		ID: TupleID(&r.Tuple), Title: r.Title(), Severity: r.Severity, Device: r.DeviceName, Account: acct,
		Process: r.FileName, Remote: remote, Domains: strings.Join(doms, ", "),
		Score: finite(r.Score), Period: finite(r.PeriodSeconds), Jitter: finite(r.Jitter),
		Callbacks: r.Callbacks, Devices: r.DeviceCount,
		First: r.MinTimestamp.Go().UTC().Format("Jan 02 15:04:05"), Last: last.Go().UTC().Format("Jan 02 15:04:05"),
		FirstV: int64(r.MinTimestamp), LastV: int64(last),
		Hist: gapHistogram(r.TimeDeltaList, w, h), Timeline: callbackTimeline(r, w, h),
		SevRank: sevRank[r.Severity],
	}
	p.Search = strings.ToLower(strings.Join([]string{p.Title, p.Device, acct, p.Process, remote, p.Domains, p.Severity, r.DeviceId}, " "))
	return p
}

// gapHistogram draws the distribution of a tuple's gaps between callbacks:
// 24 bins from the smallest gap to the largest (widened to at least 24 s
// around them, so a steady timer is one narrow spike), bar height by count
// (square root, so a few outliers still show). Charts taller than 60 px
// label the axis.
func gapHistogram(deltas []int64, w, h int) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="hist" width="%d" height="%d" viewBox="0 0 %d %d" role="img"><title>gaps between callbacks</title>`, w, h, w, h)
	if len(deltas) == 0 {
		b.WriteString(`</svg>`)
		return template.HTML(b.String())
	}
	const n = 24
	lo, hi := slices.Min(deltas), slices.Max(deltas)
	if span := hi - lo + 1; span < n {
		lo = max(0, lo-(n-span)/2)
		hi = lo + n - 1
	}
	labels := h > 60
	if labels {
		h -= 14 // room for the axis labels
	}
	counts := make([]int, n)
	for _, d := range deltas {
		i := 0
		if hi > lo {
			i = int(float64(d-lo) / float64(hi-lo+1) * float64(n))
		}
		counts[min(i, n-1)]++
	}
	top := slices.Max(counts)
	bw := float64(w) / float64(n)
	for i, c := range counts {
		if c == 0 {
			continue
		}
		bh := math.Max(1, math.Sqrt(float64(c)/float64(top))*float64(h-2))
		from := lo + int64(float64(i)*float64(hi-lo+1)/float64(n))
		to := lo + int64(float64(i+1)*float64(hi-lo+1)/float64(n)) - 1
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %d gap(s)</title></rect>`,
			float64(i)*bw, float64(h)-bh, math.Max(1, bw-1), bh, html.EscapeString(gapRange(from, max(from, to))), c)
	}
	if labels {
		fmt.Fprintf(&b, `<text x="0" y="%d" class="axis">%d s</text><text x="%d" y="%d" text-anchor="end" class="axis">%d s</text>`,
			h+12, lo, w, h+12, hi)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func gapRange(from, to int64) string {
	if from == to {
		return strconv.FormatInt(from, 10) + " s"
	}
	return strconv.FormatInt(from, 10) + "–" + strconv.FormatInt(to, 10) + " s"
}

// callbackTimeline draws the callbacks on a time axis from the first to
// the last: one tick per pixel column that holds at least one callback, so
// that a day of one-minute callbacks stays a few hundred elements.
func callbackTimeline(r *beacon.Row, w, h int) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="timeline" width="%d" height="%d" viewBox="0 0 %d %d" role="img"><title>callbacks over time</title><line x1="0" y1="%d" x2="%d" y2="%d"/>`,
		w, h, w, h, h-1, w, h-1)
	times := make([]int64, 0, len(r.TimeDeltaList)+1)
	t := int64(0)
	times = append(times, 0)
	for _, d := range r.TimeDeltaList {
		t += d
		times = append(times, t)
	}
	span := max(t, 1)
	seen := make(map[int]bool)
	for _, x := range times {
		col := int(float64(x) / float64(span) * float64(w-1))
		if seen[col] {
			continue
		}
		seen[col] = true
		fmt.Fprintf(&b, `<rect class="cb" x="%d" y="2" width="1" height="%d"/>`, col, h-4)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

type pageData struct {
	Title      string
	Updated    string
	Partitions []partitionStatus
	Rows       []pageRow
	Error      string
}

type tuplePage struct {
	pageData
	Row     pageRow
	Reasons []string
	Columns [][2]string
	Alerts  []pageAlert
}

type pageAlert struct {
	ID, DetectedAt, StreamTime, Link string
}

func (s *Service) pageBase(title string) pageData {
	pd := pageData{Title: title, Updated: time.Now().UTC().Format("15:04:05 UTC")}
	if d := s.det.Load(); d != nil {
		pd.Partitions = d.status()
		slices.SortFunc(pd.Partitions, func(a, b partitionStatus) int { return int(a.Partition - b.Partition) })
	}
	return pd
}

// servePage serves / : the current beacon set.
func (s *Service) servePage(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if s.cfg.role == RoleIngest {
		http.Error(w, "this process does not run detection", http.StatusNotFound)
		return
	}
	pd := s.pageBase("beacons")
	rows, err := s.Beacons()
	if err != nil {
		pd.Error = err.Error()
	}
	pd.Rows = make([]pageRow, len(rows))
	for i := range rows {
		pd.Rows[i] = newPageRow(&rows[i], 160, 28)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := pageTemplate.ExecuteTemplate(w, "index", pd); err != nil {
		s.log.Debug("page write failed")
	}
}

// serveTuple serves /beacon/ID: one tuple, while it is in the set.
func (s *Service) serveTuple(w http.ResponseWriter, r *http.Request) {
	if s.cfg.role == RoleIngest {
		http.Error(w, "this process does not run detection", http.StatusNotFound)
		return
	}
	id := strings.TrimPrefix(r.URL.Path, "/beacon/")
	rows, err := s.Beacons()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var row *beacon.Row
	for i := range rows {
		if TupleID(&rows[i].Tuple) == id {
			row = &rows[i]
			break
		}
	}
	tp := tuplePage{pageData: s.pageBase("beacon " + id)}
	for _, a := range s.recent.of(id) {
		tp.Alerts = append(tp.Alerts, pageAlert{ID: a.ID, DetectedAt: a.DetectedAtText(), StreamTime: a.StreamTime.String(), Link: a.Link})
	}
	code := http.StatusOK
	if row == nil {
		code = http.StatusNotFound
		tp.Error = "this tuple is not in the beacon set now (it may have left the window)"
	} else {
		tp.Row = newPageRow(row, 720, 120)
		tp.Title = tp.Row.Title
		tp.Reasons = row.Reasons
		cells := row.AppendCSV(nil)
		for i, c := range beacon.OutputColumns {
			tp.Columns = append(tp.Columns, [2]string{c, cells[i]})
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := pageTemplate.ExecuteTemplate(w, "tuple", tp); err != nil {
		s.log.Debug("page write failed")
	}
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"f1":  func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
	"f3":  func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) },
	"per": func(v float64) string { return beacon.FormatPeriod(v) },
	"n":   func(v int64) string { return beacon.FormatCount(v) },
}).Parse(pageHTML))

const pageHTML = `{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · beacon</title>
<style>
:root{--bg:#fff;--fg:#1b1f24;--mute:#667;--line:#dde;--bar:#3b6ea8;--low:#6a8;--medium:#d9a400;--high:#e06c00;--critical:#c8102e}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:var(--fg);background:var(--bg)}
header{display:flex;gap:1em;align-items:baseline;flex-wrap:wrap;padding:.8em 1.2em;border-bottom:1px solid var(--line)}
header h1{font-size:1.2em;margin:0} header a{color:inherit}
.mute{color:var(--mute)} main{padding:0 1.2em 2em}
.controls{display:flex;gap:.8em;align-items:center;margin:1em 0}
input[type=search]{width:22em;padding:.3em .5em} select{padding:.25em}
table{border-collapse:collapse;width:100%} th,td{padding:.35em .5em;border-bottom:1px solid var(--line);text-align:left;vertical-align:middle;white-space:nowrap}
th{cursor:pointer;user-select:none;position:sticky;top:0;background:var(--bg)} th[aria-sort=ascending]::after{content:" ▲"} th[aria-sort=descending]::after{content:" ▼"}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.title{white-space:normal;min-width:22em}
.sev{display:inline-block;padding:0 .5em;border-radius:.8em;color:#fff;font-size:.85em}
.sev.low{background:var(--low)}.sev.medium{background:var(--medium)}.sev.high{background:var(--high)}.sev.critical{background:var(--critical)}
svg.hist rect{fill:var(--bar)} svg text.axis{font-size:11px;fill:var(--mute)} svg.timeline line{stroke:var(--line)} svg.timeline rect.cb{fill:var(--fg)}
.err{color:var(--critical)} dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em} dt{color:var(--mute)}
.cols td{white-space:normal;word-break:break-all;font-family:ui-monospace,monospace;font-size:.9em}
</style></head><body>
<header><h1><a href="/">beacon</a></h1><span class="mute">{{len .Partitions}} partition(s){{range .Partitions}} · p{{.Partition}} {{.StreamTime}}{{end}}</span>
<span class="mute">updated <span id="updated">{{.Updated}}</span> · refreshes every 5 s</span></header>
{{end}}

{{define "script"}}<script>
(function(){
  var sortKey=null, sortDir=1;
  function rows(){var tb=document.querySelector('#beacons tbody');return tb?Array.prototype.slice.call(tb.rows):[]}
  function applySort(){
    if(sortKey===null)return;
    var tb=document.querySelector('#beacons tbody'); if(!tb)return;
    var th=document.querySelector('#beacons th[data-key="'+sortKey+'"]'); var num=th&&th.classList.contains('num');
    var rs=rows(); rs.sort(function(a,b){
      var x=a.querySelector('[data-key="'+sortKey+'"]').dataset.v, y=b.querySelector('[data-key="'+sortKey+'"]').dataset.v;
      if(num){x=parseFloat(x);y=parseFloat(y)}
      return (x<y?-1:x>y?1:0)*sortDir});
    rs.forEach(function(r){tb.appendChild(r)});
    document.querySelectorAll('#beacons th').forEach(function(h){h.removeAttribute('aria-sort')});
    if(th)th.setAttribute('aria-sort',sortDir>0?'ascending':'descending');
  }
  function applyFilter(){
    var q=document.getElementById('q'), s=document.getElementById('sev'); if(!q)return;
    var words=q.value.toLowerCase().split(/\s+/).filter(Boolean), min=parseInt(s.value,10)||0, shown=0;
    rows().forEach(function(r){
      var ok=parseInt(r.dataset.sev,10)>=min && words.every(function(w){return r.dataset.search.indexOf(w)>=0});
      r.hidden=!ok; if(ok)shown++});
    var c=document.getElementById('shown'); if(c)c.textContent=shown;
  }
  document.addEventListener('click',function(e){
    var th=e.target.closest('#beacons th'); if(!th)return;
    var k=th.dataset.key; sortDir=(k===sortKey)?-sortDir:(th.classList.contains('num')?-1:1); sortKey=k; applySort();
  });
  document.addEventListener('input',function(e){if(e.target.id==='q'||e.target.id==='sev')applyFilter()});
  function refresh(){
    fetch(location.pathname+location.search,{cache:'no-store'}).then(function(r){return r.text()}).then(function(t){
      var d=new DOMParser().parseFromString(t,'text/html');
      ['live','updated'].forEach(function(id){var n=d.getElementById(id),o=document.getElementById(id); if(n&&o)o.replaceWith(n)});
      applySort(); applyFilter();
    }).catch(function(){});
  }
  window.beaconRefresh=refresh;
  setInterval(refresh,5000);
  applyFilter();
})();
</script></body></html>{{end}}

{{define "index"}}{{template "head" .}}<main>
<div class="controls"><input type="search" id="q" placeholder="filter: device, process, IP, domain…" autofocus>
<label>severity ≥ <select id="sev"><option value="0">any</option><option value="2">medium</option><option value="3">high</option><option value="4">critical</option></select></label>
<span class="mute"><span id="shown">{{len .Rows}}</span> shown</span></div>
<div id="live">{{if .Error}}<p class="err">{{.Error}}</p>{{end}}
<p class="mute" id="count" data-count="{{len .Rows}}">{{len .Rows}} beacon(s) in the set</p>
<table id="beacons"><thead><tr>
<th data-key="sev" class="num">severity</th><th data-key="score" class="num">score</th><th data-key="title">beacon</th>
<th data-key="period" class="num">period</th><th data-key="jitter" class="num">jitter %</th><th data-key="callbacks" class="num">callbacks</th>
<th data-key="devices" class="num">devices</th><th data-key="first" class="num">first</th><th data-key="last" class="num">last</th>
<th data-key="gaps">gaps</th><th data-key="timeline">callbacks over time</th></tr></thead><tbody>
{{range .Rows}}<tr data-tuple="{{.ID}}" data-device="{{.Device}}" data-process="{{.Process}}" data-remote="{{.Remote}}" data-sev="{{.SevRank}}" data-search="{{.Search}}">
<td data-key="sev" data-v="{{.SevRank}}" class="num"><span class="sev {{.Severity}}">{{.Severity}}</span></td>
<td data-key="score" data-v="{{.Score}}" class="num">{{f3 .Score}}</td>
<td data-key="title" data-v="{{.Title}}" class="title"><a href="/beacon/{{.ID}}">{{.Title}}</a>{{if .Domains}}<br><span class="mute">{{.Domains}}</span>{{end}}<br><span class="mute">{{.Account}}</span></td>
<td data-key="period" data-v="{{.Period}}" class="num">{{per .Period}}</td>
<td data-key="jitter" data-v="{{.Jitter}}" class="num">{{f1 .Jitter}}</td>
<td data-key="callbacks" data-v="{{.Callbacks}}" class="num">{{n .Callbacks}}</td>
<td data-key="devices" data-v="{{.Devices}}" class="num">{{.Devices}}</td>
<td data-key="first" data-v="{{.FirstV}}" class="num">{{.First}}</td>
<td data-key="last" data-v="{{.LastV}}" class="num">{{.Last}}</td>
<td data-key="gaps" data-v="{{.Period}}">{{.Hist}}</td>
<td data-key="timeline" data-v="{{.FirstV}}">{{.Timeline}}</td></tr>
{{end}}</tbody></table></div></main>{{template "script" .}}{{end}}

{{define "tuple"}}{{template "head" .}}<main><div id="live">
<p><a href="/">← all beacons</a></p>
{{if .Error}}<p class="err">{{.Error}}</p>{{else}}
<h2 id="title">{{.Row.Title}}</h2>
<p><span class="sev {{.Row.Severity}}">{{.Row.Severity}}</span> score <b id="score">{{f3 .Row.Score}}</b></p>
<h3>Why</h3><ul id="reasons">{{range .Reasons}}<li>{{.}}</li>{{end}}</ul>
<dl><dt>device</dt><dd>{{.Row.Device}}</dd><dt>account</dt><dd>{{.Row.Account}}</dd><dt>process</dt><dd>{{.Row.Process}}</dd>
<dt>remote</dt><dd>{{.Row.Remote}}{{if .Row.Domains}} ({{.Row.Domains}}){{end}}</dd><dt>period</dt><dd>{{per .Row.Period}}, jitter {{f1 .Row.Jitter}} %</dd>
<dt>callbacks</dt><dd>{{n .Row.Callbacks}}, {{.Row.First}} → {{.Row.Last}} UTC</dd><dt>devices calling it</dt><dd>{{.Row.Devices}}</dd></dl>
<h3>Gaps between callbacks</h3>{{.Row.Hist}}
<h3>Callbacks over time</h3>{{.Row.Timeline}}
{{end}}
<h3>Alerts published by this process</h3>
{{if .Alerts}}<table id="alerts"><thead><tr><th>detected</th><th>stream time</th><th>alert id</th><th>link</th></tr></thead><tbody>
{{range .Alerts}}<tr><td>{{.DetectedAt}}</td><td>{{.StreamTime}}</td><td><code>{{.ID}}</code></td><td>{{if .Link}}<a href="{{.Link}}">open</a>{{end}}</td></tr>{{end}}
</tbody></table>{{else}}<p class="mute" id="alerts-none">none yet (alerts are kept in memory, the last 1000)</p>{{end}}
{{if .Columns}}<h3>The query's columns</h3><table class="cols"><tbody>{{range .Columns}}<tr><th>{{index . 0}}</th><td>{{index . 1}}</td></tr>{{end}}</tbody></table>{{end}}
</div></main>{{template "script" .}}{{end}}
`
