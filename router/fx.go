package router

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/governor"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/natsfx"
	"github.com/geomux/geomux/pkg/topology"
)

// Module runs the router. It needs the platform and directory modules.
var Module = fx.Module("router",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("router") }),
	fx.Provide(NewMetrics, newRouter),
	fx.Invoke(func(lc fx.Lifecycle, r *Router, h *health.Registry) {
		h.Register("router", r.Ready)
		lc.Append(fx.StartStopHook(r.Start, func(ctx context.Context) error {
			ctx, cancel := natsfx.ReserveForDrain(ctx)
			defer cancel()
			return r.Stop(ctx)
		}))
	}),
)

func newRouter(js jetstream.JetStream, regions natsfx.Regions, dir *directory.Directory, conflicts *directory.Conflicts, channels *directory.Channels, gov *governor.Governor, tp trace.TracerProvider, c config.Config, m *Metrics, log *zap.Logger) *Router {
	return New(js, directory.NewCache(dir, log.Named("directory")), Options{
		Regions:       c.RegionNames(),
		Streams:       topology.OptionsFrom(c),
		RegionJS:      regions.JS(),
		RemoveAccount: dir.Purge,
		Pins:          c.Zoom.Pins(),
		Apps:          c.Zoom.AppNames(),
		Conflicts:     conflicts,
		Channels:      channels,
		Governor:      gov,
		Tracer:        tp.Tracer("github.com/geomux/geomux/router"),
	}, m, log)
}
