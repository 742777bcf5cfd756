package ingress_test

import (
	"net/http"
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/goleak"

	"github.com/geomux/geomux/ingress"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directoryfx"
	"github.com/geomux/geomux/pkg/platformfx"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The ingress module on the platform, as `geomux run --target ingress` runs
// it: it starts, takes a webhook, and stops.
func TestModule(t *testing.T) {
	cfg := config.Default()
	cfg.Log.Level = "error"
	cfg.NATS.StoreDir, cfg.NATS.Listen = t.TempDir(), ""
	cfg.Ingress.Listen, cfg.Admin.Listen = "127.0.0.1:0", ""
	cfg.Zoom.WebhookSecretTokens = []string{secret}
	cfg.Regions = []config.Region{{Name: "eu", Handler: config.HandlerEcho, Timeout: config.Duration(time.Second)}}
	if err := cfg.Validate(config.RoleIngress); err != nil {
		t.Fatal(err)
	}
	var srv *ingress.Server
	app := fxtest.New(t,
		fx.Supply(cfg, config.Target{Name: config.TargetIngress}),
		platformfx.Module, directoryfx.Module, ingress.Module,
		fx.Populate(&srv),
	)
	app.RequireStart()
	status, err := zoomtest.Post(http.DefaultClient, "http://"+srv.Addr()+ingress.WebhookPath, secret, zoomtest.Event("bot_notification"))
	if err != nil || status != http.StatusOK {
		t.Errorf("webhook: %d %v", status, err)
	}
	app.RequireStop()
}
