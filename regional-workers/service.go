package workers

import (
	"fmt"

	"github.com/nats-io/nats.go/micro"

	"github.com/geomux/geomux/proto"
)

// serve starts the region's service (proto.RegionService), which the hub's
// admin API asks, each request answered by one worker of the region: which
// accounts Zoom's daily limit holds (holds.go) and what the region holds of
// an account (inventory.go). Both read in the region; only counts and ids
// leave it.
func (w *Worker) serve() error {
	region := w.opts.Region
	svc, err := micro.AddService(w.js.Conn(), micro.Config{
		Name:        proto.RegionService,
		Version:     proto.ServicesVersion,
		Description: "geomux: what region " + region + " holds (held accounts, an account's inventory)",
		Metadata:    map[string]string{"region": region},
	})
	if err == nil {
		err = svc.AddEndpoint("holds", micro.HandlerFunc(w.answerHolds),
			micro.WithEndpointSubject(proto.RegionHoldsSubject(region)), micro.WithEndpointQueueGroup(proto.HoldsQueue))
	}
	if err == nil {
		err = svc.AddEndpoint("inventory", micro.HandlerFunc(w.answerInventory),
			micro.WithEndpointSubject(proto.RegionInventorySubject(region)), micro.WithEndpointQueueGroup(proto.InventoryQueue))
	}
	if err == nil {
		// Once the server answers a ping it has the subscriptions: a worker
		// that says it is ready answers.
		err = w.js.Conn().Flush()
	}
	if err != nil {
		if svc != nil {
			_ = svc.Stop()
		}
		return fmt.Errorf("service of region %s: %w", region, err)
	}
	w.service = svc
	return nil
}
