package workers

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/geomux/geomux/pkg/vault"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// Sender sends chat messages to Zoom; *zoom.Client is one.
type Sender interface {
	SendMessage(ctx context.Context, m zoom.Message) (zoom.Sent, error)
}

// Options configure a Worker.
type Options struct {
	// Region is the region served; the worker reads only its subjects.
	Region string
	// BotJID is robot_jid in every message of the default app.
	BotJID string
	// DefaultApp names the app whose bot is BotJID and sender the Sender
	// given to New (config.DefaultAppName when empty). Events that name no
	// app are the default app's.
	DefaultApp string
	// Apps are the other apps' bots, by name: an event is replied to by the
	// bot of the app it came through.
	Apps map[string]App
	// Retry is the retry policy.
	Retry config.Retry
	// Concurrency is how many events are handled at once.
	Concurrency int
	// HandlerTimeout bounds one attempt at one event.
	HandlerTimeout time.Duration
	// Streams are the stream settings.
	Streams natsx.StreamOptions
	// VaultKey, if set, opens the region's token vault: the worker takes
	// the tokens the ingress hands over at install, and erases them at
	// uninstall.
	VaultKey *vault.Key
	// Refresher renews user tokens (the Zoom client).
	Refresher vault.Refresher
	// UserToken adds the installing user's token to each event (Event.UserToken).
	UserToken bool
	// Directory is where an uninstalled account's region is removed, last.
	Directory AccountRemover
}

// App is a Zoom app's chatbot: its JID and what sends as it.
type App struct {
	BotJID string
	Zoom   Sender
}

// AccountRemover removes an account from the account → region directory.
type AccountRemover interface {
	Delete(ctx context.Context, account string) error
}

// Worker handles one region's events. Build it with New, then Start and Stop.
type Worker struct {
	js      jetstream.JetStream
	handler Handler
	zoom    Sender
	opts    Options
	log     *zap.Logger
	metrics *Metrics

	state   *stateStore
	keeper  *dlq.Keeper
	dlq     *dlq.Store
	vault   *vault.Vault
	vaultSv *vault.Service
	cc      jetstream.ConsumeContext
	slots   chan struct{}
	mu      sync.Mutex // orders giveUp before wg.Add in dispatch
	wg      sync.WaitGroup
	base    context.Context
	cancel  context.CancelFunc
	running atomic.Bool
	ackWait time.Duration
}

// New returns a worker for opts.Region.
func New(js jetstream.JetStream, h Handler, zc Sender, opts Options, m *Metrics, log *zap.Logger) *Worker {
	if opts.DefaultApp == "" {
		opts.DefaultApp = config.DefaultAppName
	}
	apps := []string{opts.DefaultApp}
	for name := range opts.Apps {
		apps = append(apps, name)
	}
	m.init(opts.Region, apps)
	return &Worker{js: js, handler: h, zoom: zc, opts: opts, metrics: m,
		log: log.With(logfields.Region(opts.Region)), ackWait: ConsumerConfig(opts).AckWait}
}

