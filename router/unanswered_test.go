package router_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

// A publish that reaches the region and is never answered (the server
// leading the region's stream killed as it took it) is tried again within
// a few seconds, not after the JetStream context's 10 s: the region's
// events wait for its new leader, no longer. Here the region's stream is
// gone and a subscriber takes its subject without answering, as a dying
// leader does; the stream comes back and the event is stored once.
func TestUnansweredPublishIsRetriedSoon(t *testing.T) {
	f := newFixture(t)
	f.setRegion("acct", "eu")
	f.startRouter()
	ctx := context.Background()
	if err := f.nats.JS.DeleteStream(ctx, proto.RegionEventsStream("eu")); err != nil {
		t.Fatal(err)
	}
	var taken atomic.Int64
	sub, err := f.nats.Conn.Subscribe(proto.RegionEventsSubjects("eu")[0], func(m *nats.Msg) {
		if m.Header.Get(proto.HeaderAccountID) == "acct" {
			taken.Add(1) // and no answer
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.nats.Conn.Flush(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	f.publish("acct")
	// The old 10 s ack timeout would make the second try come after 11 s.
	natstest.Eventually(t, 8*time.Second, func() bool { return taken.Load() >= 2 },
		"the unanswered publish to be tried again")
	t.Logf("tried again %s after the event came", time.Since(start).Round(time.Millisecond))

	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if _, err := natsx.EnsureStream(ctx, f.nats.JS, topology.RegionEventsConfig("eu", topology.OptionsFrom(config.Default()))); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool { return f.count(proto.IngressStream) == 0 }, "the event to be routed once the stream is back")
	if n := f.count(proto.RegionEventsStream("eu")); n != 1 {
		t.Errorf("the region holds %d copies, want 1", n)
	}
}
