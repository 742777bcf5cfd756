package dlq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// region is the region whose dead letters the tests work on.
const region = "eu"

// waitFor bounds every NATS call of a test.
const waitFor = 10 * time.Second

// headerReplays counts an event's replays (dlq's unexported headerReplays).
const headerReplays = "Geomux-Replays"

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func streamOptions() topology.Options { return topology.OptionsFrom(config.Default()) }

// setUpRegion creates the region's events, dead-letter and (unless noAudit)
// audit streams, as a worker's Start does.
func setUpRegion(t *testing.T, js jetstream.JetStream, name string, noAudit bool) {
	t.Helper()
	o := streamOptions()
	cfgs := []jetstream.StreamConfig{topology.RegionEventsConfig(name, o), topology.RegionDeadLetterConfig(name, o)}
	if !noAudit {
		cfgs = append(cfgs, topology.RegionAuditConfig(name, topology.Options{}))
	}
	for _, c := range cfgs {
		if _, err := natsx.EnsureStream(testCtx(t), js, c); err != nil {
			t.Fatal(err)
		}
	}
}

// startRegion starts a server with the region set up.
func startRegion(t *testing.T) *natstest.Server {
	t.Helper()
	ns := natstest.Start(t, "")
	setUpRegion(t, ns.JS, region, false)
	return ns
}

