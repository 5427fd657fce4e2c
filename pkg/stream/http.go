package stream

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Handler serves the service's HTTP endpoints:
//
//	/metrics   Prometheus: the service's metrics and franz-go's (kprom)
//	/livez     200 while the process works (Run running, no part failed, the
//	           topic watch alive), else 503; JSON with the reasons
//	/readyz    200 when it also does its job: broker reachable, input topics
//	           present, partitions owned, lag within ReadyMaxLag; else 503;
//	           JSON with the reasons and the owned partitions
//	/healthz   an alias of /readyz
//	/beacons   the current beacon set, the columns of `beacon hunt`:
//	           JSON lines by default (with the explanation alerts carry), ?format=csv or ?format=table
//	/          the page: the current beacons for people (page.go); /beacon/ID one of them
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("/livez", s.livez)
	mux.HandleFunc("/readyz", s.readyz)
	mux.HandleFunc("/healthz", s.readyz)
	mux.HandleFunc("/beacons", s.serveBeacons)
	mux.HandleFunc("/", s.servePage)
	mux.HandleFunc("/beacon/", s.serveTuple)
	return mux
}

// liveness is the answer of /livez.
type liveness struct {
	Live    bool     `json:"live"`
	Status  string   `json:"status"` // ok or failing
	Reasons []string `json:"reasons,omitempty"`
}

// live decides liveness: what a restart would cure. A broker outage or a
// missing topic is not (see ready); a stopped or failed service, or a
// topic watch that stopped checking, is.
func (s *Service) live() liveness {
	var l liveness
	if !s.running.Load() || s.crashed.Load() {
		l.Reasons = append(l.Reasons, "not running")
	}
	if p := s.fatal.Load(); p != nil {
		l.Reasons = append(l.Reasons, "failed: "+(*p).Error())
	}
	if s.running.Load() {
		s.health.mu.Lock()
		checked := s.health.checked
		s.health.mu.Unlock()
		if !checked.IsZero() && time.Since(checked) > 3*s.cfg.watchInterval+10*time.Second {
			l.Reasons = append(l.Reasons, "topic watch stalled since "+checked.UTC().Format(time.RFC3339))
		}
	}
	l.Live, l.Status = len(l.Reasons) == 0, "ok"
	if !l.Live {
		l.Status = "failing"
	}
	return l
}

func (s *Service) livez(w http.ResponseWriter, r *http.Request) {
	l := s.live()
	writeHealth(w, l.Live, l)
}

func (s *Service) readyz(w http.ResponseWriter, r *http.Request) {
	rd := s.ready()
	writeHealth(w, rd.Ready, rd)
}

func writeHealth(w http.ResponseWriter, ok bool, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if ok {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(v)
}

func (s *Service) serveBeacons(w http.ResponseWriter, r *http.Request) {
	write := writeExplainedJSONL
	ctype := "application/x-ndjson"
	switch r.URL.Query().Get("format") {
	case "", "jsonl", "json":
	case "csv":
		write, ctype = beacon.WriteCSV, "text/csv; charset=utf-8"
	case "table":
		write, ctype = beacon.WriteTable, "text/plain; charset=utf-8"
	default:
		http.Error(w, "unknown format (want jsonl, csv or table)", http.StatusBadRequest)
		return
	}
	if s.cfg.role == RoleIngest {
		http.Error(w, "this process does not run detection", http.StatusNotFound)
		return
	}
	rows, err := s.Beacons()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ctype)
	write(w, rows)
}
