package topology

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/proto"
)

// Consumer is a durable consumer and the stream it reads.
type Consumer struct {
	Stream string
	Config jetstream.ConsumerConfig
}

// RouterInFlight bounds the routed events whose regional acknowledgement
// the router awaits, per transit stream.
const RouterInFlight = 4096

// RouterAckWait is how long the router has to place an event before it is
// delivered again. It is also how long the events on their way to a router
// wait when they are lost: the router's server killed, or the leader of
// their transit stream's consumer (their acknowledgements with it). Short,
// since routing takes milliseconds and the router gives up on a region's
// store after 2 s (a copy routed twice is dropped by the region's stream,
// Nats-Msg-Id); an event that waited for the ingress (the governor) has it
// restarted. It was 10 s, which a hub server's loss added to replies.
const RouterAckWait = 5 * time.Second

// RouterConsumer is the router's durable consumer on transit stream p.
func RouterConsumer(p int) Consumer {
	return Consumer{Stream: proto.TransitStream(p), Config: jetstream.ConsumerConfig{
		Durable:     proto.RouterConsumer,
		Description: "geomux router",
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     RouterAckWait,
		// The router never gives up on an event: a failed publish is retried
		// until the region takes it.
		MaxDeliver:    -1,
		MaxAckPending: 2 * RouterInFlight,
	}}
}

// ControlConsumer is the router's durable consumer on a region's control
// stream.
func ControlConsumer(region string) Consumer {
	return Consumer{Stream: proto.RegionControlStream(region), Config: jetstream.ConsumerConfig{
		Durable: proto.RouterConsumer, Description: "geomux router: requests of the region",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
	}}
}

// KeeperConsumer is the dead-letter keeper's durable consumer on a region's
// advisory stream.
func KeeperConsumer(region string) Consumer {
	return Consumer{Stream: proto.RegionAdvisoryStream(region), Config: jetstream.ConsumerConfig{
		Durable:     proto.DeadLetterKeeperConsumer,
		Description: "geomux: dead letters from max-deliveries advisories of region " + region,
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     30 * time.Second,
	}}
}

// WorkerSettings are what the workers' consumers are made from.
type WorkerSettings struct {
	// MaxAttempts is retry.max_attempts.
	MaxAttempts int
	// Concurrency is worker.concurrency (4096 when 0).
	Concurrency int
}

// DefaultWorkerConcurrency is worker.concurrency when it is not set.
const DefaultWorkerConcurrency = 4096

// WorkerConsumer is the workers' durable consumer on partition p of the
// region's events stream.
//
// An event is attempted at most retry.max_attempts times, counted in its
// record, not by JetStream: an event handed back without an attempt (its
// account held by Zoom's daily limit, a stop) uses none. MaxDeliver is a
// guard above that, against an event whose worker dies on every attempt:
// JetStream then raises the max-deliveries advisory, which the dead-letter
// keeper turns into a dead letter. A failed attempt asks for its retry
// itself (NakWithDelay); an attempt that never answers (the worker died) is
// redelivered once its ack wait is over.
//
// No BackOff: with one, nats-server adds the step's back-off (less the ack
// wait) to every NakWithDelay, and a retry asked for in 1 s came 76 s later.
func WorkerConsumer(region string, p int, s WorkerSettings) Consumer {
	concurrency := s.Concurrency
	if concurrency <= 0 {
		concurrency = DefaultWorkerConcurrency
	}
	c := jetstream.ConsumerConfig{
		Durable:       proto.WorkersConsumer(p),
		Description:   fmt.Sprintf("geomux workers of region %s, partition %d", region, p),
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: proto.RegionEventsPartitionFilter(region, p),
		// An event in hand has its ack wait restarted while it waits its
		// turn or runs, so that it is redelivered only when its worker is
		// gone: the ack wait is how long a killed worker's events (and the
		// conversations behind them) wait for another worker.
		AckWait:    WorkerAckWait,
		MaxDeliver: s.MaxAttempts + deliveryGuard,
		// The worker's own budget bounds what it holds; this bounds one
		// partition, so that a partition whose accounts flood it leaves
		// the budget to the others.
		MaxAckPending: max(concurrency/2, 256),
	}
	if p == 0 {
		// Partition 0 also takes the events an earlier version left on
		// the stream's single subject.
		c.FilterSubject, c.FilterSubjects = "", []string{proto.RegionEventsPartitionFilter(region, 0), proto.LegacyRegionEventsSubject(region)}
	}
	return Consumer{Stream: proto.RegionEventsStream(region), Config: c}
}

// WorkerConsumers are the workers' consumers of a region whose events
// stream has n partitions.
func WorkerConsumers(region string, n int, s WorkerSettings) []Consumer {
	cs := make([]Consumer, n)
	for p := range n {
		cs[p] = WorkerConsumer(region, p, s)
	}
	return cs
}

// WorkerAckWait is the workers' ack wait. An event in hand has it
// restarted while it waits its turn or runs (every WorkerAckWait/4, once
// held a third of it), whatever worker.handler_timeout is, so it bounds only
// how long an event waits when its delivery is lost: its worker killed, or
// the server the worker was connected to (what was on its way there is
// gone), and with it the later events of its conversation. Short for that,
// as a region's server loss adds it to the replies of those conversations;
// long enough that the restarts go through a busy moment (a restart is due
// at most 1.75 s after the last). It was handler_timeout + 2 s (12 s by
// default), then 6 s.
const WorkerAckWait = 3 * time.Second

// deliveryGuard is how many deliveries beyond retry.max_attempts an event
// may have before JetStream gives up on it: hand-backs that use no attempt
// (its account over its share, its conversation waiting, a daily-limit
// hold, a stop) come back after up to 9 s each (a hold: at the reset), so
// this is over four hours of an account's backlog draining; a worker that
// dies in every attempt (each delivery lost at its ack wait) is stopped
// after about as long.
const deliveryGuard = 2000
