package workers

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/natsx"
)

// Keeping the region's leaders on one server. An event's way through the
// region needs three kinds of Raft group, each through its leader: the
// events stream (the router stores the event), its partition's consumer
// (which delivers it) and the replies bucket (its record, written before
// each reply). A group whose leader's server is lost does nothing until
// its other servers elect a leader, which nats-server does 4 to 9 s after
// the leader's last heartbeat. JetStream places these leaders anywhere, so
// losing almost any server of a region stalls a part of it. The workers ask
// each consumer's and the bucket's leader, from time to time, to hand its
// leadership to the server that leads the events stream (a step-down with
// a preferred server: no election, no data moved). Then losing any other
// server costs nothing, and losing that one costs one election, the groups
// electing at once.

// gatherEvery is how often the leaders are looked at.
const gatherEvery = 10 * time.Second

// leaderGatherer moves the region's leaders to the events stream's leader.
type leaderGatherer struct {
	js        jetstream.JetStream
	events    jetstream.Stream
	consumers []jetstream.Consumer
	// replies is the replies bucket's stream (KV_<bucket>).
	replies string
	log     *zap.Logger
	// refused is set once a step-down is refused (the workers' NATS user
	// may not ask for one): said once.
	refused bool
}

// run gathers the leaders until ctx ends; the first look is soon, then
// each worker process looks at its own times.
func (g *leaderGatherer) run(ctx context.Context) {
	wait := time.Second + rand.N(time.Second)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		rctx, cancel := context.WithTimeout(ctx, gatherEvery)
		g.gather(rctx)
		cancel()
		wait = gatherEvery + rand.N(gatherEvery/5)
	}
}

// gather moves every group not led from the events stream's leader there.
func (g *leaderGatherer) gather(ctx context.Context) {
	info, err := g.events.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) == 0 {
		return // not clustered, or an election under way: look again later
	}
	to := info.Cluster.Leader
	for _, c := range g.consumers {
		ci, err := c.Info(ctx)
		if err != nil {
			continue
		}
		if !g.follow(ctx, natsx.ConsumerLeader(ci.Stream, ci.Name), ci.Cluster, to) {
			return
		}
	}
	if st, err := g.js.Stream(ctx, g.replies); err == nil {
		g.follow(ctx, natsx.StreamLeader(g.replies), st.CachedInfo().Cluster, to)
	}
}

// follow moves the group's leader to server to, if it leads elsewhere and
// to is a current replica; false when a step-down was refused.
func (g *leaderGatherer) follow(ctx context.Context, grp natsx.LeaderGroup, c *jetstream.ClusterInfo, to string) bool {
	if c == nil || c.Leader == "" || c.Leader == to || !natsx.CanLead(c, to) {
		return true
	}
	err := grp.StepDown(ctx, g.js.Conn(), to)
	switch {
	case err == nil:
		g.refused = false
		g.log.Info("Leader moved to the events stream's server", zap.String("group", grp.Kind), zap.String("name", grp.Name),
			zap.String("from", c.Leader), zap.String("to", to))
	case errors.Is(err, natsx.ErrAlreadyLeader):
	default:
		if !g.refused && ctx.Err() == nil {
			g.log.Warn("Leader not moved; losing its server costs the region an election", zap.String("group", grp.Kind),
				zap.String("name", grp.Name), zap.Error(err))
		}
		g.refused = true
		return false
	}
	return true
}
