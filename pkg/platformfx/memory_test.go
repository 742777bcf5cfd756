package platformfx

import (
	"runtime/debug"
	"testing"

	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
)

func startLimitMemory(t *testing.T, c config.Config) int64 {
	t.Helper()
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	app := fxtest.New(t, fx.Supply(c), fx.Provide(zap.NewNop), fx.Invoke(limitMemory))
	app.RequireStart().RequireStop()
	return debug.SetMemoryLimit(-1)
}

func TestMemoryLimitIsConfigured(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	if got := startLimitMemory(t, config.Config{MemoryLimit: 300 << 20}); got != 300<<20 {
		t.Fatalf("memory limit %d, want memory_limit's %d", got, 300<<20)
	}
}

func TestMemoryLimitLeavesGOMEMLIMIT(t *testing.T) {
	// The runtime read GOMEMLIMIT at start; here the variable only says
	// that it was set, so the limit in force must stay as it is.
	t.Setenv("GOMEMLIMIT", "1GiB")
	before := debug.SetMemoryLimit(-1)
	if got := startLimitMemory(t, config.Config{MemoryLimit: 300 << 20}); got != before {
		t.Fatalf("memory limit %d, want the one in force (%d): GOMEMLIMIT wins over memory_limit", got, before)
	}
}
