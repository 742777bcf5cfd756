package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
)

// Sender sends chat messages to Zoom; *zoom.Client is one.
type Sender interface {
	SendMessage(ctx context.Context, m zoom.Message) (zoom.Sent, error)
}

// Options configure a Worker.
type Options struct {
	// Region is the region served; the worker reads only its subjects.
	Region string
	// BotJID is robot_jid in every message.
	BotJID string
	// Retry is the retry policy.
	Retry config.Retry
	// Concurrency is how many events are handled at once.
	Concurrency int
	// HandlerTimeout bounds one attempt at one event.
	HandlerTimeout time.Duration
	// Streams are the stream settings.
	Streams natsx.StreamOptions
}

// Worker handles one region's events. Build it with New, then Start and Stop.
type Worker struct {
	js      jetstream.JetStream
	handler Handler
	zoom    Sender
	opts    Options
	log     *zap.Logger
	metrics *Metrics

	replies jetstream.KeyValue
	cc      jetstream.ConsumeContext
	slots   chan struct{}
	mu      sync.Mutex // orders giveUp before wg.Add in dispatch
	wg      sync.WaitGroup
	base    context.Context
	cancel  context.CancelFunc
	running atomic.Bool
}

// New returns a worker for opts.Region.
func New(js jetstream.JetStream, h Handler, zc Sender, opts Options, m *Metrics, log *zap.Logger) *Worker {
	m.init(opts.Region)
	return &Worker{js: js, handler: h, zoom: zc, opts: opts, metrics: m,
		log: log.With(logfields.Region(opts.Region))}
}

// Start sets up the region's streams and bucket and starts consuming.
func (w *Worker) Start(ctx context.Context) error {
	region, so := w.opts.Region, w.opts.Streams
	if _, err := natsx.EnsureStream(ctx, w.js, natsx.RegionEventsStream(region, so)); err != nil {
		return err
	}
	if _, err := natsx.EnsureStream(ctx, w.js, natsx.RegionDeadLetterStream(region, so)); err != nil {
		return err
	}
	kv, err := natsx.EnsureKeyValue(ctx, w.js, natsx.RepliesBucket(region))
	if err != nil {
		return err
	}
	w.replies = kv
	cons, err := w.js.CreateOrUpdateConsumer(ctx, proto.RegionEventsStream(region), jetstream.ConsumerConfig{
		Durable:     proto.WorkersConsumer,
		Description: "geomux workers of region " + region,
		AckPolicy:   jetstream.AckExplicitPolicy,
		// A buffered event waits at most about one handler timeout for a
		// free slot, then takes at most one: it is never redelivered while
		// a worker still holds it.
		AckWait: 2*w.opts.HandlerTimeout + 5*time.Second,
		// One delivery beyond the attempts: an attempt cut short by a crash
		// is followed by one that dead-letters the event instead of leaving
		// it undeliverable in the stream.
		MaxDeliver:    w.opts.Retry.MaxAttempts + 1,
		MaxAckPending: 4 * w.opts.Concurrency,
	})
	if err != nil {
		return fmt.Errorf("worker consumer of region %s: %w", region, err)
	}
	w.slots = make(chan struct{}, w.opts.Concurrency)
	w.base, w.cancel = context.WithCancel(context.Background())
	w.cc, err = cons.Consume(w.dispatch,
		jetstream.PullMaxMessages(w.opts.Concurrency),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				w.log.Warn("Worker consume error", zap.Error(err))
			}
		}))
	if err != nil {
		return fmt.Errorf("worker consume of region %s: %w", region, err)
	}
	w.running.Store(true)
	w.log.Info("Worker started", zap.Int("concurrency", w.opts.Concurrency))
	return nil
}

// Ready reports whether the worker is consuming.
func (w *Worker) Ready() error {
	if !w.running.Load() {
		return errors.New("not consuming")
	}
	return nil
}

// Stop drains: no new events are fetched, and the events in hand finish,
// bounded by ctx. At the bound the worker gives up: attempts still running
// are cancelled and their events handed back (Nak) unacknowledged, so that
// they are redelivered at once to another worker or after a restart.
func (w *Worker) Stop(ctx context.Context) error {
	w.running.Store(false)
	if w.cc == nil {
		return nil
	}
	w.cc.Drain()
	var err error
	select {
	case <-w.cc.Closed():
	case <-ctx.Done():
		w.giveUp()
		w.cc.Stop()
		err = ctx.Err()
	}
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		w.giveUp()
		<-done
		err = ctx.Err()
	}
	w.giveUp()
	w.cc = nil
	return err
}

// giveUp cancels the attempts in hand and keeps dispatch from starting any.
// Once it has returned, no wg.Add can happen.
func (w *Worker) giveUp() {
	w.mu.Lock()
	w.cancel()
	w.mu.Unlock()
}

