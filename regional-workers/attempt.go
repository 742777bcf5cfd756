package workers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/pkg/tracing"
	"github.com/geomux/geomux/pkg/vault"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// One attempt at an event: check that it is its conversation's next event,
// read what an earlier attempt recorded, ask the handler (unless recorded),
// send the replies at the account's pace, then acknowledge, hand back, retry
// or dead-letter it.

// run makes an attempt at it in a goroutine of its own; the scheduler has
// counted it in w.wg.
func (w *Worker) run(it *item) {
	go func() {
		defer w.wg.Done()
		o := w.attempt(it)
		w.sched.finish(it, o)
		if o.verdict != waiting {
			w.budget.release(it.cost)
		}
	}()
}

// attempt decides what becomes of one event. A panic in it (a handler's
// bug) fails the attempt like any transient error.
func (w *Worker) attempt(it *item) (o outcome) {
	ev := it.ev
	fields := []zap.Field{logfields.EventID(ev.ID), logfields.EventType(ev.Type), logfields.AccountID(ev.AccountID), logfields.App(ev.App)}
	if it.err != nil {
		w.log.Error("Event without JetStream metadata; ignored", zap.Error(it.err))
		return outcome{verdict: finished}
	}
	defer func() {
		if p := recover(); p != nil {
			w.log.Error("Attempt panicked; counted as a failed attempt", append(fields, zap.Any("panic", fmt.Sprintf("%T", p)))...)
			o = w.failed(it, time.Now(), replyState{}, fmt.Errorf("geomux: the attempt panicked (%T)", p), fields)
		}
	}()
	if it.bad != nil {
		return w.deadLetter(it, proto.DeadReasonPermanent, it.bad, 0, fields)
	}
	switch erasing, erased := w.erasures.of(ev.AccountID, it.seq); {
	case erasing:
		// Its account is being erased here: it comes back once the erase
		// is done, deleted from the stream if it came before the
		// uninstall. No attempt is used.
		_ = it.msg().NakWithDelay(erasingDelay)
		return outcome{verdict: handedBack}
	case erased:
		// Stored before an uninstall this worker has erased, and delivered
		// before the erase deleted it from the stream: it must not record
		// a reply or a pace after the erase.
		_ = it.msg().TermWithReason("erased with its account")
		w.log.Info("Event of an erased account dropped", fields...)
		return outcome{verdict: finished}
	}
	switch w.turn(it) {
	case notFirst:
		if !w.budget.pressed() {
			// It waits here, in its place, and looks again shortly.
			return outcome{verdict: waiting}
		}
		// Events wait for room: hand it back until the earlier event
		// has had its chance. No attempt is used.
		d := max(w.sched.waitOf(it), handBackDelay(it)/4)
		_ = it.msg().NakWithDelay(d)
		return outcome{verdict: notYet, after: d}
	case gone:
		return outcome{verdict: finished}
	}
	o = w.handleEvent(it, fields)
	if o.verdict == finished {
		w.sched.finished(it.seq)
	}
	return o
}

