package router_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/router"
)

var regions = []string{"us", "uk", "eu"}

type fixture struct {
	t       *testing.T
	nats    *natstest.Server
	dir     *directory.Directory
	metrics *router.Metrics
	n       int64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ns := natstest.Start(t, "")
	dir, err := directory.Open(context.Background(), ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, nats: ns, dir: dir}
}

func (f *fixture) startRouter() *router.Router {
	f.t.Helper()
	f.metrics = router.NewMetrics(prometheus.NewRegistry())
	r := router.New(f.nats.JS, directory.NewCache(f.dir, zap.NewNop()), router.Options{
		Regions: regions,
		Streams: topology.OptionsFrom(config.Default()),
	}, f.metrics, zap.NewNop())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { stop(f.t, r) })
	return r
}

func stop(t *testing.T, r *router.Router) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
}

func (f *fixture) setRegion(account, region string) {
	f.t.Helper()
	if _, err := f.dir.Put(context.Background(), proto.AccountRecord{AccountID: account, Region: region}); err != nil {
		f.t.Fatal(err)
	}
}

// publish puts an event on the transit subject as ingress does; it returns
// the event id.
func (f *fixture) publish(account string) string {
	f.t.Helper()
	return f.publishVia("", account)
}

func (f *fixture) count(stream string) uint64 {
	f.t.Helper()
	s, err := f.nats.JS.Stream(context.Background(), stream)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return info.State.Msgs
}

// messages returns the headers of every message of a stream.
func (f *fixture) messages(stream string) []nats.Header {
	f.t.Helper()
	s, err := f.nats.JS.Stream(context.Background(), stream)
	if err != nil {
		f.t.Fatal(err)
	}
	info, _ := s.Info(context.Background())
	var out []nats.Header
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			continue
		}
		out = append(out, m.Header)
	}
	return out
}

func TestRoutesEachAccountToItsRegion(t *testing.T) {
	f := newFixture(t)
	for _, r := range regions {
		f.setRegion("acct-"+r, r)
	}
	f.startRouter()
	want := map[string]int{}
	for i := 0; i < 30; i++ {
		r := regions[i%len(regions)]
		f.publish("acct-" + r)
		want[r]++
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.IngressStream) == 0 }, "transit stream to drain")
	for _, r := range regions {
		hs := f.messages(proto.RegionEventsStream(r))
		if len(hs) != want[r] {
			t.Errorf("region %s holds %d events, want %d", r, len(hs), want[r])
		}
		for _, h := range hs {
			if h.Get(proto.HeaderAccountID) != "acct-"+r || h.Get(proto.HeaderRegion) != r {
				t.Errorf("region %s holds an event of account %s (region header %q)", r, h.Get(proto.HeaderAccountID), h.Get(proto.HeaderRegion))
			}
			if h.Get(proto.HeaderEventID) == "" || h.Get(proto.HeaderReceivedAt) == "" {
				t.Errorf("routed event lost its headers: %v", h)
			}
		}
		if got := testutil.ToFloat64(f.metrics.Routed.WithLabelValues(r, "default")); got != float64(want[r]) {
			t.Errorf("routed{%s} = %v, want %d", r, got, want[r])
		}
	}
	if n := f.count(proto.ParkedStream); n != 0 {
		t.Errorf("%d events parked, want 0", n)
	}
}

func TestParkedEventsFlowOnceRegionIsSet(t *testing.T) {
	f := newFixture(t)
	f.startRouter()
	ids := map[string]bool{f.publish("newcomer"): true, f.publish("newcomer"): true}
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.ParkedStream) == 2 }, "two events parked")
	for _, h := range f.messages(proto.ParkedStream) {
		if h.Get(proto.HeaderAccountID) != "newcomer" {
			t.Errorf("parked event of %q", h.Get(proto.HeaderAccountID))
		}
	}
	if n := f.count(proto.RegionEventsStream("eu")); n != 0 {
		t.Fatalf("an event of an account without region reached eu")
	}

	f.setRegion("newcomer", "eu")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.RegionEventsStream("eu")) == 2 }, "parked events routed to eu")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.ParkedStream) == 0 }, "parked stream emptied")
	for _, h := range f.messages(proto.RegionEventsStream("eu")) {
		if !ids[h.Get(proto.HeaderEventID)] || h.Get(proto.HeaderRegion) != "eu" {
			t.Errorf("unexpected routed event %v", h)
		}
	}
	if got := testutil.ToFloat64(f.metrics.Unparked.WithLabelValues("eu")); got != 2 {
		t.Errorf("unparked{eu} = %v, want 2", got)
	}
	// Later events of the account go straight to the region.
	f.publish("newcomer")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.RegionEventsStream("eu")) == 3 }, "third event routed directly")
	if got := testutil.ToFloat64(f.metrics.Parked); got != 2 {
		t.Errorf("parked = %v, want 2", got)
	}
}

// An account that gets its region while the router is down has its parked
// events routed when the router starts.
func TestParkedEventsRoutedAtStart(t *testing.T) {
	f := newFixture(t)
	r := f.startRouter()
	f.publish("late")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.ParkedStream) == 1 }, "event parked")
	stop(t, r)

	f.setRegion("late", "uk")
	f.startRouter()
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.RegionEventsStream("uk")) == 1 }, "parked event routed at start")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.ParkedStream) == 0 }, "parked stream emptied")
}