func openStore(t *testing.T, js jetstream.JetStream) *dlq.Store {
	t.Helper()
	s, err := dlq.Open(testCtx(t), js, region)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// event is an event of the region as the router publishes it.
type event struct {
	ID         string
	Account    string
	Body       []byte
	Header     nats.Header
	ReceivedAt time.Time
}

// newEvent is a bot_notification of account with every header ingress and
// the router set.
func newEvent(account, text string, n int64) event {
	body := zoomtest.BotNotification(account, text, n)
	ev := event{ID: proto.EventID(body), Account: account, Body: body,
		ReceivedAt: time.Date(2025, 6, 1, 12, 0, 0, int(n)*1000+7, time.UTC)}
	h := nats.Header{}
	h.Set(proto.HeaderEventID, ev.ID)
	h.Set(proto.HeaderEventType, "bot_notification")
	h.Set(proto.HeaderAccountID, account)
	h.Set(proto.HeaderReceivedAt, ev.ReceivedAt.Format(proto.TimeFormat))
	h.Set(proto.HeaderRegion, region)
	h.Set(proto.HeaderConversation, proto.ConversationKey("user:u"+strconv.FormatInt(n, 10)))
	h.Set(proto.HeaderTraceparent, fmt.Sprintf("00-%032x-%016x-01", n+1, n+1))
	h.Set(proto.HeaderZoomTrackingID, "tracking-"+strconv.FormatInt(n, 10))
	h.Set(proto.HeaderZoomRequestID, "request-"+strconv.FormatInt(n, 10))
	h.Set(jetstream.MsgIDHeader, ev.ID)
	ev.Header = h
	return ev
}

// msg is the event's message on the region's events subject.
func (ev event) msg() *nats.Msg {
	m := nats.NewMsg(proto.RegionEventSubject(region, ev.Header.Get(proto.HeaderAccountID), ev.Header.Get(proto.HeaderConversation)))
	m.Data = ev.Body
	for k, v := range ev.Header {
		m.Header[k] = slices.Clone(v)
	}
	return m
}

// failure400 is a backend's permanent refusal on the first attempt.
func failure400() dlq.Failure {
	now := time.Now()
	return dlq.Failure{Reason: proto.DeadReasonPermanent, Error: "backend answered 400", Status: 400,
		Attempts: 1, FirstAttempt: now.Add(-time.Second), LastAttempt: now}
}

// deadLetter stores the dead letter of ev, taken from the events stream at
// streamSeq, as a worker does.
func deadLetter(t *testing.T, js jetstream.JetStream, ev event, streamSeq uint64, f dlq.Failure) *jetstream.PubAck {
	t.Helper()
	ack, err := js.PublishMsg(testCtx(t), dlq.NewMsg(region, ev.Body, ev.Header, streamSeq, f))
	if err != nil {
		t.Fatalf("store dead letter of %s: %v", ev.ID, err)
	}
	return ack
}

func entryIDs(es []dlq.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(testCtx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// ---------------------------------------------------------------- Open

func TestOpenWithoutDeadLetterStream(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	// Another region is set up; this one never was.
	setUpRegion(t, ns.JS, "us", false)
	s, err := dlq.Open(testCtx(t), ns.JS, region)
	if !errors.Is(err, dlq.ErrNoQueue) {
		t.Fatalf("Open(%s) = %v, %v; want ErrNoQueue", region, s, err)
	}
	if _, err := dlq.Open(testCtx(t), ns.JS, "us"); err != nil {
		t.Errorf("Open(us), which is set up: %v", err)
	}
}

// ---------------------------------------------------------------- List

func TestListEmpty(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	es, err := openStore(t, ns.JS).List(testCtx(t), dlq.Filter{})
	if err != nil || len(es) != 0 {
		t.Fatalf("List of an empty queue = %v, %v; want nothing", es, err)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	evs := []event{newEvent("acct-a", "one", 1), newEvent("acct-b", "two", 2), newEvent("acct-a", "three", 3)}
	var ids []uint64
	for i, ev := range evs {
		ids = append(ids, deadLetter(t, ns.JS, ev, uint64(100+i), failure400()).Sequence)
	}
	s := openStore(t, ns.JS)

	all, err := s.List(testCtx(t), dlq.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := entryIDs(all); !slices.Equal(got, ids) {
		t.Fatalf("List ids = %v, want %v (oldest first)", got, ids)
	}
	for i, e := range all {
		ev := evs[i]
		if e.EventID != ev.ID || e.AccountID != ev.Account || e.Region != region || e.EventType != "bot_notification" ||
			e.Reason != proto.DeadReasonPermanent || e.Error != "backend answered 400" || e.Status != 400 || e.Attempts != 1 {
			t.Errorf("entry %d = %+v; want event %s of %s, permanent, backend answered 400", i, e, ev.ID, ev.Account)
		}
		if len(e.Payload) != 0 {
			t.Errorf("entry %d listed with its payload (%d bytes); a listing has none", i, len(e.Payload))
		}
		if e.DeadAt.IsZero() || !e.ReceivedAt.Equal(ev.ReceivedAt) {
			t.Errorf("entry %d dead_at %v received_at %v (want %v)", i, e.DeadAt, e.ReceivedAt, ev.ReceivedAt)
		}
	}

	t.Run("account", func(t *testing.T) {
		es, err := s.List(testCtx(t), dlq.Filter{Account: "acct-a"})
		if err != nil {
			t.Fatal(err)
		}
		if got := entryIDs(es); !slices.Equal(got, []uint64{ids[0], ids[2]}) {
			t.Errorf("acct-a's entries = %v, want %v", got, []uint64{ids[0], ids[2]})
		}
		if es, err := s.List(testCtx(t), dlq.Filter{Account: "acct-z"}); err != nil || len(es) != 0 {
			t.Errorf("entries of an account without any = %v, %v", es, err)
		}
	})

	t.Run("ids", func(t *testing.T) {
		es, err := s.List(testCtx(t), dlq.Filter{IDs: []uint64{ids[0], ids[2]}})
		if err != nil {
			t.Fatal(err)
		}
		if got := entryIDs(es); !slices.Equal(got, []uint64{ids[0], ids[2]}) {
			t.Errorf("List(ids %d %d) = %v", ids[0], ids[2], got)
		}
		for _, e := range es {
			if len(e.Payload) != 0 || e.EventID == "" {
				t.Errorf("entry %d by id: payload %d bytes, event %q; want the entry without payload", e.ID, len(e.Payload), e.EventID)
			}
		}
		// Ids and an account together: both apply.
		es, err = s.List(testCtx(t), dlq.Filter{IDs: []uint64{ids[0], ids[1]}, Account: "acct-b"})
		if err != nil || !slices.Equal(entryIDs(es), []uint64{ids[1]}) {
			t.Errorf("List(ids %d %d, account acct-b) = %v, %v; want [%d]", ids[0], ids[1], entryIDs(es), err, ids[1])
		}
	})

	t.Run("ids out of order", func(t *testing.T) {
		es, err := s.List(testCtx(t), dlq.Filter{IDs: []uint64{ids[2], ids[0]}})
		if err != nil {
			t.Fatal(err)
		}
		got := entryIDs(es)
		if slices.Equal(got, []uint64{ids[2], ids[0]}) {
			t.Fatalf("List(ids %d %d) = %v: with IDs, List keeps the order given, not oldest first as it documents "+
				"(and geomux dlq replay 18 17 replays a conversation's events out of order)", ids[2], ids[0], got)
		}
		if !slices.Equal(got, []uint64{ids[0], ids[2]}) {
			t.Errorf("List(ids %d %d) = %v, want %v: List returns entries oldest first", ids[2], ids[0], got, []uint64{ids[0], ids[2]})
		}
	})

	t.Run("unknown id", func(t *testing.T) {
		es, err := s.List(testCtx(t), dlq.Filter{IDs: []uint64{ids[0], 999}})
		if !errors.Is(err, dlq.ErrNotFound) {
			t.Errorf("List(ids %d 999) = %v, %v; want ErrNotFound", ids[0], entryIDs(es), err)
		}
		if err != nil && !strings.Contains(err.Error(), "999") {
			t.Errorf("error %q does not name the unknown id", err)
		}
	})
}

// Since and Before are relative to the store's clock, set here to an hour
// after the second entry was stored.
func TestListSinceBefore(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	evs := []event{newEvent("acct-a", "one", 1), newEvent("acct-b", "two", 2), newEvent("acct-a", "three", 3)}
	for i, ev := range evs {
		deadLetter(t, ns.JS, ev, uint64(i+1), failure400())
	}
	s := openStore(t, ns.JS)
	all, err := s.List(testCtx(t), dlq.Filter{})
	if err != nil || len(all) != 3 {
		t.Fatalf("List = %v, %v", all, err)
	}
	if !all[0].DeadAt.Before(all[1].DeadAt) || !all[1].DeadAt.Before(all[2].DeadAt) {
		t.Fatalf("entries stored at %v, %v, %v: not distinct", all[0].DeadAt, all[1].DeadAt, all[2].DeadAt)
	}
	now := all[1].DeadAt.Add(time.Hour)
	dlq.SetNow(s, func() time.Time { return now })
	ids := entryIDs(all)

	for _, tc := range []struct {
		name string
		f    dlq.Filter
		want []uint64
	}{
		{"since 1h: the second and third", dlq.Filter{Since: time.Hour}, ids[1:]},
		{"since 2h: all", dlq.Filter{Since: 2 * time.Hour}, ids},
		{"since 30m: none", dlq.Filter{Since: 30 * time.Minute}, nil},
		{"before 1h: the first and second", dlq.Filter{Before: time.Hour}, ids[:2]},
		{"before 2h: none", dlq.Filter{Before: 2 * time.Hour}, nil},
		{"before 30m: all", dlq.Filter{Before: 30 * time.Minute}, ids},
		{"since 1h, account acct-a: the third", dlq.Filter{Since: time.Hour, Account: "acct-a"}, ids[2:]},
		{"before 1h, account acct-a: the first", dlq.Filter{Before: time.Hour, Account: "acct-a"}, ids[:1]},
		{"ids, since 1h", dlq.Filter{IDs: ids[:2], Since: time.Hour}, ids[1:2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, err := s.List(testCtx(t), tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := entryIDs(es); !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("List(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
}

// More entries than one fetch of List returns.
func TestListMany(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	const n = 600
	var want []uint64
	for i := range n {
		ack := deadLetter(t, ns.JS, newEvent("acct-"+strconv.Itoa(i%3), "m", int64(i)), uint64(i+1), failure400())
		want = append(want, ack.Sequence)
	}
	// A gap: a purged entry is not listed.
	s := openStore(t, ns.JS)
	if err := s.Purge(testCtx(t), want[300]); err != nil {
		t.Fatal(err)
	}
	want = slices.Delete(want, 300, 301)
	es, err := s.List(testCtx(t), dlq.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := entryIDs(es); !slices.Equal(got, want) {
		t.Errorf("List returned %d entries, want %d in order", len(got), len(want))
	}
	es, err = s.List(testCtx(t), dlq.Filter{Account: "acct-1"})
	if err != nil || len(es) != n/3 {
		t.Errorf("List(acct-1) = %d entries, %v; want %d", len(es), err, n/3)
	}
}

// ---------------------------------------------------------------- Get

func TestGet(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	ev := newEvent("acct-a", "show me", 1)
	ev.Header.Set(headerReplays, "2")
	cet := time.FixedZone("CET", 3600)
	f := dlq.Failure{
		Reason:       proto.DeadReasonMaxAttempts,
		Error:        "zoom answered 502",
		Status:       502,
		Attempts:     6,
		FirstAttempt: time.Date(2025, 6, 1, 13, 0, 1, 123456789, cet),
		LastAttempt:  time.Date(2025, 6, 1, 13, 15, 2, 987654321, cet),
	}
	before := time.Now()
	ack := deadLetter(t, ns.JS, ev, 42, f)
	after := time.Now()

	e, err := openStore(t, ns.JS).Get(testCtx(t), ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != ack.Sequence || e.EventID != ev.ID || e.AccountID != "acct-a" || e.Region != region || e.EventType != "bot_notification" {
		t.Errorf("entry ids = %d %q %q %q %q", e.ID, e.EventID, e.AccountID, e.Region, e.EventType)
	}
	if e.Reason != proto.DeadReasonMaxAttempts || e.Error != "zoom answered 502" || e.Status != 502 || e.Attempts != 6 || e.Replays != 2 {
		t.Errorf("entry failure = reason %q error %q status %d attempts %d replays %d; want max_attempts, zoom answered 502, 502, 6, 2",
			e.Reason, e.Error, e.Status, e.Attempts, e.Replays)
	}
	if !e.FirstAttempt.Equal(f.FirstAttempt) || !e.LastAttempt.Equal(f.LastAttempt) {
		t.Errorf("attempts %v .. %v, want %v .. %v", e.FirstAttempt, e.LastAttempt, f.FirstAttempt, f.LastAttempt)
	}
	if !e.ReceivedAt.Equal(ev.ReceivedAt) {
		t.Errorf("received_at %v, want %v", e.ReceivedAt, ev.ReceivedAt)
	}
	if e.DeadAt.Before(before.Add(-time.Second)) || e.DeadAt.After(after.Add(time.Second)) {
		t.Errorf("dead_at %v, want the storing time (%v .. %v)", e.DeadAt, before, after)
	}
	if !bytes.Equal(e.Payload, ev.Body) {
		t.Errorf("payload %s, want the event body %s", e.Payload, ev.Body)
	}
}

func TestGetUnknown(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	s := openStore(t, ns.JS)
	if _, err := s.Get(testCtx(t), 1); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("Get(1) of an empty queue = %v, want ErrNotFound", err)
	}
	ack := deadLetter(t, ns.JS, newEvent("acct-a", "x", 1), 1, failure400())
	if _, err := s.Get(testCtx(t), ack.Sequence+1); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("Get past the last entry = %v, want ErrNotFound", err)
	}
}

// ---------------------------------------------------------------- Replay

// A dead letter replayed goes back on the region's events subject as the
// event it was, under a new Nats-Msg-Id: the events stream still remembers
// the event id (its dedup window), and must not drop the replay as a Zoom
// re-delivery.
func TestReplay(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	ctx := testCtx(t)
	ev := newEvent("acct-a", "replay me", 1)

	// The router published the event; a worker took it and dead-lettered it.
	if _, err := ns.JS.PublishMsg(ctx, ev.msg()); err != nil {
		t.Fatal(err)
	}
	cons, err := ns.JS.CreateOrUpdateConsumer(ctx, proto.RegionEventsStream(region), jetstream.ConsumerConfig{
		Durable: "test-worker", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	take := func() jetstream.Msg {
		t.Helper()
		m, err := cons.Next(jetstream.FetchMaxWait(waitFor))
		if err != nil {
			t.Fatalf("take an event: %v", err)
		}
		return m
	}
	orig := take()
	md, err := orig.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	dl := dlq.NewMsg(region, orig.Data(), orig.Headers(), md.Sequence.Stream, failure400())
	ack, err := ns.JS.PublishMsg(ctx, dl)
	if err != nil {
		t.Fatal(err)
	}
	if err := orig.DoubleAck(ctx); err != nil { // terminated or acknowledged: gone from the work queue
		t.Fatal(err)
	}
	if n := streamMsgs(t, ns.JS, proto.RegionEventsStream(region)); n != 0 {
		t.Fatalf("events stream holds %d after the worker gave up, want 0", n)
	}
	// Control: the same event under its own id is dropped as a duplicate.
	if pa, err := ns.JS.PublishMsg(ctx, ev.msg()); err != nil || !pa.Duplicate {
		t.Fatalf("republishing the event under its id: %+v, %v; want a duplicate (the dedup window is what replay must avoid)", pa, err)
	}

	s := openStore(t, ns.JS)
	if err := s.Replay(ctx, ack.Sequence); err != nil {
		t.Fatalf("Replay(%d): %v", ack.Sequence, err)
	}
	if n := streamMsgs(t, ns.JS, proto.RegionEventsStream(region)); n != 1 {
		t.Fatalf("events stream holds %d after the replay, want 1 (the replay must not be taken for a duplicate)", n)
	}
	back := take()
	if err := back.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	if back.Subject() != orig.Subject() {
		t.Errorf("replayed on %q, want its conversation's %q", back.Subject(), orig.Subject())
	}
	if !bytes.Equal(back.Data(), ev.Body) {
		t.Errorf("replayed body %s, want the original %s", back.Data(), ev.Body)
	}
	h := back.Headers()
	for k, v := range ev.Header {
		if k == jetstream.MsgIDHeader {
			continue
		}
		if !slices.Equal(h.Values(k), v) {
			t.Errorf("replayed header %s = %q, want the original %q", k, h.Values(k), v)
		}
	}
	if id := h.Get(jetstream.MsgIDHeader); id == "" || id == ev.ID {
		t.Errorf("replayed Nats-Msg-Id = %q, want a new one (not the event id %q)", id, ev.ID)
	}
	if got := h.Get(proto.HeaderReplay); got != strconv.FormatUint(ack.Sequence, 10) {
		t.Errorf("%s = %q, want the entry id %d", proto.HeaderReplay, got, ack.Sequence)
	}
	if got := h.Get(headerReplays); got != "1" {
		t.Errorf("%s = %q, want 1", headerReplays, got)
	}
	for _, k := range []string{proto.HeaderDeadReason, proto.HeaderDeadError, proto.HeaderDeadStatus,
		proto.HeaderAttempts, proto.HeaderFirstAttempt, proto.HeaderLastAttempt} {
		if v := h.Values(k); len(v) != 0 {
			t.Errorf("replayed event keeps dead-letter header %s = %q", k, v)
		}
	}
	for k := range h {
		if ev.Header.Get(k) == "" && k != proto.HeaderReplay && k != headerReplays {
			t.Errorf("replayed event has an unexpected header %s = %q", k, h.Values(k))
		}
	}

	// The entry left the queue.
	if _, err := s.Get(ctx, ack.Sequence); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("Get after replay = %v, want ErrNotFound", err)
	}
	if es, err := s.List(ctx, dlq.Filter{}); err != nil || len(es) != 0 {
		t.Errorf("List after replay = %v, %v; want empty", entryIDs(es), err)
	}
	// Replaying it again fails cleanly and puts nothing on the stream.
	if err := s.Replay(ctx, ack.Sequence); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("second Replay(%d) = %v, want ErrNotFound", ack.Sequence, err)
	}
	if n := streamMsgs(t, ns.JS, proto.RegionEventsStream(region)); n != 0 {
		t.Errorf("events stream holds %d after a second replay, want 0", n)
	}
}

// An event replayed, dead-lettered again and replayed again gets another
// new message id each time: the second replay is not dropped either.
func TestReplayTwiceOfTheSameEvent(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	ctx := testCtx(t)
	ev := newEvent("acct-a", "again", 1)
	s := openStore(t, ns.JS)
	events, err := ns.JS.Stream(ctx, proto.RegionEventsStream(region))
	if err != nil {
		t.Fatal(err)
	}
	// failAgain dead-letters the event at seq of the events stream and
	// takes it off the stream, as a worker does.
	failAgain := func(seq uint64, h nats.Header) *jetstream.PubAck {
		t.Helper()
		ack := deadLetter(t, ns.JS, event{ID: ev.ID, Body: ev.Body, Header: h}, seq, failure400())
		if err := events.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
		return ack
	}

	pa, err := ns.JS.PublishMsg(ctx, ev.msg())
	if err != nil {
		t.Fatal(err)
	}
	first := failAgain(pa.Sequence, ev.Header)
	if err := s.Replay(ctx, first.Sequence); err != nil {
		t.Fatal(err)
	}
	// The replayed event is the events stream's next message; it fails again.
	replayed, err := events.GetMsg(ctx, pa.Sequence+1)
	if err != nil {
		t.Fatalf("replayed event not on the events stream: %v", err)
	}
	again := failAgain(replayed.Sequence, replayed.Header)
	if again.Duplicate || again.Sequence == first.Sequence {
		t.Fatalf("second dead letter of the event: %+v", again)
	}
	e, err := s.Get(ctx, again.Sequence)
	if err != nil || e.Replays != 1 || e.EventID != ev.ID {
		t.Fatalf("second dead letter: event %s, replays %d, %v; want %s, 1", e.EventID, e.Replays, err, ev.ID)
	}
	if err := s.Replay(ctx, again.Sequence); err != nil {
		t.Fatal(err)
	}
	m, err := events.GetMsg(ctx, replayed.Sequence+1)
	if err != nil {
		t.Fatalf("second replay not on the events stream: %v", err)
	}
	if got := m.Header.Get(headerReplays); got != "2" {
		t.Errorf("%s of the second replay = %q, want 2", headerReplays, got)
	}
	if got := m.Header.Get(proto.HeaderReplay); got != strconv.FormatUint(again.Sequence, 10) {
		t.Errorf("%s of the second replay = %q, want %d", proto.HeaderReplay, got, again.Sequence)
	}
}

// ---------------------------------------------------------------- Purge

func TestPurge(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	ctx := testCtx(t)
	a := deadLetter(t, ns.JS, newEvent("acct-a", "a", 1), 1, failure400())
	b := deadLetter(t, ns.JS, newEvent("acct-b", "b", 2), 2, failure400())
	s := openStore(t, ns.JS)

	if err := s.Purge(ctx, a.Sequence); err != nil {
		t.Fatalf("Purge(%d): %v", a.Sequence, err)
	}
	if _, err := s.Get(ctx, a.Sequence); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("Get of a purged entry = %v, want ErrNotFound", err)
	}
	es, err := s.List(ctx, dlq.Filter{})
	if err != nil || !slices.Equal(entryIDs(es), []uint64{b.Sequence}) {
		t.Errorf("List after purge = %v, %v; want [%d]", entryIDs(es), err, b.Sequence)
	}
	if n := streamMsgs(t, ns.JS, proto.RegionEventsStream(region)); n != 0 {
		t.Errorf("purge put %d events on the events stream", n)
	}
}

func TestPurgeUnknown(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	ctx := testCtx(t)
	a := deadLetter(t, ns.JS, newEvent("acct-a", "a", 1), 1, failure400())
	s := openStore(t, ns.JS)
	if err := s.Purge(ctx, a.Sequence); err != nil {
		t.Fatal(err)
	}
	again := s.Purge(ctx, a.Sequence)
	unknown := s.Purge(ctx, 999)
	for _, err := range []error{again, unknown} {
		if err != nil && !errors.Is(err, dlq.ErrNotFound) && strings.Contains(err.Error(), "err_code=10057") {
			t.Fatalf("Purge of an unknown entry returns %q, not ErrNotFound: jetstream's (Secure)DeleteMsg "+
				"reports a missing message as ErrMsgDeleteUnsuccessful (API error 10057), never ErrMsgNotFound, which store.go checks for", err)
		}
	}
	if !errors.Is(again, dlq.ErrNotFound) {
		t.Errorf("Purge of an entry already purged = %v, want ErrNotFound", again)
	}
	if !errors.Is(unknown, dlq.ErrNotFound) {
		t.Errorf("Purge(999) = %v, want ErrNotFound", unknown)
	}
}

// ---------------------------------------------------------------- Record, History

func TestRecordHistory(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	ctx := testCtx(t)
	s := openStore(t, ns.JS)

	if h, err := s.History(ctx); err != nil || len(h) != 0 {
		t.Fatalf("History before any action = %v, %v; want empty", h, err)
	}
	at := time.Date(2025, 6, 2, 9, 0, 0, 0, time.UTC)
	actions := []dlq.Action{
		{Action: "replay", Operator: "alice@ops", At: at, Selection: "17 18",
			Entries: []dlq.ActedOn{{ID: 17, EventID: "ev17", AccountID: "acct-a"}, {ID: 18, EventID: "ev18", AccountID: "acct-b"}}},
		{Action: "purge", Operator: "bob@ops", At: at.Add(time.Minute), Selection: "--before 168h",
			Entries: []dlq.ActedOn{{ID: 3, EventID: "ev3", AccountID: "acct-a"}},
			Failed:  []dlq.ActedOn{{ID: 4, EventID: "ev4", AccountID: "acct-c", Error: "dlq: no such entry"}}},
		{Action: "replay", Operator: "alice@ops", At: at.Add(2 * time.Minute), Selection: "--account acct-a"},
	}
	for _, a := range actions {
		if err := s.Record(ctx, a); err != nil {
			t.Fatalf("Record(%s): %v", a.Action, err)
		}
	}
	got, err := s.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(actions) {
		t.Fatalf("History = %d actions, want %d: %+v", len(got), len(actions), got)
	}
	for i := range actions {
		w, g := actions[i], got[i]
		if g.Action != w.Action || g.Operator != w.Operator || !g.At.Equal(w.At) || g.Selection != w.Selection ||
			!slices.Equal(g.Entries, w.Entries) || !slices.Equal(g.Failed, w.Failed) {
			t.Errorf("History[%d] = %+v, want %+v (oldest first)", i, g, w)
		}
	}

	// A second store of the region reads the same record.
	got2, err := openStore(t, ns.JS).History(ctx)
	if err != nil || len(got2) != len(actions) {
		t.Errorf("History through another store = %d actions, %v", len(got2), err)
	}
}

// A region whose workers predate the audit stream has no history yet: that
// is empty, not an error. Recording there fails rather than losing the
// action silently.
func TestHistoryWithoutAuditStream(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	setUpRegion(t, ns.JS, region, true)
	s := openStore(t, ns.JS)
	h, err := s.History(testCtx(t))
	if err != nil || len(h) != 0 {
		t.Errorf("History without an audit stream = %v, %v; want empty, no error", h, err)
	}
	if err := s.Record(testCtx(t), dlq.Action{Action: "purge", Operator: "x"}); err == nil {
		t.Error("Record without an audit stream succeeded; the action went nowhere")
	}
}

// ---------------------------------------------------------------- NewMsg, Describe

// A worker that dies between storing a dead letter and terminating the event
// stores it again: it is kept once. The same event dead-lettered from
// another delivery (another stream sequence, e.g. after a replay) is a new
// entry.
func TestNewMsgDeduplicates(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	ev := newEvent("acct-a", "twice", 1)
	first := deadLetter(t, ns.JS, ev, 7, failure400())
	second := deadLetter(t, ns.JS, ev, 7, failure400())
	if !second.Duplicate || second.Sequence != first.Sequence {
		t.Errorf("same dead letter stored twice: %+v then %+v; want the second dropped", first, second)
	}
	other := deadLetter(t, ns.JS, ev, 8, failure400())
	if other.Duplicate {
		t.Errorf("dead letter of another delivery (seq 8) taken for a duplicate")
	}
	es, err := openStore(t, ns.JS).List(testCtx(t), dlq.Filter{})
	if err != nil || !slices.Equal(entryIDs(es), []uint64{first.Sequence, other.Sequence}) {
		t.Errorf("entries = %v, %v; want [%d %d]", entryIDs(es), err, first.Sequence, other.Sequence)
	}
}

// The dedup above must hold as long as the same dead letter can be stored
// twice. A worker that stores it and dies before terminating the event
// leaves the event to be redelivered after the consumer's BackOff (up to
// the last retry.backoff, 10m by default) or, on the last attempt, to the
// keeper's max-deliveries advisory, which comes that long later: the
// dead-letter stream must remember the message id at least that long.
func TestDeadLetterStreamDedupWindowCoversRedelivery(t *testing.T) {
	t.Parallel()
	c := config.Default()
	cfg := topology.RegionDeadLetterConfig(region, topology.OptionsFrom(c))
	ns := natstest.Start(t, "")
	st, err := natsx.EnsureStream(testCtx(t), ns.JS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	longest := c.Retry.BackoffFor(c.Retry.MaxAttempts)
	ackWait := 2*c.Worker.HandlerTimeout.D() + 5*time.Second
	if need := max(longest, ackWait) + c.Worker.HandlerTimeout.D(); info.Config.Duplicates < need {
		t.Errorf("dead-letter stream dedup window is %v, shorter than the %v after which a worker's dead letter can be stored again (redelivery after BackOff, or the keeper's advisory): a duplicate entry", info.Config.Duplicates, need)
	}
}

func TestNewMsgHeaders(t *testing.T) {
	t.Parallel()
	ns := startRegion(t)
	ev := newEvent("acct-a", "headers", 1)
	// The event carries the headers of an earlier dead letter (a replayed
	// event): the new failure replaces them all.
	for k, v := range map[string]string{
		proto.HeaderDeadReason: proto.DeadReasonMaxAttempts, proto.HeaderDeadError: "old error",
		proto.HeaderDeadStatus: "503", proto.HeaderAttempts: "6",
		proto.HeaderFirstAttempt: "2020-01-01T00:00:00Z", proto.HeaderLastAttempt: "2020-01-01T00:00:01Z",
	} {
		ev.Header.Set(k, v)
	}
	long := strings.Repeat("x", 1000)
	f := dlq.Failure{Reason: proto.DeadReasonPermanent, Error: long, Attempts: 2,
		FirstAttempt: time.Now().Add(-time.Minute), LastAttempt: time.Now()}
	m := dlq.NewMsg(region, ev.Body, ev.Header, 5, f)
	if m.Subject != proto.RegionDeadLetterSubject(region) {
		t.Errorf("subject %q, want %q", m.Subject, proto.RegionDeadLetterSubject(region))
	}
	for k, want := range map[string]string{
		proto.HeaderDeadStatus: "", proto.HeaderAttempts: "2", proto.HeaderDeadReason: proto.DeadReasonPermanent,
	} {
		if got := m.Header.Values(k); len(got) > 1 || m.Header.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if ev.Header.Get(proto.HeaderDeadStatus) != "503" || ev.Header.Get(jetstream.MsgIDHeader) != ev.ID {
		t.Error("NewMsg changed the event's headers")
	}
	ack, err := ns.JS.PublishMsg(testCtx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	e, err := openStore(t, ns.JS).Get(testCtx(t), ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != 0 || e.Attempts != 2 || e.Reason != proto.DeadReasonPermanent || e.Error != long[:300] {
		t.Errorf("entry status %d attempts %d reason %q error %d bytes; want 0, 2, permanent, the first 300 bytes",
			e.Status, e.Attempts, e.Reason, len(e.Error))
	}
	if !e.FirstAttempt.Equal(f.FirstAttempt) || !e.LastAttempt.Equal(f.LastAttempt) {
		t.Errorf("attempts %v .. %v, want %v .. %v", e.FirstAttempt, e.LastAttempt, f.FirstAttempt, f.LastAttempt)
	}
}

func TestDescribe(t *testing.T) {
	t.Parallel()
	backend400 := &retry.StatusError{Service: "backend", StatusCode: 400}
	zoom403 := &retry.StatusError{Service: "zoom", StatusCode: 403, Detail: "7010 not allowed"}
	for _, tc := range []struct {
		name   string
		err    error
		msg    string
		status int
	}{
		{"nil", nil, "unknown error", 0},
		{"plain", errors.New("backend: connection refused"), "backend: connection refused", 0},
		{"permanent", fmt.Errorf("%w: backend answer is not JSON", retry.ErrPermanent), "backend answer is not JSON", 0},
		{"status", backend400, "backend answered 400", 400},
		{"wrapped status", fmt.Errorf("send reply 2: %w", zoom403), "send reply 2: zoom answered 403: 7010 not allowed", 403},
		{"permanent status", fmt.Errorf("%w: %w", retry.ErrPermanent, zoom403), "zoom answered 403: 7010 not allowed", 403},
		{"prefix only at the start", fmt.Errorf("wrapped: %w: bad", retry.ErrPermanent), "wrapped: permanent failure: bad", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, status := dlq.Describe(tc.err)
			if msg != tc.msg || status != tc.status {
				t.Errorf("Describe(%v) = %q, %d; want %q, %d", tc.err, msg, status, tc.msg, tc.status)
			}
		})
	}
}
