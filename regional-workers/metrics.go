package workers

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/geomux/geomux/pkg/natsx"
)

// Metrics of the regional workers, labelled by region.
type Metrics struct {
	Handled         *prometheus.CounterVec
	Replied         *prometheus.CounterVec
	Failed          *prometheus.CounterVec
	HandleSeconds   *prometheus.HistogramVec
	EndToEndSeconds *prometheus.HistogramVec
	// InHand is the events a region's worker holds (running or waiting).
	InHand *prometheus.GaugeVec
	// BackendInFlight is the backend calls running.
	BackendInFlight *prometheus.GaugeVec
	// BackendSlowDowns counts the backend's requests to slow down.
	BackendSlowDowns *prometheus.CounterVec
	// ZoomLimited counts Zoom's 429s, by type: qps or daily.
	ZoomLimited *prometheus.CounterVec

	reg prometheus.Registerer
}

var buckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// NewMetrics registers the worker metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		reg: reg,
		Handled: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_worker_handled_total", Help: "Event attempts by outcome: ok, retry (transient failure, retried later) or dead (dead-lettered).",
		}, []string{"region", "outcome"}),
		Replied: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_worker_replied_total", Help: "Chat messages sent through Zoom, by region and app.",
		}, []string{"region", "app"}),
		Failed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_worker_failed_total", Help: "Events given up and dead-lettered, by reason (permanent, max_attempts).",
		}, []string{"region", "reason"}),
		HandleSeconds: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "geomux_worker_handle_seconds", Help: "Time of one attempt at an event (handler and replies).", Buckets: buckets,
		}, []string{"region"}),
		EndToEndSeconds: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "geomux_worker_end_to_end_seconds", Help: "Time from ingress receiving an event to its replies being sent.", Buckets: buckets,
		}, []string{"region"}),
		InHand: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "geomux_worker_events_in_hand", Help: "Events a region's worker holds: running, or waiting their account's or conversation's turn.",
		}, []string{"region"}),
		BackendInFlight: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "geomux_worker_backend_in_flight", Help: "Calls to a region's backend running.",
		}, []string{"region"}),
		BackendSlowDowns: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_worker_backend_slow_downs_total", Help: "Backend answers (429 or 503 with Retry-After) that paused a region's calls.",
		}, []string{"region"}),
		ZoomLimited: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_worker_zoom_rate_limited_total", Help: "Zoom sends answered 429, by type: qps (per-second limit, retried at a slower pace) or daily (the account held until the reset).",
		}, []string{"region", "type"}),
	}
}

// init exports a region's series from the start, at zero.
func (m *Metrics) init(region string, apps []string) {
	for _, o := range []string{"ok", "retry", "dead"} {
		m.Handled.WithLabelValues(region, o)
	}
	for _, a := range apps {
		m.Replied.WithLabelValues(region, a)
	}
	for _, r := range []string{"permanent", "max_attempts"} {
		m.Failed.WithLabelValues(region, r)
	}
	for _, t := range []string{"qps", "daily"} {
		m.ZoomLimited.WithLabelValues(region, t)
	}
	m.InHand.WithLabelValues(region)
	m.BackendInFlight.WithLabelValues(region)
	m.BackendSlowDowns.WithLabelValues(region)
}

// watchRegion exports, read at each scrape, the region's backlog
// (natsx.BacklogCollector: the events of its stream the partitions'
// consumers have yet to finish) and how many dead letters it holds. The
// returned func stops exporting them.
func (m *Metrics) watchRegion(region string, backlog func(context.Context) (natsx.Backlog, error), deadLetters func(context.Context) (uint64, error)) func() {
	labels := prometheus.Labels{"region": region}
	cs := []prometheus.Collector{
		natsx.NewBacklogCollector(natsx.BacklogNames{Messages: "geomux_region_pending_events", Oldest: "geomux_region_oldest_pending_seconds"},
			"the region's workers", labels, backlog),
		natsx.NewCountCollector("geomux_dead_letters", "Events in the region's dead-letter queue (geomux dlq list).", labels, deadLetters),
	}
	var registered []prometheus.Collector
	for _, c := range cs {
		// Another worker of the region in this process exports them
		// already.
		if m.reg.Register(c) == nil {
			registered = append(registered, c)
		}
	}
	return func() {
		for _, c := range registered {
			m.reg.Unregister(c)
		}
	}
}
