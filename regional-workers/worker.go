package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/governor"
	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/vault"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// Sender sends, edits and deletes chat messages and unfurls links through
// Zoom's chatbot API; *zoom.Client is one.
type Sender interface {
	SendMessage(ctx context.Context, m zoom.Message) (zoom.Sent, error)
	EditMessage(ctx context.Context, e zoom.Edit) error
	DeleteMessage(ctx context.Context, messageID, accountID, robotJID, userJID string) error
	Unfurl(ctx context.Context, userID, triggerID string, body json.RawMessage) error
}

// Options configure a Worker.
type Options struct {
	// Region is the region served; the worker reads only its subjects.
	Region string
	// Governor, if set, paces the taking of events so that an ingress in
	// the same process keeps answering Zoom in time.
	Governor *governor.Governor
	// Tracer makes the spans of each attempt (none when nil).
	Tracer trace.Tracer
	// Apps are the Zoom apps' bots: an event is replied to by the bot of
	// the app it came through; an event that names no app (stored before
	// apps were) is the first app's.
	Apps []App
	// Retry is the retry policy.
	Retry config.Retry
	// Concurrency is how many events the worker holds at once, running or
	// waiting their turn (4096 when 0).
	Concurrency int
	// MemoryBudget bounds the bytes of the events held (64 MiB when 0).
	MemoryBudget int64
	// AccountConcurrency is how many events of one account run at once (32
	// when 0).
	AccountConcurrency int
	// BackendConcurrency caps concurrent handler calls (1024 when 0).
	BackendConcurrency int
	// Pace paces each account's Zoom sends (10/s growing to 100/s when 0).
	Pace config.ZoomPace
	// HandlerTimeout bounds one handler call and one Zoom call.
	HandlerTimeout time.Duration
	// Streams are the stream settings.
	Streams topology.Options
	// Vault, if set, is the region's token vault (opened and served by
	// vaultfx): the worker passes the installing user's token to the
	// backend (UserToken) and erases an account's tokens at uninstall.
	Vault *vault.Vault
	// UserToken adds the installing user's token to each event (Event.UserToken).
	UserToken bool
	// Directory is where an uninstalled account's region is removed, last.
	Directory directory.Remover
}

func (o *Options) setDefaults() {
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4096
	}
	if o.MemoryBudget <= 0 {
		o.MemoryBudget = 64 << 20
	}
	if o.AccountConcurrency <= 0 {
		o.AccountConcurrency = 32
	}
	if o.BackendConcurrency <= 0 {
		o.BackendConcurrency = 1024
	}
	if o.Pace.InitialRate <= 0 {
		o.Pace.InitialRate = 10
	}
	if o.Pace.MaxRate < o.Pace.InitialRate {
		o.Pace.MaxRate = max(o.Pace.InitialRate, 100)
	}
}

// App is a Zoom app's chatbot: the app's name, the bot's JID and what
// sends as it.
type App struct {
	Name   string
	BotJID string
	Zoom   Sender
}

// Worker handles one region's events. Build it with New, then Start and
// Stop. It takes events from the partitions of the region's events stream
// (intake.go) into memory, schedules them fairly across accounts and in
// order within each conversation (schedule.go, order.go), makes one attempt
// at each (attempt.go), sends the replies at each account's pace
// (replies.go, pace.go) and records what it did (state.go, settle.go).
type Worker struct {
	js      jetstream.JetStream
	handler Handler
	opts    Options
	// apps are the bots by app name; defaultApp is the app of events that
	// name none.
	apps       map[string]App
	defaultApp string
	log        *zap.Logger
	metrics    *Metrics

	state  *stateStore
	keeper *dlq.Keeper
	dlq    *dlq.Store
	vault  *vault.Vault
	// service answers the hub's questions about the region (service.go).
	service micro.Service
	events  jetstream.Stream
	pace    *pacer
	backend *gate
	budget  *budget
	sched   *scheduler
	ccs     []jetstream.ConsumeContext
	wg      sync.WaitGroup // attempts running
	loops   sync.WaitGroup // the scheduler, the ack-wait keeper and the leader gatherer
	base    context.Context
	cancel  context.CancelFunc
	running atomic.Bool

	// unwatchRegion stops exporting the backlog; set by consume.
	unwatchRegion func()
	// erasures are the accounts being erased, and those erased lately
	// (erase.go).
	erasures erasures
}

// New returns a worker for opts.Region.
func New(js jetstream.JetStream, h Handler, opts Options, m *Metrics, log *zap.Logger) *Worker {
	opts.setDefaults()
	w := &Worker{js: js, handler: h, opts: opts, metrics: m, log: log.With(logfields.Region(opts.Region)), vault: opts.Vault,
		apps: map[string]App{}, defaultApp: config.DefaultAppName}
	var names []string
	for i, a := range opts.Apps {
		if i == 0 {
			w.defaultApp = a.Name
		}
		w.apps[a.Name] = a
		names = append(names, a.Name)
	}
	m.init(opts.Region, names)
	return w
}

