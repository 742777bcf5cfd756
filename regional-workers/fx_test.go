package workers_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/platformfx"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// fxConfig is a worker configuration for two regions, us (echo) and eu (the
// example backend), talking to the fake Zoom at zoomURL, storing in a
// directory of the test's, listening nowhere.
func fxConfig(t *testing.T, zoomURL, backendURL string) config.Config {
	t.Helper()
	c := config.Default()
	c.Log.Level = "error"
	c.Admin.Listen = ""
	c.NATS.Listen = ""
	c.NATS.StoreDir = t.TempDir()
	c.Zoom.ClientID, c.Zoom.ClientSecret, c.Zoom.BotJID = clientID, clientSecret, botJID
	c.Zoom.APIBaseURL, c.Zoom.OAuthBaseURL = zoomURL+"/v2", zoomURL
	c.Retry.Backoff = []config.Duration{config.Duration(50 * time.Millisecond)}
	c.Worker.HandlerTimeout = config.Duration(5 * time.Second)
	c.ShutdownTimeout = config.Duration(10 * time.Second)
	c.Regions = []config.Region{
		{Name: "us", Handler: config.HandlerEcho, Timeout: config.Duration(2 * time.Second)},
		{Name: "eu", Handler: config.HandlerHTTP, BackendURL: backendURL, Timeout: config.Duration(2 * time.Second)},
	}
	if err := c.Validate(config.RoleWorker); err != nil {
		t.Fatalf("test config is not valid: %v", err)
	}
	return c
}

func TestModuleValidates(t *testing.T) {
	t.Parallel()
	c := fxConfig(t, "http://127.0.0.1:1", "http://127.0.0.1:2/backend")
	for _, target := range []config.Target{{Name: config.TargetWorker}, {Name: config.TargetWorker, Region: "eu"}, {Name: config.TargetAll}} {
		if err := fx.ValidateApp(fx.Supply(c, target), platformfx.Module, workers.Module, fx.NopLogger); err != nil {
			t.Errorf("target %+v: %v", target, err)
		}
	}
	// Without the platform module the graph is incomplete.
	if err := fx.ValidateApp(fx.Supply(c, config.Target{Name: config.TargetWorker}), workers.Module, fx.NopLogger); err == nil {
		t.Error("workers.Module without the platform validated")
	}
}

// The module runs a worker per region of the target, each with its handler,
// replying through the configured Zoom, and stops them cleanly.
func TestModuleRunsAWorkerPerRegion(t *testing.T) {
	t.Parallel()
	z := newFakeZoom(t, nil)
	backend := httptest.NewServer(http.HandlerFunc(sandbox.ExampleBackend))
	t.Cleanup(backend.Close)
	c := fxConfig(t, z.URL, backend.URL+"/example-backend")

	var (
		js     jetstream.JetStream
		hc     *retryablehttp.Client
		checks *health.Registry
	)
	app := fxtest.New(t, fx.Supply(c, config.Target{Name: config.TargetWorker}), platformfx.Module, workers.Module,
		fx.Populate(&js, &hc, &checks), fx.NopLogger)
	t.Cleanup(func() { hc.HTTPClient.CloseIdleConnections() })
	app.RequireStart()

	if ok, failures := checks.Report(); !ok {
		t.Errorf("not ready after start: %v", failures)
	}
	publish(t, js, "us", zoom.EventBotNotification, "acct-us", zoomtest.BotNotification("acct-us", "hello us", 1))
	publish(t, js, "eu", zoom.EventBotNotification, "acct-eu", zoomtest.BotNotification("acct-eu", "hello eu", 2))
	natstest.Eventually(t, waitFor, func() bool { return len(z.SB.Delivered()) == 2 }, "both regions to reply")
	waitEventsGone(t, js, "us")
	waitEventsGone(t, js, "eu")

	byAccount := map[string]string{}
	for _, d := range z.SB.Delivered() {
		byAccount[d.Message.AccountID] = d.Text
		if d.Message.RobotJID != botJID {
			t.Errorf("robot_jid = %q", d.Message.RobotJID)
		}
	}
	if got := byAccount["acct-us"]; got != "hello us" {
		t.Errorf("us (echo) replied %q, want %q", got, "hello us")
	}
	if got := byAccount["acct-eu"]; got != "You said: *hello eu*" {
		t.Errorf("eu (http backend) replied %q, want the example backend's %q", got, "You said: *hello eu*")
	}

	app.RequireStop()
	_, failures := checks.Report()
	for _, name := range []string{"worker-us", "worker-eu"} {
		if _, ok := failures[name]; !ok {
			t.Errorf("after stop, health check %s is missing or passing: %v", name, failures)
		}
	}
}

// A worker target for one region runs that region's worker only.
func TestModuleRunsOnlyTheTargetRegion(t *testing.T) {
	t.Parallel()
	z := newFakeZoom(t, nil)
	c := fxConfig(t, z.URL, "http://127.0.0.1:2/backend")

	var (
		js     jetstream.JetStream
		hc     *retryablehttp.Client
		checks *health.Registry
	)
	app := fxtest.New(t, fx.Supply(c, config.Target{Name: config.TargetWorker, Region: "us"}), platformfx.Module, workers.Module,
		fx.Populate(&js, &hc, &checks), fx.NopLogger)
	t.Cleanup(func() { hc.HTTPClient.CloseIdleConnections() })

	_, failures := checks.Report()
	var names []string
	for name := range failures {
		names = append(names, name)
	}
	slices.Sort(names)
	// Building the app does no I/O: NATS starts and connects at start.
	if !slices.Equal(names, []string{"jetstream", "nats", "worker-us"}) {
		t.Errorf("before start, unready checks = %q, want jetstream, nats and worker-us", names)
	}

	app.RequireStart()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := js.Stream(ctx, proto.RegionEventsStream("us")); err != nil {
		t.Errorf("us events stream: %v", err)
	}
	if _, err := js.Stream(ctx, proto.RegionEventsStream("eu")); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("eu events stream: %v, want not found (no eu worker)", err)
	}
	app.RequireStop()
}