// dispatch hands an event to a free slot, waiting for one. After giveUp it
// hands the event back instead.
func (w *Worker) dispatch(m jetstream.Msg) {
	select {
	case w.slots <- struct{}{}:
	case <-w.base.Done():
		_ = m.Nak()
		return
	}
	w.mu.Lock()
	if w.base.Err() != nil {
		w.mu.Unlock()
		<-w.slots
		_ = m.Nak()
		return
	}
	w.wg.Add(1)
	w.mu.Unlock()
	go func() {
		defer func() { <-w.slots; w.wg.Done() }()
		w.process(m)
	}()
}

// process makes one attempt at an event and acknowledges, retries or
// dead-letters it.
func (w *Worker) process(m jetstream.Msg) {
	start := time.Now()
	md, err := m.Metadata()
	if err != nil {
		w.log.Error("Event without JetStream metadata; ignored", zap.Error(err))
		return
	}
	attempt := int(md.NumDelivered)
	ev, err := w.event(m)
	fields := []zap.Field{logfields.EventID(ev.ID), logfields.EventType(ev.Type), logfields.AccountID(ev.AccountID), logfields.Attempt(attempt)}
	if err != nil {
		w.deadLetter(m, md, proto.DeadReasonPermanent, err, fields)
		return
	}
	if attempt > w.opts.Retry.MaxAttempts {
		w.deadLetter(m, md, proto.DeadReasonMaxAttempts, errors.New("last attempt was interrupted"), fields)
		return
	}

	ctx, cancel := context.WithTimeout(w.base, w.opts.HandlerTimeout)
	err = w.handle(ctx, ev, attempt > 1)
	cancel()
	w.metrics.HandleSeconds.WithLabelValues(w.opts.Region).Observe(time.Since(start).Seconds())

	switch {
	case err == nil:
		// The replies are out: the ack must go even if Stop is giving up,
		// or the event would be redelivered and answered twice.
		actx, acancel := context.WithTimeout(context.WithoutCancel(w.base), 5*time.Second)
		err := m.DoubleAck(actx)
		acancel()
		if err != nil {
			w.log.Warn("Ack failed; the event may be handled again", append(fields, zap.Error(err))...)
		}
		w.metrics.Handled.WithLabelValues(w.opts.Region, "ok").Inc()
		if !ev.ReceivedAt.IsZero() {
			w.metrics.EndToEndSeconds.WithLabelValues(w.opts.Region).Observe(time.Since(ev.ReceivedAt).Seconds())
		}
		if ce := w.log.Check(zap.DebugLevel, "Event handled"); ce != nil {
			ce.Write(fields...)
		}
	case w.base.Err() != nil:
		// Stopping: hand the event back unacknowledged; it is redelivered.
		_ = m.Nak()
	case !retry.Retryable(err):
		w.deadLetter(m, md, proto.DeadReasonPermanent, err, fields)
	case attempt >= w.opts.Retry.MaxAttempts:
		w.deadLetter(m, md, proto.DeadReasonMaxAttempts, err, fields)
	default:
		delay := max(w.opts.Retry.BackoffFor(attempt), retry.After(err))
		w.metrics.Handled.WithLabelValues(w.opts.Region, "retry").Inc()
		w.log.Warn("Event failed; will retry", append(fields, logfields.Delay(delay), zap.Error(err))...)
		_ = m.NakWithDelay(delay)
	}
}

// event reads an event's identity from its headers.
func (w *Worker) event(m jetstream.Msg) (Event, error) {
	h := m.Headers()
	ev := Event{
		ID: h.Get(proto.HeaderEventID), Region: w.opts.Region, AccountID: h.Get(proto.HeaderAccountID),
		Type: h.Get(proto.HeaderEventType), Body: m.Data(),
	}
	if ev.ID == "" || ev.AccountID == "" || ev.Type == "" {
		return ev, fmt.Errorf("%w: event lacks geomux headers", retry.ErrPermanent)
	}
	if ts := h.Get(proto.HeaderReceivedAt); ts != "" {
		ev.ReceivedAt, _ = time.Parse(proto.TimeFormat, ts)
	}
	return ev, nil
}

// replyState is what a region records of an event whose replies were not
// all sent: the replies (so that the backend is not asked again) and how many
// went out (so that none goes out twice).
type replyState struct {
	Messages []proto.ChatMessage `json:"messages"`
	Sent     int                 `json:"sent"`
}

