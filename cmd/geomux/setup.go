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
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
	"github.com/geomux/geomux/regional-workers/dlq"
	"github.com/geomux/geomux/router"
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

// setup creates what the config's deployment needs, system by system.
func setup(ctx context.Context, out io.Writer, cfg config.Config) error {
	so := natsx.StreamOptionsFrom(cfg)
	so.Bind = false
	hub, hubJS, err := cliJetStream(cfg.NATS)
	if err != nil {
		return err
	}
	defer hub.Close()
	say := func(system, kind, name string) { fmt.Fprintf(out, "%-6s %-8s %s\n", system, kind, name) }
	for _, sc := range []jetstream.StreamConfig{natsx.IngressStreamConfig(so), natsx.ParkedStreamConfig(so)} {
		if _, err := natsx.EnsureStream(ctx, hubJS, sc); err != nil {
			return err
		}
		say("hub", "stream", sc.Name)
	}
	for _, kc := range []jetstream.KeyValueConfig{natsx.DirectoryConfig(so), natsx.ConflictsConfig(so), natsx.ChannelsConfig(so), natsx.InstallNoncesConfig(so)} {
		if _, err := natsx.EnsureKeyValue(ctx, hubJS, kc); err != nil {
			return err
		}
		say("hub", "bucket", kc.Bucket)
	}
	if _, err := so.Consumer(ctx, hubJS, proto.IngressStream, router.ConsumerConfig()); err != nil {
		return err
	}
	say("hub", "consumer", proto.IngressStream+"/"+proto.RouterConsumer)

	for _, r := range cfg.Regions {
		js := hubJS
		system := "hub"
		if r.NATS.Separate() {
			nc, rjs, err := cliJetStream(cfg.NATS.ForRegion(r))
			if err != nil {
				return fmt.Errorf("region %s: %w", r.Name, err)
			}
			defer nc.Close()
			js = rjs
			system = r.Name
		}
		for _, sc := range []jetstream.StreamConfig{
			natsx.RegionEventsConfig(r.Name, so), natsx.RegionDeadLetterConfig(r.Name, so),
			natsx.RegionAdvisoryConfig(r.Name, so), natsx.RegionAuditConfig(r.Name, so),
			natsx.RegionControlConfig(r.Name, so),
		} {
			if _, err := natsx.EnsureStream(ctx, js, sc); err != nil {
				return err
			}
			say(system, "stream", sc.Name)
		}
		for _, kc := range []jetstream.KeyValueConfig{natsx.RepliesConfig(r.Name, so), natsx.RegionVaultConfig(r.Name, so), natsx.RegionPacingConfig(r.Name, so)} {
			if _, err := natsx.EnsureKeyValue(ctx, js, kc); err != nil {
				return err
			}
			say(system, "bucket", kc.Bucket)
		}
		// A work-queue stream refuses overlapping consumers: the single
		// consumer of earlier versions goes before the partitions' come.
		if err := js.DeleteConsumer(ctx, proto.RegionEventsStream(r.Name), proto.LegacyWorkersConsumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("remove the consumer of an earlier version from %s: %w", proto.RegionEventsStream(r.Name), err)
		}
		type consumer struct {
			stream string
			cfg    jetstream.ConsumerConfig
		}
		var consumers []consumer
		for _, c := range workers.ConsumerConfigs(workers.Options{
			Region: r.Name, Retry: cfg.Retry, Concurrency: cfg.Worker.Concurrency, HandlerTimeout: cfg.Worker.HandlerTimeout.D(),
		}, cfg.Worker.Partitions) {
			consumers = append(consumers, consumer{proto.RegionEventsStream(r.Name), c})
		}
		consumers = append(consumers,
			consumer{proto.RegionAdvisoryStream(r.Name), dlq.KeeperConsumerConfig(r.Name)},
			consumer{proto.RegionControlStream(r.Name), router.ControlConsumerConfig()})
		for _, c := range consumers {
			if _, err := so.Consumer(ctx, js, c.stream, c.cfg); err != nil {
				return err
			}
			say(system, "consumer", c.stream+"/"+c.cfg.Durable)
		}
	}
	return nil
}
