package workers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// ---------------------------------------------------------------- helpers

// replayEntry puts a region's dead letter back, as geomux dlq replay does.
func replayEntry(t *testing.T, js jetstream.JetStream, region string, id uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s, err := dlq.Open(ctx, js, region)
	if err != nil {
		t.Fatalf("dlq.Open(%s): %v", region, err)
	}
	if err := s.Replay(ctx, id); err != nil {
		t.Fatalf("Replay(%d): %v", id, err)
	}
}

// interceptJS is a JetStream whose consumer on one stream hands the worker
// each message through wrap: to watch deliveries, or to make a worker die at
// a chosen moment.
type interceptJS struct {
	jetstream.JetStream
	stream string
	wrap   func(jetstream.Msg) jetstream.Msg
}

func (j *interceptJS) CreateOrUpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := j.JetStream.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil || stream != j.stream {
		return c, err
	}
	return interceptConsumer{Consumer: c, wrap: j.wrap}, nil
}

type interceptConsumer struct {
	jetstream.Consumer
	wrap func(jetstream.Msg) jetstream.Msg
}

func (c interceptConsumer) Consume(h jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (jetstream.ConsumeContext, error) {
	return c.Consumer.Consume(func(m jetstream.Msg) { h(c.wrap(m)) }, opts...)
}

// deliveryRecorder records the delivery count of every message a worker gets.
type deliveryRecorder struct {
	mu  sync.Mutex
	got []uint64
}

func (l *deliveryRecorder) js(js jetstream.JetStream, region string) jetstream.JetStream {
	return &interceptJS{JetStream: js, stream: proto.RegionEventsStream(region), wrap: func(m jetstream.Msg) jetstream.Msg {
		if md, err := m.Metadata(); err == nil {
			l.mu.Lock()
			l.got = append(l.got, md.NumDelivered)
			l.mu.Unlock()
		}
		return m
	}}
}

func (l *deliveryRecorder) Deliveries() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// replaySendCounter counts the sends it passes on.
type replaySendCounter struct {
	workers.Sender // edits, deletes, unfurls: passed on
	s              workers.Sender
	n              atomic.Int32
}

func (c *replaySendCounter) SendMessage(ctx context.Context, m zoom.Message) (zoom.Sent, error) {
	c.n.Add(1)
	return c.s.SendMessage(ctx, m)
}

// replayEchoCounter counts its calls and echoes.
type replayEchoCounter struct{ n atomic.Int32 }

// Answer answers with the replies of handle.
func (h *replayEchoCounter) Answer(ctx context.Context, ev workers.Event) (proto.BackendResponse, error) {
	return workers.HandlerFunc(h.handle).Answer(ctx, ev)
}

func (h *replayEchoCounter) handle(ctx context.Context, ev workers.Event) ([]proto.ChatMessage, error) {
	h.n.Add(1)
	return workers.Echo(ctx, ev)
}

// replyRecord reads an event's record in the replies bucket.
func replyRecord(t *testing.T, kv jetstream.KeyValue, id string) (messages, sent int, done bool) {
	t.Helper()
	raw, ok := replyStateOf(t, kv, id)
	if !ok {
		t.Fatalf("no record of event %s", id)
	}
	var st struct {
		Messages []json.RawMessage `json:"messages"`
		Sent     int               `json:"sent"`
		Done     bool              `json:"done"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return len(st.Messages), st.Sent, st.Done
}

// ---------------------------------------------------------------- replay

// A backend that refused an event for good (400) is fixed; the operator
// replays the dead letter: the backend is asked again, the reply goes out
// once, and the queue is empty.
func TestReplayAfterTheBackendIsFixed(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	var fixed atomic.Bool
	backend := newFakeBackend(t, func(n int, req proto.BackendRequest) backendAnswer {
		if !fixed.Load() {
			return backendAnswer{Status: http.StatusBadRequest, Body: `{"error":"not today"}`}
		}
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("fixed")}}})
	})
	_, reg := startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), testOptions("eu"))
	kv := repliesKV(t, ns.JS, "eu")

	body := zoomtest.BotNotification("acct", "please", 1)
	ev := publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", body)
	dl := waitDeadLetter(t, ns.JS, "eu")
	if r, s := dl.Header.Get(proto.HeaderDeadReason), dl.Header.Get(proto.HeaderDeadStatus); r != proto.DeadReasonPermanent || s != "400" {
		t.Fatalf("dead letter reason %q status %q, want permanent 400", r, s)
	}
	if n := backend.Hits(); n != 1 {
		t.Fatalf("backend called %d times before the replay, want 1", n)
	}
	if n := z.Requests(); n != 0 {
		t.Fatalf("Zoom received %d requests before the replay", n)
	}

	fixed.Store(true)
	replayEntry(t, ns.JS, "eu", dl.Sequence)
	waitMetric(t, reg, "geomux_worker_handled_total", map[string]string{"region": "eu", "outcome": "ok"}, 1)
	waitEventsGone(t, ns.JS, "eu")

	if got := z.Texts(); !slices.Equal(got, []string{"fixed"}) {
		t.Errorf("Zoom accepted %q, want the reply once", got)
	}
	if n := len(z.Sends()); n != 1 {
		t.Errorf("send attempts = %d, want 1", n)
	}
	calls := backend.Calls()
	if len(calls) != 2 {
		t.Fatalf("backend called %d times, want 2 (the first attempt and the replay)", len(calls))
	}
	again := calls[1]
	if again.DecodeErr != nil || again.Req.ID != ev.ID || again.Req.AccountID != "acct" || !bytes.Equal(again.Req.Payload, body) {
		t.Errorf("replayed backend request = %+v (%v); want event %s with the original payload", again.Req, again.DecodeErr, ev.ID)
	}
	if got := again.Header.Get(proto.HTTPHeaderEventID); got != ev.ID {
		t.Errorf("replayed request %s = %q, want %q", proto.HTTPHeaderEventID, got, ev.ID)
	}
	if dls := deadLetters(t, ns.JS, "eu"); len(dls) != 0 {
		t.Errorf("%d dead letters after the replay, want none", len(dls))
	}
	if got := metricValue(t, reg, "geomux_worker_handled_total", map[string]string{"region": "eu", "outcome": "dead"}); got != 1 {
		t.Errorf("dead outcomes = %v, want 1 (the replay succeeded)", got)
	}
	assertFinishedRecord(t, kv, ev.ID, 1)
	if ci := consumerInfo(t, ns.JS, "eu"); ci.NumAckPending != 0 {
		t.Errorf("consumer has %d pending acks", ci.NumAckPending)
	}
}

// Zoom accepts the first of two replies and refuses the second for good
// (403): the event is dead-lettered with the first recorded as sent. Once
// Zoom accepts again, a replay sends the second only, without asking the
// backend again.
func TestReplayAfterPartialSendSendsOnlyTheRest(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, func(n int) (int, string) {
		if n == 2 {
			return http.StatusForbidden, ""
		}
		return 0, ""
	})
	backend := newFakeBackend(t, func(n int, req proto.BackendRequest) backendAnswer {
		if n > 1 { // were the backend asked again, it would answer differently
			return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("asked again")}}})
		}
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("one")}, {Content: card("two")}}})
	})
	_, reg := startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), testOptions("eu"))
	kv := repliesKV(t, ns.JS, "eu")

	ev := publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "two please", 1))
	dl := waitDeadLetter(t, ns.JS, "eu")
	if r, s := dl.Header.Get(proto.HeaderDeadReason), dl.Header.Get(proto.HeaderDeadStatus); r != proto.DeadReasonPermanent || s != "403" {
		t.Fatalf("dead letter reason %q status %q, want permanent 403", r, s)
	}
	if e := dl.Header.Get(proto.HeaderDeadError); !strings.Contains(e, "zoom answered 403") {
		t.Errorf("dead letter error %q", e)
	}
	if got := z.Texts(); !slices.Equal(got, []string{"one"}) {
		t.Fatalf("Zoom accepted %q before the replay, want the first reply", got)
	}
	if m, sent, done := replyRecord(t, kv, ev.ID); m != 2 || sent != 1 || done {
		t.Fatalf("record of the dead letter: %d messages, %d sent, done %v; want 2, 1, not done", m, sent, done)
	}

	replayEntry(t, ns.JS, "eu", dl.Sequence)
	waitMetric(t, reg, "geomux_worker_handled_total", map[string]string{"region": "eu", "outcome": "ok"}, 1)
	waitEventsGone(t, ns.JS, "eu")

	if got := z.Texts(); !slices.Equal(got, []string{"one", "two"}) {
		t.Errorf("Zoom accepted %q, want one (before) then two (the replay), each once", got)
	}
	if n := len(z.Sends()); n != 3 {
		t.Errorf("send attempts = %d, want 3 (one, two refused, two)", n)
	}
	if n := backend.Hits(); n != 1 {
		t.Errorf("backend called %d times, want 1: the replay sends the recorded replies", n)
	}
	if dls := deadLetters(t, ns.JS, "eu"); len(dls) != 0 {
		t.Errorf("%d dead letters after the replay, want none", len(dls))
	}
	assertFinishedRecord(t, kv, ev.ID, 2)
}

// ---------------------------------------------------------------- killed workers

// killedBeforeAck is an event whose worker dies once its replies are out
// and recorded: the acknowledgement never reaches JetStream.
type killedBeforeAck struct {
	jetstream.Msg
	killed chan<- jetstream.Msg
}

func (m killedBeforeAck) die() error {
	select {
	case m.killed <- m.Msg:
	default:
	}
	return errors.New("killed before the ack")
}

func (m killedBeforeAck) Ack() error                      { return m.die() }
func (m killedBeforeAck) DoubleAck(context.Context) error { return m.die() }

// The handler timeout of the kill tests: JetStream redelivers the event of a
// killed worker after the ack wait (workers.AckWait).
const killTestHandlerTimeout = 250 * time.Millisecond

// A worker killed between sending the Zoom reply and acknowledging the event
// must not have the reply sent twice: JetStream redelivers the event to the
// next worker, which finds the record of the reply and only acknowledges.
func TestWorkerKilledBetweenReplyAndAck(t *testing.T) {
	t.Parallel()
	t.Run("redelivery acknowledged without a second send", func(t *testing.T) {
		t.Parallel()
		testKilledBeforeAck(t, false)
	})
	// Control: the record is what prevents the second send. Without it the
	// same redelivery replies again, so the test above does exercise it.
	t.Run("without the record the reply goes out twice", func(t *testing.T) {
		t.Parallel()
		testKilledBeforeAck(t, true)
	})
}

func testKilledBeforeAck(t *testing.T, dropRecord bool) {
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	opts := testOptions("us")
	opts.HandlerTimeout = killTestHandlerTimeout
	h := &replayEchoCounter{}

	killed := make(chan jetstream.Msg, 1)
	victim := &interceptJS{JetStream: ns.JS, stream: proto.RegionEventsStream("us"),
		wrap: func(m jetstream.Msg) jetstream.Msg { return killedBeforeAck{Msg: m, killed: killed} }}
	w1, _ := startWorker(t, victim, h, zoomClient(t, z), opts)

	ev := publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "only once", 1))
	var lost jetstream.Msg
	select {
	case lost = <-killed:
	case <-time.After(waitFor):
		t.Fatal("the worker never came to acknowledging the event")
	}
	// Dead: it does nothing more.
	if _, err := stopWithin(t, w1, waitFor); err != nil {
		t.Fatalf("Stop of the killed worker: %v", err)
	}

	// What the killed worker left: the reply out and recorded, the event
	// unacknowledged on its first delivery.
	if got := z.Texts(); !slices.Equal(got, []string{"only once"}) {
		t.Fatalf("Zoom accepted %q before the kill, want the reply", got)
	}
	kv := repliesKV(t, ns.JS, "us")
	assertFinishedRecord(t, kv, ev.ID, 1)
	if md, err := lost.Metadata(); err != nil || md.NumDelivered != 1 {
		t.Fatalf("killed delivery: %+v, %v; want the first", md, err)
	}
	if ci := consumerInfo(t, ns.JS, "us"); ci.NumAckPending != 1 {
		t.Fatalf("consumer has %d pending acks after the kill, want the event's", ci.NumAckPending)
	}
	if dropRecord {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := kv.Delete(ctx, recordKey(t, kv, ev.ID)); err != nil {
			t.Fatal(err)
		}
	}

	// The next worker: JetStream redelivers it the event once the killed
	// delivery's ack wait is over.
	var log deliveryRecorder
	zc := zoomClient(t, z)
	sender := &replaySendCounter{Sender: zc, s: zc}
	_, reg := startWorker(t, log.js(ns.JS, "us"), h, sender, opts)
	natstest.Eventually(t, 4*opts.HandlerTimeout+15*time.Second,
		func() bool { return streamMsgs(t, ns.JS, proto.RegionEventsStream("us")) == 0 },
		"the event to be redelivered and acknowledged")
	waitMetric(t, reg, "geomux_worker_handled_total", map[string]string{"region": "us", "outcome": "ok"}, 1)
	if got := log.Deliveries(); !slices.Equal(got, []uint64{2}) {
		t.Errorf("the new worker got deliveries %v, want one: the event's second", got)
	}

	if dropRecord {
		if got := z.Texts(); !slices.Equal(got, []string{"only once", "only once"}) {
			t.Errorf("without the record Zoom accepted %q; want the reply twice, or the redelivery is not exercised", got)
		}
		return
	}
	if got := z.Texts(); !slices.Equal(got, []string{"only once"}) {
		t.Errorf("Zoom accepted %q, want the reply once", got)
	}
	if n := sender.n.Load(); n != 0 {
		t.Errorf("the new worker sent %d messages, want none", n)
	}
	if n := h.n.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1 (the finished event is not handled again)", n)
	}
	if got := metricValue(t, reg, "geomux_worker_replied_total", map[string]string{"region": "us", "app": "default"}); got != 0 {
		t.Errorf("the new worker counted %v replies, want 0", got)
	}
	assertFinishedRecord(t, kv, ev.ID, 1)
}

// stallingSender sends through Zoom until its stallAt-th call, which stalls
// until the attempt's context ends, sending nothing.
type stallingSender struct {
	workers.Sender
	zc      workers.Sender
	stallAt int32
	n       atomic.Int32
	stalled chan struct{}
}

func (s *stallingSender) SendMessage(ctx context.Context, m zoom.Message) (zoom.Sent, error) {
	if s.n.Add(1) != s.stallAt {
		return s.zc.SendMessage(ctx, m)
	}
	close(s.stalled)
	<-ctx.Done()
	return zoom.Sent{}, ctx.Err()
}

// A worker stopped between two replies hands the event back (Stop gives up
// quickly): the next worker sends the second reply only, and does not ask
// the backend again.
func TestWorkerStoppedBetweenTwoRepliesResumes(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	backend := newFakeBackend(t, func(n int, req proto.BackendRequest) backendAnswer {
		if n > 1 {
			return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("asked again")}}})
		}
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("one")}, {Content: card("two")}}})
	})
	opts := testOptions("eu")
	zc := zoomClient(t, z)
	stall := &stallingSender{Sender: zc, zc: zc, stallAt: 2, stalled: make(chan struct{})}
	w1, _ := startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), stall, opts)

	ev := publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "two please", 1))
	select {
	case <-stall.stalled:
	case <-time.After(waitFor):
		t.Fatal("the second reply was never attempted")
	}
	if _, err := stopWithin(t, w1, 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v, want context.DeadlineExceeded (it gave up on the event)", err)
	}
	kv := repliesKV(t, ns.JS, "eu")
	if m, sent, done := replyRecord(t, kv, ev.ID); m != 2 || sent != 1 || done {
		t.Fatalf("record after the stop: %d messages, %d sent, done %v; want 2, 1, not done", m, sent, done)
	}

	var log deliveryRecorder
	startWorker(t, log.js(ns.JS, "eu"), backendHandler(t, backend, "eu", 0), zoomClient(t, z), opts)
	waitEventsGone(t, ns.JS, "eu")
	if got := z.Texts(); !slices.Equal(got, []string{"one", "two"}) {
		t.Errorf("Zoom accepted %q, want one then two, each once", got)
	}
	if n := backend.Hits(); n != 1 {
		t.Errorf("backend called %d times, want 1", n)
	}
	if got := log.Deliveries(); len(got) != 1 || got[0] < 2 {
		t.Errorf("the new worker got deliveries %v, want one redelivery", got)
	}
	assertFinishedRecord(t, kv, ev.ID, 2)
}

// A worker killed between the reply and the ack, then workers dying on
// every later delivery, leave the event to the dead-letter keeper (max
// deliveries), though its reply went out. Replaying that dead letter must not send the reply again:
// "replies that already went out are not sent again" (geomux dlq replay).
func TestReplayOfFinishedEventSendsNothingAgain(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	opts := testOptions("us")
	opts.HandlerTimeout = killTestHandlerTimeout
	opts.Retry.MaxAttempts = 1
	h := &replayEchoCounter{}

	killed := make(chan jetstream.Msg, 1)
	victim := &interceptJS{JetStream: ns.JS, stream: proto.RegionEventsStream("us"),
		wrap: func(m jetstream.Msg) jetstream.Msg { return killedBeforeAck{Msg: m, killed: killed} }}
	w1, _ := startWorker(t, victim, h, zoomClient(t, z), opts)
	ev := publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "only once", 1))
	select {
	case <-killed:
	case <-time.After(waitFor):
		t.Fatal("the worker never came to acknowledging the event")
	}
	if _, err := stopWithin(t, w1, waitFor); err != nil {
		t.Fatalf("Stop of the killed worker: %v", err)
	}
	kv := repliesKV(t, ns.JS, "us")
	assertFinishedRecord(t, kv, ev.ID, 1)

	// Its delivery's ack wait runs out, and workers dying on it take every
	// delivery left: the keeper dead-letters it.
	exhaustDeliveries(t, ns.JS, "us")
	_, reg := startWorker(t, ns.JS, h, zoomClient(t, z), opts)
	natstest.Eventually(t, 4*opts.HandlerTimeout+15*time.Second, func() bool { return len(deadLetters(t, ns.JS, "us")) > 0 },
		"the keeper to dead-letter the event")
	waitEventsGone(t, ns.JS, "us")
	dls := deadLetters(t, ns.JS, "us")
	if len(dls) != 1 || dls[0].Header.Get(proto.HeaderDeadReason) != proto.DeadReasonMaxAttempts || dls[0].Header.Get(proto.HeaderEventID) != ev.ID {
		t.Fatalf("dead letters %+v, want the event's, max_attempts", dls)
	}

	replayEntry(t, ns.JS, "us", dls[0].Sequence)
	waitMetric(t, reg, "geomux_worker_handled_total", map[string]string{"region": "us", "outcome": "ok"}, 1)
	waitEventsGone(t, ns.JS, "us")
	got := z.Texts()
	if slices.Equal(got, []string{"only once", "only once"}) && h.n.Load() == 2 {
		t.Fatalf("replaying the dead letter of a finished event (record done) asks the handler again and resends the reply: "+
			"worker.go handle skips the done check for replays (recorded && st.Done && !replay), and a done record keeps no "+
			"messages, so len(st.Messages) == 0 asks the handler; Zoom accepted %q", got)
	}
	if !slices.Equal(got, []string{"only once"}) {
		t.Errorf("Zoom accepted %q, want the reply once", got)
	}
	if n := h.n.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
	if dls := deadLetters(t, ns.JS, "us"); len(dls) != 0 {
		t.Errorf("%d dead letters after the replay, want none", len(dls))
	}
}
