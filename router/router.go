// Package router places each accepted event in its account's region: it reads
// the transit stream, looks the account up in the directory (held in memory),
// and republishes the event on that region's subject, acknowledging the input
// only once the region's stream has acknowledged the copy. Events of accounts
// without a region are parked, and routed as soon as their account gets one.
package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/governor"
	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/tracing"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
)

// Options configure a Router.
type Options struct {
	// Regions are the configured regions; an account whose region is not one
	// of them is parked until it is.
	Regions []string
	// Streams are the stream settings.
	Streams topology.Options
	// RegionJS reaches each region's NATS, when it is not the hub's: the
	// router publishes a region's events there, with that region's
	// credentials only.
	RegionJS map[string]jetstream.JetStream
	// RemoveAccount removes an account from the directory, when a region
	// with a NATS of its own asks (the account was uninstalled there).
	RemoveAccount func(ctx context.Context, account string) error
	// Pins maps the apps pinned to a region to that region: their events
	// go there whatever the directory says, unless it says another region
	// (a conflict: the event is parked).
	Pins map[string]string
	// Apps are the Zoom apps' names; an event that names none (stored
	// before apps were) is the first's (config.DefaultAppName when none).
	Apps []string
	// Conflicts, if set, records each conflict, for operators.
	Conflicts ConflictRecorder
	// Channels, if set, keeps which account owns each channel: an event
	// that names no account is routed as its channel's.
	Channels ChannelBook
	// Governor, if set, paces the routing so that an ingress in the same
	// process keeps answering Zoom in time.
	Governor *governor.Governor
	// Tracer makes the spans of each event's routing (none when nil).
	Tracer trace.Tracer
}

// ChannelBook keeps which account owns each channel; *directory.Channels
// is one.
type ChannelBook interface {
	Knows(channel, account string) bool
	Learn(ctx context.Context, channel, account string) (bool, error)
	Account(ctx context.Context, channel string) (string, bool, error)
	Forget(ctx context.Context, account string) (int, error)
}

// ConflictRecorder keeps the accounts whose app and directory disagree;
// *directory.Conflicts is one.
type ConflictRecorder interface {
	Record(ctx context.Context, c directory.Conflict) error
	Resolve(ctx context.Context, account string) error
}

// Reasons an event is parked (proto.HeaderParkReason).
const (
	ParkNoRegion = "no_region"
	ParkConflict = "conflict"
	// ParkNoAccount: the event names no account (an external user's app
	// mention) and its channel's account is not known yet.
	ParkNoAccount = "no_account"
)

// Router routes events. Build it with New, then Start and Stop it.
type Router struct {
	js       jetstream.JetStream
	cache    *directory.Cache
	opts     Options
	regions  map[string]bool
	regionJS map[string]jetstream.JetStream
	log      *zap.Logger
	// failLog logs publish failures, sampled: while a region or the
	// parked stream refuses, every event retried each second comes here.
	failLog *zap.Logger
	metrics *Metrics

	parked jetstream.Stream
	// unwatchBacklog stops exporting the backlog; set by Start.
	unwatchBacklog func()
	// ccs consume the transit streams, one each; routing serialises
	// their events (handle).
	ccs     []jetstream.ConsumeContext
	routing sync.Mutex
	// stopSpread stops moving the transit streams' leaders apart.
	stopSpread func()
	// lanes carry published events to their acknowledgement, one lane per
	// destination (each region, and "" for the hub's parked stream), so that
	// a region that is slow or unreachable holds up only its own events.
	lanes   map[string]*lane
	ackDone sync.WaitGroup
	unpark  *unparker
	running atomic.Bool
	links   []link

	// bg runs what the routing loop hands off (conflict records).
	bg sync.WaitGroup

	// Stop's give-up: closing stopping makes handle and ackLoop hand events
	// back instead of waiting. mu orders closed before handlers.Wait.
	stopping chan struct{}
	mu       sync.Mutex
	closed   bool
	handlers sync.WaitGroup
}