// Start sets up the region's streams and bucket, starts turning
// max-deliveries advisories into dead letters, and starts consuming.
func (w *Worker) Start(ctx context.Context) error {
	region, so := w.opts.Region, w.opts.Streams
	for _, sc := range []jetstream.StreamConfig{
		natsx.RegionEventsConfig(region, so),
		natsx.RegionDeadLetterConfig(region, so),
		natsx.RegionAdvisoryConfig(region, so),
		natsx.RegionAuditConfig(region, so),
		natsx.RegionControlConfig(region, so),
	} {
		if _, err := so.Stream(ctx, w.js, sc); err != nil {
			return err
		}
	}
	kv, err := so.KeyValue(ctx, w.js, natsx.RepliesConfig(region, so))
	if err != nil {
		return err
	}
	w.state = newStateStore(w.js, kv, proto.RegionRepliesBucket(region), so.DedupWindow, so.DeadLetterMaxAge)
	cons, err := so.Consumer(ctx, w.js, proto.RegionEventsStream(region), ConsumerConfig(w.opts))
	if err != nil {
		return err
	}
	if w.dlq, err = dlq.Open(ctx, w.js, region); err != nil {
		return err
	}
	if w.opts.VaultKey != nil {
		vkv, err := so.KeyValue(ctx, w.js, natsx.RegionVaultConfig(region, so))
		if err != nil {
			return err
		}
		w.vault = vault.New(vkv, *w.opts.VaultKey, w.opts.Refresher)
		if w.vaultSv, err = vault.Serve(w.js.Conn(), region, w.vault, w.log.Named("vault")); err != nil {
			return err
		}
	}
	w.keeper = dlq.NewKeeper(w.js, region, so, w.lastError, func(reason string) {
		w.metrics.Handled.WithLabelValues(region, "dead").Inc()
		w.metrics.Failed.WithLabelValues(region, reason).Inc()
	}, w.log)
	if err := w.keeper.Start(ctx); err != nil {
		return err
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
		// fx does not stop what failed to start: undo it here.
		_ = w.keeper.Stop(ctx)
		w.cancel()
		return fmt.Errorf("worker consume of region %s: %w", region, err)
	}
	w.running.Store(true)
	w.log.Info("Worker started", zap.Int("concurrency", w.opts.Concurrency))
	return nil
}

// ConsumerConfig is the workers' durable consumer. JetStream delivers an
// event at most retry.max_attempts times. A failed attempt asks for its retry
// itself (NakWithDelay, with retry.backoff or the server's Retry-After); an
// attempt that never answers (the worker died) is redelivered once its ack
// wait is over. An event that runs out of deliveries without a verdict raises
// the max-deliveries advisory, which the dead-letter keeper turns into a dead
// letter.
//
// No BackOff: with one, nats-server adds the step's back-off (less the ack
// wait) to every NakWithDelay, and a retry asked for in 1 s came 76 s later.
func ConsumerConfig(o Options) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:     proto.WorkersConsumer,
		Description: "geomux workers of region " + o.Region,
		AckPolicy:   jetstream.AckExplicitPolicy,
		// A buffered event waits at most about one handler timeout for a
		// free slot, then takes at most one: it is never redelivered while
		// a worker still holds it.
		AckWait:       2*o.HandlerTimeout + 5*time.Second,
		MaxDeliver:    o.Retry.MaxAttempts,
		MaxAckPending: 4 * o.Concurrency,
	}
}

// lastError is what the keeper learns of an event's last failed attempt.
func (w *Worker) lastError(ctx context.Context, account, id string) (string, int, time.Time, bool) {
	st, ok, err := w.state.load(ctx, account, id)
	if err != nil || !ok || st.LastError == "" {
		return "", 0, time.Time{}, false
	}
	return st.LastError, st.LastStatus, st.LastAttempt, true
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
	// The events finished during the stop were acknowledged with
	// confirmation; those finished just before it, with plain acks: a ping
	// answered means the server has received them too.
	if ferr := flush(ctx, w.js.Conn()); err == nil && ferr != nil {
		err = fmt.Errorf("flush acknowledgements: %w", ferr)
	}
	if kerr := w.keeper.Stop(ctx); err == nil {
		err = kerr
	}
	if w.vaultSv != nil {
		_ = w.vaultSv.Stop()
	}
	return err
}

