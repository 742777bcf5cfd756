package router

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/proto"
)

// Parking.
//
// An event whose account has no region is published to the parked stream
// under the opaque key of its account (proto.ParkedSubject), and the transit
// copy is acknowledged. When the directory later gives the account a region,
// the unparker routes that account's parked events, oldest first, and deletes
// each from the parked stream once its region has stored it. At start, it
// sweeps the whole parked stream, for accounts that got a region while the
// router was down. A parked event is kept for router.park_ttl; after that
// JetStream discards it (the parked stream's MaxAge).

// sweepAll requests a sweep of every parked event.
const sweepAll = "*"

// unparker runs sweeps one at a time, in its own goroutine.
type unparker struct {
	r *Router

	mu     sync.Mutex
	want   map[string]bool
	signal chan struct{}

	cancel context.CancelFunc
	done   chan struct{}
}

func newUnparker(r *Router) *unparker {
	return &unparker{r: r, want: map[string]bool{}, signal: make(chan struct{}, 1)}
}

// request asks for the parked events of account (or sweepAll) to be routed.
func (u *unparker) request(account string) {
	if account == sweepAll {
		u.requestFilter(proto.ParkedSubjects)
		return
	}
	u.requestFilter(proto.ParkedSubject(account))
}

// requestChannel asks for the events parked under channel (they name no
// account) to be routed.
func (u *unparker) requestChannel(channel string) {
	u.requestFilter(proto.ParkedChannelSubject(channel))
}

func (u *unparker) requestFilter(filter string) {
	u.mu.Lock()
	u.want[filter] = true
	u.mu.Unlock()
	select {
	case u.signal <- struct{}{}:
	default:
	}
}

func (u *unparker) start() {
	ctx, cancel := context.WithCancel(context.Background())
	u.cancel, u.done = cancel, make(chan struct{})
	go u.run(ctx)
}

func (u *unparker) stop() {
	if u.cancel != nil {
		u.cancel()
		<-u.done
	}
}

func (u *unparker) run(ctx context.Context) {
	defer close(u.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.signal:
		}
		u.mu.Lock()
		todo := u.want
		u.want = map[string]bool{}
		u.mu.Unlock()
		for filter := range todo {
			if err := u.r.sweep(ctx, filter); err != nil {
				if ctx.Err() != nil {
					return
				}
				u.r.log.Warn("Routing parked events failed; will retry", zap.String("subject", filter), zap.Error(err))
				time.AfterFunc(time.Second, func() { u.requestFilter(filter) })
			}
		}
	}
}

// sweep routes the parked events matching filter whose account has a region
// by now, and deletes them from the parked stream. It walks the stream with
// direct reads of the next matching message: no consumer is created, and ctx
// bounds every step.
func (r *Router) sweep(ctx context.Context, filter string) error {
	for seq := uint64(1); ; {
		m, err := r.parked.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := r.unparkOne(ctx, m); err != nil {
			return err
		}
		seq = m.Sequence + 1
	}
}

func (r *Router) unparkOne(ctx context.Context, m *jetstream.RawStreamMsg) error {
	h := m.Header
	account, id := h.Get(proto.HeaderAccountID), h.Get(proto.HeaderEventID)
	app := r.appOf(h)
	if account == "" {
		var err error
		if account, err = r.channelAccount(h); err != nil || account == "" {
			return err // its channel's account is still unknown
		}
	}
	region, reason := r.route(app, account)
	if reason != "" {
		if _, byChannel := proto.ParkedChannelOf(m.Subject); byChannel {
			return r.reparkUnderAccount(ctx, m, account, reason)
		}
		return nil
	}
	conflicted := h.Get(proto.HeaderParkReason) == ParkConflict
	h.Set(jetstream.MsgIDHeader, id) // the region drops a second copy
	h.Set(proto.HeaderRegion, region)
	h.Del(proto.HeaderParkReason)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := r.regionJS[region].PublishMsg(pctx, &nats.Msg{Subject: regionSubject(region, h, m.Data), Header: h, Data: m.Data}); err != nil {
		return err
	}
	if _, err := natsx.DeleteMsg(pctx, r.parked, m.Sequence, false); err != nil {
		return err
	}
	r.metrics.Unparked.WithLabelValues(region).Inc()
	r.log.Info("Parked event routed", logfields.EventID(id), logfields.AccountID(account), logfields.Region(region), logfields.App(app))
	if conflicted && r.opts.Conflicts != nil {
		// The account and its app agree now.
		if err := r.opts.Conflicts.Resolve(pctx, account); err != nil {
			r.log.Warn("Settled conflict not forgotten", logfields.AccountID(account), zap.Error(err))
		}
	}
	return nil
}

// reparkUnderAccount moves an event parked under its channel, whose
// account is known now but has no region yet, to its account's parked
// subject: it is routed when the account gets its region.
func (r *Router) reparkUnderAccount(ctx context.Context, m *jetstream.RawStreamMsg, account, reason string) error {
	h := m.Header
	h.Set(proto.HeaderParkReason, reason)
	// Another id in the parked stream: under the event's own, JetStream
	// would drop this copy as the duplicate of the one it replaces.
	h.Set(jetstream.MsgIDHeader, h.Get(proto.HeaderEventID)+".account")
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := r.js.PublishMsg(pctx, &nats.Msg{Subject: proto.ParkedSubject(account), Header: h, Data: m.Data}); err != nil {
		return err
	}
	if _, err := natsx.DeleteMsg(pctx, r.parked, m.Sequence, false); err != nil {
		return err
	}
	r.log.Info("Parked event's account found; it waits for the account's region", logfields.EventID(h.Get(proto.HeaderEventID)), logfields.AccountID(account))
	return nil
}
