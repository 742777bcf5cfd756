package ingress

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/httpserver"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/zoom"
)

// Module runs the ingress listener. It needs the platform module.
var Module = fx.Module("ingress",
	fx.Decorate(func(l *zap.Logger) *zap.Logger { return l.Named("ingress") }),
	fx.Provide(NewMetrics, newHandler),
	fx.Invoke(registerLifecycle),
)

func newHandler(js jetstream.JetStream, c config.Config, m *Metrics, h *health.Registry, log *zap.Logger) *Handler {
	return NewHandler(js, Options{
		Verifier:       zoom.NewVerifier(c.Zoom.WebhookSecretTokens, c.Ingress.MaxClockSkew.D()),
		PublishTimeout: c.Ingress.PublishTimeout.D(),
	}, m, h, log)
}

// LifecycleParams are registerLifecycle's dependencies.
type LifecycleParams struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    config.Config
	JS        jetstream.JetStream
	Handler   *Handler
	Health    *health.Registry
	Log       *zap.Logger
}

// registerLifecycle sets up the transit stream, then binds the listener. On
// stop the process first reports not ready, then the listener stops accepting
// and in-flight requests finish (each bounded by the publish timeout).
func registerLifecycle(p LifecycleParams) {
	var srv atomic.Pointer[httpserver.Server]
	p.Health.Register("ingress", func() error {
		if srv.Load() == nil {
			return errors.New("not listening yet")
		}
		return nil
	})
	p.Lifecycle.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			if _, err := natsx.EnsureStream(ctx, p.JS, natsx.IngressStream(natsx.StreamOptionsFrom(p.Config))); err != nil {
				return err
			}
			s, err := httpserver.Start("ingress", p.Config.Ingress.Listen, p.Handler, p.Log)
			if err != nil {
				return err
			}
			srv.Store(s)
			return nil
		},
		OnStop: func(ctx context.Context) error {
			p.Health.SetStopping()
			return srv.Load().Stop(ctx)
		},
	})
}
