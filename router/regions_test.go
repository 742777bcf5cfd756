package router_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/natsfx"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/router"
)

// A region with a NATS system of its own that goes away: the other regions'
// events keep flowing, the region's wait in the hub's transit, and flow
// when it is back.
func TestUnreachableRegionHoldsUpNoOther(t *testing.T) {
	f := newFixture(t) // the hub
	f.setRegion("acct-us", "us")
	f.setRegion("acct-eu", "eu")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	euCfg := config.Default().NATS
	euCfg.StoreDir, euCfg.Listen = t.TempDir(), addr
	startEU := func() *server.Server {
		ns, err := natsx.StartEmbedded(euCfg, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		return ns
	}
	eu := startEU()
	cc := config.Default().NATS
	cc.URL = "nats://" + addr
	cc.Auth.NkeySeedFile = natsx.SeedFile(euCfg.StoreDir, natsx.RoleProcess)
	nc, err := natsx.Connect(cc, nil, "router-eu", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	euJS, err := natsfx.NewJetStream(nc)
	if err != nil {
		t.Fatal(err)
	}

	m := router.NewMetrics(prometheus.NewRegistry())
	r := router.New(f.nats.JS, directory.NewCache(f.dir, zap.NewNop()), router.Options{
		Regions:  regions,
		Streams:  topology.OptionsFrom(config.Default()),
		RegionJS: map[string]jetstream.JetStream{"eu": euJS},
	}, m, zap.NewNop())
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, r) })

	countEU := func() uint64 {
		s, err := euJS.Stream(context.Background(), proto.RegionEventsStream("eu"))
		if err != nil {
			return 0
		}
		info, err := s.Info(context.Background())
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	f.publish("acct-eu")
	natstest.Eventually(t, 10*time.Second, func() bool { return countEU() == 1 }, "eu event in eu's own NATS")
	if _, err := f.nats.JS.Stream(context.Background(), proto.RegionEventsStream("eu")); err == nil {
		t.Error("the hub has a stream of eu's events")
	}

	eu.Shutdown()
	eu.WaitForShutdown()
	natstest.Eventually(t, 5*time.Second, func() bool { return !nc.IsConnected() }, "router to see eu gone")
	for range 5 {
		f.publish("acct-eu")
		f.publish("acct-us")
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.RegionEventsStream("us")) == 5 }, "us events routed while eu is away")
	// The us events leave transit once their acknowledgements are in (just
	// after they are in us's stream); eu's stay.
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.IngressStream) == 5 }, "transit to hold the 5 events of eu (has %d)", f.count(proto.IngressStream))

	startEU() // back, same address and store
	natstest.Eventually(t, 30*time.Second, func() bool { return countEU() == 6 }, "eu events flow once eu is back (have %d)", countEU())
	natstest.Eventually(t, 10*time.Second, func() bool { return f.count(proto.IngressStream) == 0 }, "transit drained")
}