// A directory entry naming a region this deployment does not run parks the
// event rather than dropping it or sending it elsewhere.
func TestUnconfiguredRegionParks(t *testing.T) {
	f := newFixture(t)
	f.setRegion("far", "ap")
	f.startRouter()
	f.publish("far")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.ParkedStream) == 1 }, "event parked")
	for _, r := range regions {
		if n := f.count(proto.RegionEventsStream(r)); n != 0 {
			t.Errorf("region %s got %d events", r, n)
		}
	}
}

// An event the router already placed in its region (it crashed before
// acknowledging the input) is not stored twice when it is routed again.
func TestRerouteIsDeduplicated(t *testing.T) {
	f := newFixture(t)
	f.setRegion("twice", "us")
	f.startRouter()
	id := f.publish("twice")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.RegionEventsStream("us")) == 1 }, "routed")
	// Replay the same transit message as a redelivery would present it.
	m := nats.NewMsg(proto.RegionEventSubject("us", "twice", ""))
	m.Header.Set(jetstream.MsgIDHeader, id)
	ack, err := f.nats.JS.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Error("a second copy of the same event was stored in the region")
	}
}

func TestMessageWithoutHeadersIsDiscarded(t *testing.T) {
	f := newFixture(t)
	f.startRouter()
	if _, err := f.nats.JS.Publish(context.Background(), proto.IngressSubject, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return testutil.ToFloat64(f.metrics.Malformed) == 1 }, "malformed counted")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.IngressStream) == 0 }, "malformed message removed")
}

func TestReady(t *testing.T) {
	f := newFixture(t)
	r := router.New(f.nats.JS, directory.NewCache(f.dir, zap.NewNop()), router.Options{Regions: regions, Streams: topology.OptionsFrom(config.Default())},
		router.NewMetrics(prometheus.NewRegistry()), zap.NewNop())
	if r.Ready() == nil {
		t.Error("ready before start")
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Ready(); err != nil {
		t.Errorf("not ready after start: %v", err)
	}
	stop(t, r)
	if r.Ready() == nil {
		t.Error("ready after stop")
	}
}

// slowJS makes every routing publish take a while, as a NATS in trouble does.
type slowJS struct {
	jetstream.JetStream
	delay time.Duration
}

func (s slowJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	time.Sleep(s.delay)
	return s.JetStream.PublishMsgAsync(m, opts...)
}

// A Stop that gives up at its deadline while the router is mid-publish must
// neither crash nor lose the event: it is handed back and routed later.
func TestStopGivingUpMidPublish(t *testing.T) {
	f := newFixture(t)
	f.setRegion("acct", "eu")
	r := router.New(slowJS{f.nats.JS, time.Second}, directory.NewCache(f.dir, zap.NewNop()), router.Options{
		Regions: regions, Streams: topology.OptionsFrom(config.Default()),
	}, router.NewMetrics(prometheus.NewRegistry()), zap.NewNop())
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.publish("acct")
	// Wait until the router has taken the event (it is pending on the consumer).
	natstest.Eventually(t, 5*time.Second, func() bool {
		c, err := f.nats.JS.Consumer(context.Background(), proto.IngressStream, proto.RouterConsumer)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 1
	}, "the router to take the event")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = r.Stop(ctx) // must not panic

	f.startRouter()
	natstest.Eventually(t, 40*time.Second, func() bool { return f.count(proto.IngressStream) == 0 }, "the event to be routed after all")
	if n := f.count(proto.RegionEventsStream("eu")); n != 1 {
		t.Errorf("region holds %d copies, want 1", n)
	}
}

// panicOnce is a tracer whose first span of name panics, as a bug in the
// routing would.
type panicOnce struct {
	trace.Tracer
	name     string
	panicked atomic.Bool
}

func (p *panicOnce) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if name == p.name && p.panicked.CompareAndSwap(false, true) {
		panic("a bug while routing")
	}
	return p.Tracer.Start(ctx, name, opts...)
}

func TestPanicWhileRoutingIsRetried(t *testing.T) {
	f := newFixture(t)
	f.setRegion("acct-p", "eu")
	f.metrics = router.NewMetrics(prometheus.NewRegistry())
	tracer := &panicOnce{Tracer: noop.NewTracerProvider().Tracer(""), name: "lookup"}
	core, logs := observer.New(zap.ErrorLevel)
	r := router.New(f.nats.JS, directory.NewCache(f.dir, zap.NewNop()), router.Options{
		Regions: regions, Streams: topology.OptionsFrom(config.Default()), Tracer: tracer,
	}, f.metrics, zap.New(core))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, r) })

	id := f.publish("acct-p")
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.RegionEventsStream("eu")) == 1 }, "the event in eu")
	if !tracer.panicked.Load() {
		t.Fatal("the routing did not panic: the test tests nothing")
	}
	entries := logs.FilterMessage("Routing an event panicked; it is tried again").All()
	if len(entries) != 1 || entries[0].ContextMap()["event_id"] != id || entries[0].ContextMap()["panic"] != "string" {
		t.Errorf("logged %v, want one line with the event's id and the panic's type", entries)
	}
}
