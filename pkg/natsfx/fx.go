// Package natsfx provides the NATS connection and JetStream context to an fx
// app: to the embedded nats-server it starts when nats.url is empty, or to
// the external cluster at nats.url.
package natsfx

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/natsx"
)

// Module provides *nats.Conn and jetstream.JetStream.
var Module = fx.Module("nats",
	fx.Provide(NewConn, NewJetStream, NewRegions),
)

// ConnParams are NewConn's dependencies.
type ConnParams struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    config.Config
	Target    config.Target
	Log       *zap.Logger
	Health    *health.Registry
}

// Embedded is the gate of the process's connections to its NATS: in
// process to the embedded nats-server, which starts (and opens the gate)
// when the process starts, when InProcess; else to nats.url.
type Embedded struct {
	Gate      *natsx.Gate
	InProcess bool
}

// NewConn makes the process's connection to its NATS: to the embedded
// nats-server if nats.url is empty. Nothing is dialled or started here: at
// start the embedded server starts and the connection connects (within
// the start's deadline, nats.connect_timeout and more); on stop the
// connection drains (pending publishes and acks are flushed), then the
// embedded server shuts down, which flushes its store.
func NewConn(p ConnParams) (*nats.Conn, Embedded, error) {
	c := HubNATS(p.Config, p.Target)
	e := Embedded{Gate: &natsx.Gate{}, InProcess: c.URL == ""}
	if !e.InProcess {
		c = natsx.WithLocalAuth(c, natsx.RoleProcess) // an embedded server of another process on this machine
	}
	nc, err := natsx.ConnectAtStart(c, e.InProcess, e.Gate, "geomux-"+p.Target.Name, p.Log)
	if err != nil {
		return nil, e, err
	}
	p.Health.Register("nats", func() error {
		if !nc.IsConnected() {
			return errors.New("NATS connection is " + nc.Status().String())
		}
		return nil
	})
	var ns atomic.Pointer[server.Server]
	if e.InProcess {
		p.Health.Register("jetstream", func() error {
			if s := ns.Load(); s == nil || !s.JetStreamEnabled() {
				return errors.New("the embedded JetStream is off (out of disk space?); geomux turns it back on once it can")
			}
			return nil
		})
	}
	stopKeeping := func() {}
	p.Lifecycle.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			if e.InProcess {
				s, err := natsx.StartEmbedded(p.Config.NATS, p.Log, e.Gate.User())
				if err != nil {
					return err
				}
				ns.Store(s)
				p.Log.Info("Embedded NATS started", zap.String("store_dir", p.Config.NATS.StoreDir), zap.String("listen", p.Config.NATS.Listen))
				stopKeeping = keepJetStream(s, p.Log)
			}
			e.Gate.Open(ns.Load())
			if err := natsx.AwaitConnected(ctx, nc, e.Gate, natsx.Describe(c, e.InProcess)); err != nil {
				// fx does not stop what failed to start: undo it here.
				nc.Close()
				stopKeeping()
				if s := ns.Load(); s != nil {
					s.Shutdown()
					s.WaitForShutdown()
				}
				return err
			}
			// A Zoom body may be 1 MiB, plus headers: a server with the
			// default max_payload (1 MB) refuses the largest events, and
			// ingress would answer 503 to them forever.
			if mp := nc.MaxPayload(); mp < minMaxPayload {
				p.Log.Warn("NATS max_payload is too small for the largest Zoom events; set max_payload: 2MB on the servers",
					zap.Int64("max_payload", mp), zap.Int64("want", minMaxPayload))
			}
			return nil
		},
		OnStop: func(ctx context.Context) error {
			stopKeeping()
			err := drain(ctx, nc)
			if s := ns.Load(); s != nil {
				s.Shutdown()
				s.WaitForShutdown()
				p.Log.Info("Embedded NATS stopped")
			}
			return err
		},
	})
	return nc, e, nil
}

// keepJetStream turns the embedded server's JetStream back on whenever
// nats-server turned it off (natsx.KeepJetStream), until the returned stop.
func keepJetStream(ns *server.Server, log *zap.Logger) (stop func()) {
	jsc := ns.JetStreamConfig()
	if jsc == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		natsx.KeepJetStream(ctx, ns, *jsc, jetStreamRetry, log.Named("nats"))
	}()
	return func() { cancel(); <-kept }
}

// jetStreamRetry is how often the embedded server's JetStream is tried
// again once nats-server turned it off.
const jetStreamRetry = 2 * time.Second

func drain(ctx context.Context, nc *nats.Conn) error {
	if err := nc.Drain(); err != nil {
		nc.Close()
		return nil
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !nc.IsClosed() {
		select {
		case <-ctx.Done():
			nc.Close()
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// HubNATS is the NATS a process's main connection goes to: nats.url (or the
// embedded server), except for workers whose regions all have NATS systems
// of their own: they need no hub at all, and connect to their region only.
func HubNATS(c config.Config, t config.Target) config.NATS {
	if t.Name != config.TargetWorker {
		return c.NATS
	}
	regions := t.WorkerRegions(c)
	for _, r := range regions {
		if !r.NATS.Separate() {
			return c.NATS
		}
	}
	return c.NATS.ForRegion(regions[0])
}

// NewJetStream returns the JetStream context. An asynchronous publish that
// is not acknowledged within 10 s fails, so that nothing waits on it forever;
// up to 8192 may be in flight (the router keeps 4096).
func NewJetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	return jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second), jetstream.WithPublishAsyncMaxPending(8192))
}

// minMaxPayload is the max_payload NATS needs for geomux's largest events.
const minMaxPayload = 2 << 20

// drainReserve is the part of a stop's time kept for draining the NATS
// connection and shutting the embedded server down, which come last.
const drainReserve = 2 * time.Second

// ReserveForDrain returns ctx with its deadline moved drainReserve earlier
// (but no more than halfway to it). Components stop within it, so that a
// stop that runs out of time still leaves the NATS connection time to drain
// (flushing acks and naks) and the embedded server time to shut down: fx
// runs no stop hook once the deadline has passed.
func ReserveForDrain(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	reserve := min(drainReserve, time.Until(dl)/2)
	return context.WithDeadline(ctx, dl.Add(-reserve))
}
