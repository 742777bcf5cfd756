// Package directoryfx provides the account → region directory: to the
// router, which holds it (and serves the accounts admin API and the
// ingress's directory requests), and to an ingress on its own, which only
// asks the router.
package directoryfx

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/admin"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/natsfx"
	"github.com/geomux/geomux/pkg/platformfx"
	"github.com/geomux/geomux/pkg/topology"
)

// Module provides *directory.Directory (and it as directory.Store), serves
// the accounts admin API and answers the ingress's directory requests. It
// goes with the router.
var Module = fx.Module("directory",
	fx.Provide(
		NewDirectory,
		NewConflicts,
		NewChannels,
		NewInstaller,
		func(i directory.Local) directory.Installer { return i },
		platformfx.AsAdminRoute(func(d *directory.Directory, cf *directory.Conflicts, regions natsfx.Regions, js jetstream.JetStream, c config.Config, log *zap.Logger) []admin.Route {
			h := &directory.Holds{Regions: map[string]*nats.Conn{}}
			inv := &directory.Inventories{Regions: map[string]*nats.Conn{}, Hub: js}
			for name, r := range regions {
				h.Regions[name] = r.Conn
				inv.Regions[name] = r.Conn
			}
			return directory.NewAPI(d, c.RegionNames(), log.Named("admin")).WithConflicts(cf).WithHolds(h).WithInventories(inv).WithParked(js).Routes()
		}),
	),
	fx.Invoke(serve),
)

// Remote provides directory.Installer as requests to the router: for an ingress
// that runs without one.
var Remote = fx.Module("directory-remote",
	fx.Provide(func(nc *nats.Conn) directory.Installer { return directory.Remote{Conn: nc} }),
)

// bucket is a hub bucket opened (created if needed) at start, before the
// parts that use it start.
type bucket interface {
	OpenBucket(ctx context.Context, js jetstream.JetStream, o topology.Options) error
}

func openAtStart[B bucket](lc fx.Lifecycle, js jetstream.JetStream, c config.Config, b B) B {
	lc.Append(fx.StartHook(func(ctx context.Context) error { return b.OpenBucket(ctx, js, topology.OptionsFrom(c)) }))
	return b
}

// NewDirectory is the directory, its bucket opened at start.
func NewDirectory(lc fx.Lifecycle, js jetstream.JetStream, c config.Config) *directory.Directory {
	return openAtStart(lc, js, c, directory.Later())
}

// NewConflicts is the bucket of conflicts between pinned apps and the
// directory, opened at start.
func NewConflicts(lc fx.Lifecycle, js jetstream.JetStream, c config.Config) *directory.Conflicts {
	return openAtStart(lc, js, c, directory.LaterConflicts())
}

// NewChannels is the hub's record of which account owns each channel,
// opened at start.
func NewChannels(lc fx.Lifecycle, js jetstream.JetStream, c config.Config) *directory.Channels {
	return openAtStart(lc, js, c, directory.LaterChannels())
}

// NewInstaller records installs: the directory entry, and the tokens handed
// over to the region over the region's own connection.
func NewInstaller(d *directory.Directory, regions natsfx.Regions) directory.Local {
	conns := map[string]*nats.Conn{}
	for name, r := range regions {
		conns[name] = r.Conn
	}
	return directory.Local{Dir: d, HandOver: directory.HandOverTo(conns)}
}

func serve(lc fx.Lifecycle, nc *nats.Conn, inst directory.Local, log *zap.Logger) {
	var svc micro.Service
	lc.Append(fx.Hook{
		OnStart: func(context.Context) (err error) {
			svc, err = directory.Serve(nc, inst, log.Named("directory"))
			return err
		},
		OnStop: func(context.Context) error { return svc.Stop() },
	})
}
