package router_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/router"
)

// publishVia puts an event of account on the transit subject as ingress
// does for an event that came through app ("": an event stored before
// apps were, with no app header).
func (f *fixture) publishVia(app, account string) string {
	f.t.Helper()
	f.n++
	body := zoomtest.BotNotification(account, "hello", f.n)
	id := proto.EventID(body)
	m := nats.NewMsg(proto.IngressSubject)
	m.Data = body
	for k, v := range map[string]string{jetstream.MsgIDHeader: id, proto.HeaderEventID: id, proto.HeaderEventType: "bot_notification",
		proto.HeaderAccountID: account, proto.HeaderApp: app,
		proto.HeaderReceivedAt: time.Now().UTC().Format(proto.TimeFormat)} {
		if v != "" {
			m.Header.Set(k, v)
		}
	}
	if _, err := f.nats.JS.PublishMsg(context.Background(), m); err != nil {
		f.t.Fatal(err)
	}
	return id
}

func TestPinnedAppsAndConflicts(t *testing.T) {
	f := newFixture(t)
	conflicts, err := directory.OpenConflicts(context.Background(), f.nats.JS, topology.OptionsFrom(config.Default()))
	if err != nil {
		t.Fatal(err)
	}
	f.metrics = router.NewMetrics(prometheus.NewRegistry())
	r := router.New(f.nats.JS, directory.NewCache(f.dir, zap.NewNop()), router.Options{
		Regions: regions, Streams: topology.OptionsFrom(config.Default()),
		Pins: map[string]string{"us-bot": "us"}, Conflicts: conflicts,
	}, f.metrics, zap.NewNop())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, r) })

	f.setRegion("in-us", "us")
	f.setRegion("in-eu", "eu")
	f.publishVia("us-bot", "unknown") // no directory entry: the pin decides
	f.publishVia("us-bot", "in-us")   // the directory agrees
	f.publishVia("default", "in-eu")  // unpinned: the directory decides
	f.publishVia("us-bot", "in-eu")   // the directory says eu: a conflict
	natstest.Eventually(t, 10*time.Second, func() bool {
		return f.count(proto.RegionEventsStream("us")) == 2 && f.count(proto.RegionEventsStream("eu")) == 1 && f.count(proto.ParkedStream) == 1
	}, "two events in us, one in eu, one parked")
	for _, h := range f.messages(proto.RegionEventsStream("us")) {
		if h.Get(proto.HeaderApp) != "us-bot" || h.Get(proto.HeaderRegion) != "us" {
			t.Errorf("us got %v", h)
		}
	}
	parked := f.messages(proto.ParkedStream)[0]
	if parked.Get(proto.HeaderAccountID) != "in-eu" || parked.Get(proto.HeaderParkReason) != router.ParkConflict {
		t.Errorf("parked %v", parked)
	}
	if got := testutil.ToFloat64(f.metrics.Conflicts.WithLabelValues("us-bot")); got != 1 {
		t.Errorf("conflicts metric %v, want 1", got)
	}
	var cs []directory.Conflict
	natstest.Eventually(t, 10*time.Second, func() bool {
		cs, _ = conflicts.List(context.Background())
		return len(cs) == 1
	}, "the conflict recorded")
	if c := cs[0]; c.AccountID != "in-eu" || c.App != "us-bot" || c.AppRegion != "us" || c.DirectoryRegion != "eu" || c.Events != 1 {
		t.Errorf("conflict %+v", c)
	}

	// Settled by removing the account from the directory: the pin decides,
	// the parked event goes to us, the conflict is forgotten.
	if err := f.dir.Delete(context.Background(), "in-eu"); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		cs, _ = conflicts.List(context.Background())
		return f.count(proto.ParkedStream) == 0 && f.count(proto.RegionEventsStream("us")) == 3 && len(cs) == 0
	}, "the parked event routed to us and the conflict forgotten")
	if got := testutil.ToFloat64(f.metrics.Routed.WithLabelValues("us", "us-bot")); got != 2 {
		t.Errorf("routed{us,us-bot} = %v, want 2 (the third came from parking)", got)
	}
}
