package platformfx

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"

	"github.com/geomux/geomux/pkg/governor"
)

// newGovernor paces the router and the workers of this process so that its
// ingress, if it has one, keeps answering Zoom in time (package governor).
// In a process without an ingress it never binds.
// Its options are governor.DefaultOptions, supplied by Module (a test may
// fx.Replace them).
func newGovernor(lc fx.Lifecycle, reg prometheus.Registerer, o governor.Options) *governor.Governor {
	g := governor.New(o)
	lc.Append(fx.StartStopHook(g.Start, g.Stop))
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "geomux_processing_limit_per_second",
			Help: "Events a second the router and the workers of this process may take while its ingress answers slowly (+Inf: unlimited).",
		}, func() float64 { return g.State().Limit }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "geomux_ingress_answer_p99_seconds",
			Help: "The ingress's answer time, 99th percentile, over the governor's last 200 ms window (0 without requests).",
		}, func() float64 { return g.State().IngressP99.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "geomux_cpu_wait_p99_seconds",
			Help: "How long this process's goroutines waited, runnable, for a CPU, 99th percentile, over the governor's last 200 ms window.",
		}, func() float64 { return g.State().SchedP99.Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "geomux_processing_throttled_windows_total",
			Help: "200 ms windows in which processing was slowed down for the ingress.",
		}, func() float64 { return float64(g.State().Throttled) }),
	)
	return g
}
