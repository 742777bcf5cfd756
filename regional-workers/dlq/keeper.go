package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

// LastError tells the keeper what a worker recorded of an event's last
// failed attempt: its error text, HTTP status (or 0) and time; ok is false if
// nothing was recorded.
type LastError func(ctx context.Context, accountID, eventID string) (msg string, status int, at time.Time, ok bool)

// Keeper turns JetStream's max-deliveries advisories of a region into dead
// letters.
//
// A worker that sees an event fail for good stores its dead letter itself,
// then terminates it. But if the worker dies during every attempt (a crash, a
// kill, an event that brings the process down), nobody decides anything:
// JetStream stops delivering the event after retry.max_attempts deliveries
// and publishes a max-deliveries advisory, leaving the event in the region's
// work-queue stream. The advisory stream (proto.RegionAdvisoryStream) keeps
// the advisory durably; the keeper reads it, stores the dead letter, and only
// then removes the event from the events stream and acknowledges the
// advisory. A keeper that dies midway sees the advisory again, and the dead
// letter's Nats-Msg-Id keeps it single.
type Keeper struct {
	js        jetstream.JetStream
	region    string
	streams   topology.Options
	lastError LastError
	log       *zap.Logger
	events    jetstream.Stream
	cc        jetstream.ConsumeContext
	onDead    func(reason string)
}

// NewKeeper returns the keeper of region. onDead, if set, is called for each
// dead letter stored.
func NewKeeper(js jetstream.JetStream, region string, so topology.Options, lastError LastError, onDead func(reason string), log *zap.Logger) *Keeper {
	return &Keeper{js: js, region: region, streams: so, lastError: lastError, onDead: onDead, log: log}
}

// Start consumes the region's advisories. The streams must exist.
func (k *Keeper) Start(ctx context.Context) error {
	events, err := k.js.Stream(ctx, proto.RegionEventsStream(k.region))
	if err != nil {
		return fmt.Errorf("dlq keeper: %w", err)
	}
	k.events = events
	cons, err := k.streams.Consumer(ctx, k.js, topology.KeeperConsumer(k.region))
	if err != nil {
		return err
	}
	k.cc, err = cons.Consume(k.handle, jetstream.PullMaxMessages(16),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				k.log.Warn("Dead-letter keeper consume error", zap.Error(err))
			}
		}))
	return err
}

// Stop stops consuming, letting the advisory in hand finish (bounded by ctx).
func (k *Keeper) Stop(ctx context.Context) error {
	if k.cc == nil {
		return nil
	}
	k.cc.Drain()
	select {
	case <-k.cc.Closed():
	case <-ctx.Done():
		k.cc.Stop()
		return ctx.Err()
	}
	k.cc = nil
	return nil
}

// advisory is JetStream's io.nats.jetstream.advisory.v1.max_deliver.
type advisory struct {
	Stream     string `json:"stream"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

func (k *Keeper) handle(m jetstream.Msg) {
	var a advisory
	if err := json.Unmarshal(m.Data(), &a); err != nil || a.StreamSeq == 0 {
		k.log.Error("Unreadable max-deliveries advisory; discarded", zap.Error(err))
		_ = m.Term()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.deadLetter(ctx, a); err != nil {
		k.log.Warn("Dead letter from advisory not stored; will retry", logfields.Sequence(a.StreamSeq), zap.Error(err))
		_ = m.NakWithDelay(5 * time.Second)
		return
	}
	_ = m.Ack()
}

func (k *Keeper) deadLetter(ctx context.Context, a advisory) error {
	ev, err := k.events.GetMsg(ctx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // handled meanwhile (acknowledged late, or dead-lettered by its worker)
	}
	if err != nil {
		return err
	}
	id := ev.Header.Get(proto.HeaderEventID)
	f := Failure{
		Reason:       proto.DeadReasonMaxAttempts,
		Error:        "no attempt finished: the worker stopped or was killed during every attempt",
		Attempts:     int(a.Deliveries),
		FirstAttempt: ev.Time,
		LastAttempt:  time.Now(),
		SkippedOver:  true,
	}
	if msg, status, at, ok := k.lastError(ctx, ev.Header.Get(proto.HeaderAccountID), id); ok {
		f.Error, f.Status, f.LastAttempt = msg, status, at
	}
	if _, err := k.js.PublishMsg(ctx, NewMsg(k.region, ev.Data, ev.Header, a.StreamSeq, f)); err != nil {
		return err
	}
	if _, err := natsx.DeleteMsg(ctx, k.events, a.StreamSeq, false); err != nil {
		return err
	}
	if k.onDead != nil {
		k.onDead(f.Reason)
	}
	k.log.Error("Event dead-lettered after its deliveries ran out", logfields.EventID(id),
		logfields.AccountID(ev.Header.Get(proto.HeaderAccountID)), logfields.Region(k.region), logfields.Attempt(f.Attempts), logfields.Reason(f.Reason))
	return nil
}
