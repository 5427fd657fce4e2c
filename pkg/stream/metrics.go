package stream

import (
	"io/fs"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the service's own Prometheus metrics; franz-go's come from
// kprom, under the same namespace.
type metrics struct {
	eventsIn    *prometheus.CounterVec // by stage: ingest (decoded input events), detect (repartition records)
	dropped     *prometheus.CounterVec // by reason
	late        prometheus.Counter
	forwarded   *prometheus.CounterVec // repartition records written, by kind
	alerts      prometheus.Counter
	muted       prometheus.Counter
	allowed     prometheus.Counter
	evalSeconds prometheus.Histogram
	streamTime  *prometheus.GaugeVec
	beacons     *prometheus.GaugeVec
	rebuilds    prometheus.Counter
	suppressed  prometheus.Counter
}

const namespace = "beacon"

func newMetrics(reg *prometheus.Registry, stateDir string) *metrics {
	m := &metrics{
		eventsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_in_total",
			Help: "Events read: stage=ingest counts decoded input events, stage=detect repartition records.",
		}, []string{"stage"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_dropped_total",
			Help: "Events or records not used for detection, by reason: filtered (fails the query's row filters; its domain still counts), late (before the window), lost (repartition records removed by retention before the detector read them), or a dead-letter reason (oversized, json, avro, schema, format, empty, repartition).",
		}, []string{"reason"}),
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_late_total",
			Help: "Connections older than their partition's window start when they arrived, dropped.",
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "repartition_records_total",
			Help: "Records ingest wrote to the repartition topic, by kind (connection, noport, domain).",
		}, []string{"kind"}),
		alerts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "alerts_total",
			Help: "Alerts published (and acknowledged) on the alert topic.",
		}),
		muted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "alerts_muted_total",
			Help: "Alerts found while rebuilding a partition below its committed offset: the previous owner published them.",
		}),
		allowed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "beacons_allowed_total",
			Help: "Beacon-set members not alerted because the allow list (--allow) matches them.",
		}),
		evalSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "evaluation_seconds",
			Help:    "Time to evaluate the dirty destinations of a partition at one evaluation point (and publish its alerts).",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10),
		}),
		streamTime: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "stream_time_seconds",
			Help: "Stream time of each owned partition (Unix seconds): the newest filtered connection seen.",
		}, []string{"partition"}),
		beacons: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "beacons",
			Help: "Tuples in the beacon set of each owned partition, at its last evaluation point.",
		}, []string{"partition"}),
		rebuilds: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "partition_rebuilds_total",
			Help: "Partitions assigned without local state and rebuilt from the repartition topic.",
		}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "log_lines_suppressed_total",
			Help: "Repeated warnings not logged: the Kafka client's, and the service's own fetch errors, beyond a few per 30 s per message.",
		}),
	}
	reg.MustRegister(m.eventsIn, m.dropped, m.late, m.forwarded, m.alerts, m.muted, m.allowed, m.evalSeconds,
		m.streamTime, m.beacons, m.rebuilds, m.suppressed)
	if stateDir != "" {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "state_bytes",
			Help: "Size of the detector's Pebble directory on disk.",
		}, func() float64 { return float64(dirSize(stateDir)) }))
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"filtered", "late", reasonOversized, reasonEmpty, reasonJSON, reasonAvro, reasonSchema, reasonFormat, reasonRecord} {
		m.dropped.WithLabelValues(r)
	}
	for _, s := range []string{"ingest", "detect"} {
		m.eventsIn.WithLabelValues(s)
	}
	return m
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
