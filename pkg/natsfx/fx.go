// Package natsfx provides the NATS connection and JetStream context to an fx
// app: to the embedded nats-server it starts when nats.url is empty, or to
// the external cluster at nats.url.
package natsfx

import (
	"context"
	"errors"
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

// Embedded is the embedded nats-server, or nil when the process connects
// to nats.url.
type Embedded struct{ Server *server.Server }

// NewConn starts the embedded nats-server if nats.url is empty and connects.
// On stop it drains the connection (pending publishes and acks are flushed),
// then shuts the embedded server down, which flushes its store.
func NewConn(p ConnParams) (*nats.Conn, Embedded, error) {
	nc, ns, err := newConn(p)
	return nc, Embedded{Server: ns}, err
}

func newConn(p ConnParams) (*nats.Conn, *server.Server, error) {
	c := HubNATS(p.Config, p.Target)
	var ns *server.Server
	if c.URL == "" {
		var err error
		if ns, err = natsx.StartEmbedded(p.Config.NATS, p.Log); err != nil {
			return nil, nil, err
		}
		p.Log.Info("Embedded NATS started", zap.String("store_dir", p.Config.NATS.StoreDir), zap.String("listen", p.Config.NATS.Listen))
	}
	nc, err := natsx.Connect(natsx.WithLocalAuth(c, natsx.RoleProcess), ns, "geomux-"+p.Target.Name, p.Log)
	if err != nil {
		if ns != nil {
			ns.Shutdown()
		}
		return nil, nil, err
	}
	// A Zoom body may be 1 MiB, plus headers: a server with the default
	// max_payload (1 MB) refuses the largest events, and ingress would answer
	// 503 to them forever.
	if mp := nc.MaxPayload(); mp < minMaxPayload {
		p.Log.Warn("NATS max_payload is too small for the largest Zoom events; set max_payload: 2MB on the servers",
			zap.Int64("max_payload", mp), zap.Int64("want", minMaxPayload))
	}
	p.Health.Register("nats", func() error {
		if !nc.IsConnected() {
			return errors.New("NATS connection is " + nc.Status().String())
		}
		return nil
	})
	stopKeeping := func() {}
	if ns != nil {
		if jsc := ns.JetStreamConfig(); jsc != nil {
			ctx, cancel := context.WithCancel(context.Background())
			kept := make(chan struct{})
			go func() {
				defer close(kept)
				natsx.KeepJetStream(ctx, ns, *jsc, jetStreamRetry, p.Log.Named("nats"))
			}()
			stopKeeping = func() { cancel(); <-kept }
		}
		p.Health.Register("jetstream", func() error {
			if !ns.JetStreamEnabled() {
				return errors.New("the embedded JetStream is off (out of disk space?); geomux turns it back on once it can")
			}
			return nil
		})
	}
	p.Lifecycle.Append(fx.StopHook(func(ctx context.Context) error {
		stopKeeping()
		err := drain(ctx, nc)
		if ns != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
			p.Log.Info("Embedded NATS stopped")
		}
		return err
	}))
	return nc, ns, nil
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
