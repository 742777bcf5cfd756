package workers

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/zap"

	"github.com/geomux/geomux/proto"
)

// The region's answer to "which accounts does Zoom's daily limit hold?"
// (proto.RegionHoldsSubject), read from the region's pacing bucket: the hub's
// admin API and `geomux accounts` ask it, and the bucket stays in the region.

// answerHolds answers one request (the region service's holds endpoint).
func (w *Worker) answerHolds(req micro.Request) {
	var a proto.HoldsAnswer
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	holds, err := w.pace.holds(ctx)
	if err != nil {
		w.log.Warn("Held accounts not read", zap.Error(err))
		a.Error = "the region's pacing bucket could not be read"
	}
	a.Holds = holds
	if a.Holds == nil {
		a.Holds = []proto.Hold{}
	}
	_ = req.RespondJSON(a)
}

// holds lists the accounts held now, from the bucket.
func (p *pacer) holds(ctx context.Context) ([]proto.Hold, error) {
	now := p.now()
	wa, err := p.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = wa.Stop() }()
	var out []proto.Hold
	for {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case e := <-wa.Updates():
			if e == nil {
				return out, nil // every value present has come
			}
			var rec proto.PaceRecord
			if json.Unmarshal(e.Value(), &rec) == nil && rec.HeldUntil.After(now) {
				out = append(out, proto.Hold{AccountID: e.Key(), Region: p.region, HeldUntil: rec.HeldUntil, Rate: rec.Rate})
			}
		}
	}
}
