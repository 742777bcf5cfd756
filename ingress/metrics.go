package ingress

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of the ingress.
// The counters are by app (a request to an unknown app's path counts as
// rejected with app "" and reason unknown_app).
type Metrics struct {
	Received        *prometheus.CounterVec
	Rejected        *prometheus.CounterVec
	URLValidations  *prometheus.CounterVec
	Published       *prometheus.CounterVec
	Duplicates      *prometheus.CounterVec
	PublishFailures *prometheus.CounterVec
	PublishSeconds  prometheus.Histogram
	RequestSeconds  prometheus.Histogram
}

// latencyBuckets span 100 µs to 5 s.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// NewMetrics registers the ingress metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Received: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_ingress_received_total", Help: "Webhook requests received.",
		}, []string{"app"}),
		Rejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_ingress_rejected_total", Help: "Webhook requests refused, by reason.",
		}, []string{"app", "reason"}),
		URLValidations: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_ingress_url_validations_total", Help: "Endpoint URL validation challenges answered.",
		}, []string{"app"}),
		Published: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_ingress_published_total", Help: "Events persisted to JetStream.",
		}, []string{"app"}),
		Duplicates: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_ingress_duplicates_total", Help: "Re-deliveries of events already persisted (answered 200, not stored again).",
		}, []string{"app"}),
		PublishFailures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_ingress_publish_failures_total", Help: "Events that could not be persisted (answered 503).",
		}, []string{"app"}),
		PublishSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name: "geomux_ingress_publish_seconds", Help: "Time to persist an event (publish until JetStream's ack).", Buckets: latencyBuckets,
		}),
		RequestSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name: "geomux_ingress_request_seconds", Help: "Time to answer a webhook request.", Buckets: latencyBuckets,
		}),
	}
}
