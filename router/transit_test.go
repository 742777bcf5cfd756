package router_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
)

// The router reads every transit stream: the configured ones, and one left
// by a larger nats.transit_partitions, so that no event stays behind.
func TestRoutesFromEveryTransitStream(t *testing.T) {
	f := newFixture(t)
	f.setRegion("acct-eu", "eu")
	so := topology.OptionsFrom(config.Default())
	so.TransitPartitions = 4
	if _, err := natsx.EnsureStream(context.Background(), f.nats.JS, topology.TransitConfig(so, 3)); err != nil {
		t.Fatal(err)
	}
	f.startRouter() // nats.transit_partitions: 3
	for p := range 4 {
		for i := range 5 {
			body := zoomtest.BotNotification("acct-eu", "hello", int64(100*p+i))
			id := proto.EventID(body)
			m := nats.NewMsg(proto.TransitSubject(p))
			m.Data = body
			m.Header.Set(jetstream.MsgIDHeader, id)
			m.Header.Set(proto.HeaderEventID, id)
			m.Header.Set(proto.HeaderEventType, "bot_notification")
			m.Header.Set(proto.HeaderAccountID, "acct-eu")
			if _, err := f.nats.JS.PublishMsg(context.Background(), m); err != nil {
				t.Fatalf("transit stream %d: %v", p, err)
			}
		}
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.RegionEventsStream("eu")) == 20 },
		"the 20 events of the 4 transit streams in eu (has %d)", f.count(proto.RegionEventsStream("eu")))
	for p := range 4 {
		if n := f.count(proto.TransitStream(p)); n != 0 {
			t.Errorf("transit stream %s holds %d events, want none", proto.TransitStream(p), n)
		}
	}
}
