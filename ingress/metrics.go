package ingress

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of the ingress.
type Metrics struct {
	Received        prometheus.Counter
	Rejected        *prometheus.CounterVec
	URLValidations  prometheus.Counter
	Published       prometheus.Counter
	Duplicates      prometheus.Counter
	PublishFailures prometheus.Counter
	PublishSeconds  prometheus.Histogram
	RequestSeconds  prometheus.Histogram
}

// latencyBuckets span 100 µs to 5 s.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// NewMetrics registers the ingress metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Received: f.NewCounter(prometheus.CounterOpts{
			Name: "geomux_ingress_received_total", Help: "Webhook requests received.",
		}),
		Rejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_ingress_rejected_total", Help: "Webhook requests refused, by reason.",
		}, []string{"reason"}),
		URLValidations: f.NewCounter(prometheus.CounterOpts{
			Name: "geomux_ingress_url_validations_total", Help: "Endpoint URL validation challenges answered.",
		}),
		Published: f.NewCounter(prometheus.CounterOpts{
			Name: "geomux_ingress_published_total", Help: "Events persisted to JetStream.",
		}),
		Duplicates: f.NewCounter(prometheus.CounterOpts{
			Name: "geomux_ingress_duplicates_total", Help: "Re-deliveries of events already persisted (answered 200, not stored again).",
		}),
		PublishFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "geomux_ingress_publish_failures_total", Help: "Events that could not be persisted (answered 503).",
		}),
		PublishSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name: "geomux_ingress_publish_seconds", Help: "Time to persist an event (publish until JetStream's ack).", Buckets: latencyBuckets,
		}),
		RequestSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name: "geomux_ingress_request_seconds", Help: "Time to answer a webhook request.", Buckets: latencyBuckets,
		}),
	}
}