// Start sets up the region's streams and buckets, starts turning
// max-deliveries advisories into dead letters, and starts consuming.
func (w *Worker) Start(ctx context.Context) error {
	region, so := w.opts.Region, w.opts.Streams
	site := topology.Region(region, so)
	for _, sc := range site.Streams {
		if _, err := so.Stream(ctx, w.js, sc); err != nil {
			return err
		}
	}
	var err error
	if w.events, err = w.js.Stream(ctx, proto.RegionEventsStream(region)); err != nil {
		return fmt.Errorf("worker of region %s: %w", region, err)
	}
	kv, err := so.KeyValue(ctx, w.js, topology.RepliesConfig(region, so))
	if err != nil {
		return err
	}
	w.state = newStateStore(w.js, kv, proto.RegionRepliesBucket(region), so.DedupWindow, so.DeadLetterMaxAge)
	pkv, err := so.KeyValue(ctx, w.js, topology.RegionPacingConfig(region, so))
	if err != nil {
		return err
	}
	w.pace = newPacer(pkv, w.opts.Pace, w.metrics, region, w.log)
	if w.dlq, err = dlq.Open(ctx, w.js, region); err != nil {
		return err
	}
	w.keeper = dlq.NewKeeper(w.js, region, so, w.lastError, func(reason string) {
		w.metrics.Handled.WithLabelValues(region, "dead").Inc()
		w.metrics.Failed.WithLabelValues(region, reason).Inc()
	}, w.log)
	if err := w.keeper.Start(ctx); err != nil {
		return err
	}
	if err := w.serve(); err != nil {
		_ = w.keeper.Stop(ctx)
		return err
	}
	w.base, w.cancel = context.WithCancel(context.Background())
	w.backend = newGate(w.opts.BackendConcurrency, w.metrics.BackendInFlight.WithLabelValues(region))
	w.budget = newBudget(w.opts.MemoryBudget, w.opts.Concurrency)
	w.sched = newScheduler(w.opts.AccountConcurrency, w.run, &w.wg, w.metrics.InHand.WithLabelValues(region))
	w.loops.Add(2)
	go func() { defer w.loops.Done(); w.sched.loop(w.base) }()
	go func() { defer w.loops.Done(); w.keepInHand(w.base) }()
	if err := w.consume(ctx); err != nil {
		// fx does not stop what failed to start: undo it here.
		w.stopConsuming()
		w.cancel()
		w.loops.Wait()
		_ = w.keeper.Stop(ctx)
		w.stopServices()
		return fmt.Errorf("worker consume of region %s: %w", region, err)
	}
	w.running.Store(true)
	w.log.Info("Worker started", zap.Int("partitions", len(w.ccs)), zap.Int("account_concurrency", w.opts.AccountConcurrency),
		zap.Int("backend_concurrency", w.opts.BackendConcurrency), zap.Int64("memory_budget", w.opts.MemoryBudget))
	return nil
}

// ConsumerSettings are what the workers' consumers are made from
// (topology.WorkerConsumer).
func (o Options) ConsumerSettings() topology.WorkerSettings {
	return topology.WorkerSettings{MaxAttempts: o.Retry.MaxAttempts, Concurrency: o.Concurrency}
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

// Stop drains: no new events are taken, those waiting their turn are handed
// back at once, and the attempts running finish, bounded by ctx. At the bound
// the worker gives up: attempts still running are cancelled and their events
// handed back (Nak) unacknowledged, so that they are redelivered at once to
// another worker or after a restart.
func (w *Worker) Stop(ctx context.Context) error {
	w.running.Store(false)
	if w.sched == nil {
		return nil
	}
	w.stopConsuming()
	for _, it := range w.sched.close() {
		_ = it.msg().Nak()
		w.budget.release(it.cost)
	}
	var err error
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		w.cancel()
		<-done
		err = ctx.Err()
	}
	w.cancel()
	w.loops.Wait()
	w.sched = nil
	// The events finished during the stop were acknowledged with
	// confirmation; those finished just before it, with plain acks: a ping
	// answered means the server has received them too.
	if ferr := flush(ctx, w.js.Conn()); err == nil && ferr != nil {
		err = fmt.Errorf("flush acknowledgements: %w", ferr)
	}
	if kerr := w.keeper.Stop(ctx); err == nil {
		err = kerr
	}
	w.stopServices()
	return err
}

// stopServices stops answering the hub's questions about the region.
func (w *Worker) stopServices() {
	if w.service != nil {
		_ = w.service.Stop()
		w.service = nil
	}
}

// flush waits until the server has everything sent on nc so far, within
// ctx (or 5 s without a deadline).
func flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); ok {
		return nc.FlushWithContext(ctx)
	}
	return nc.FlushTimeout(5 * time.Second)
}
