package natsfx

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/natsx"
)

// Region is how a process reaches one region's NATS: its own system, or the
// hub's when the region has none.
type Region struct {
	Conn *nats.Conn
	JS   jetstream.JetStream
	// Separate is true when the region has a NATS system of its own.
	Separate bool
}

// Regions are the region connections a process needs: every region for the
// router, its own for a worker.
type Regions map[string]Region

// RegionsParams are NewRegions' dependencies.
type RegionsParams struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    config.Config
	Target    config.Target
	Conn      *nats.Conn
	JS        jetstream.JetStream
	Log       *zap.Logger
	Health    *health.Registry
}

// NewRegions connects to the NATS system of each region the target needs
// that has one of its own; regions without one share the hub's connection.
// The router holds one connection per region, each with that region's
// credentials only.
func NewRegions(p RegionsParams) (Regions, error) {
	out := Regions{}
	var need []config.Region
	switch {
	case p.Target.Has(config.RoleRouter):
		need = p.Config.Regions
	case p.Target.Has(config.RoleWorker):
		need = p.Target.WorkerRegions(p.Config)
	}
	hub := HubNATS(p.Config, p.Target)
	for _, r := range need {
		if !r.NATS.Separate() {
			out[r.Name] = Region{Conn: p.Conn, JS: p.JS}
			continue
		}
		if own := p.Config.NATS.ForRegion(r); own.URL == hub.URL && own.Auth == hub.Auth {
			out[r.Name] = Region{Conn: p.Conn, JS: p.JS, Separate: true} // the main connection is the region's
			continue
		}
		nc, err := natsx.Connect(p.Config.NATS.ForRegion(r), nil, "geomux-"+p.Target.Name+"-"+r.Name, p.Log.With(zap.String("nats", r.Name)))
		if err != nil {
			for _, o := range out {
				if o.Separate {
					o.Conn.Close()
				}
			}
			return nil, fmt.Errorf("region %s: %w", r.Name, err)
		}
		js, err := NewJetStream(nc)
		if err != nil {
			nc.Close()
			return nil, err
		}
		out[r.Name] = Region{Conn: nc, JS: js, Separate: true}
		name := r.Name
		p.Health.Register("nats-"+name, func() error {
			if !nc.IsConnected() {
				return fmt.Errorf("NATS of region %s is %s", name, nc.Status())
			}
			return nil
		})
		p.Lifecycle.Append(fx.StopHook(func(ctx context.Context) error { return drain(ctx, nc) }))
	}
	return out, nil
}

// JS returns the JetStream contexts of the regions, by name.
func (rs Regions) JS() map[string]jetstream.JetStream {
	out := make(map[string]jetstream.JetStream, len(rs))
	for name, r := range rs {
		out[name] = r.JS
	}
	return out
}
