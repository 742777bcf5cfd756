package topology

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/proto"
)

// HubSite is the name of the hub's site.
const HubSite = "hub"

// Site is what geomux keeps on one NATS system for one owner: the hub, or
// one region. Every component sets up (or, with Options.Bind, checks) what
// it uses from here, `geomux setup` sets up all of it, and `geomux audit
// locality` checks each stream against the site that owns it.
type Site struct {
	// Name is HubSite or the region's name: whose data the site holds.
	Name      string
	Streams   []jetstream.StreamConfig
	Buckets   []jetstream.KeyValueConfig
	Consumers []Consumer
}

// Hub is the hub's site: the transit streams, the parked events, the
// directory's buckets and the router's consumers.
func Hub(o Options) Site {
	s := Site{Name: HubSite}
	for p := range o.transitPartitions() {
		s.Streams = append(s.Streams, TransitConfig(o, p))
		s.Consumers = append(s.Consumers, RouterConsumer(p))
	}
	s.Streams = append(s.Streams, ParkedStreamConfig(o))
	s.Buckets = []jetstream.KeyValueConfig{DirectoryConfig(o), ConflictsConfig(o), ChannelsConfig(o), InstallNoncesConfig(o)}
	return s
}

// Region is a region's site: its events and what its workers keep, and the
// consumers of its workers, of its dead-letter keeper and of the router (on
// the region's control stream).
func Region(name string, o Options) Site {
	s := Site{Name: name, Streams: []jetstream.StreamConfig{
		RegionEventsConfig(name, o), RegionDeadLetterConfig(name, o), RegionAdvisoryConfig(name, o),
		RegionAuditConfig(name, o), RegionControlConfig(name, o),
	}, Buckets: []jetstream.KeyValueConfig{RepliesConfig(name, o), RegionVaultConfig(name, o), RegionPacingConfig(name, o)}}
	s.Consumers = append(WorkerConsumers(name, o.partitions(), o.Workers), KeeperConsumer(name), ControlConsumer(name))
	return s
}

// Sites are the hub's site and each configured region's.
func Sites(c config.Config) []Site {
	o := OptionsFrom(c)
	sites := []Site{Hub(o)}
	for _, r := range c.Regions {
		sites = append(sites, Region(r.Name, o))
	}
	return sites
}

// StreamNames are the JetStream streams of the site, buckets included
// (a bucket is the stream KV_<bucket>).
func (s Site) StreamNames() []string {
	var names []string
	for _, c := range s.Streams {
		names = append(names, c.Name)
	}
	for _, c := range s.Buckets {
		names = append(names, "KV_"+c.Bucket)
	}
	return names
}

// Owner says whose data a stream holds, from its name: HubSite, a
// configured region's name, "unknown" for a geomux stream of no configured
// region, or "" for a stream that is not geomux's.
func Owner(name string, c config.Config) string {
	for _, s := range Sites(c) {
		for _, n := range s.StreamNames() {
			if n == name {
				return s.Name
			}
		}
	}
	if proto.IsTransitStream(name) {
		return HubSite // a transit stream beyond nats.transit_partitions
	}
	if strings.HasPrefix(name, "GEOMUX_") || strings.HasPrefix(name, "KV_geomux-") {
		return "unknown"
	}
	return ""
}

// EnsureStores sets up the site's streams and buckets, calling done after
// each.
func (s Site) EnsureStores(ctx context.Context, js jetstream.JetStream, done func(kind, name string)) error {
	for _, c := range s.Streams {
		if _, err := natsx.EnsureStream(ctx, js, c); err != nil {
			return err
		}
		done("stream", c.Name)
	}
	for _, c := range s.Buckets {
		if _, err := natsx.EnsureKeyValue(ctx, js, c); err != nil {
			return err
		}
		done("bucket", c.Bucket)
	}
	return nil
}

// EnsureConsumers sets up the site's durable consumers, calling done after
// each.
func (s Site) EnsureConsumers(ctx context.Context, js jetstream.JetStream, done func(kind, name string)) error {
	for _, c := range s.Consumers {
		if _, err := natsx.EnsureConsumer(ctx, js, c.Stream, c.Config); err != nil {
			return err
		}
		done("consumer", c.Stream+"/"+c.Config.Durable)
	}
	return nil
}

// Stream sets the stream up or, with Bind, checks that it exists.
func (o Options) Stream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if o.Bind {
		return natsx.BindStream(ctx, js, cfg.Name)
	}
	return natsx.EnsureStream(ctx, js, cfg)
}

// KeyValue sets the bucket up or, with Bind, checks that it exists.
func (o Options) KeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if o.Bind {
		return natsx.BindKeyValue(ctx, js, cfg.Bucket)
	}
	return natsx.EnsureKeyValue(ctx, js, cfg)
}

// Consumer sets a durable consumer up or, with Bind, checks that it exists.
func (o Options) Consumer(ctx context.Context, js jetstream.JetStream, c Consumer) (jetstream.Consumer, error) {
	if o.Bind {
		return natsx.BindConsumer(ctx, js, c.Stream, c.Config.Durable)
	}
	return natsx.EnsureConsumer(ctx, js, c.Stream, c.Config)
}
