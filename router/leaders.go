package router

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/natsx"
)

// The transit streams' leaders are kept on different servers: the ingress
// stores an event in another transit stream when its own has lost its
// leader, which works only if the others are led from elsewhere. JetStream
// elects leaders where it likes (the three can end up on one server, and do
// after a server comes back), so the router asks, from time to time, a
// stream whose leader leads another transit stream too to hand its
// leadership to a server that leads none (a leader step-down with a
// preferred server: data does not move).

// spreadEvery is how often the leaders are looked at.
const spreadEvery = 10 * time.Second

// leaderSpreader moves the transit streams' leaders apart.
type leaderSpreader struct {
	js      jetstream.JetStream
	streams []jetstream.Stream
	log     *zap.Logger
	// refused is set once a step-down is refused (the router's NATS user
	// may not ask for one): said once.
	refused bool
}

// run spreads the leaders until ctx ends.
func (s *leaderSpreader) run(ctx context.Context) {
	if len(s.streams) < 2 {
		return
	}
	t := time.NewTicker(spreadEvery)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, spreadEvery)
		s.spread(rctx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// spread moves at most one leader: the first transit stream whose leader
// also leads an earlier one, to a current replica that leads none.
func (s *leaderSpreader) spread(ctx context.Context) {
	leads := map[string]int{}
	var infos []*jetstream.StreamInfo
	for _, st := range s.streams {
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) == 0 {
			return // not clustered, or an election under way: look again later
		}
		leads[info.Cluster.Leader]++
		infos = append(infos, info)
	}
	for _, info := range infos {
		if leads[info.Cluster.Leader] < 2 {
			continue
		}
		for _, p := range info.Cluster.Replicas {
			if !natsx.CanLead(info.Cluster, p.Name) || leads[p.Name] > 0 {
				continue
			}
			err := natsx.StreamLeader(info.Config.Name).StepDown(ctx, s.js.Conn(), p.Name)
			if err != nil && !errors.Is(err, natsx.ErrAlreadyLeader) {
				if !s.refused {
					s.log.Warn("Transit stream's leader not moved; losing its server may turn events away", logfields.Stream(info.Config.Name), zap.Error(err))
				}
				s.refused = true
				return
			}
			s.refused = false
			s.log.Info("Transit stream's leader moved to a server leading no other", logfields.Stream(info.Config.Name),
				zap.String("from", info.Cluster.Leader), zap.String("to", p.Name))
			return
		}
	}
}
