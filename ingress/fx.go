package ingress

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/ingress/install"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/governor"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/httpserver"
	"github.com/geomux/geomux/pkg/natsfx"
	"github.com/geomux/geomux/pkg/tlsx"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom"
)

// Module runs the ingress listener. It needs the platform module.
var Module = fx.Module("ingress",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("ingress") }),
	fx.Provide(NewMetrics, newHandler, newServer),
	fx.Invoke(func(*Server) {}),
)

// HandlerParams are newHandler's dependencies.
type HandlerParams struct {
	fx.In
	Lifecycle fx.Lifecycle
	JS        jetstream.JetStream
	Conn      *nats.Conn
	Config    config.Config
	Metrics   *Metrics
	Health    *health.Registry
	Log       *zap.Logger
	Directory directory.Installer
	Zoom      *zoom.Client
	Governor  *governor.Governor
	Tracing   trace.TracerProvider
}

func newHandler(p HandlerParams) (*Handler, error) {
	c := p.Config
	opts := Options{
		PublishTimeout:    c.Ingress.PublishTimeout.D(),
		TransitPartitions: c.NATS.TransitPartitions,
		Governor:          p.Governor,
		Tracer:            p.Tracing.Tracer("github.com/geomux/geomux/ingress"),
	}
	for _, a := range c.Zoom.AllApps() {
		opts.Apps = append(opts.Apps, App{Name: a.Name, Verifier: zoom.NewVerifier(a.WebhookSecretTokens, c.Ingress.MaxClockSkew.D())})
	}
	if c.Install.Enabled() {
		// The bucket of used install states is opened at start, before the
		// listener takes requests.
		nonces := &install.KVNonces{}
		p.Lifecycle.Append(fx.StartHook(func(ctx context.Context) error {
			so := topology.OptionsFrom(c)
			kv, err := so.KeyValue(ctx, p.JS, topology.InstallNoncesConfig(so))
			nonces.KV = kv
			return err
		}))
		ih, err := install.New(install.Options{
			PublicURL: c.Install.PublicURL, StateKey: []byte(c.Install.StateKey),
			BotName: c.Install.BotName, Vendor: c.Install.Vendor,
			Regions: c.Regions, OAuthOrigin: install.OriginOf(c.Zoom.OAuthBaseURL),
		}, p.Directory, p.Zoom, nonces, p.Log.Named("install"))
		if err != nil {
			return nil, err
		}
		opts.Install = ih
	}
	return NewHandler(p.JS, opts, p.Metrics, p.Health, p.Log), nil
}

// Server is the ingress listener.
type Server struct{ *httpserver.Server }

// ServerParams are newServer's dependencies.
type ServerParams struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    config.Config
	JS        jetstream.JetStream
	Handler   *Handler
	Health    *health.Registry
	Log       *zap.Logger
}

// newServer sets up the transit stream, then binds the listener. On stop the
// listener stops accepting and in-flight requests finish (each bounded by the
// publish timeout).
func newServer(p ServerParams) *Server {
	s := &Server{httpserver.New("ingress", p.Config.Ingress.Listen, p.Handler, p.Log).LimitConnections(p.Config.Ingress.MaxConnections)}
	secure := tlsx.New(p.Config.Ingress.TLS, p.Log.Named("tls"))
	if secure != nil {
		s.TLS(secure.Config())
	}
	p.Health.Register("ingress", func() error {
		if !s.Listening() {
			return errors.New("not listening yet")
		}
		return nil
	})
	p.Lifecycle.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			so := topology.OptionsFrom(p.Config)
			for _, sc := range so.Transit() {
				if _, err := so.Stream(ctx, p.JS, sc); err != nil {
					return err
				}
			}
			if secure == nil {
				return s.Start(ctx)
			}
			if err := secure.Start(ctx); err != nil {
				return err
			}
			if err := s.Start(ctx); err != nil {
				return err
			}
			secure.Listening()
			return nil
		},
		OnStop: func(ctx context.Context) error {
			// Behind a load balancer: keep taking requests while it notices
			// /readyz is 503, so that none is refused at a deploy.
			if d := p.Config.Ingress.ShutdownDelay.D(); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}
			ctx, cancel := natsfx.ReserveForDrain(ctx)
			defer cancel()
			err := s.Stop(ctx)
			if secure != nil {
				err = errors.Join(err, secure.Stop(ctx))
			}
			return err
		},
	})
	return s
}
