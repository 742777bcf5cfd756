package workers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

// Taking events: one consumer per partition of the region's events stream,
// each delivering in stream order. Every event taken is held in memory until
// it is acknowledged, handed back or dead-lettered; the budget bounds what is
// held, and past it the consumers' callbacks wait, so that the backlog stays
// in JetStream.

// pullBatch is how many events a partition's consumer buffers ahead.
const pullBatch = 64

// consume starts a consumer on each partition of the events stream. The
// number of partitions is the stream's (its subject transform), so that
// workers whose config lags a change still read every partition.
func (w *Worker) consume(ctx context.Context) error {
	if err := w.dropLegacyConsumer(ctx); err != nil {
		return err
	}
	info, err := w.events.Info(ctx)
	if err != nil {
		return err
	}
	n := topology.PartitionsOf(info.Config)
	var all []jetstream.Consumer
	for _, c := range topology.WorkerConsumers(w.opts.Region, n, w.opts.ConsumerSettings()) {
		cons, err := w.opts.Streams.Consumer(ctx, w.js, c)
		if err != nil {
			return err
		}
		all = append(all, cons)
		cc, err := cons.Consume(w.take,
			jetstream.PullMaxMessages(pullBatch),
			jetstream.PullHeartbeat(natsx.PullHeartbeat),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if !errors.Is(err, jetstream.ErrNoHeartbeat) {
					w.log.Warn("Worker consume error", zap.Error(err))
				}
			}))
		if err != nil {
			return err
		}
		w.ccs = append(w.ccs, cc)
	}
	g := &leaderGatherer{js: w.js, events: w.events, consumers: all, replies: w.state.stream, log: w.log}
	w.loops.Add(1)
	go func() { defer w.loops.Done(); g.run(w.base) }()
	events := w.events
	w.unwatchRegion = w.metrics.watchRegion(w.opts.Region, func(ctx context.Context) (natsx.Backlog, error) {
		return natsx.BacklogOf(ctx, events, all...)
	}, w.dlq.Count)
	return nil
}

// dropLegacyConsumer removes the single consumer of earlier versions: a
// work-queue stream refuses consumers that overlap it. Its unacknowledged
// events stay in the stream and reach the partitions' consumers.
func (w *Worker) dropLegacyConsumer(ctx context.Context) error {
	if w.opts.Streams.Bind {
		return nil // geomux setup does it
	}
	err := w.events.DeleteConsumer(ctx, proto.LegacyWorkersConsumer)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("remove the consumer of an earlier version: %w", err)
	}
	return nil
}

// stopConsuming stops every partition's consumer; events buffered and not
// taken are redelivered after their ack wait.
func (w *Worker) stopConsuming() {
	if w.unwatchRegion != nil {
		w.unwatchRegion()
		w.unwatchRegion = nil
	}
	w.budget.close()
	for _, cc := range w.ccs {
		cc.Stop()
	}
	for _, cc := range w.ccs {
		<-cc.Closed()
	}
	w.ccs = nil
}

// paceIdle is how long an account's pace is kept in memory after its last
// send (the bucket keeps it longer).
const paceIdle = 10 * time.Minute

// eventOverhead is what an event held costs beyond its bytes: its headers
// parsed, its place in the schedule, and the stack of its attempt.
const eventOverhead = 4 << 10

// take holds an event delivered by a partition's consumer and hands it to
// the scheduler, first waiting for room in the budget.
func (w *Worker) take(m jetstream.Msg) {
	cost := int64(len(m.Data()) + eventOverhead)
	for k, vs := range m.Headers() {
		for _, v := range vs {
			cost += int64(len(k) + len(v))
		}
	}
	start := time.Now()
	_, _ = w.opts.Governor.Wait(context.Background())
	if !w.budget.acquire(cost) {
		_ = m.Nak() // stopping
		return
	}
	if time.Since(start) > topology.WorkerAckWait/4 {
		// It waited for the ingress or for room: restart its ack wait.
		_ = m.InProgress()
	}
	it := w.newItem(m, cost)
	res, out := w.sched.add(it)
	if out != nil {
		// Taken in exchange for it: a later event of its conversation.
		_ = out.msg().NakWithDelay(handBackDelay(out))
		w.budget.release(out.cost)
	}
	switch res {
	case kept:
		return
	case full:
		// Its account holds its share already: the event waits in
		// JetStream, in its place, and comes back later, the later the
		// more often it came. No attempt is used.
		_ = m.NakWithDelay(handBackDelay(it))
	case closing:
		_ = m.Nak()
	}
	w.budget.release(cost)
}

// newItem reads what scheduling needs of an event.
func (w *Worker) newItem(m jetstream.Msg, cost int64) *item {
	it := &item{cost: cost}
	it.touch()
	md, err := m.Metadata()
	it.d.Store(&delivery{msg: m, md: md})
	if it.err = err; err == nil {
		it.seq = md.Sequence.Stream
	}
	it.ev, it.bad = w.event(m)
	it.replay = m.Headers().Get(proto.HeaderReplay) != ""
	if a, c, ok := proto.SplitRegionEventSubject(w.opts.Region, m.Subject()); ok {
		it.conversation = a + "." + c
		it.filter = proto.RegionConversationFilter(w.opts.Region, a, c)
	} else {
		// An earlier version's subject: its events are one conversation.
		it.conversation = "legacy"
		it.filter = proto.LegacyRegionEventsSubject(w.opts.Region)
	}
	return it
}

// handBackDelay is how long an event handed back without an attempt waits:
// a second at first, doubling with each delivery up to 8 s, spread over a
// second. Short enough that an account's burst keeps its share of the
// worker busy as it drains, long enough that the events waiting in
// JetStream cost a few redeliveries a second each at most.
func handBackDelay(it *item) time.Duration {
	n := uint64(1)
	if md := it.meta(); md != nil {
		n = max(md.NumDelivered, 1)
	}
	return time.Second<<min(n-1, 3) + rand.N(time.Second)
}

// keepInHand restarts the ack wait of every event held long enough for it
// to matter (waiting its turn, its account's pace, or a slow backend), so
// that JetStream redelivers an event only when its worker is gone.
func (w *Worker) keepInHand(ctx context.Context) {
	t := time.NewTicker(topology.WorkerAckWait / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, it := range w.sched.heldLongerThan(topology.WorkerAckWait / 3) {
			_ = it.msg().InProgress()
			it.touch()
		}
		w.pace.sweep(paceIdle)
		w.sched.forgetFinished(topology.WorkerAckWait / 4)
	}
}
