package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

func newSetupCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Create or update every stream, bucket and consumer, with their placement",
		Long: `Create or update every stream, key-value bucket and durable consumer geomux
uses, on the hub's NATS and on each region's, with the replicas and placement
tags of the config. Run it with a deployer's credentials, where the processes'
own credentials may not manage streams (nats.manage_streams: false): a stream
update can move a stream, and its data, elsewhere.`,
		Example: "  geomux setup --config deploy/supercluster/deployer.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(path, config.RoleTool)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			return setup(ctx, cmd.OutOrStdout(), cfg)
		},
	}
	configFlag(cmd, &path)
	return cmd
}

// setup creates what the config's deployment needs, site by site, as the
// topology describes it.
func setup(ctx context.Context, out io.Writer, cfg config.Config) error {
	_, systems, closeAll, err := cliSystems(cfg)
	defer closeAll()
	if err != nil {
		return err
	}
	for _, site := range topology.Sites(cfg) {
		system := site.Name
		if systems[system] == nil {
			system = topology.HubSite // a region on the hub's system
		}
		js := systems[system]
		say := func(kind, name string) { fmt.Fprintf(out, "%-6s %-8s %s\n", system, kind, name) }
		if err := site.EnsureStores(ctx, js, say); err != nil {
			return err
		}
		if site.Name != topology.HubSite {
			// A work-queue stream refuses overlapping consumers: the single
			// consumer of earlier versions goes before the partitions' come.
			if err := js.DeleteConsumer(ctx, proto.RegionEventsStream(site.Name), proto.LegacyWorkersConsumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return fmt.Errorf("remove the consumer of an earlier version from %s: %w", proto.RegionEventsStream(site.Name), err)
			}
		}
		if err := site.EnsureConsumers(ctx, js, say); err != nil {
			return err
		}
	}
	return nil
}
