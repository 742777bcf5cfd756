package platformfx

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/tracing"
)

// newTracing is the process's tracer provider (package tracing: off unless
// the OTEL_* variables name an exporter); at stop, after every part that
// makes spans, it exports what is left.
func newTracing(lc fx.Lifecycle, t config.Target) (trace.TracerProvider, error) {
	p, err := tracing.FromEnv(context.Background(), "geomux", attribute.String("geomux.target", t.Name))
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(p.Shutdown))
	return p.TracerProvider, nil
}
