// Package tracing is geomux's OpenTelemetry traces: one trace per event,
// continuing Zoom's traceparent, from the ingress through the router to the
// region's worker, its backend call and its Zoom calls. It is configured by
// OpenTelemetry's standard variables (OTEL_EXPORTER_OTLP_ENDPOINT,
// OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...)
// and off when none names an exporter. Spans carry ids (event, account,
// app, region), never a payload.
package tracing

import (
	"context"
	"errors"
	"os"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Propagator is W3C Trace Context: what Zoom sends, what backends get.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Enabled reports whether the environment names a trace exporter.
func Enabled() bool {
	if e := os.Getenv("OTEL_TRACES_EXPORTER"); e != "" {
		return e != "none"
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Provider is the process's tracer provider, and how to flush it at stop.
type Provider struct {
	trace.TracerProvider
	shutdown func(context.Context) error
}

// Shutdown exports what is left and stops.
func (p Provider) Shutdown(ctx context.Context) error {
	if p.shutdown == nil {
		return nil
	}
	return p.shutdown(ctx)
}

// FromEnv returns the tracer provider the environment configures, or a
// no-op one when it names no exporter. service is the service name unless
// OTEL_SERVICE_NAME says otherwise; attrs describe the process.
func FromEnv(ctx context.Context, service string, attrs ...attribute.KeyValue) (Provider, error) {
	if !Enabled() {
		return Provider{TracerProvider: noop.NewTracerProvider()}, nil
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return Provider{}, errors.Join(errors.New("traces (OTEL_* variables)"), err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(append(attrs, semconv.ServiceName(service))...))
	if err != nil {
		return Provider{}, err
	}
	// The environment's OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win.
	env, err := resource.New(ctx, resource.WithFromEnv())
	if err != nil {
		return Provider{}, err
	}
	if res, err = resource.Merge(res, env); err != nil {
		return Provider{}, err
	}
	// The sampler comes from OTEL_TRACES_SAMPLER (parentbased_always_on by
	// default), the batching from OTEL_BSP_*.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return Provider{TracerProvider: tp, shutdown: tp.Shutdown}, nil
}
