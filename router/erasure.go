package router

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/proto"
)

// Erasure everywhere.
//
// An uninstall (app_deauthorized) goes to its account's region, which
// erases what it holds of the account. An account may have lived in another
// region before an operator moved it, and that region still holds its
// tokens, dead letters and reply records: so the router also puts a copy of
// the uninstall in every other configured region (proto.HeaderErasure),
// and acknowledges the uninstall only once every region has stored its
// copy. A copy holds the account id and the uninstall's time, nothing that
// Zoom sent about the user. A region out of reach holds the uninstall back
// (it waits in the transit stream) until every region can take its copy.
// Once stored, the account's events parked in the hub are erased too.

// erasureCopies publishes a copy of an uninstall to every region but
// routed (the region the uninstall itself goes to; "" when none). ok is
// false when a region cannot take its copy now: nothing was published, and
// the uninstall waits.
func (r *Router) erasureCopies(h nats.Header, account, id, routed string) (futs []jetstream.PubAckFuture, ok bool) {
	var to []string
	for _, region := range r.opts.Regions {
		if region == routed {
			continue
		}
		if l := r.lanes[region]; !l.conn.IsConnected() || len(l.ch) == cap(l.ch) {
			r.metrics.Deferred.WithLabelValues(region).Inc()
			return nil, false
		}
		to = append(to, region)
	}
	from := routed
	if from == "" {
		from = "none"
	}
	for _, region := range to {
		m := nats.NewMsg(proto.RegionEventSubject(region, account, proto.AccountConversation))
		for _, k := range []string{proto.HeaderEventType, proto.HeaderApp, proto.HeaderReceivedAt} {
			if v := h.Get(k); v != "" {
				m.Header.Set(k, v)
			}
		}
		m.Header.Set(proto.HeaderEventID, id)
		m.Header.Set(proto.HeaderAccountID, account)
		m.Header.Set(proto.HeaderRegion, region)
		m.Header.Set(proto.HeaderConversation, proto.AccountConversation)
		m.Header.Set(proto.HeaderErasure, from)
		// The region's stream drops a copy published again (the uninstall
		// handed back and read anew).
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Data = erasureBody(account)
		fut, err := r.regionJS[region].PublishMsgAsync(m)
		if err != nil {
			r.metrics.Failures.Inc()
			r.failLog.Warn("Erasure copy not published; will retry", logfields.EventID(id), logfields.AccountID(account), logfields.Region(region), zap.Error(err))
			return nil, false
		}
		futs = append(futs, fut)
	}
	return futs, true
}

// erasureBody is a copy's body: Zoom's event name and the account, nothing
// of the user who uninstalled.
func erasureBody(account string) []byte {
	b, _ := json.Marshal(map[string]any{"event": "app_deauthorized", "payload": map[string]string{"account_id": account}})
	return b
}

// awaitAll waits until every future is stored, one fails, or the router stops.
func (r *Router) awaitAll(futs []jetstream.PubAckFuture) error {
	for _, f := range futs {
		select {
		case <-r.stopping:
			return errStopping
		case <-f.Ok():
		case err := <-f.Err():
			return err
		}
	}
	return nil
}

var errStopping = errors.New("router: stopping")

// eraseParked deletes the account's events parked in the hub, after its
// uninstall was stored in every region.
func (r *Router) eraseParked(account, id string) {
	r.bg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		subj := proto.ParkedSubject(account)
		info, err := r.parked.Info(ctx, jetstream.WithSubjectFilter(subj))
		if err == nil && info.State.Msgs > 0 && len(info.State.Subjects) > 0 {
			err = r.parked.Purge(ctx, jetstream.WithPurgeSubject(subj))
		}
		if err != nil {
			r.log.Warn("Parked events of an uninstalled account not erased", logfields.EventID(id), logfields.AccountID(account), zap.Error(err))
			return
		}
		if n := info.State.Subjects[subj]; n > 0 {
			r.log.Info("Parked events of an uninstalled account erased", logfields.EventID(id), logfields.AccountID(account), logfields.Count(int(n)))
		}
	})
}
