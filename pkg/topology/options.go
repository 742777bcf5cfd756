package topology

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/config"
)

// Options are the settings the topology is made from: retention, limits
// and placement, from the config (OptionsFrom).
type Options struct {
	// DedupWindow is how long a region remembers an event it finished, and
	// the parked and dead-letter streams a Nats-Msg-Id (the event id).
	DedupWindow time.Duration
	// ParkTTL is how long a parked event is kept.
	ParkTTL time.Duration
	// DeadLetterMaxAge is how long a dead letter is kept.
	DeadLetterMaxAge time.Duration
	// ParkMaxBytes and DeadLetterMaxBytes cap the parked and dead-letter
	// streams (0: no cap); past them, new messages are refused.
	ParkMaxBytes, DeadLetterMaxBytes int64
	// Hub places the hub's streams and buckets (transit, parked, directory).
	Hub Placement
	// TransitInMemory keeps the transit and parked streams, which hold every
	// region's events, in memory: nothing of a region touches the hub's disk.
	TransitInMemory bool
	// Regions place each region's streams and buckets.
	Regions map[string]Placement
	// Partitions is how many partitions a region's events stream has
	// (worker.partitions); each is consumed apart.
	Partitions int
	// TransitPartitions is how many transit streams the hub has
	// (nats.transit_partitions): the ingress stores an event in another
	// when one does not answer (its leader lost), so that losing a hub
	// server turns no event away.
	TransitPartitions int
	// Workers are the settings of the workers' consumers.
	Workers WorkerSettings
	// Bind makes a component's start only check that its streams, buckets
	// and consumers exist, never create or change them: they are set up by
	// `geomux setup` with a deployer's credentials.
	Bind bool
}

// Placement is where a stream's replicas go.
type Placement struct {
	// Replicas is how many copies JetStream keeps (1 when 0).
	Replicas int
	// Tags pin the replicas to servers with all these server_tags.
	Tags []string
}

func (p Placement) stream(c *jetstream.StreamConfig) {
	c.Replicas = max(p.Replicas, 1)
	if len(p.Tags) > 0 {
		c.Placement = &jetstream.Placement{Tags: p.Tags}
	}
}

func (p Placement) kv(c *jetstream.KeyValueConfig) {
	c.Replicas = max(p.Replicas, 1)
	if len(p.Tags) > 0 {
		c.Placement = &jetstream.Placement{Tags: p.Tags}
	}
}

// OptionsFrom takes the stream settings from a config.
func OptionsFrom(c config.Config) Options {
	o := Options{
		DedupWindow:        c.NATS.DedupWindow.D(),
		ParkTTL:            c.Router.ParkTTL.D(),
		DeadLetterMaxAge:   c.Worker.DeadLetterMaxAge.D(),
		ParkMaxBytes:       int64(c.Router.ParkMaxBytes),
		DeadLetterMaxBytes: int64(c.Worker.DeadLetterMaxBytes),
		Hub:                Placement{Replicas: c.NATS.Replicas},
		TransitInMemory:    c.NATS.TransitStorage == "memory",
		Regions:            map[string]Placement{},
		Bind:               !c.NATS.ManageStreams,
		Partitions:         c.Worker.Partitions,
		TransitPartitions:  c.NATS.TransitPartitions,
		Workers: WorkerSettings{
			MaxAttempts: c.Retry.MaxAttempts, Concurrency: c.Worker.Concurrency,
		},
	}
	for _, r := range c.Regions {
		o.Regions[r.Name] = Placement{Replicas: r.NATS.Replicas, Tags: r.NATS.PlacementTags}
	}
	return o
}

func (o Options) transitStorage() jetstream.StorageType {
	if o.TransitInMemory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

func (o Options) transitPartitions() int {
	if o.TransitPartitions < 1 {
		return 1
	}
	return o.TransitPartitions
}

// Transit are the transit streams.
func (o Options) Transit() []jetstream.StreamConfig {
	cs := make([]jetstream.StreamConfig, o.transitPartitions())
	for p := range cs {
		cs[p] = TransitConfig(o, p)
	}
	return cs
}
