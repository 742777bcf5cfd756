// Package httpclientfx provides the one retrying HTTP client every outbound
// call is made with.
package httpclientfx

import (
	"net/http"

	"github.com/hashicorp/go-retryablehttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/httpx"
	"github.com/geomux/geomux/pkg/tracing"
)

// Module provides *retryablehttp.Client.
var Module = fx.Module("httpclient",
	fx.Provide(func(lc fx.Lifecycle, c config.Config, tp trace.TracerProvider, log *zap.Logger) *retryablehttp.Client {
		o := httpx.DefaultOptions()
		o.Retries = c.Retry.HTTPRetries
		hc := httpx.NewClient(o, log)
		base := hc.HTTPClient.Transport
		if tracing.Enabled() {
			// Each call a span of the event's trace, and its traceparent
			// sent (to the backend; Zoom ignores it). Without traces, no
			// wrapper: nothing done per call.
			hc.HTTPClient.Transport = otelhttp.NewTransport(base,
				otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(tracing.Propagator),
				otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Host }))
		}
		// Its callers have stopped by now: close the kept-alive connections
		// (of the transport itself: otelhttp's wrapper does not pass it on).
		lc.Append(fx.StopHook(func() {
			if t, ok := base.(interface{ CloseIdleConnections() }); ok {
				t.CloseIdleConnections()
			}
		}))
		return hc
	}),
)
