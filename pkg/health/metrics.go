package health

import "github.com/prometheus/client_golang/prometheus"

// checkDesc is geomux_ready_check{check}: 1 while the check passes.
var checkDesc = prometheus.NewDesc("geomux_ready_check",
	"1 while a readiness check of this process passes, 0 while it fails (the reason is on the admin /readyz): nats, nats-<region>, jetstream, store, ...",
	[]string{"check"}, nil)

// Collector exports every check of r, run at each scrape, so that an alert
// can say which part is down (a NATS connection lost, the store full).
func (r *Registry) Collector() prometheus.Collector { return checkCollector{r} }

type checkCollector struct{ r *Registry }

func (c checkCollector) Describe(ch chan<- *prometheus.Desc) { ch <- checkDesc }

func (c checkCollector) Collect(ch chan<- prometheus.Metric) {
	c.r.mu.RLock()
	defer c.r.mu.RUnlock()
	for name, check := range c.r.checks {
		v := 1.0
		if check() != nil {
			v = 0
		}
		ch <- prometheus.MustNewConstMetric(checkDesc, prometheus.GaugeValue, v, name)
	}
}