// flush waits until the server has everything sent on nc so far, within
// ctx (or 5 s without a deadline).
func flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); ok {
		return nc.FlushWithContext(ctx)
	}
	return nc.FlushTimeout(5 * time.Second)
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
	waited := false
	select {
	case w.slots <- struct{}{}:
	default:
		waited = true
		select {
		case w.slots <- struct{}{}:
		case <-w.base.Done():
			_ = m.Nak()
			return
		}
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
	if waited {
		// The event waited for its slot: restart its ack wait, so that it
		// is not redelivered while this attempt runs.
		_ = m.InProgress()
	}
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
	fields := []zap.Field{logfields.EventID(ev.ID), logfields.EventType(ev.Type), logfields.AccountID(ev.AccountID), logfields.App(ev.App), logfields.Attempt(attempt)}
	if err != nil {
		w.deadLetter(m, md, proto.DeadReasonPermanent, err, fields)
		return
	}
	replay := m.Headers().Get(proto.HeaderReplay) != ""

	ctx, cancel := context.WithTimeout(w.base, w.opts.HandlerTimeout)
	var st replyState
	err = w.prepare(ctx, &ev)
	if err == nil {
		st, err = w.handle(ctx, start, ev, replay)
	}
	cancel()
	w.metrics.HandleSeconds.WithLabelValues(w.opts.Region).Observe(time.Since(start).Seconds())

	if err == nil {
		// The replies are out: the ack must go even if Stop is giving up,
		// or the event would be redelivered (its record keeps the replies
		// from going out twice, but an event without replies would be
		// handled again). A plain ack, not a double one: waiting for the
		// server to confirm it costs a round trip per event, and the rare
		// lost ack only makes a redelivery that the record mostly absorbs.
		// While stopping, the ack is confirmed: the events a stop lets
		// finish are acknowledged when Stop returns.
		ack := func(context.Context) error { return m.Ack() }
		if !w.running.Load() {
			ack = m.DoubleAck
		}
		err := w.settle(start, ack)
		if err != nil {
			w.log.Warn("Ack failed; the event will be redelivered", append(fields, zap.Error(err))...)
		}
		w.metrics.Handled.WithLabelValues(w.opts.Region, "ok").Inc()
		if !ev.ReceivedAt.IsZero() {
			w.metrics.EndToEndSeconds.WithLabelValues(w.opts.Region).Observe(time.Since(ev.ReceivedAt).Seconds())
		}
		if ce := w.log.Check(zap.DebugLevel, "Event handled"); ce != nil {
			ce.Write(fields...)
		}
		return
	}
	if w.base.Err() != nil {
		// Stopping: hand the event back unacknowledged; it is redelivered.
		_ = m.Nak()
		return
	}
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
		w.deadLetter(m, md, proto.DeadReasonPermanent, err, fields)
	case attempt >= w.opts.Retry.MaxAttempts:
		w.deadLetter(m, md, proto.DeadReasonMaxAttempts, err, fields)
	default:
		// A server may ask for a day (Zoom's daily limit): a chat reply that
		// late is worth less than trying again within maxRetryDelay.
		delay := min(max(w.opts.Retry.BackoffFor(attempt), retry.After(err)), maxRetryDelay)
		w.metrics.Handled.WithLabelValues(w.opts.Region, "retry").Inc()
		w.log.Warn("Event failed; will retry", append(fields, logfields.Delay(delay), zap.Error(err))...)
		_ = m.NakWithDelay(delay)
	}
}