// handleEvent makes the attempt proper.
func (w *Worker) handleEvent(it *item, fields []zap.Field) (o outcome) {
	start := time.Now()
	ev := it.ev
	// The event's trace goes on from the router's publish; the attempt's
	// calls (backend, Zoom) are its children.
	ctx, span := w.opts.Tracer.Start(tracing.FromNATS(w.base, it.msg().Headers()), "attempt", trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() { // attributes only for a span that records: nothing made when traces are off
		span.SetAttributes(tracing.EventID(ev.ID), tracing.EventType(ev.Type), tracing.AccountID(ev.AccountID), tracing.App(ev.App), tracing.Region(w.opts.Region))
	}
	defer func() {
		if span.IsRecording() {
			span.SetAttributes(tracing.Outcome(o.verdict.String()))
		}
		span.End()
	}()
	st, err := w.replies(it, start)
	if err == nil && st.Done {
		return w.acknowledge(it, start, fields) // every reply went out already, replay or not
	}
	if err == nil {
		err = w.prepare(&ev, it.seq)
	}
	if err == nil && !ev.Erasure && (!st.answered() || (it.replay && st.Sent == 0 && st.Acted == 0)) {
		var a proto.BackendResponse
		a, err = w.ask(ctx, ev)
		if err == nil {
			st.Messages, st.Sent, st.MessageIDs = a.Messages, 0, nil
			st.Edits, st.Deletes, st.Unfurls, st.Acted = a.Edits, a.Deletes, a.Unfurls, 0
		}
	}
	if err == nil {
		err = w.send(ctx, ev, start, &st)
	}
	w.metrics.HandleSeconds.WithLabelValues(w.opts.Region).Observe(time.Since(start).Seconds())

	var held *heldError
	switch {
	case err == nil:
		return w.acknowledge(it, start, fields)
	case w.base.Err() != nil:
		// Stopping: hand the event back unacknowledged; it is redelivered.
		_ = it.msg().Nak()
		return outcome{verdict: handedBack}
	case errors.As(err, &held):
		return w.hold(it, start, st, held.until, fields)
	}
	return w.failed(it, start, st, err, fields)
}

// replies reads what earlier attempts recorded of the event, and checks that
// its app is known.
func (w *Worker) replies(it *item, start time.Time) (replyState, error) {
	ctx, cancel := context.WithTimeout(w.base, w.opts.HandlerTimeout)
	defer cancel()
	var st replyState
	err := untilAnswered(ctx, nil, lookupTimeout, func(ctx context.Context) (err error) {
		st, _, err = w.state.load(ctx, it.ev.AccountID, it.ev.ID)
		return err
	})
	if err != nil || st.Done {
		return st, err
	}
	// The app's bot replies: an app this worker does not know fails the
	// attempt before its backend is asked.
	_, err = w.bot(it.ev.App)
	return st, err
}

// acknowledge finishes a handled event.
func (w *Worker) acknowledge(it *item, start time.Time, fields []zap.Field) outcome {
	m := it.msg()
	// The replies are out: the ack must go even if Stop is giving up, or
	// the event would be redelivered (its record keeps the replies from
	// going out twice, but an event without replies would be handled
	// again). A plain ack, not a double one: waiting for the server to
	// confirm it costs a round trip per event, and the rare lost ack only
	// makes a redelivery that the record mostly absorbs. While stopping,
	// the ack is confirmed: the events a stop lets finish are acknowledged
	// when Stop returns.
	ack := func(context.Context) error { return m.Ack() }
	if !w.running.Load() {
		ack = m.DoubleAck
	}
	if err := w.settle(ack); err != nil {
		w.log.Warn("Ack failed; the event will be redelivered", append(fields, zap.Error(err))...)
	}
	w.metrics.Handled.WithLabelValues(w.opts.Region, "ok").Inc()
	if !it.ev.ReceivedAt.IsZero() {
		w.metrics.EndToEndSeconds.WithLabelValues(w.opts.Region).Observe(time.Since(it.ev.ReceivedAt).Seconds())
	}
	if ce := w.log.Check(zap.DebugLevel, "Event handled"); ce != nil {
		ce.Write(fields...)
	}
	return outcome{verdict: finished}
}

// hold hands back an event of an account that Zoom holds until its daily
// limit resets, with what it has to send recorded: no attempt is used, and
// the account's other waiting events are handed back with it.
func (w *Worker) hold(it *item, start time.Time, st replyState, until time.Time, fields []zap.Field) outcome {
	if st.answered() {
		w.saveState(start, it.ev.AccountID, it.ev.ID, st, fields)
	}
	delay := holdDelay(until)
	_ = it.msg().NakWithDelay(delay)
	for _, x := range w.sched.takeAccount(it.ev.AccountID) {
		_ = x.msg().NakWithDelay(holdDelay(until))
		w.budget.release(x.cost)
	}
	if ce := w.log.Check(zap.DebugLevel, "Event held until the account's Zoom daily limit resets"); ce != nil {
		ce.Write(append(fields, logfields.Delay(delay))...)
	}
	return outcome{verdict: handedBack}
}

// holdDelay is how long a held event waits: until the reset, spread over a
// few seconds so that an account's events do not all come back at once.
func holdDelay(until time.Time) time.Duration {
	return max(time.Until(until), 0) + time.Second + rand.N(5*time.Second)
}

// failed records a failed attempt, then retries the event or dead-letters it.
func (w *Worker) failed(it *item, start time.Time, st replyState, err error, fields []zap.Field) outcome {
	ev := it.ev
	st.Attempts++
	attempt := st.Attempts
	fields = append(fields, logfields.Attempt(attempt))
	// Keep what this attempt learned: the replies not yet sent and the
	// error, for the retry, a replay, or the dead letter should the worker
	// die before it decides.
	st.LastError, st.LastStatus = dlq.Describe(err)
	st.LastAttempt = time.Now().UTC()
	if ev.Type != zoom.EventAppDeauthorized { // the account was just erased: keep nothing of it
		w.saveState(start, ev.AccountID, ev.ID, st, fields)
	}
	switch {
	case !retry.Retryable(err):
		return w.deadLetter(it, proto.DeadReasonPermanent, err, attempt, fields)
	case attempt >= w.opts.Retry.MaxAttempts:
		return w.deadLetter(it, proto.DeadReasonMaxAttempts, err, attempt, fields)
	}
	// A server may ask for a day: a chat reply that late is worth less than
	// trying again within maxRetryDelay.
	delay := min(max(w.opts.Retry.BackoffFor(attempt), retry.After(err)), maxRetryDelay)
	w.metrics.Handled.WithLabelValues(w.opts.Region, "retry").Inc()
	w.log.Warn("Event failed; will retry", append(fields, logfields.Delay(delay), zap.Error(err))...)
	_ = it.msg().NakWithDelay(delay)
	return outcome{verdict: retrying, after: delay}
}

// maxRetryDelay caps the wait before a retry, whatever Retry-After says.
const maxRetryDelay = time.Hour

// prepare does what geomux itself does with an event (stored at seq)
// before its handler sees it: erase an uninstalled account's data, or look
// up the user token the handler wants.
func (w *Worker) prepare(ev *Event, seq uint64) error {
	ctx, cancel := context.WithTimeout(w.base, w.opts.HandlerTimeout)
	defer cancel()
	switch {
	case ev.Type == zoom.EventAppDeauthorized:
		return w.erase(ctx, *ev, seq)
	case w.opts.UserToken && w.vault != nil:
		t, err := w.vault.AccessToken(ctx, ev.AccountID)
		if errors.Is(err, vault.ErrNoToken) {
			return nil
		}
		if err != nil {
			return err
		}
		ev.UserToken = &t
	}
	return nil
}

// ask asks the handler what to reply, within the region's backend limits:
// a backend that asks the region to slow down (429 or 503 with Retry-After)
// is asked again once the pause is over, using no attempt.
func (w *Worker) ask(ctx context.Context, ev Event) (proto.BackendResponse, error) {
	ctx, span := w.opts.Tracer.Start(ctx, "backend call", trace.WithSpanKind(trace.SpanKindClient))
	for {
		if err := w.backend.acquire(ctx); err != nil {
			tracing.End(span, err)
			return proto.BackendResponse{}, err
		}
		cctx, cancel := context.WithTimeout(ctx, w.opts.HandlerTimeout)
		a, err := w.handler.Answer(cctx, ev)
		cancel()
		pause := slowDown(err)
		w.backend.release(err == nil, pause)
		if pause == 0 {
			tracing.End(span, err)
			return a, err
		}
		w.metrics.BackendSlowDowns.WithLabelValues(w.opts.Region).Inc()
		w.log.Warn("Backend asked the region to slow down; calls paused", logfields.EventID(ev.ID), logfields.Delay(pause), zap.Error(err))
	}
}

// slowDown is the pause a backend asked for by answering 429 or 503 with a
// Retry-After, at most maxBackendPause; 0 for anything else.
func slowDown(err error) time.Duration {
	var se *retry.StatusError
	if !errors.As(err, &se) || se.Service != "backend" || se.RetryAfter <= 0 {
		return 0
	}
	if se.StatusCode != 429 && se.StatusCode != 503 {
		return 0
	}
	return min(se.RetryAfter, maxBackendPause)
}

// maxBackendPause bounds one pause a backend asks for.
const maxBackendPause = 5 * time.Minute

// event reads an event's identity from its headers.
func (w *Worker) event(m jetstream.Msg) (Event, error) {
	h := m.Headers()
	ev := Event{
		ID: h.Get(proto.HeaderEventID), Region: w.opts.Region, AccountID: h.Get(proto.HeaderAccountID),
		Type: h.Get(proto.HeaderEventType), App: h.Get(proto.HeaderApp), Body: m.Data(),
	}
	if ev.App == "" {
		ev.App = w.defaultApp
	}
	if ev.ID == "" || ev.AccountID == "" || ev.Type == "" {
		return ev, fmt.Errorf("%w: event lacks geomux headers", retry.ErrPermanent)
	}
	if ts := h.Get(proto.HeaderReceivedAt); ts != "" {
		ev.ReceivedAt, _ = time.Parse(proto.TimeFormat, ts)
	}
	ev.Erasure = h.Get(proto.HeaderErasure) != "" && ev.Type == zoom.EventAppDeauthorized
	return ev, nil
}

// bot is the chatbot of app, which replies to the app's events. An app this
// worker does not know (its config lags the ingress's) is retried: the
// event waits for the worker to know it.
func (w *Worker) bot(app string) (App, error) {
	if a, ok := w.apps[app]; ok {
		return a, nil
	}
	return App{}, fmt.Errorf("the event came through Zoom app %q, which this worker's config does not have (zoom.apps)", app)
}
