package router_test

import (
	"testing"
	"time"

	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/goleak"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directoryfx"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/platformfx"
	"github.com/geomux/geomux/router"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The router module on the platform, as `geomux run --target router` runs
// it: it starts ready and stops.
func TestModule(t *testing.T) {
	cfg := config.Default()
	cfg.Log.Level = "error"
	cfg.NATS.StoreDir, cfg.NATS.Listen = t.TempDir(), ""
	cfg.Admin.Listen = ""
	cfg.Regions = []config.Region{{Name: "eu", Handler: config.HandlerEcho, Timeout: config.Duration(time.Second)}}
	if err := cfg.Validate(config.RoleRouter); err != nil {
		t.Fatal(err)
	}
	var h *health.Registry
	app := fxtest.New(t,
		fx.Supply(cfg, config.Target{Name: config.TargetRouter}),
		platformfx.Module, directoryfx.Module, router.Module,
		fx.Populate(&h),
	)
	app.RequireStart()
	if ok, failing := h.Report(); !ok {
		t.Errorf("not ready after start: %v", failing)
	}
	app.RequireStop()
}