// New returns a router reading the directory through cache.
func New(js jetstream.JetStream, cache *directory.Cache, opts Options, m *Metrics, log *zap.Logger) *Router {
	if len(opts.Apps) == 0 {
		opts.Apps = []string{config.DefaultAppName}
	}
	if opts.Tracer == nil {
		opts.Tracer = noop.NewTracerProvider().Tracer("")
	}
	r := &Router{js: js, cache: cache, opts: opts, regions: map[string]bool{}, regionJS: map[string]jetstream.JetStream{}, log: log, metrics: m,
		failLog: log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return zapcore.NewSamplerWithOptions(c, time.Second, 5, 100) }))}
	for _, name := range opts.Regions {
		r.regionJS[name] = js
		if rjs, ok := opts.RegionJS[name]; ok {
			r.regionJS[name] = rjs
		}
		r.regions[name] = true
		// Export every region's series from the start, at zero.
		m.Routed.WithLabelValues(name, opts.Apps[0])
		m.Unparked.WithLabelValues(name)
	}
	for app, region := range opts.Pins {
		m.Conflicts.WithLabelValues(app)
		m.Routed.WithLabelValues(region, app)
	}
	r.unpark = newUnparker(r)
	cache.OnSet(func(rec proto.AccountRecord) { r.unpark.request(rec.AccountID) })
	// An account removed from the directory no longer contradicts its
	// pinned app.
	cache.OnDelete(func(account string) { r.unpark.request(account) })
	return r
}

// Start sets up the streams, loads the directory, routes what is parked for
// accounts that have a region by now, and starts consuming.
func (r *Router) Start(ctx context.Context) error {
	so := r.opts.Streams
	transit, err := r.transitStreams(ctx)
	if err != nil {
		return err
	}
	parked, err := so.Stream(ctx, r.js, topology.ParkedStreamConfig(so))
	if err != nil {
		return err
	}
	r.parked = parked
	for _, region := range r.opts.Regions {
		if _, err := so.Stream(ctx, r.regionJS[region], topology.RegionEventsConfig(region, so)); err != nil {
			return err
		}
	}
	conss := make([]jetstream.Consumer, len(transit))
	for p := range transit {
		if conss[p], err = so.Consumer(ctx, r.js, topology.RouterConsumer(p)); err != nil {
			return err
		}
	}
	if err := r.cache.Start(ctx); err != nil {
		return fmt.Errorf("load directory: %w", err)
	}
	r.metrics.watchParked(parked)

	if err := r.startLinks(ctx); err != nil {
		r.stopLinks()
		r.cache.Stop()
		return err
	}
	r.stopping = make(chan struct{})
	r.lanes = map[string]*lane{"": {ch: make(chan pendingAck, topology.RouterInFlight), conn: r.js.Conn()}}
	for _, region := range r.opts.Regions {
		r.lanes[region] = &lane{ch: make(chan pendingAck, topology.RouterInFlight), conn: r.regionJS[region].Conn()}
	}
	for _, l := range r.lanes {
		r.ackDone.Add(1)
		go r.ackLoop(l)
	}
	r.unpark.start()
	r.unpark.request(sweepAll)

	for _, cons := range conss {
		cc, err := cons.Consume(r.handle,
			jetstream.PullMaxMessages(512),
			jetstream.PullHeartbeat(natsx.PullHeartbeat),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if !errors.Is(err, jetstream.ErrNoHeartbeat) {
					r.log.Warn("Router consume error", zap.Error(err))
				}
			}))
		if err != nil {
			// fx does not stop what failed to start: undo it here.
			for _, cc := range r.ccs {
				cc.Stop()
			}
			r.ccs = nil
			r.closeLanes()
			r.ackDone.Wait()
			r.unpark.stop()
			r.stopLinks()
			r.cache.Stop()
			return fmt.Errorf("router consume: %w", err)
		}
		r.ccs = append(r.ccs, cc)
	}
	r.unwatchBacklog = r.metrics.watchBacklog(func(ctx context.Context) (natsx.Backlog, error) {
		var all natsx.Backlog
		for p, st := range transit {
			b, err := natsx.BacklogOf(ctx, st, conss[p])
			if err != nil {
				return natsx.Backlog{}, err
			}
			all = all.Plus(b)
		}
		return all, nil
	})
	spread := &leaderSpreader{js: r.js, streams: transit, log: r.log}
	sctx, scancel := context.WithCancel(context.Background())
	spreadDone := make(chan struct{})
	go func() { defer close(spreadDone); spread.run(sctx) }()
	r.stopSpread = func() { scancel(); <-spreadDone }
	r.running.Store(true)
	r.log.Info("Router started", zap.Strings("regions", r.opts.Regions), logfields.Count(r.cache.Len()))
	return nil
}

