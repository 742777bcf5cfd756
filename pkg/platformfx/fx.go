// Package platformfx is what every geomux process runs on: logging, metrics,
// health, NATS, the outbound HTTP client and the admin listener.
package platformfx

import (
	"os"
	"strings"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/admin"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/governor"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/httpclientfx"
	"github.com/geomux/geomux/pkg/httpserver"
	"github.com/geomux/geomux/pkg/natsfx"
	"github.com/geomux/geomux/pkg/zapfx"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
	"github.com/geomux/geomux/proto"
)

// Module needs config.Config and config.Target supplied.
var Module = fx.Module("platform",
	zapfx.Module,
	fx.Provide(newTracing),
	natsfx.Module,
	httpclientfx.Module,
	fx.Provide(
		NewZoomClient,
		NewZoomApps,
		NewRegistry,
		func(r *prometheus.Registry) prometheus.Registerer { return r },
		newHealth,
	),
	fx.Provide(newAdmin, newSandbox, AsAdminRoute(OpenAPIRoutes), newGovernor),
	fx.Supply(governor.DefaultOptions()),
	fx.Invoke(limitMemory),
	// Both listeners start first and stop last.
	fx.Invoke(func(*AdminServer, *SandboxServer) {}),
)

// NewZoomClient is the Zoom client of the app the install flow uses (the
// first app: the user OAuth of an install, and the vaults' token refresh).
func NewZoomClient(c config.Config, apps ZoomApps) *zoom.Client {
	return apps[c.Zoom.DefaultApp().Name]
}

// ZoomApps are the Zoom clients of every app, by name: each with its own
// chatbot token.
type ZoomApps map[string]*zoom.Client

// NewZoomApps makes a client per app.
func NewZoomApps(c config.Config, hc *retryablehttp.Client) ZoomApps {
	out := ZoomApps{}
	for _, a := range c.Zoom.AllApps() {
		out[a.Name] = zoomClient(c, a, hc)
	}
	return out
}

func zoomClient(c config.Config, a config.App, hc *retryablehttp.Client) *zoom.Client {
	return zoom.NewClient(zoom.ClientConfig{
		ClientID: a.ClientID, ClientSecret: a.ClientSecret,
		APIBaseURL: c.Zoom.APIBaseURL, OAuthBaseURL: c.Zoom.OAuthBaseURL,
	}, hc)
}

// NewRegistry is the process's Prometheus registry, with Go runtime and
// process metrics.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// AsAdminRoute annotates a constructor returning []admin.Route so that its
// routes join the admin API.
func AsAdminRoute(f any) any {
	return fx.Annotate(f, fx.ResultTags(`group:"admin_routes,flatten"`))
}

// AdminServer is the admin listener (nil-safe to ask for; not started when
// admin.listen is empty).
type AdminServer struct{ *httpserver.Server }

// AdminParams are newAdmin's dependencies.
type AdminParams struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    config.Config
	Registry  *prometheus.Registry
	Health    *health.Registry
	Log       *zap.Logger
	Routes    []admin.Route `group:"admin_routes"`
}

func newAdmin(p AdminParams) *AdminServer {
	h := admin.NewHandler(p.Config.Admin.Token, p.Routes, p.Registry, p.Health)
	s := &AdminServer{httpserver.New("admin", p.Config.Admin.Listen, h, p.Log)}
	if p.Config.Admin.Listen != "" {
		p.Lifecycle.Append(fx.StartStopHook(s.Start, s.Stop))
	}
	return s
}

// SandboxServer is the Zoom sandbox listener (started only when
// sandbox.listen is set).
type SandboxServer struct{ *httpserver.Server }

// newSandbox serves the Zoom sandbox when sandbox.listen is set. It starts
// before the workers, which send to it.
func newSandbox(lc fx.Lifecycle, c config.Config, log *zap.Logger) *SandboxServer {
	redirect := ""
	if c.Install.Enabled() {
		redirect = strings.TrimRight(c.Install.PublicURL, "/") + "/oauth/callback"
	}
	apps := c.Zoom.AllApps()
	def := apps[0]
	cfg := sandbox.Config{ClientID: def.ClientID, ClientSecret: def.ClientSecret, BotJID: def.BotJID, RedirectURI: redirect,
		RateLimit: sandbox.RateLimit{PerSecond: c.Sandbox.RateLimit.PerSecond, PerDay: c.Sandbox.RateLimit.PerDay}}
	for _, a := range apps[1:] {
		cfg.Apps = append(cfg.Apps, sandbox.App{ClientID: a.ClientID, ClientSecret: a.ClientSecret, BotJID: a.BotJID})
	}
	cfg.Chat = chatConfig(c)
	sb := sandbox.New(cfg, os.Stdout)
	s := &SandboxServer{httpserver.New("zoom-sandbox", c.Sandbox.Listen, sb, log.Named("sandbox"))}
	if c.Sandbox.Listen != "" {
		lc.Append(fx.StartStopHook(s.Start, s.Stop))
	}
	return s
}

// chatConfig points the sandbox's developer chat at this process's ingress
// (every app's Bot Endpoint URL and secret) and admin API. The chat is off
// without an ingress listener.
func chatConfig(c config.Config) sandbox.ChatConfig {
	var chat sandbox.ChatConfig
	if c.Ingress.Listen == "" {
		return chat
	}
	base := httpserver.LocalURL(c.Ingress.Listen) + proto.WebhookPath
	for i, a := range c.Zoom.AllApps() {
		if len(a.WebhookSecretTokens) == 0 {
			continue
		}
		u := base
		if i > 0 {
			u += "/" + a.Name
		}
		chat.Apps = append(chat.Apps, sandbox.ChatApp{Name: a.Name, WebhookURL: u, WebhookSecret: a.WebhookSecretTokens[0], BotJID: a.BotJID, Region: a.Region})
	}
	for _, r := range c.Regions {
		chat.Regions = append(chat.Regions, sandbox.ChatRegion{Name: r.Name, DisplayName: r.Title()})
	}
	if c.Admin.Listen != "" {
		chat.AdminURL, chat.AdminToken = httpserver.LocalURL(c.Admin.Listen), c.Admin.Token
	}
	return chat
}

// newHealth is the process's readiness checks, each also exported as
// geomux_ready_check{check}.
func newHealth(reg prometheus.Registerer) *health.Registry {
	h := health.NewRegistry()
	reg.MustRegister(h.Collector())
	return h
}
