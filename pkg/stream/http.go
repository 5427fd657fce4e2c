package stream

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/beaconhunt/beacon/pkg/beacon"
)

// Handler serves the service's HTTP endpoints:
//
//	/metrics   Prometheus: the service's metrics and franz-go's (kprom)
//	/healthz   200 while the service runs, with the owned partitions as JSON; 503 otherwise
//	/beacons   the current beacon set, the columns of `beacon hunt`:
//	           JSON lines by default (with the explanation alerts carry), ?format=csv or ?format=table
//	/          the page: the current beacons for people (page.go); /beacon/ID one of them
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("/healthz", s.healthz)
	mux.HandleFunc("/beacons", s.serveBeacons)
	mux.HandleFunc("/", s.servePage)
	mux.HandleFunc("/beacon/", s.serveTuple)
	return mux
}

func (s *Service) healthz(w http.ResponseWriter, r *http.Request) {
	type health struct {
		Status     string            `json:"status"`
		Role       Role              `json:"role"`
		Partitions []partitionStatus `json:"partitions,omitempty"`
	}
	h := health{Status: "ok", Role: s.cfg.role}
	code := http.StatusOK
	if !s.running.Load() || s.crashed.Load() {
		h.Status, code = "stopped", http.StatusServiceUnavailable
	}
	if d := s.det.Load(); d != nil {
		h.Partitions = d.status()
		slices.SortFunc(h.Partitions, func(a, b partitionStatus) int { return int(a.Partition - b.Partition) })
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(h)
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