// Ready reports whether the router is routing.
func (r *Router) Ready() error {
	if !r.cache.Ready() {
		return errors.New("directory not loaded")
	}
	if !r.running.Load() {
		return errors.New("not consuming")
	}
	return nil
}

// Stop drains: no new events are fetched, those received are routed and
// acknowledged, then the directory watch and the unparker stop. At the
// deadline of ctx it gives up: events in hand are handed back (Nak) to be
// routed again after a restart.
func (r *Router) Stop(ctx context.Context) error {
	var err error
	r.running.Store(false)
	if r.stopSpread != nil {
		r.stopSpread()
		r.stopSpread = nil
	}
	if r.ccs != nil {
		for _, cc := range r.ccs {
			cc.Drain()
		}
		for _, cc := range r.ccs {
			select {
			case <-cc.Closed():
			case <-ctx.Done():
				if err == nil {
					close(r.stopping)
					err = ctx.Err()
				}
				cc.Stop()
			}
		}
		// No handle call starts after this, and those running return soon
		// (at once once stopping is closed): then nothing sends on acks.
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		r.handlers.Wait()
		r.closeLanes()
		acked := make(chan struct{})
		go func() { r.ackDone.Wait(); close(acked) }()
		select {
		case <-acked:
		case <-ctx.Done():
			if err == nil {
				close(r.stopping)
				err = ctx.Err()
			}
			<-acked
		}
		r.ccs = nil
	}
	if r.unwatchBacklog != nil {
		r.unwatchBacklog()
	}
	r.unpark.stop()
	r.bg.Wait()
	r.stopLinks()
	r.cache.Stop()
	return err
}

// lane is one destination's queue of events awaiting acknowledgement.
type lane struct {
	ch   chan pendingAck
	conn *nats.Conn
}

func (r *Router) closeLanes() {
	for _, l := range r.lanes {
		close(l.ch)
	}
}

// pendingAck is an input event whose copy awaits its stream's acknowledgement.
type pendingAck struct {
	in  jetstream.Msg
	fut jetstream.PubAckFuture
	// also are the erasure copies of an uninstall, which must be stored
	// too before the input is acknowledged.
	also      []jetstream.PubAckFuture
	uninstall bool
	account   string
	id        string
	region    string // empty when parked
	app       string
	reason    string // why it was parked
	channel   string // the event's channel key, to learn its account
	start     time.Time
	// span is the publish's, ended with its acknowledgement (nil: none).
	span trace.Span
}

// end ends the publish's span.
func (p pendingAck) end(err error) {
	if p.span != nil {
		tracing.End(p.span, err)
	}
}

