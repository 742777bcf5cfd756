// Package vaultfx runs the token vault of each region whose workers run in
// this process: the region's vault bucket opened at start, and its vault
// service taking the tokens installs hand over (vault.Serve).
package vaultfx

import (
	"context"

	"github.com/nats-io/nats.go/micro"
	"go.uber.org/fx"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/natsfx"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/vault"
	"github.com/geomux/geomux/pkg/zoom"
)

// Module provides Vaults. It goes with the workers, which use them.
var Module = fx.Module("vault", fx.Provide(NewVaults))

// Vaults are the regions' vaults, by region; a region without a vault_key
// has none.
type Vaults map[string]*vault.Vault

// Params are NewVaults' dependencies.
type Params struct {
	fx.In
	Lifecycle fx.Lifecycle
	Config    config.Config
	Target    config.Target
	Regions   natsfx.Regions
	Zoom      *zoom.Client
	Log       *zap.Logger
}

// NewVaults makes each region's vault, opened and served at start.
func NewVaults(p Params) (Vaults, error) {
	vs := Vaults{}
	so := topology.OptionsFrom(p.Config)
	for _, r := range p.Target.WorkerRegions(p.Config) {
		if r.VaultKey == "" {
			continue
		}
		key, err := vault.ParseKey(r.VaultKey)
		if err != nil {
			return nil, err // validated with the config already
		}
		v, js, region := vault.Later(key, p.Zoom), p.Regions[r.Name].JS, r.Name
		vs[region] = v
		var svc micro.Service
		p.Lifecycle.Append(fx.Hook{
			OnStart: func(ctx context.Context) (err error) {
				if err := v.Open(ctx, js, region, so); err != nil {
					return err
				}
				svc, err = vault.Serve(js.Conn(), region, v, p.Log.Named("vault").With(logfields.Region(region)))
				return err
			},
			OnStop: func(context.Context) error { return svc.Stop() },
		})
	}
	return vs, nil
}