// prepare does what geomux itself does with an event before its handler
// sees it: erase an uninstalled account's data, or look up the user token
// the handler wants.
func (w *Worker) prepare(ctx context.Context, ev *Event) error {
	switch {
	case ev.Type == zoom.EventAppDeauthorized:
		return w.erase(ctx, ev.AccountID, ev.ReceivedAt)
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

// erase deletes what geomux keeps of an account in its region, when Zoom
// says the app was uninstalled (app_deauthorized): its tokens, its dead
// letters, its reply records, and only then its directory entry. It records
// what it erased (no content) in the region's audit stream. Each step is
// idempotent: Zoom may send the event twice, and a failed attempt is retried.
func (w *Worker) erase(ctx context.Context, account string, uninstalled time.Time) error {
	var e dlq.Erasure
	var err error
	if w.vault != nil && !uninstalled.IsZero() {
		// Tokens stored after Zoom sent the uninstall come from a later
		// install: this uninstall is old news, and must not erase it.
		if r, _, err := w.vault.Get(ctx, account); err == nil && r.UpdatedAt.After(uninstalled) {
			w.log.Warn("Uninstall older than the account's install; nothing erased", logfields.AccountID(account))
			return nil
		}
	}
	if w.vault != nil {
		if e.Tokens, err = w.vault.Delete(ctx, account); err != nil {
			return err
		}
	}
	if e.DeadLetters, err = w.dlq.EraseAccount(ctx, account); err != nil {
		return fmt.Errorf("erase dead letters: %w", err)
	}
	if e.ReplyRecords, err = w.state.erase(ctx, account); err != nil {
		return fmt.Errorf("erase reply records: %w", err)
	}
	if w.opts.Directory != nil {
		if err := w.opts.Directory.Delete(ctx, account); err != nil {
			return fmt.Errorf("remove from the directory: %w", err)
		}
		e.Directory = true
	}
	if err := w.dlq.Record(ctx, dlq.Action{
		Action: "erase", Operator: "geomux (app_deauthorized)", At: time.Now().UTC(),
		Selection: "account " + account, Account: account, Erased: &e,
	}); err != nil {
		return err
	}
	w.log.Info("Uninstalled account erased", logfields.AccountID(account), zap.Bool("tokens", e.Tokens),
		zap.Int("dead_letters", e.DeadLetters), zap.Int("reply_records", e.ReplyRecords), zap.Bool("directory", e.Directory))
	return nil
}

// maxRetryDelay caps the wait before a retry, whatever Retry-After says.
const maxRetryDelay = time.Hour

// event reads an event's identity from its headers.
func (w *Worker) event(m jetstream.Msg) (Event, error) {
	h := m.Headers()
	ev := Event{
		ID: h.Get(proto.HeaderEventID), Region: w.opts.Region, AccountID: h.Get(proto.HeaderAccountID),
		Type: h.Get(proto.HeaderEventType), App: h.Get(proto.HeaderApp), Body: m.Data(),
	}
	if ev.App == "" {
		ev.App = w.opts.DefaultApp
	}
	if ev.ID == "" || ev.AccountID == "" || ev.Type == "" {
		return ev, fmt.Errorf("%w: event lacks geomux headers", retry.ErrPermanent)
	}
	if ts := h.Get(proto.HeaderReceivedAt); ts != "" {
		ev.ReceivedAt, _ = time.Parse(proto.TimeFormat, ts)
	}
	return ev, nil
}

// handle gets the replies to an event and sends those not yet sent,
// recording each one sent before the next.
//
// It first reads what an earlier delivery of the event recorded: a finished
// event is not handled again, and recorded replies are not asked of the
// handler again. This read is what makes an event processed once: JetStream's
// deduplication forgets the ids of acknowledged work-queue messages when a
// server restarts, and its delivery counts can go back after a server is
// killed, so a Zoom re-delivery, a router redelivery or a killed worker's
// event can all come back as a first delivery. An operator's replay asks the
// handler again unless some replies already went out.
func (w *Worker) handle(ctx context.Context, start time.Time, ev Event, replay bool) (replyState, error) {
	// The app's bot replies: an app this worker does not know fails the
	// attempt before its backend is asked.
	bot, err := w.bot(ev.App)
	if err != nil {
		return replyState{}, err
	}
	st, recorded, err := w.state.load(ctx, ev.AccountID, ev.ID)
	if err != nil {
		return st, err
	}
	if recorded && st.Done {
		return st, nil // every reply went out already, replay or not
	}
	if len(st.Messages) == 0 || (replay && st.Sent == 0) {
		msgs, err := w.handler.Handle(ctx, ev)
		if err != nil {
			return st, err
		}
		st.Messages, st.Sent, st.MessageIDs = msgs, 0, nil
	}
	chat, _ := zoom.ParseChat(ev.Body)
	for st.Sent < len(st.Messages) {
		cm := st.Messages[st.Sent]
		zm := zoom.Message{
			RobotJID: bot.BotJID, AccountID: ev.AccountID,
			ToJID: cm.ToJID, UserJID: cm.UserJID,
			Content: cm.Content, IsMarkdownSupport: cm.IsMarkdownSupport,
			VisibleToUser: cm.VisibleToUser, ReplyTo: cm.ReplyTo,
		}
		if zm.ToJID == "" {
			zm.ToJID = chat.ToJID
		}
		if zm.UserJID == "" {
			zm.UserJID = chat.UserJID
		}
		if zm.ToJID == "" {
			return st, fmt.Errorf("%w: reply %d has no to_jid and the event has no payload.toJid", retry.ErrPermanent, st.Sent)
		}
		sent, err := bot.Zoom.SendMessage(ctx, zm)
		if err != nil {
			return st, err
		}
		st.Sent++
		st.MessageIDs = append(st.MessageIDs, sent.MessageID)
		w.metrics.Replied.WithLabelValues(w.opts.Region, ev.App).Inc()
		if ce := w.log.Check(zap.DebugLevel, "Reply sent"); ce != nil {
			ce.Write(logfields.EventID(ev.ID), logfields.AccountID(ev.AccountID), logfields.MessageID(sent.MessageID))
		}
		rec := st
		if st.Sent == len(st.Messages) {
			// Finished: keep that it was, not what was said.
			rec = replyState{Sent: st.Sent, MessageIDs: st.MessageIDs, Done: true}
		}
		w.saveState(start, ev.AccountID, ev.ID, rec, nil)
	}
	return st, nil
}

// bot is the chatbot of app, which replies to the app's events. An app this
// worker does not know (its config lags the ingress's) is retried: the
// event waits for the worker to know it.
func (w *Worker) bot(app string) (App, error) {
	if app == w.opts.DefaultApp {
		return App{BotJID: w.opts.BotJID, Zoom: w.zoom}, nil
	}
	if a, ok := w.opts.Apps[app]; ok {
		return a, nil
	}
	return App{}, fmt.Errorf("the event came through Zoom app %q, which this worker's config does not have (zoom.apps)", app)
}

// saveState records an event's state. It runs even when the attempt's
// context has expired: the record is what keeps a retry from sending twice.
func (w *Worker) saveState(start time.Time, account, id string, st replyState, fields []zap.Field) {
	if err := w.settle(start, func(ctx context.Context) error { return w.state.save(ctx, account, id, st) }); err != nil {
		if fields == nil {
			fields = []zap.Field{logfields.EventID(id)}
		}
		w.log.Error("Reply state not recorded; a redelivery may repeat replies", append(fields, zap.Error(err))...)
	}
}

// settle does f, which records what became of an event delivered at start
// or acknowledges it, until it succeeds, retrying while NATS does not answer
// (a region's servers restarting, a leader election): what it records is
// what keeps a redelivery from asking the backend and sending the replies
// again. It gives up when the event's ack wait is nearly over (JetStream
// redelivers it then anyway), on an error that will not pass, or when a stop
// gives up.
func (w *Worker) settle(start time.Time, f func(context.Context) error) error {
	until := start.Add(w.ackWait - settleMargin)
	wait := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(w.base), min(settleAttempt, max(time.Until(until), 0)+time.Second))
		err := f(ctx)
		cancel()
		if err == nil || !natsx.Transient(err) || time.Until(until) < wait {
			return err
		}
		select {
		case <-time.After(wait):
		case <-w.base.Done():
			return err
		}
		wait = min(2*wait, time.Second)
	}
}

// settleAttempt bounds one attempt of settle; settleMargin is how long before
// the ack wait's end settle gives up.
const (
	settleAttempt = 5 * time.Second
	settleMargin  = 3 * time.Second
)

// deadLetter stores the event in the region's dead-letter stream with why it
// failed, then terminates it. If the dead letter cannot be stored the event
// is retried instead: it is never dropped.
func (w *Worker) deadLetter(m jetstream.Msg, md *jetstream.MsgMetadata, reason string, cause error, fields []zap.Field) {
	f := dlq.Failure{Reason: reason, Attempts: int(md.NumDelivered), FirstAttempt: md.Timestamp, LastAttempt: time.Now()}
	f.Error, f.Status = dlq.Describe(cause)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.base), 5*time.Second)
	defer cancel()
	if _, err := w.js.PublishMsg(ctx, dlq.NewMsg(w.opts.Region, m.Data(), m.Headers(), md.Sequence.Stream, f)); err != nil {
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