// handle routes one event. It is called by one goroutine per transit
// stream, in that stream's order (an account's events are in one stream, but
// while it has no leader), one event at a time; publishes are asynchronous
// and acknowledged in their lane's ackLoop, in the same order. An event whose region is unreachable, or whose lane is full, is
// handed back to wait in the transit stream: the other regions' events keep
// flowing.
func (r *Router) handle(in jetstream.Msg) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = in.Nak()
		return
	}
	r.handlers.Add(1)
	r.mu.Unlock()
	defer r.handlers.Done()
	// One event at a time, whichever transit stream it comes from: the
	// router's work per event is small, and routing in parallel took CPU
	// from the ingress under overload (the governor paces one routing
	// goroutine: an ack p99 of 1.8 s instead of 0.1 s at 4,000 events/s on
	// two cores).
	r.routing.Lock()
	defer r.routing.Unlock()
	defer func() {
		// A bug must not take the process down with every region and the
		// ingress: the event is tried again, like any failure. The
		// panic's value may hold content: its type only is logged.
		if p := recover(); p != nil {
			r.metrics.Failures.Inc()
			r.log.Error("Routing an event panicked; it is tried again", logfields.EventID(in.Headers().Get(proto.HeaderEventID)),
				zap.String("panic", fmt.Sprintf("%T", p)), zap.Stack("stack"))
			_ = in.NakWithDelay(time.Second)
		}
	}()
	if waited, _ := r.opts.Governor.Wait(context.Background()); waited > topology.RouterAckWait/4 {
		_ = in.InProgress() // it waited for the ingress: restart its ack wait
	}

	h := in.Headers()
	account, id := h.Get(proto.HeaderAccountID), h.Get(proto.HeaderEventID)
	if id == "" {
		// Only something other than geomux's ingress can have published this.
		r.log.Error("Event without geomux headers on the transit subject; discarded", zap.String("subject", in.Subject()))
		r.metrics.Malformed.Inc()
		_ = in.TermWithReason("no geomux headers")
		return
	}
	out := &nats.Msg{Header: h, Data: in.Data()}
	app := r.appOf(h)
	// Spans cost next to nothing when traces are off: their attributes are
	// made only for a span that records.
	ctx, span := r.opts.Tracer.Start(tracing.FromNATS(context.Background(), h), "route", trace.WithSpanKind(trace.SpanKindConsumer))
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(tracing.EventID(id), tracing.AccountID(account), tracing.App(app))
	}
	_, lookup := r.opts.Tracer.Start(ctx, "lookup")
	var region, reason string
	if account == "" {
		var err error
		if account, err = r.channelAccount(h); err != nil {
			tracing.End(lookup, err)
			_ = in.NakWithDelay(deferDelay) // the channel book cannot be read now
			return
		}
		if account == "" {
			reason = ParkNoAccount
		}
	}
	if reason == "" {
		region, reason = r.route(app, account)
	}
	if lookup.IsRecording() {
		lookup.SetAttributes(tracing.Region(region), tracing.Outcome(cmp.Or(reason, "routed")))
	}
	lookup.End()
	ok := reason == ""
	var also []jetstream.PubAckFuture
	uninstall := account != "" && h.Get(proto.HeaderEventType) == zoom.EventAppDeauthorized
	if uninstall {
		var stored bool
		if also, stored = r.erasureCopies(h, account, id, region); !stored {
			_ = in.NakWithDelay(deferDelay)
			return
		}
		if reason == ParkNoRegion && len(also) > 0 {
			// An uninstall of an account without a region: it is not
			// parked (it would erase a later install); the copies erase
			// what any region still holds of the account.
			l := r.lanes[r.opts.Regions[0]]
			l.ch <- pendingAck{in: in, fut: also[0], also: also[1:], account: account, id: id, app: app, reason: reason, uninstall: true, start: time.Now()}
			return
		}
	}
	if ok {
		out.Subject = regionSubject(region, h, out.Data)
		h.Set(proto.HeaderRegion, region)
		h.Del(proto.HeaderParkReason)
	} else {
		if rec, known := r.cache.Lookup(account); known && reason == ParkNoRegion {
			r.log.Error("Account's region is not configured; event parked", logfields.EventID(id), logfields.AccountID(account), logfields.Region(rec.Region))
		}
		out.Subject = proto.ParkedSubject(account)
		if reason == ParkNoAccount {
			out.Subject = proto.ParkedChannelSubject(h.Get(proto.HeaderChannel))
		}
		h.Set(proto.HeaderParkReason, reason)
	}
	pub, l := r.js, r.lanes[""] // parked: the hub
	if ok {
		pub, l = r.regionJS[region], r.lanes[region]
	}
	if !l.conn.IsConnected() || len(l.ch) == cap(l.ch) {
		r.metrics.Deferred.WithLabelValues(region).Inc()
		_ = in.NakWithDelay(deferDelay)
		return
	}
	pctx, pubSpan := r.opts.Tracer.Start(ctx, "publish", trace.WithSpanKind(trace.SpanKindProducer))
	if pubSpan.IsRecording() {
		pubSpan.SetAttributes(tracing.Region(region))
		tracing.ToNATS(pctx, h) // the region's worker continues from here (else from the ingress's)
	}
	fut, err := pub.PublishMsgAsync(out)
	if err != nil {
		tracing.End(pubSpan, err)
		r.metrics.Failures.Inc()
		r.failLog.Warn("Route publish failed; will retry", logfields.EventID(id), logfields.AccountID(account), zap.Error(err))
		_ = in.NakWithDelay(time.Second)
		return
	}
	// Only one event is routed at a time, and the lane had room: this does
	// not block.
	l.ch <- pendingAck{in: in, fut: fut, also: also, account: account, id: id, region: region, app: app, reason: reason,
		channel: h.Get(proto.HeaderChannel), uninstall: uninstall, start: time.Now(), span: pubSpan}
}

