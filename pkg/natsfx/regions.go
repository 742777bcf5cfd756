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
	own      bool // a connection of its own to the hub's NATS
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
	Embedded  Embedded
	Log       *zap.Logger
	Health    *health.Registry
}

// NewRegions connects to the NATS system of each region the target needs
// that has one of its own. A region without one gets a connection of its
// own to the hub's NATS: a NATS connection is read by one goroutine of the
// server, and a region's workers send several messages per event (order
// check, record, acknowledgement), which behind the ingress's and router's
// on one connection held up all three (2,000 events/s on two cores fell
// behind, their CPU to spare). The router holds one connection per region,
// each with that region's credentials only.
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
			reg, err := p.laneTo(r.Name)
			if err != nil {
				closeAll(out)
				return nil, err
			}
			out[r.Name] = reg
			continue
		}
		if own := p.Config.NATS.ForRegion(r); own.URL == hub.URL && own.Auth == hub.Auth {
			out[r.Name] = Region{Conn: p.Conn, JS: p.JS, Separate: true} // the main connection is the region's
			continue
		}
		rc, gate := p.Config.NATS.ForRegion(r), &natsx.Gate{}
		nc, err := natsx.ConnectAtStart(rc, false, gate, "geomux-"+p.Target.Name+"-"+r.Name, p.Log.With(zap.String("nats", r.Name)))
		if err != nil {
			closeAll(out)
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
		p.Lifecycle.Append(atStart(nc, gate, func() { gate.Open(nil) }, fmt.Sprintf("region %s's %s", name, natsx.Describe(rc, false))))
	}
	return out, nil
}

// laneTo is a connection of region's own to the hub's NATS (in-process to
// the embedded server), drained at stop before the main one.
func (p RegionsParams) laneTo(region string) (Region, error) {
	c := HubNATS(p.Config, p.Target)
	if !p.Embedded.InProcess {
		c = natsx.WithLocalAuth(c, natsx.RoleProcess)
	}
	nc, err := natsx.ConnectAtStart(c, p.Embedded.InProcess, p.Embedded.Gate, "geomux-"+p.Target.Name+"-"+region, p.Log.With(zap.String("nats", region)))
	if err != nil {
		return Region{}, fmt.Errorf("region %s: %w", region, err)
	}
	js, err := NewJetStream(nc)
	if err != nil {
		nc.Close()
		return Region{}, err
	}
	p.Lifecycle.Append(atStart(nc, p.Embedded.Gate, nil, natsx.Describe(c, p.Embedded.InProcess)))
	return Region{Conn: nc, JS: js, own: true}, nil
}

// atStart connects nc (made with natsx.ConnectAtStart) when the process
// starts, its gate opened by then (the main connection's, for a lane to the
// hub) or here when open is set; it drains nc on stop.
func atStart(nc *nats.Conn, gate *natsx.Gate, open func(), what string) fx.Hook {
	return fx.Hook{
		OnStart: func(ctx context.Context) error {
			if open != nil {
				open()
			}
			if err := natsx.AwaitConnected(ctx, nc, gate, what); err != nil {
				nc.Close() // fx does not stop what failed to start
				return err
			}
			return nil
		},
		OnStop: func(ctx context.Context) error { return drain(ctx, nc) },
	}
}

// closeAll closes the connections NewRegions opened.
func closeAll(rs Regions) {
	for _, r := range rs {
		if r.Separate || r.own {
			r.Conn.Close()
		}
	}
}

// JS returns the JetStream contexts of the regions, by name.
func (rs Regions) JS() map[string]jetstream.JetStream {
	out := make(map[string]jetstream.JetStream, len(rs))
	for name, r := range rs {
		out[name] = r.JS
	}
	return out
}
