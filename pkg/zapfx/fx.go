// Package zapfx provides geomux's *zap.Logger to an fx app and routes fx's
// own events through it.
package zapfx

import (
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/logging"
)

// Module provides *zap.Logger built from config.Config's log section. Add
// fx.WithLogger(EventLogger) to the app for fx's own events.
var Module = fx.Module("zap",
	fx.Provide(func(c config.Config, lc fx.Lifecycle) (*zap.Logger, error) {
		l, err := logging.New(c.Log)
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StopHook(func() { _ = l.Sync() }))
		return l, nil
	}),
)

// EventLogger routes fx's own events through zap, at debug level. fx takes
// it only at the top level of an app: fx.WithLogger(zapfx.EventLogger).
func EventLogger(l *zap.Logger) fxevent.Logger {
	fl := &fxevent.ZapLogger{Logger: l.Named("fx")}
	fl.UseLogLevel(zapcore.DebugLevel)
	fl.UseErrorLevel(zapcore.DebugLevel)
	return fl
}
