package natsx_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
)

// When the disk fills, nats-server turns its JetStream off (as
// ShutdownJetStream does here) and keeps it off until a restart. geomux
// turns it back on once it can: publishes succeed again, and what was
// stored before is still there.
func TestJetStreamComesBackAfterBeingTurnedOff(t *testing.T) {
	s := natstest.Start(t, "")
	jsc := s.NS.JetStreamConfig()
	if jsc == nil {
		t.Fatal("no JetStream config")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); natsx.KeepJetStream(ctx, s.NS, *jsc, 50*time.Millisecond, zap.NewNop()) }()
	t.Cleanup(func() { cancel(); <-done })

	c, cancelC := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelC()
	if _, err := s.JS.CreateStream(c, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.JS.Publish(c, "keep.a", []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := s.NS.ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		pc, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := s.JS.Publish(pc, "keep.a", []byte("after"))
		return err == nil
	}, "publishes accepted again")
	st, err := s.JS.Stream(c, "KEEP")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(c, 1)
	if err != nil || string(m.Data) != "before" {
		t.Errorf("the message stored before: %v, %v", m, err)
	}
}

// A deployment of an earlier version has parked and dead-letter streams
// without a cap: starting this version caps them in place.
func TestCapsAddedToExistingStreams(t *testing.T) {
	s := natstest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old := topology.Options{DedupWindow: time.Minute, ParkTTL: time.Hour, DeadLetterMaxAge: time.Hour, Regions: map[string]topology.Placement{}}
	capped := old
	capped.ParkMaxBytes, capped.DeadLetterMaxBytes = 8<<20, 16<<20
	for _, cfgs := range []func(topology.Options) jetstream.StreamConfig{
		topology.ParkedStreamConfig,
		func(o topology.Options) jetstream.StreamConfig { return topology.RegionDeadLetterConfig("eu", o) },
	} {
		was := cfgs(old)
		was.Discard = jetstream.DiscardOld // the dead-letter stream's earlier policy
		if _, err := s.JS.CreateStream(ctx, was); err != nil {
			t.Fatal(err)
		}
		st, err := natsx.EnsureStream(ctx, s.JS, cfgs(capped))
		if err != nil {
			t.Fatalf("capping %s: %v", was.Name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.MaxBytes != cfgs(capped).MaxBytes || info.Config.Discard != jetstream.DiscardNew {
			t.Errorf("%s: max bytes %d, discard %v", was.Name, info.Config.MaxBytes, info.Config.Discard)
		}
	}
}
