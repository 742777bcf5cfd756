package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"go.uber.org/dig"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/ingress"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directoryfx"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/platformfx"
	"github.com/geomux/geomux/pkg/zapfx"
	workers "github.com/geomux/geomux/regional-workers"
	"github.com/geomux/geomux/router"
)

func newRunCmd() *cobra.Command {
	var path string
	var target config.Target
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run geomux: everything in one process, or one role",
		Long: `Run geomux.

--target all (the default) runs ingress, router and a worker per region in one
process. With nats.url empty it starts an embedded nats-server with JetStream,
storing under nats.store_dir and listening on nats.listen.

--target ingress|router|worker runs one role, normally against a NATS cluster
(nats.url); --region restricts a worker to one region.

SIGINT or SIGTERM stops it gracefully: /readyz turns 503, the listener stops
accepting, in-flight requests finish, consumers drain; shutdown_timeout bounds
it all.`,
		Example: `  geomux run --config deploy/local/geomux.yaml
  geomux run --config hub.yaml --target router
  geomux run --config eu.yaml --target worker --region eu`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := target.Validate(); err != nil {
				return usageError{err}
			}
			cfg, err := loadConfig(path, target.Roles()...)
			if err != nil {
				return err
			}
			if err := target.Check(cfg); err != nil {
				return usageError{err}
			}
			return runApp(cmd.Context(), cfg, target)
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().StringVarP(&target.Name, "target", "t", config.TargetAll, "what to run: all, ingress, router or worker")
	cmd.Flags().StringVarP(&target.Region, "region", "r", "", "with --target worker: run only this region's worker (default: every configured region)")
	return cmd
}

// newApp composes the fx application for a target.
func newApp(cfg config.Config, target config.Target, extra ...fx.Option) *fx.App {
	opts := []fx.Option{
		fx.Supply(cfg, target),
		platformfx.Module,
		fx.WithLogger(zapfx.EventLogger),
		fx.StartTimeout(cfg.NATS.ConnectTimeout.D() + 30*time.Second),
		fx.StopTimeout(cfg.ShutdownTimeout.D()),
	}
	// Modules start in this order and stop in reverse: workers first, so
	// that the router's first events find them; ingress last, so that on
	// stop it is the first to stop taking events.
	if target.Has(config.RoleWorker) {
		opts = append(opts, workers.Module)
	}
	switch {
	case target.Has(config.RoleRouter):
		opts = append(opts, directoryfx.Module)
	case target.Has(config.RoleIngress):
		opts = append(opts, directoryfx.Remote)
	}
	if target.Has(config.RoleRouter) {
		opts = append(opts, router.Module)
	}
	if target.Has(config.RoleIngress) {
		opts = append(opts, ingress.Module)
	}
	opts = append(opts, fx.Invoke(announce, registerBuildInfo))
	return fx.New(append(opts, extra...)...)
}

// runApp runs until SIGINT or SIGTERM (or parent ends), then stops within
// shutdown_timeout. A signal during the start aborts it; a second signal
// during the stop exits at once.
func runApp(parent context.Context, cfg config.Config, target config.Target) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	app := newApp(cfg, target)
	if err := app.Err(); err != nil {
		return fmt.Errorf("cannot start: %w", dig.RootCause(err))
	}
	startCtx, cancel := context.WithTimeout(parent, app.StartTimeout())
	defer cancel()
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-startCtx.Done():
		}
	}()
	if err := app.Start(startCtx); err != nil {
		return fmt.Errorf("cannot start: %w", dig.RootCause(err))
	}
	cancel()
	select {
	case <-sigs:
	case <-parent.Done():
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-sigs:
			fmt.Fprintln(os.Stderr, "geomux: second signal: exiting without finishing the stop")
			os.Exit(exitFailure)
		case <-stopped:
		}
	}()
	stopCtx, cancel := context.WithTimeout(context.Background(), app.StopTimeout())
	defer cancel()
	if err := app.Stop(stopCtx); err != nil {
		return fmt.Errorf("stopped uncleanly: %w", err)
	}
	return nil
}

// registerBuildInfo exports geomux_build_info{version,go_version} 1, so
// that dashboards and alerts can tell which build each process runs.
func registerBuildInfo(reg prometheus.Registerer) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "geomux_build_info",
		Help:        "Always 1; its labels say which geomux build this process runs.",
		ConstLabels: prometheus.Labels{"version": version, "go_version": runtime.Version()},
	}, func() float64 { return 1 }))
}

// announce logs when everything has started, and when stopping begins; at
// that first moment of a stop, /readyz turns 503. Its hook is appended last:
// it starts last and stops first.
func announce(lc fx.Lifecycle, log *zap.Logger, h *health.Registry, target config.Target, cfg config.Config) {
	fields := []zap.Field{logfields.Target(target.Name), zap.String("version", version)}
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			for _, w := range cfg.Warnings {
				log.Warn("Config warning", zap.String("warning", w))
			}
			log.Info("geomux started", fields...)
			return nil
		},
		OnStop: func(context.Context) error {
			h.SetStopping()
			log.Info("geomux stopping", fields...)
			return nil
		},
	})
}
