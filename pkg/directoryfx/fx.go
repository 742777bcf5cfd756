// Package directoryfx provides the account → region directory and its admin
// API to the processes of the hub (ingress, router).
package directoryfx

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/admin"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/platformfx"
)

// Module provides *directory.Directory and adds the accounts API to admin.
var Module = fx.Module("directory",
	fx.Provide(
		NewDirectory,
		platformfx.AsAdminRoute(func(d *directory.Directory, c config.Config, log *zap.Logger) []admin.Route {
			return directory.NewAPI(d, c.RegionNames(), log.Named("admin")).Routes()
		}),
	),
)

// NewDirectory opens (creating if needed) the directory bucket.
func NewDirectory(js jetstream.JetStream, c config.Config) (*directory.Directory, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.NATS.ConnectTimeout.D())
	defer cancel()
	return directory.Open(ctx, js, natsx.StreamOptionsFrom(c))
}