// handle gets the replies to an event and sends those not yet sent.
func (w *Worker) handle(ctx context.Context, ev Event, retried bool) error {
	var st replyState
	recorded := false
	if retried {
		var err error
		if st, recorded, err = w.loadState(ctx, ev.ID); err != nil {
			return err
		}
	}
	if !recorded {
		msgs, err := w.handler.Handle(ctx, ev)
		if err != nil {
			return err
		}
		st = replyState{Messages: msgs}
	}
	chat, _ := zoom.ParseChat(ev.Body)
	sentBefore := st.Sent
	for st.Sent < len(st.Messages) {
		cm := st.Messages[st.Sent]
		zm := zoom.Message{
			RobotJID: w.opts.BotJID, AccountID: ev.AccountID,
			ToJID: cm.ToJID, UserJID: cm.UserJID,
			Content: cm.Content, IsMarkdownSupport: cm.IsMarkdownSupport,
		}
		if zm.ToJID == "" {
			zm.ToJID = chat.ToJID
		}
		if zm.UserJID == "" {
			zm.UserJID = chat.UserJID
		}
		if zm.ToJID == "" {
			return fmt.Errorf("%w: reply %d has no to_jid and the event has no payload.toJid", retry.ErrPermanent, st.Sent)
		}
		sent, err := w.zoom.SendMessage(ctx, zm)
		if err != nil {
			if !recorded || st.Sent > sentBefore {
				w.saveState(ev, st)
			}
			return err
		}
		st.Sent++
		w.metrics.Replied.WithLabelValues(w.opts.Region).Inc()
		if ce := w.log.Check(zap.DebugLevel, "Reply sent"); ce != nil {
			ce.Write(logfields.EventID(ev.ID), logfields.AccountID(ev.AccountID), logfields.MessageID(sent.MessageID))
		}
	}
	if recorded {
		_ = w.replies.Delete(ctx, ev.ID)
	}
	return nil
}

func (w *Worker) loadState(ctx context.Context, id string) (replyState, bool, error) {
	e, err := w.replies.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return replyState{}, false, nil
	}
	if err != nil {
		return replyState{}, false, fmt.Errorf("read reply state: %w", err)
	}
	var st replyState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return replyState{}, false, nil // unreadable: start over
	}
	return st, true, nil
}

// saveState records replies not all sent. It runs even when the attempt's
// context has expired: the record is what keeps a retry from sending twice.
func (w *Worker) saveState(ev Event, st replyState) {
	b, err := json.Marshal(st)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(w.base), 5*time.Second)
		defer cancel()
		_, err = w.replies.Put(ctx, ev.ID, b)
	}
	if err != nil {
		w.log.Error("Reply state not recorded; a retry may repeat replies", logfields.EventID(ev.ID), zap.Error(err))
	}
}

// deadLetter copies the event to the region's dead-letter stream with why it
// failed, then terminates it. If the copy cannot be stored the event is
// retried instead: it is never dropped.
func (w *Worker) deadLetter(m jetstream.Msg, md *jetstream.MsgMetadata, reason string, cause error, fields []zap.Field) {
	out := nats.NewMsg(proto.RegionDeadLetterSubject(w.opts.Region))
	out.Data = m.Data()
	for k, v := range m.Headers() {
		if k != jetstream.MsgIDHeader {
			out.Header[k] = v
		}
	}
	// One dead letter per delivery of a stream message, even if this worker
	// dies between storing it and terminating the event.
	out.Header.Set(jetstream.MsgIDHeader, out.Header.Get(proto.HeaderEventID)+"/"+strconv.FormatUint(md.Sequence.Stream, 10))
	out.Header.Set(proto.HeaderRegion, w.opts.Region)
	out.Header.Set(proto.HeaderDeadReason, reason)
	out.Header.Set(proto.HeaderDeadError, truncate(cause.Error(), 300))
	var se *retry.StatusError
	if errors.As(cause, &se) {
		out.Header.Set(proto.HeaderDeadStatus, strconv.Itoa(se.StatusCode))
	}
	out.Header.Set(proto.HeaderAttempts, strconv.FormatUint(md.NumDelivered, 10))
	out.Header.Set(proto.HeaderFirstAttempt, md.Timestamp.UTC().Format(proto.TimeFormat))
	out.Header.Set(proto.HeaderLastAttempt, time.Now().UTC().Format(proto.TimeFormat))

	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.base), 5*time.Second)
	defer cancel()
	if _, err := w.js.PublishMsg(ctx, out); err != nil {
		w.log.Error("Dead letter not stored; will retry the event", append(fields, zap.Error(err))...)
		_ = m.NakWithDelay(w.opts.Retry.BackoffFor(int(md.NumDelivered)))
		return
	}
	if err := m.TermWithReason(reason); err != nil {
		w.log.Warn("Terminate failed after dead-lettering", append(fields, zap.Error(err))...)
	}
	w.metrics.Handled.WithLabelValues(w.opts.Region, "dead").Inc()
	w.metrics.Failed.WithLabelValues(w.opts.Region, reason).Inc()
	w.log.Error("Event dead-lettered", append(fields, logfields.Reason(reason), zap.Error(cause))...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
