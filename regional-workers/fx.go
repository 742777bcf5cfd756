package workers

import (
	"context"

	"github.com/hashicorp/go-retryablehttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/governor"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/natsfx"
	"github.com/geomux/geomux/pkg/platformfx"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/vaultfx"
)

// Module runs a worker for each region of the target (config.Target), and
// the regions' vaults (vaultfx), which start before the workers that use
// them. It needs the platform module.
var Module = fx.Module("workers",
	vaultfx.Module,
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("worker") }),
	fx.Provide(NewMetrics),
	fx.Invoke(registerWorkers),
)

// WorkersParams are registerWorkers' dependencies.
type WorkersParams struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    config.Config
	Target    config.Target
	Regions   natsfx.Regions
	ZoomApps  platformfx.ZoomApps
	HTTP      *retryablehttp.Client
	Metrics   *Metrics
	Health    *health.Registry
	Governor  *governor.Governor
	Tracing   trace.TracerProvider
	Vaults    vaultfx.Vaults
	Log       *zap.Logger
}

func registerWorkers(p WorkersParams) error {
	var apps []App
	for _, a := range p.Config.Zoom.AllApps() {
		apps = append(apps, App{Name: a.Name, BotJID: a.BotJID, Zoom: p.ZoomApps[a.Name]})
	}
	var all []*Worker
	for _, r := range p.Target.WorkerRegions(p.Config) {
		var h Handler = Echo
		if r.Handler == config.HandlerHTTP {
			h = &HTTPBackend{URL: r.BackendURL, Region: r.Name, Timeout: r.Timeout.D(), Client: p.HTTP}
		}
		opts := Options{
			Region:             r.Name,
			Apps:               apps,
			Retry:              p.Config.Retry,
			Concurrency:        p.Config.Worker.Concurrency,
			MemoryBudget:       int64(p.Config.Worker.MemoryBudget),
			AccountConcurrency: p.Config.Worker.AccountConcurrency,
			BackendConcurrency: p.Config.Worker.BackendConcurrency,
			Pace:               p.Config.Worker.ZoomPace,
			HandlerTimeout:     p.Config.Worker.HandlerTimeout.D(),
			Streams:            topology.OptionsFrom(p.Config),
			Vault:              p.Vaults[r.Name],
			UserToken:          r.UserToken,
			Directory:          directory.RemoveHere{JS: p.Regions[r.Name].JS, Options: topology.OptionsFrom(p.Config)},
			Governor:           p.Governor,
			Tracer:             p.Tracing.Tracer("github.com/geomux/geomux/regional-workers"),
		}
		if p.Regions[r.Name].Separate {
			// The directory is the hub's: the router removes the account
			// when the region asks.
			opts.Directory = directory.AskHub{JS: p.Regions[r.Name].JS, Region: r.Name}
		}
		w := New(p.Regions[r.Name].JS, h, opts, p.Metrics, p.Log)
		p.Health.Register("worker-"+r.Name, w.Ready)
		all = append(all, w)
	}
	fleet := Fleet(all)
	p.Lifecycle.Append(fx.Hook{
		OnStart: fleet.Start,
		OnStop: func(ctx context.Context) error {
			ctx, cancel := natsfx.ReserveForDrain(ctx)
			defer cancel()
			return fleet.Stop(ctx)
		},
	})
	return nil
}
