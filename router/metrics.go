package router

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/proto"
)

// Metrics of the router.
type Metrics struct {
	reg    prometheus.Registerer
	Routed *prometheus.CounterVec
	Parked prometheus.Counter
	// ParkedNoAccount counts events parked because they name no account
	// and their channel's account is not known (counted in Parked too).
	ParkedNoAccount prometheus.Counter
	Unparked        *prometheus.CounterVec
	Failures        prometheus.Counter
	Malformed       prometheus.Counter
	Dropped         *prometheus.CounterVec
	Deferred        *prometheus.CounterVec
	Conflicts       *prometheus.CounterVec
	RouteSeconds    prometheus.Histogram
}

// NewMetrics registers the router metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		reg: reg,
		Routed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_router_routed_total", Help: "Events placed in their region's stream, by region and app.",
		}, []string{"region", "app"}),
		Parked: f.NewCounter(prometheus.CounterOpts{
			Name: "geomux_router_parked_total", Help: "Events parked because their account has no region, or a region its app contradicts.",
		}),
		ParkedNoAccount: f.NewCounter(prometheus.CounterOpts{
			Name: "geomux_router_parked_without_account_total", Help: "Events parked because they name no account (an external user's app mention) and their channel's account is not known yet.",
		}),
		Unparked: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_router_unparked_total", Help: "Parked events routed once their account got a region, by region.",
		}, []string{"region"}),
		Failures: f.NewCounter(prometheus.CounterOpts{
			Name: "geomux_router_publish_failures_total", Help: "Routing publishes that failed and will be retried.",
		}),
		Malformed: f.NewCounter(prometheus.CounterOpts{
			Name: "geomux_router_malformed_total", Help: "Messages on the transit subject without geomux headers (discarded).",
		}),
		Dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_router_dropped_total", Help: "Events acknowledged without routing, by reason (uninstall_without_region).",
		}, []string{"reason"}),
		Deferred: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_router_deferred_total", Help: "Events left in transit for a while because their region was unreachable or busy, by region (\"\" for parking).",
		}, []string{"region"}),
		Conflicts: f.NewCounterVec(prometheus.CounterOpts{
			Name: "geomux_router_conflicts_total", Help: "Events parked because their app is pinned to a region the directory contradicts, by app.",
		}, []string{"app"}),
		RouteSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name: "geomux_router_publish_seconds", Help: "Time from the router's publish to the region stream's ack.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
}

// watchParked exports how many events wait in the parked stream, by what
// they wait for (parkedCollector).
func (m *Metrics) watchParked(s jetstream.Stream) {
	_ = m.reg.Register(parkedCollector{s})
}

// parkedDesc is geomux_router_parked_messages{waiting_for}.
var parkedDesc = prometheus.NewDesc("geomux_router_parked_messages",
	"Events waiting in the parked stream: for their account to get a region (waiting_for=region; a pinned app's conflict too), or, naming no account, for their channel's account to be known (waiting_for=account).",
	[]string{"waiting_for"}, nil)

// parkedCollector reads the parked stream's count per subject at each
// scrape: an event parked by channel (proto.ParkedChannelSubject) waits for
// an account, the others for a region. A scrape while NATS does not answer
// exports nothing.
type parkedCollector struct{ s jetstream.Stream }

func (c parkedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- parkedDesc }

func (c parkedCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := c.s.Info(ctx, jetstream.WithSubjectFilter(proto.ParkedSubjects))
	if err != nil {
		return
	}
	var account uint64
	for subject, n := range info.State.Subjects {
		if _, ok := proto.ParkedChannelOf(subject); ok {
			account += n
		}
	}
	ch <- prometheus.MustNewConstMetric(parkedDesc, prometheus.GaugeValue, float64(info.State.Msgs-account), "region")
	ch <- prometheus.MustNewConstMetric(parkedDesc, prometheus.GaugeValue, float64(account), "account")
}

// watchBacklog exports the router's backlog (natsx.BacklogCollector): the
// events of the ingress stream it has yet to route. The returned func stops
// exporting it.
func (m *Metrics) watchBacklog(read func(context.Context) (natsx.Backlog, error)) func() {
	c := natsx.NewBacklogCollector(natsx.BacklogNames{Messages: "geomux_router_backlog_messages", Oldest: "geomux_router_backlog_oldest_seconds"}, "the router", nil, read)
	if m.reg.Register(c) != nil {
		return func() {}
	}
	return func() { m.reg.Unregister(c) }
}
