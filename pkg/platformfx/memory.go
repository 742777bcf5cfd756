package platformfx

import (
	"context"
	"errors"
	"os"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
)

// containerShare is the part of a container's memory limit that becomes the
// Go memory limit when memory_limit is 0: the rest is for what the Go
// runtime does not count (thread stacks, the page cache charged to the
// container).
const containerShare = 0.9

// limitMemory sets the process's soft memory limit at start: memory_limit,
// else containerShare of the cgroup's limit, unless GOMEMLIMIT is set. Near
// the limit the garbage collector runs more often; the governor then holds
// processing back, so the backlog waits in JetStream, on disk.
func limitMemory(lc fx.Lifecycle, log *zap.Logger, c config.Config) {
	lc.Append(fx.Hook{OnStart: func(context.Context) error {
		provider, ratio, from := memlimit.FromCgroup, containerShare, "container"
		if c.MemoryLimit > 0 {
			provider, ratio, from = memlimit.Limit(uint64(c.MemoryLimit)), 1, "memory_limit"
		}
		if os.Getenv("GOMEMLIMIT") != "" {
			from = "GOMEMLIMIT"
		}
		limit, err := memlimit.Set(memlimit.WithProvider(provider), memlimit.WithRatio(ratio))
		switch {
		case errors.Is(err, memlimit.ErrCgroupsNotSupported), errors.Is(err, memlimit.ErrNoCgroup):
		case err != nil:
			// Running without a limit is what Go does by default: say so
			// and go on.
			log.Warn("Cannot read the container's memory limit", zap.Error(err))
		case limit > 0 && limit < 1<<62:
			log.Info("Memory limit set", zap.Int64("bytes", limit), zap.String("from", from))
		}
		return nil
	}})
}