// deferDelay is how long an event whose region is unreachable waits in the
// transit stream before it is tried again.
const deferDelay = 2 * time.Second

// publishAckTimeout is how long the router waits for a stream to store an
// event it routed (milliseconds when all is well). A publish that reached a
// server killed before it answered is never answered: the event is handed
// back and tried again, once the stream has a new leader; a late answer
// costs a copy that the stream drops (Nats-Msg-Id). The ack loop takes its
// lane's events in order, so this is also how long the events behind such
// a publish wait. It was the JetStream context's 10 s, which a region's
// server loss added to its replies.
const publishAckTimeout = 2 * time.Second

var errPublishAckTimeout = fmt.Errorf("router: the stream did not acknowledge the event within %s", publishAckTimeout)

// ackLoop acknowledges each input of a lane once its copy is stored.
func (r *Router) ackLoop(l *lane) {
	defer r.ackDone.Done()
	late := time.NewTimer(publishAckTimeout)
	defer late.Stop()
	for p := range l.ch {
		late.Reset(time.Until(p.start.Add(publishAckTimeout)))
		var err error
		select {
		case <-r.stopping:
			p.end(errors.New("stopping"))
			_ = p.in.Nak()
			continue
		case <-p.fut.Ok():
		case err = <-p.fut.Err():
		case <-late.C:
			select { // its answer may have come meanwhile
			case <-p.fut.Ok():
			case err = <-p.fut.Err():
			default:
				err = errPublishAckTimeout
			}
		}
		p.end(err)
		msg := "Route publish failed; will retry"
		if err == nil {
			if err = r.awaitAll(p.also); err != nil {
				msg = "Erasure copy not stored; will retry"
			}
		}
		if err != nil {
			r.metrics.Failures.Inc()
			r.failLog.Warn(msg, logfields.EventID(p.id), logfields.AccountID(p.account), zap.Error(err))
			_ = p.in.NakWithDelay(time.Second)
			continue
		}
		_ = p.in.Ack()
		r.routed(p)
	}
}

func (r *Router) routed(p pendingAck) {
	if p.reason == ParkNoAccount {
		r.metrics.Parked.Inc()
		r.metrics.ParkedNoAccount.Inc()
		r.log.Info("Event parked: it names no account, and its channel's account is not known yet", logfields.EventID(p.id), logfields.App(p.app))
		return
	}
	if p.uninstall && p.reason != ParkConflict {
		r.eraseParked(p.account, p.id)
		r.forgetChannels(p.account, p.id)
	}
	if p.uninstall && p.reason == ParkNoRegion {
		r.metrics.Dropped.WithLabelValues("uninstall_without_region").Inc()
		r.log.Info("Uninstall of an account without a region; every region erases what it holds of it", logfields.EventID(p.id), logfields.AccountID(p.account), logfields.App(p.app))
		return
	}
	if p.channel != "" {
		r.learnChannel(p.channel, p.account)
	}
	if p.region != "" {
		r.metrics.Routed.WithLabelValues(p.region, p.app).Inc()
		r.metrics.RouteSeconds.Observe(time.Since(p.start).Seconds())
		if ce := r.log.Check(zap.DebugLevel, "Event routed"); ce != nil {
			ce.Write(logfields.EventID(p.id), logfields.AccountID(p.account), logfields.App(p.app), logfields.Region(p.region))
		}
		return
	}
	fields := []zap.Field{logfields.EventID(p.id), logfields.AccountID(p.account), logfields.App(p.app)}
	r.metrics.Parked.Inc()
	if p.reason == ParkConflict {
		r.conflict(p.app, p.account, fields)
		return
	}
	r.log.Info("Event parked: account has no region", fields...)
	// The account may have got its region while this event was on its way
	// to the parking stream, after the unparker looked.
	if rec, ok := r.cache.Lookup(p.account); ok && r.regions[rec.Region] {
		r.unpark.request(p.account)
	}
}

