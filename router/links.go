package router

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

// Links to regions with NATS systems of their own.
//
// No server-side path joins the hub's NATS and a region's: the router, which
// holds a connection to each, is the only thing that carries anything across,
// and only this:
//   - events, into the region's events stream (router.go);
//   - install handovers, hub to region: the router's directory service
//     (directoryfx) records an install and hands the account's tokens to
//     the region's workers over the region's connection, in a request: the
//     tokens are in the router's memory for its time only;
//   - control requests, region to hub: an uninstalled account to remove
//     from the directory (proto.RegionControlStream, consumed here).

// link is the router's side of one separate region.
type link struct {
	cc jetstream.ConsumeContext
}

func (r *Router) startLinks(ctx context.Context) error {
	for _, region := range r.opts.Regions {
		rjs := r.regionJS[region]
		if rjs == r.js {
			continue
		}
		so := r.opts.Streams
		if _, err := so.Stream(ctx, rjs, topology.RegionControlConfig(region, so)); err != nil {
			return err
		}
		cons, err := so.Consumer(ctx, rjs, topology.ControlConsumer(region))
		if err != nil {
			return err
		}
		name := region
		var l link
		if l.cc, err = cons.Consume(func(m jetstream.Msg) { r.control(name, m) }); err != nil {
			return err
		}
		r.links = append(r.links, l)
	}
	return nil
}

func (r *Router) stopLinks() {
	for _, l := range r.links {
		l.cc.Drain()
		<-l.cc.Closed()
	}
	r.links = nil
}

// control carries out a region's request.
func (r *Router) control(region string, m jetstream.Msg) {
	var req proto.ControlRequest
	if err := json.Unmarshal(m.Data(), &req); err != nil || req.RemoveAccount == "" {
		r.log.Error("Unreadable control request; discarded", logfields.Region(region))
		_ = m.Term()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r.opts.RemoveAccount == nil {
		_ = m.NakWithDelay(time.Minute)
		return
	}
	if err := r.opts.RemoveAccount(ctx, req.RemoveAccount); err != nil {
		r.log.Warn("Directory removal failed; will retry", logfields.AccountID(req.RemoveAccount), zap.Error(err))
		_ = m.NakWithDelay(5 * time.Second)
		return
	}
	r.log.Info("Uninstalled account removed from the directory", logfields.AccountID(req.RemoveAccount), logfields.Region(region))
	_ = m.Ack()
}
