package workers_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// handlerCall is one call of a recording handler.
type handlerCall struct {
	ID string
	// CanceledAtEntry: the context was already done when the call began.
	CanceledAtEntry bool
	// End is the context's error when a blocking call returned.
	End error
}

// blockingHandler blocks its first call until its context is done; later
// calls echo.
type blockingHandler struct {
	mu    sync.Mutex
	calls []handlerCall
}

// Answer answers with the replies of handle.
func (h *blockingHandler) Answer(ctx context.Context, ev workers.Event) (proto.BackendResponse, error) {
	return workers.HandlerFunc(h.handle).Answer(ctx, ev)
}

func (h *blockingHandler) handle(ctx context.Context, ev workers.Event) ([]proto.ChatMessage, error) {
	h.mu.Lock()
	h.calls = append(h.calls, handlerCall{ID: ev.ID, CanceledAtEntry: ctx.Err() != nil})
	n := len(h.calls)
	h.mu.Unlock()
	if n > 1 {
		return workers.Echo(ctx, ev)
	}
	<-ctx.Done()
	h.mu.Lock()
	h.calls[0].End = ctx.Err()
	h.mu.Unlock()
	return nil, ctx.Err()
}

func (h *blockingHandler) Calls() []handlerCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

// stopWithin stops w with a context of d and reports how long it took.
func stopWithin(t *testing.T, w *workers.Worker, d time.Duration) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	err := w.Stop(ctx)
	return time.Since(start), err
}

// The handler timeout of the Stop tests: the consumer's ack wait, after
// which an abandoned event is redelivered, is 2×it+5s.
const stopTestHandlerTimeout = time.Second

func TestStopAbandonsEventInHandAndItIsRedelivered(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	opts := testOptions("us")
	opts.HandlerTimeout = stopTestHandlerTimeout
	slow := &blockingHandler{}
	w1, _ := startWorker(t, ns.JS, slow, zoomClient(t, z), opts)

	ev := publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "survive a restart", 1))
	natstest.Eventually(t, waitFor, func() bool { return len(slow.Calls()) == 1 }, "the slow handler to get the event")

	const stopTimeout = 100 * time.Millisecond
	took, err := stopWithin(t, w1, stopTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v, want context.DeadlineExceeded (an event was abandoned)", err)
	}
	if took > stopTimeout+500*time.Millisecond {
		t.Errorf("Stop took %v with a %v context", took, stopTimeout)
	}
	if c := slow.Calls(); len(c) != 1 || !errors.Is(c[0].End, context.Canceled) {
		t.Fatalf("handler calls = %+v, want one, canceled by Stop before Stop returned", c)
	}
	if w1.Ready() == nil {
		t.Error("stopped worker is ready")
	}
	if n := streamMsgs(t, ns.JS, proto.RegionEventsStream("us")); n != 1 {
		t.Fatalf("events stream holds %d messages after Stop, want the abandoned one", n)
	}
	if dl := deadLetters(t, ns.JS, "us"); len(dl) != 0 {
		t.Errorf("abandoned event dead-lettered: %d", len(dl))
	}

	// A new worker gets the event once the abandoned delivery's ack wait
	// has passed, and replies once.
	startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), opts)
	natstest.Eventually(t, 4*stopTestHandlerTimeout+15*time.Second, func() bool { return len(z.SB.Delivered()) > 0 },
		"event %s redelivered to the new worker", ev.ID)
	waitEventsGone(t, ns.JS, "us")
	if got := z.Texts(); !slices.Equal(got, []string{"survive a restart"}) {
		t.Errorf("Zoom accepted %q, want the reply once", got)
	}
	if len(slow.Calls()) != 1 {
		t.Errorf("the stopped worker's handler was called again: %+v", slow.Calls())
	}
}

// Stop with time to spare lets the event in hand finish: replied and
// acknowledged before Stop returns.
func TestStopFinishesEventsInHand(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	h := workers.HandlerFunc(func(ctx context.Context, ev workers.Event) ([]proto.ChatMessage, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return workers.Echo(ctx, ev)
	})
	w, _ := startWorker(t, ns.JS, h, zoomClient(t, z), testOptions("us"))

	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "finish me", 1))
	select {
	case <-started:
	case <-time.After(waitFor):
		t.Fatal("handler not called")
	}

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		stopped <- w.Stop(ctx)
	}()
	// Stop has begun (the worker says it is not ready) while the event is
	// still in hand; now let the handler finish.
	natstest.Eventually(t, waitFor, func() bool { return w.Ready() != nil }, "Stop to begin")
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while an event was in hand", err)
	default:
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop = %v", err)
	}
	// Done before Stop returned: no waiting here.
	if got := z.Texts(); !slices.Equal(got, []string{"finish me"}) {
		t.Errorf("Zoom accepted %q when Stop returned, want the reply", got)
	}
	if n := streamMsgs(t, ns.JS, proto.RegionEventsStream("us")); n != 0 {
		t.Errorf("events stream holds %d messages when Stop returned, want 0 (acknowledged)", n)
	}
}