// conflict counts, logs and records an event parked because its app is
// pinned to a region the directory contradicts.
func (r *Router) conflict(app, account string, fields []zap.Field) {
	pinned := r.opts.Pins[app]
	rec, _ := r.cache.Lookup(account)
	r.metrics.Conflicts.WithLabelValues(app).Inc()
	r.log.Warn("Event parked: its app is pinned to a region the directory contradicts; move the account or the app",
		append(fields, zap.String("app_region", pinned), zap.String("directory_region", rec.Region))...)
	if r.opts.Conflicts != nil {
		r.bg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := r.opts.Conflicts.Record(ctx, directory.Conflict{AccountID: account, App: app, AppRegion: pinned, DirectoryRegion: rec.Region})
			if err != nil {
				r.log.Warn("Conflict not recorded", append(fields, zap.Error(err))...)
			}
		})
	}
	// The directory may have changed while this event was on its way.
	if _, reason := r.route(app, account); reason != ParkConflict {
		r.unpark.request(account)
	}
}

// appOf is the app an event came through.
func (r *Router) appOf(h nats.Header) string {
	if app := h.Get(proto.HeaderApp); app != "" {
		return app
	}
	return r.opts.Apps[0]
}

// route says where an event of account that came through app goes: a
// configured region, or nowhere yet, with the reason. An app pinned to a
// region sends its events there, unless the directory gives the account
// another region: then neither is chosen.
func (r *Router) route(app, account string) (region, parkReason string) {
	if pinned, ok := r.opts.Pins[app]; ok {
		if rec, known := r.cache.Lookup(account); known && rec.Region != pinned {
			return "", ParkConflict
		}
		if r.regions[pinned] {
			return pinned, ""
		}
		return "", ParkNoRegion
	}
	if region, ok := r.regionOf(account); ok {
		return region, ""
	}
	return "", ParkNoRegion
}

// regionOf returns the configured region of an account, if it has one.
func (r *Router) regionOf(account string) (string, bool) {
	rec, ok := r.cache.Lookup(account)
	if !ok || !r.regions[rec.Region] {
		return "", false
	}
	return rec.Region, true
}

// regionSubject is the subject an event goes to in its region: its account's
// and its conversation's keys, which order the region's work. The
// conversation is read from the body once and kept in the event's headers.
func regionSubject(region string, h nats.Header, body []byte) string {
	key := h.Get(proto.HeaderConversation)
	if key == "" {
		key = proto.ConversationKey(zoom.Conversation(body))
		h.Set(proto.HeaderConversation, key)
	}
	return proto.RegionEventSubject(region, h.Get(proto.HeaderAccountID), key)
}

// transitStreams sets up the configured transit streams and finds those
// beyond them (nats.transit_partitions lowered): the router reads every
// one, so that no event is left behind.
func (r *Router) transitStreams(ctx context.Context) ([]jetstream.Stream, error) {
	so := r.opts.Streams
	var all []jetstream.Stream
	for _, sc := range so.Transit() {
		st, err := so.Stream(ctx, r.js, sc)
		if err != nil {
			return nil, err
		}
		all = append(all, st)
	}
	names := r.js.StreamNames(ctx, jetstream.WithStreamListSubject(proto.IngressSubject+".*"))
	var extra []string
	for name := range names.Name() {
		if proto.IsTransitStream(name) && !slices.ContainsFunc(all, func(s jetstream.Stream) bool { return s.CachedInfo().Config.Name == name }) {
			extra = append(extra, name)
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("list the transit streams: %w", err)
	}
	// In partition order, so that stream p is read by consumer p.
	for p := len(all); len(extra) > 0; p++ {
		i := slices.Index(extra, proto.TransitStream(p))
		if i < 0 {
			return nil, fmt.Errorf("transit stream %s is missing while %v exist: set nats.transit_partitions to cover them", proto.TransitStream(p), extra)
		}
		st, err := r.js.Stream(ctx, extra[i])
		if err != nil {
			return nil, fmt.Errorf("open transit stream %s: %w", extra[i], err)
		}
		all = append(all, st)
		extra = slices.Delete(extra, i, i+1)
	}
	return all, nil
}
