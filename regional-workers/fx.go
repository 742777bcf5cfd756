package workers

import (
	"github.com/hashicorp/go-retryablehttp"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/zoom"
)

// Module runs a worker for each region of the target (config.Target). It
// needs the platform module.
var Module = fx.Module("workers",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("worker") }),
	fx.Provide(NewMetrics, newZoomClient),
	fx.Invoke(registerWorkers),
)

func newZoomClient(c config.Config, hc *retryablehttp.Client) *zoom.Client {
	return zoom.NewClient(zoom.ClientConfig{
		ClientID: c.Zoom.ClientID, ClientSecret: c.Zoom.ClientSecret,
		APIBaseURL: c.Zoom.APIBaseURL, OAuthBaseURL: c.Zoom.OAuthBaseURL,
	}, hc)
}

// WorkersParams are registerWorkers' dependencies.
type WorkersParams struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    config.Config
	Target    config.Target
	JS        jetstream.JetStream
	Zoom      *zoom.Client
	HTTP      *retryablehttp.Client
	Metrics   *Metrics
	Health    *health.Registry
	Log       *zap.Logger
}

func registerWorkers(p WorkersParams) {
	for _, r := range p.Target.WorkerRegions(p.Config) {
		var h Handler = Echo
		if r.Handler == config.HandlerHTTP {
			h = &HTTPBackend{URL: r.BackendURL, Region: r.Name, Timeout: r.Timeout.D(), Client: p.HTTP}
		}
		w := New(p.JS, h, p.Zoom, Options{
			Region:         r.Name,
			BotJID:         p.Config.Zoom.BotJID,
			Retry:          p.Config.Retry,
			Concurrency:    p.Config.Worker.Concurrency,
			HandlerTimeout: p.Config.Worker.HandlerTimeout.D(),
			Streams:        natsx.StreamOptionsFrom(p.Config),
		}, p.Metrics, p.Log)
		p.Health.Register("worker-"+r.Name, w.Ready)
		p.Lifecycle.Append(fx.StartStopHook(w.Start, w.Stop))
	}
}