// With every slot busy, an event already fetched waits in the consume
// callback for a slot. When Stop gives up on the event in hand, the waiting
// one must not be handed to the handler: Stop has cancelled the worker's
// context (so the handler sees a dead context), and Stop may already have
// returned (so the handler runs on a stopped worker, and dispatch's
// wg.Add races Stop's wg.Wait, which the race detector reports).
func TestStopHandsNothingToTheHandlerAfterGivingUp(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	opts := testOptions("us")
	opts.Concurrency = 1
	opts.HandlerTimeout = stopTestHandlerTimeout
	slow := &blockingHandler{}
	w1, _ := startWorker(t, ns.JS, slow, zoomClient(t, z), opts)

	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "first", 1))
	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "second", 2))
	// Both delivered: one in the handler, one waiting for the only slot.
	natstest.Eventually(t, waitFor, func() bool {
		return len(slow.Calls()) == 1 && consumerInfo(t, ns.JS, "us").NumAckPending == 2
	}, "one event in the handler and one waiting for a slot")

	if _, err := stopWithin(t, w1, 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v, want context.DeadlineExceeded", err)
	}

	// Nothing is lost: both come back to a new worker, which replies once
	// to each. By then the stopped worker has long done whatever it would.
	startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), opts)
	defer func() {
		ci := consumerInfo(t, ns.JS, "us")
		t.Logf("DEBUG pending %d ackpending %d redelivered %d stream %d", ci.NumPending, ci.NumAckPending, ci.NumRedelivered, streamMsgs(t, ns.JS, proto.RegionEventsStream("us")))
	}()
	natstest.Eventually(t, 4*stopTestHandlerTimeout+15*time.Second, func() bool { return len(z.SB.Delivered()) == 2 },
		"both events redelivered to the new worker")
	waitEventsGone(t, ns.JS, "us")
	got := z.Texts()
	slices.Sort(got)
	if !slices.Equal(got, []string{"first", "second"}) {
		t.Errorf("Zoom accepted %q, want each reply once", got)
	}
	for i, c := range slow.Calls() {
		if c.CanceledAtEntry {
			t.Errorf("stopped worker called its handler (call %d, event %s) with an already cancelled context", i+1, c.ID)
		}
	}
	if n := len(slow.Calls()); n != 1 {
		t.Errorf("stopped worker's handler called %d times, want 1 (only the event in hand when Stop began)", n)
	}
}

// An event whose worker dies during every attempt uses no attempt (none
// finished), but its deliveries are bounded: once they run out the event is
// dead-lettered, not handled.
func TestEventWhoseWorkerAlwaysDiesIsDeadLettered(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	opts := testOptions("us")
	opts.Retry.MaxAttempts = 1

	// Set the region up, then stop: the next worker is the one after the crashes.
	w, _ := startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), opts)
	if _, err := stopWithin(t, w, waitFor); err != nil {
		t.Fatal(err)
	}
	body := zoomtest.BotNotification("acct", "crash", 1)
	ev := publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", body)
	if n := exhaustDeliveries(t, ns.JS, "us"); n != topology.WorkerConsumer(opts.Region, 0, opts.ConsumerSettings()).Config.MaxDeliver {
		t.Fatalf("the crashing workers took the event %d times, want %d", n, topology.WorkerConsumer(opts.Region, 0, opts.ConsumerSettings()).Config.MaxDeliver)
	}

	var called sync.Mutex
	calls := 0
	h := workers.HandlerFunc(func(ctx context.Context, ev workers.Event) ([]proto.ChatMessage, error) {
		called.Lock()
		calls++
		called.Unlock()
		return workers.Echo(ctx, ev)
	})
	startWorker(t, ns.JS, h, zoomClient(t, z), opts)
	dl := waitDeadLetter(t, ns.JS, "us")
	for k, want := range map[string]string{
		proto.HeaderDeadReason: proto.DeadReasonMaxAttempts,
		proto.HeaderAttempts:   strconv.Itoa(topology.WorkerConsumer(opts.Region, 0, opts.ConsumerSettings()).Config.MaxDeliver),
		proto.HeaderEventID:    ev.ID,
		proto.HeaderDeadStatus: "",
	} {
		if got := dl.Header.Get(k); got != want {
			t.Errorf("dead letter %s = %q, want %q", k, got, want)
		}
	}
	if e := dl.Header.Get(proto.HeaderDeadError); !strings.Contains(e, "no attempt finished") {
		t.Errorf("dead error = %q, want it to say no attempt finished", e)
	}
	called.Lock()
	defer called.Unlock()
	if calls != 0 {
		t.Errorf("handler called %d times after the attempts ran out", calls)
	}
	if n := z.Requests(); n != 0 {
		t.Errorf("Zoom received %d requests", n)
	}
}

// lateSender sends through Zoom, then learns of its success only as the
// attempt's context ends, as when Zoom's answer arrives just as Stop gives up.
type lateSender struct {
	workers.Sender
	zc   *zoom.Client
	sent chan struct{}
}

func (s *lateSender) SendMessage(ctx context.Context, m zoom.Message) (zoom.Sent, error) {
	out, err := s.zc.SendMessage(context.WithoutCancel(ctx), m)
	close(s.sent)
	<-ctx.Done()
	return out, err
}

// An event whose replies all went out is acknowledged even if Stop gives up
// on it at that moment: otherwise it is redelivered and replied to twice.
func TestEventRepliedAsStopGivesUpIsAcknowledged(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	opts := testOptions("us")
	opts.HandlerTimeout = 2 * time.Second
	zc := zoomClient(t, z)
	late := &lateSender{Sender: zc, zc: zc, sent: make(chan struct{})}
	w1, _ := startWorker(t, ns.JS, workers.Echo, late, opts)

	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "only once", 1))
	select {
	case <-late.sent:
	case <-time.After(waitFor):
		t.Fatal("reply not sent")
	}
	if _, err := stopWithin(t, w1, 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v, want context.DeadlineExceeded", err)
	}

	// Were the event left unacknowledged, the next worker would get it again
	// after the ack wait and reply a second time.
	startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), opts)
	natstest.Eventually(t, 4*opts.HandlerTimeout+15*time.Second,
		func() bool { return streamMsgs(t, ns.JS, proto.RegionEventsStream("us")) == 0 }, "the event to be acknowledged")
	if got := z.Texts(); !slices.Equal(got, []string{"only once"}) {
		t.Errorf("Zoom accepted %q, want the reply once", got)
	}
}
