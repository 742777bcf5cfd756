// Package httpclientfx provides the one retrying HTTP client every outbound
// call is made with.
package httpclientfx

import (
	"github.com/hashicorp/go-retryablehttp"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/httpx"
)

// Module provides *retryablehttp.Client.
var Module = fx.Module("httpclient",
	fx.Provide(func(lc fx.Lifecycle, c config.Config, log *zap.Logger) *retryablehttp.Client {
		o := httpx.DefaultOptions()
		o.Retries = c.Retry.HTTPRetries
		hc := httpx.NewClient(o, log)
		// Its callers have stopped by now: close the kept-alive connections.
		lc.Append(fx.StopHook(func() { hc.HTTPClient.CloseIdleConnections() }))
		return hc
	}),
)
