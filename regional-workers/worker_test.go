package workers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// ---------------------------------------------------------------- echo

func TestEchoRepliesToBotNotification(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	_, reg := startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), testOptions("us"))

	// Zoom's documented example: a message in a channel, so that toJid (the
	// channel) and userJid (the user) differ.
	body := zoomtest.Event("bot_notification")
	head, err := zoom.ParseHead(body)
	if err != nil {
		t.Fatal(err)
	}
	chat := chatOf(t, body)
	if chat.ToJID == chat.UserJID || chat.Text == "" {
		t.Fatalf("example event unsuitable: %+v", chat)
	}
	publish(t, ns.JS, "us", zoom.EventBotNotification, head.AccountID, body)
	waitEventsGone(t, ns.JS, "us")

	d := z.SB.Delivered()
	if len(d) != 1 {
		t.Fatalf("Zoom received %d messages, want 1: %+v", len(d), d)
	}
	m := d[0].Message
	if m.RobotJID != botJID {
		t.Errorf("robot_jid = %q, want %q", m.RobotJID, botJID)
	}
	if m.ToJID != chat.ToJID {
		t.Errorf("to_jid = %q, want payload.toJid %q", m.ToJID, chat.ToJID)
	}
	if m.UserJID != chat.UserJID {
		t.Errorf("user_jid = %q, want payload.userJid %q", m.UserJID, chat.UserJID)
	}
	if m.AccountID != head.AccountID {
		t.Errorf("account_id = %q, want %q", m.AccountID, head.AccountID)
	}
	if d[0].Text != chat.Text {
		t.Errorf("text = %q, want the user's cmd %q", d[0].Text, chat.Text)
	}
	if !strings.HasPrefix(d[0].Token, "sandbox.") {
		t.Errorf("message sent with token %q, not one the sandbox issued", d[0].Token)
	}
	sends := z.Sends()
	if len(sends) != 1 || bearer(sends[0].Auth) != d[0].Token || z.SB.TokensIssued() != 1 {
		t.Errorf("sends %+v with %d tokens issued; want one send bearing the issued token %q", sends, z.SB.TokensIssued(), d[0].Token)
	}

	waitMetric(t, reg, "geomux_worker_handled_total", map[string]string{"region": "us", "outcome": "ok"}, 1)
	waitMetric(t, reg, "geomux_worker_replied_total", map[string]string{"region": "us", "app": "default"}, 1)
	waitMetric(t, reg, "geomux_worker_end_to_end_seconds", map[string]string{"region": "us"}, 1)
}

func TestEchoRepliesToEachEventOnce(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), testOptions("us"))

	var want []string
	for i := range 20 {
		text := "message " + string(rune('a'+i))
		want = append(want, text)
		publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", text, int64(i)))
	}
	// The same event again (Zoom's re-delivery): JetStream drops it.
	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", want[0], 0))
	waitEventsGone(t, ns.JS, "us")

	got := z.Texts()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("Zoom received %q, want each of %q once", got, want)
	}
	if n := z.SB.TokensIssued(); n != 1 {
		t.Errorf("%d tokens fetched for 20 messages, want 1 (cached)", n)
	}
}

// A re-delivery that comes after the streams have forgotten the event's
// Msg-Id (Zoom retries 5, 20 and 60 minutes later; the streams remember an
// id for topology.MsgIDWindow) is recognised by the region's record of the
// event: the backend is not asked again and nothing is sent twice.
func TestLateRedeliveryIsHandledOnce(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	b := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer {
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("reply")}}})
	})
	startWorker(t, ns.JS, backendHandler(t, b, "us", 0), zoomClient(t, z), testOptions("us"))

	body := zoomtest.BotNotification("acct", "once only", 1)
	first := publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", body)
	waitEventsGone(t, ns.JS, "us")
	// The same event, as the router publishes it once the window is over:
	// a Msg-Id JetStream no longer remembers.
	m := nats.NewMsg(eventSubject("us", "acct", zoom.EventBotNotification, body))
	m.Data = body
	for _, h := range [][2]string{{proto.HeaderEventID, first.ID}, {proto.HeaderEventType, zoom.EventBotNotification},
		{proto.HeaderAccountID, "acct"}, {proto.HeaderRegion, "us"}, {jetstream.MsgIDHeader, first.ID + "-later"}} {
		m.Header.Set(h[0], h[1])
	}
	publishMsg(t, ns.JS, m)
	waitEventsGone(t, ns.JS, "us")

	if got := z.Texts(); len(got) != 1 {
		t.Errorf("Zoom received %q, want one reply", got)
	}
	if n := b.Hits(); n != 1 {
		t.Errorf("the backend was asked %d times, want once", n)
	}
}

func TestEchoIgnoresOtherEvents(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	_, reg := startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), testOptions("us"))

	for _, name := range []string{"bot_installed", "interactive_message_actions", "app_deauthorized"} {
		body := zoomtest.Event(name)
		head, err := zoom.ParseHead(body)
		if err != nil {
			t.Fatal(err)
		}
		publish(t, ns.JS, "us", head.Event, head.AccountID, body)
	}
	// A bot_notification with nothing written gets no echo either.
	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "", 1))
	// Nor does another event that happens to carry a cmd: Echo goes by the
	// event type.
	other := bytes.Replace(zoomtest.BotNotification("acct", "not for echo", 2), []byte(`"bot_notification"`), []byte(`"bot_installed"`), 1)
	publish(t, ns.JS, "us", "bot_installed", "acct", other)
	waitEventsGone(t, ns.JS, "us")

	if n := z.Requests(); n != 0 {
		t.Errorf("Zoom received %d requests, want none: %+v", n, z.Sends())
	}
	waitMetric(t, reg, "geomux_worker_handled_total", map[string]string{"region": "us", "outcome": "ok"}, 5)
	if dl := deadLetters(t, ns.JS, "us"); len(dl) != 0 {
		t.Errorf("%d dead letters, want none", len(dl))
	}
}

// ---------------------------------------------------------------- HTTP backend

func TestHTTPBackendRequestAndReplies(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	md := true
	backend := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer {
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{
			{Content: card("first")},
			{ToJID: "room@conference.xmpp.zoom.us", UserJID: "someone@xmpp.zoom.us", Content: card("second"), IsMarkdownSupport: &md},
			{ToJID: "other@xmpp.zoom.us", Content: card("third")},
		}})
	})
	startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), testOptions("eu"))

	body := zoomtest.RawEvent("bot_notification") // as Zoom sent it: whitespace and all
	head, _ := zoom.ParseHead(body)
	chat := chatOf(t, body)
	ev := publish(t, ns.JS, "eu", zoom.EventBotNotification, head.AccountID, body)
	waitEventsGone(t, ns.JS, "eu")

	calls := backend.Calls()
	if len(calls) != 1 {
		t.Fatalf("backend called %d times, want 1", len(calls))
	}
	c := calls[0]
	if c.Method != http.MethodPost {
		t.Errorf("method = %s, want POST", c.Method)
	}
	if ct := c.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if got := c.Header.Get(proto.HTTPHeaderEventID); got != ev.ID {
		t.Errorf("%s = %q, want %q", proto.HTTPHeaderEventID, got, ev.ID)
	}
	if got := c.Header.Get(proto.HTTPHeaderRegion); got != "eu" {
		t.Errorf("%s = %q, want eu", proto.HTTPHeaderRegion, got)
	}
	if c.DecodeErr != nil {
		t.Fatalf("body is not a BackendRequest: %v: %s", c.DecodeErr, c.Body)
	}
	r := c.Req
	if r.ID != ev.ID || r.Region != "eu" || r.AccountID != head.AccountID || r.Event != zoom.EventBotNotification {
		t.Errorf("request = {id %q region %q account %q event %q}, want {%q eu %q bot_notification}",
			r.ID, r.Region, r.AccountID, r.Event, ev.ID, head.AccountID)
	}
	if !r.ReceivedAt.Equal(ev.ReceivedAt) {
		t.Errorf("received_at = %v, want %v", r.ReceivedAt, ev.ReceivedAt)
	}
	// The envelope holds the body verbatim; a decoder hands back the value
	// without the whitespace after it.
	if !bytes.Equal(r.Payload, bytes.TrimSpace(body)) || !bytes.Contains(c.Body, body) {
		t.Errorf("payload is not the event body byte for byte (%d, %d bytes, in body: %v):\n got %q\nwant %q", len(r.Payload), len(body), bytes.Contains(c.Body, body), r.Payload, body)
	}

	d := z.SB.Delivered()
	if len(d) != 3 {
		t.Fatalf("Zoom received %d messages, want 3", len(d))
	}
	want := []struct{ text, to, user string }{
		{"first", chat.ToJID, chat.UserJID},
		{"second", "room@conference.xmpp.zoom.us", "someone@xmpp.zoom.us"},
		{"third", "other@xmpp.zoom.us", chat.UserJID},
	}
	for i, w := range want {
		m := d[i].Message
		if d[i].Text != w.text || m.ToJID != w.to || m.UserJID != w.user || m.AccountID != head.AccountID || m.RobotJID != botJID {
			t.Errorf("message %d = {text %q to %q user %q account %q robot %q}, want {%q %q %q %q %q}",
				i, d[i].Text, m.ToJID, m.UserJID, m.AccountID, m.RobotJID, w.text, w.to, w.user, head.AccountID, botJID)
		}
	}
	if d[0].Message.IsMarkdownSupport != nil || d[1].Message.IsMarkdownSupport == nil || !*d[1].Message.IsMarkdownSupport {
		t.Errorf("is_markdown_support not passed through: %v, %v", d[0].Message.IsMarkdownSupport, d[1].Message.IsMarkdownSupport)
	}
	if !jsonEqual(t, d[1].Message.Content, card("second")) {
		t.Errorf("content = %s, want %s", d[1].Message.Content, card("second"))
	}
}

// The backend contract promises the payload "exactly as Zoom sent it". A
// user's text often holds & < >, which Zoom sends as they are.
func TestHTTPBackendPayloadIsVerbatim(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	backend := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer {
		return backendAnswer{Status: http.StatusNoContent}
	})
	startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), testOptions("eu"))

	body := []byte(`{"event":"bot_notification","event_ts":1700000000001,"payload":{"accountId":"acct","cmd":"fish & chips <3 > tea","toJid":"u@xmpp.zoom.us","userJid":"u@xmpp.zoom.us"}}`)
	publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", body)
	waitEventsGone(t, ns.JS, "eu")

	calls := backend.Calls()
	if len(calls) != 1 || calls[0].DecodeErr != nil {
		t.Fatalf("backend calls = %d, want 1 decodable", len(calls))
	}
	got := calls[0].Req.Payload
	if !jsonEqual(t, got, body) {
		t.Fatalf("payload is not even JSON-equal to the event body:\n got %s\nwant %s", got, body)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("payload is re-encoded, not verbatim:\n got %s\nwant %s", got, body)
	}
}

func TestHTTPBackendNoReply(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	answers := []backendAnswer{
		{Status: http.StatusNoContent},
		{Status: http.StatusOK},                                 // empty body
		{Status: http.StatusOK, Body: `{"messages":[]}`},        // no messages
		{Status: http.StatusOK, Body: "  \n"},                   // blank
		{Status: http.StatusOK, Body: `{"something":"else"}`},   // no messages key
		{Status: http.StatusNoContent, Body: ""},                // again
		{Status: http.StatusOK, Body: `{"messages":null}`},      // null
		{Status: http.StatusOK, Body: `{"messages":[]}` + "\n"}, // trailing newline
	}
	backend := newFakeBackend(t, func(n int, _ proto.BackendRequest) backendAnswer { return answers[(n-1)%len(answers)] })
	_, reg := startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), testOptions("eu"))

	for i := range answers {
		publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "hi", int64(i)))
	}
	waitEventsGone(t, ns.JS, "eu")

	if n := backend.Hits(); n != len(answers) {
		t.Errorf("backend called %d times, want %d", n, len(answers))
	}
	if n := z.Requests(); n != 0 {
		t.Errorf("Zoom received %d requests, want none", n)
	}
	waitMetric(t, reg, "geomux_worker_handled_total", map[string]string{"region": "eu", "outcome": "ok"}, float64(len(answers)))
	if dl := deadLetters(t, ns.JS, "eu"); len(dl) != 0 {
		t.Errorf("%d dead letters, want none", len(dl))
	}
}

// ---------------------------------------------------------------- regions

func TestWorkerConsumesOnlyItsRegion(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	zc := zoomClient(t, z)

	var mu sync.Mutex
	seen := map[string][]workers.Event{}
	recorder := func(region string) workers.Handler {
		return workers.HandlerFunc(func(_ context.Context, ev workers.Event) ([]proto.ChatMessage, error) {
			mu.Lock()
			seen[region] = append(seen[region], ev)
			mu.Unlock()
			return nil, nil
		})
	}
	startWorker(t, ns.JS, recorder("us"), zc, testOptions("us"))
	startWorker(t, ns.JS, recorder("eu"), zc, testOptions("eu"))

	sent := map[string][]string{}
	for i := range 6 {
		region := []string{"eu", "us", "eu"}[i%3]
		ev := publish(t, ns.JS, region, zoom.EventBotNotification, "acct-"+region, zoomtest.BotNotification("acct-"+region, "hi", int64(i)))
		sent[region] = append(sent[region], ev.ID)
	}
	waitEventsGone(t, ns.JS, "eu")
	waitEventsGone(t, ns.JS, "us")

	mu.Lock()
	defer mu.Unlock()
	for _, region := range []string{"us", "eu"} {
		var ids []string
		for _, ev := range seen[region] {
			ids = append(ids, ev.ID)
			if ev.Region != region || ev.AccountID != "acct-"+region {
				t.Errorf("%s handler got event %s of region %q, account %q", region, ev.ID, ev.Region, ev.AccountID)
			}
		}
		slices.Sort(ids)
		want := slices.Clone(sent[region])
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			t.Errorf("%s handler got events %q, want exactly %q", region, ids, want)
		}
	}
}

// ---------------------------------------------------------------- transient failures

func TestTransientBackendFailureIsRetried(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	const httpRetries, failures = 1, 3 // more failures than one attempt's in-process retries
	backend := newFakeBackend(t, func(n int, req proto.BackendRequest) backendAnswer {
		if n <= failures {
			return backendAnswer{Status: http.StatusServiceUnavailable, Body: "busy"}
		}
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("done")}}})
	})
	_, reg := startWorker(t, ns.JS, backendHandler(t, backend, "eu", httpRetries), zoomClient(t, z), testOptions("eu"))

	ev := publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "hi", 1))
	waitEventsGone(t, ns.JS, "eu")

	if got := z.Texts(); !slices.Equal(got, []string{"done"}) {
		t.Errorf("Zoom received %q, want exactly one reply", got)
	}
	calls := backend.Calls()
	if len(calls) != failures+1 {
		t.Errorf("backend called %d times, want %d", len(calls), failures+1)
	}
	for i, c := range calls {
		if c.Header.Get(proto.HTTPHeaderEventID) != ev.ID || c.Req.ID != ev.ID {
			t.Errorf("call %d has event id %q/%q, want %q on every retry", i, c.Header.Get(proto.HTTPHeaderEventID), c.Req.ID, ev.ID)
		}
	}
	// Two attempts of two calls each: one JetStream retry.
	waitMetric(t, reg, "geomux_worker_handled_total", map[string]string{"region": "eu", "outcome": "retry"}, 1)
	if dl := deadLetters(t, ns.JS, "eu"); len(dl) != 0 {
		t.Errorf("%d dead letters, want none", len(dl))
	}
	assertFinishedRecord(t, repliesKV(t, ns.JS, "eu"), ev.ID, 1)
}

func TestBackendRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	backend := newFakeBackend(t, func(n int, req proto.BackendRequest) backendAnswer {
		if n == 1 {
			return backendAnswer{Status: http.StatusTooManyRequests, Header: map[string]string{"Retry-After": "1"}}
		}
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("later")}}})
	})
	startWorker(t, ns.JS, backendHandler(t, backend, "eu", 2), zoomClient(t, z), testOptions("eu"))

	publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "hi", 1))
	waitEventsGone(t, ns.JS, "eu")

	calls := backend.Calls()
	if len(calls) != 2 {
		t.Fatalf("backend called %d times, want 2", len(calls))
	}
	if gap := calls[1].At.Sub(calls[0].At); gap < time.Second {
		t.Errorf("retried %v after a 429 with Retry-After: 1, want at least 1s", gap)
	}
	if got := z.Texts(); !slices.Equal(got, []string{"later"}) {
		t.Errorf("Zoom received %q, want one reply", got)
	}
}

func TestZoom429RetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, func(n int) (int, string) {
		if n == 1 {
			return http.StatusTooManyRequests, "1"
		}
		return 0, ""
	})
	_, reg := startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), testOptions("us"))

	ev := publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "rate me", 1))
	waitEventsGone(t, ns.JS, "us")

	sends := z.Sends()
	if len(sends) != 2 || sends[0].Status != http.StatusTooManyRequests || sends[1].Status != http.StatusCreated {
		t.Fatalf("send attempts = %+v, want a 429 then a 201", sends)
	}
	if gap := sends[1].At.Sub(sends[0].At); gap < time.Second {
		t.Errorf("next send %v after a 429 with Retry-After: 1, want at least 1s", gap)
	}
	if got := z.Texts(); !slices.Equal(got, []string{"rate me"}) {
		t.Errorf("Zoom accepted %q, want the reply exactly once", got)
	}
	waitMetric(t, reg, "geomux_worker_replied_total", map[string]string{"region": "us", "app": "default"}, 1)
	assertFinishedRecord(t, repliesKV(t, ns.JS, "us"), ev.ID, 1)
}

// Two replies; Zoom rate-limits the second. The retry sends only the second,
// and does not ask the backend again: the replies bucket remembers.
func TestZoom429OnSecondReplyResumesWhereItStopped(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, func(n int) (int, string) {
		if n == 2 {
			return http.StatusTooManyRequests, "1"
		}
		return 0, ""
	})
	backend := newFakeBackend(t, func(n int, req proto.BackendRequest) backendAnswer {
		// Were the backend asked again, it would answer differently.
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{
			{Content: card("one")}, {Content: card("two")},
		}})
	})
	startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), testOptions("eu"))
	kv := repliesKV(t, ns.JS, "eu")

	ev := publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "two please", 1))

	// While the retry waits out the 429, the bucket holds both replies and
	// that one was sent.
	var state struct {
		Messages []proto.ChatMessage `json:"messages"`
		Sent     int                 `json:"sent"`
	}
	natstest.Eventually(t, waitFor, func() bool {
		raw, ok := replyStateOf(t, kv, ev.ID)
		return ok && json.Unmarshal(raw, &state) == nil
	}, "reply state of %s recorded", ev.ID)
	if len(state.Messages) != 2 || state.Sent != 1 {
		t.Errorf("recorded state = %d messages, %d sent; want 2, 1", len(state.Messages), state.Sent)
	}

	waitEventsGone(t, ns.JS, "eu")
	if got := z.Texts(); !slices.Equal(got, []string{"one", "two"}) {
		t.Errorf("Zoom accepted %q, want one then two, each once", got)
	}
	if n := backend.Hits(); n != 1 {
		t.Errorf("backend called %d times, want 1", n)
	}
	sends := z.Sends()
	if len(sends) != 3 {
		t.Fatalf("send attempts = %d, want 3 (one, two refused, two)", len(sends))
	}
	if gap := sends[2].At.Sub(sends[1].At); gap < time.Second {
		t.Errorf("resent %v after a 429 with Retry-After: 1, want at least 1s", gap)
	}
	assertFinishedRecord(t, kv, ev.ID, 2)
}

// Every attempt's handler failure after a partial send keeps the progress: a
// third attempt does not resend what the first and second sent.
func TestPartialSendsAcrossSeveralAttempts(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, func(n int) (int, string) {
		if n == 2 || n == 4 { // "b" fails once, "c" fails once
			return http.StatusInternalServerError, ""
		}
		return 0, ""
	})
	backend := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer {
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{
			{Content: card("a")}, {Content: card("b")}, {Content: card("c")},
		}})
	})
	startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), testOptions("eu"))

	publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "abc", 1))
	waitEventsGone(t, ns.JS, "eu")

	if got := z.Texts(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("Zoom accepted %q, want a, b, c each once", got)
	}
	if n := backend.Hits(); n != 1 {
		t.Errorf("backend called %d times, want 1", n)
	}
	if n := len(z.Sends()); n != 5 {
		t.Errorf("send attempts = %d, want 5", n)
	}
}

// ---------------------------------------------------------------- permanent failures

func TestPermanentFailuresAreDeadLettered(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	cases := []struct {
		name      string
		answer    backendAnswer
		status    string // Geomux-Dead-Status; "" when the call succeeded
		errSubstr string
	}{
		{"status 400", backendAnswer{Status: http.StatusBadRequest, Body: "no"}, "400", "backend answered 400"},
		{"status 404", backendAnswer{Status: http.StatusNotFound}, "404", "backend answered 404"},
		{"status 501", backendAnswer{Status: http.StatusNotImplemented}, "501", "backend answered 501"},
		{"not JSON", backendAnswer{Status: http.StatusOK, Body: "<html>hello</html>"}, "", "backend answer is not JSON"},
		{"messages not a list", backendAnswer{Status: http.StatusOK, Body: `{"messages":{"content":{}}}`}, "", "messages is a JSON object"},
		{"content a string", backendAnswer{Status: http.StatusOK, Body: `{"messages":[{"content":"hello"}]}`}, "", "must be a JSON object"},
		{"content an array", backendAnswer{Status: http.StatusOK, Body: `{"messages":[{"content":{"body":[]}},{"content":[1]}]}`}, "", "messages[1].content"},
		{"content missing", backendAnswer{Status: http.StatusOK, Body: `{"messages":[{"to_jid":"x@xmpp.zoom.us"}]}`}, "", "must be a JSON object"},
		{"too large", backendAnswer{Status: http.StatusOK, Body: `{"messages":[],"pad":"` + strings.Repeat("x", 1<<20) + `"}`}, "", "larger than 1 MiB"},
	}
	for i, tc := range cases {
		region := "perm-" + string(rune('a'+i))
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			z := newFakeZoom(t, nil)
			backend := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer { return tc.answer })
			_, reg := startWorker(t, ns.JS, backendHandler(t, backend, region, 2), zoomClient(t, z), testOptions(region))

			body := zoomtest.BotNotification("acct", "hi", int64(i))
			ev := publish(t, ns.JS, region, zoom.EventBotNotification, "acct", body)
			dl := waitDeadLetter(t, ns.JS, region)

			h := dl.Header
			for k, want := range map[string]string{
				proto.HeaderDeadReason: proto.DeadReasonPermanent,
				proto.HeaderDeadStatus: tc.status,
				proto.HeaderAttempts:   "1",
				proto.HeaderEventID:    ev.ID,
				proto.HeaderEventType:  zoom.EventBotNotification,
				proto.HeaderAccountID:  "acct",
				proto.HeaderRegion:     region,
			} {
				if got := h.Get(k); got != want {
					t.Errorf("dead letter %s = %q, want %q", k, got, want)
				}
			}
			if got := h.Get(proto.HeaderDeadError); !strings.Contains(got, tc.errSubstr) {
				t.Errorf("dead letter %s = %q, want it to mention %q", proto.HeaderDeadError, got, tc.errSubstr)
			}
			if !bytes.Equal(dl.Data, body) {
				t.Errorf("dead letter payload = %s, want the event body %s", dl.Data, body)
			}
			if dl.Subject != proto.RegionDeadLetterSubject(region) {
				t.Errorf("dead letter subject = %q", dl.Subject)
			}
			first, err1 := time.Parse(proto.TimeFormat, h.Get(proto.HeaderFirstAttempt))
			last, err2 := time.Parse(proto.TimeFormat, h.Get(proto.HeaderLastAttempt))
			if err1 != nil || err2 != nil || last.Before(first) || first.Before(ev.ReceivedAt.Add(-time.Second)) {
				t.Errorf("attempt times first %q last %q are not sound", h.Get(proto.HeaderFirstAttempt), h.Get(proto.HeaderLastAttempt))
			}
			if n := backend.Hits(); n != 1 {
				t.Errorf("backend called %d times, want 1 (no retry, in-process or JetStream)", n)
			}
			if n := z.Requests(); n != 0 {
				t.Errorf("Zoom received %d requests, want none", n)
			}
			waitMetric(t, reg, "geomux_worker_failed_total", map[string]string{"region": region, "reason": proto.DeadReasonPermanent}, 1)
			if ci := consumerInfo(t, ns.JS, region); ci.NumAckPending != 0 || ci.NumRedelivered != 0 {
				t.Errorf("consumer has %d pending acks, %d redelivered; want none", ci.NumAckPending, ci.NumRedelivered)
			}
		})
	}
}

// A reply that Zoom refuses for good (here: a robot_jid Zoom does not know)
// is dead-lettered at once, with Zoom's status.
func TestZoomPermanentFailureIsDeadLettered(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	opts := testOptions("us")
	opts.Apps = []workers.App{{Name: config.DefaultAppName, BotJID: "unknown-bot@xmpp.zoom.us"}}
	startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), opts)

	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "hi", 1))
	dl := waitDeadLetter(t, ns.JS, "us")
	if r, s, a := dl.Header.Get(proto.HeaderDeadReason), dl.Header.Get(proto.HeaderDeadStatus), dl.Header.Get(proto.HeaderAttempts); r != "permanent" || s != "404" || a != "1" {
		t.Errorf("dead letter reason %q status %q attempts %q, want permanent 404 1", r, s, a)
	}
	if e := dl.Header.Get(proto.HeaderDeadError); !strings.Contains(e, "zoom answered 404") {
		t.Errorf("dead letter error = %q", e)
	}
	if n := len(z.Sends()); n != 1 {
		t.Errorf("send attempts = %d, want 1", n)
	}
}

// A reply with no recipient, to an event that names none, cannot be sent.
func TestReplyWithoutRecipientIsPermanent(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	backend := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer {
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("to whom?")}}})
	})
	startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), testOptions("eu"))

	body := zoomtest.Event("app_deauthorized") // names no toJid
	head, _ := zoom.ParseHead(body)
	publish(t, ns.JS, "eu", head.Event, head.AccountID, body)
	dl := waitDeadLetter(t, ns.JS, "eu")
	if r := dl.Header.Get(proto.HeaderDeadReason); r != proto.DeadReasonPermanent {
		t.Errorf("dead reason = %q, want permanent", r)
	}
	if e := dl.Header.Get(proto.HeaderDeadError); !strings.Contains(e, "to_jid") {
		t.Errorf("dead error = %q, want it to name to_jid", e)
	}
	if n := z.Requests(); n != 0 {
		t.Errorf("Zoom received %d requests, want none", n)
	}
}

func TestMaxAttemptsDeadLetters(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	backend := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer {
		return backendAnswer{Status: http.StatusInternalServerError, Body: "down"}
	})
	opts := testOptions("eu")
	opts.Retry.MaxAttempts = 3
	_, reg := startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), opts)

	body := zoomtest.BotNotification("acct", "hi", 1)
	ev := publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", body)
	dl := waitDeadLetter(t, ns.JS, "eu")

	if n := backend.Hits(); n != 3 {
		t.Errorf("backend called %d times, want 3 (one per attempt)", n)
	}
	for k, want := range map[string]string{
		proto.HeaderDeadReason: proto.DeadReasonMaxAttempts,
		proto.HeaderDeadStatus: "500",
		proto.HeaderAttempts:   "3",
		proto.HeaderEventID:    ev.ID,
	} {
		if got := dl.Header.Get(k); got != want {
			t.Errorf("dead letter %s = %q, want %q", k, got, want)
		}
	}
	if !bytes.Equal(dl.Data, body) {
		t.Errorf("dead letter payload = %s, want %s", dl.Data, body)
	}
	calls := backend.Calls()
	for i := 1; i < len(calls); i++ {
		if gap := calls[i].At.Sub(calls[i-1].At); gap < 50*time.Millisecond {
			t.Errorf("attempt %d came %v after the previous, want at least the 50ms backoff", i+1, gap)
		}
	}
	waitMetric(t, reg, "geomux_worker_handled_total", map[string]string{"region": "eu", "outcome": "retry"}, 2)
	waitMetric(t, reg, "geomux_worker_failed_total", map[string]string{"region": "eu", "reason": proto.DeadReasonMaxAttempts}, 1)
	if ci := consumerInfo(t, ns.JS, "eu"); ci.NumAckPending != 0 || ci.NumPending != 0 {
		t.Errorf("consumer still has %d pending acks, %d pending", ci.NumAckPending, ci.NumPending)
	}
	if n := z.Requests(); n != 0 {
		t.Errorf("Zoom received %d requests, want none", n)
	}
}

func TestZoomFailingEveryAttemptDeadLetters(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, func(int) (int, string) { return http.StatusBadGateway, "" })
	opts := testOptions("us")
	opts.Retry.MaxAttempts = 2
	calls := 0
	var mu sync.Mutex
	h := workers.HandlerFunc(func(ctx context.Context, ev workers.Event) ([]proto.ChatMessage, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		return workers.Echo(ctx, ev)
	})
	startWorker(t, ns.JS, h, zoomClient(t, z), opts)

	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "hi", 1))
	dl := waitDeadLetter(t, ns.JS, "us")
	if r, s, a := dl.Header.Get(proto.HeaderDeadReason), dl.Header.Get(proto.HeaderDeadStatus), dl.Header.Get(proto.HeaderAttempts); r != "max_attempts" || s != "502" || a != "2" {
		t.Errorf("dead letter reason %q status %q attempts %q, want max_attempts 502 2", r, s, a)
	}
	if e := dl.Header.Get(proto.HeaderDeadError); !strings.Contains(e, "zoom answered 502") {
		t.Errorf("dead error = %q", e)
	}
	if n := len(z.Sends()); n != 2 {
		t.Errorf("send attempts = %d, want 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Errorf("handler called %d times, want 1 (the retry reuses the recorded replies)", calls)
	}
}

func TestEventWithoutGeomuxHeadersIsDeadLettered(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	var mu sync.Mutex
	called := 0
	h := workers.HandlerFunc(func(context.Context, workers.Event) ([]proto.ChatMessage, error) {
		mu.Lock()
		called++
		mu.Unlock()
		return nil, nil
	})
	startWorker(t, ns.JS, h, zoomClient(t, z), testOptions("us"))

	cases := []struct {
		name    string
		headers map[string]string
	}{
		{"no headers", nil},
		{"no account", map[string]string{proto.HeaderEventID: "id-1", proto.HeaderEventType: "bot_notification"}},
		{"no type", map[string]string{proto.HeaderEventID: "id-2", proto.HeaderAccountID: "acct"}},
		{"no id", map[string]string{proto.HeaderEventType: "bot_notification", proto.HeaderAccountID: "acct"}},
	}
	bodies := map[string]string{}
	for i, tc := range cases {
		body := zoomtest.BotNotification("acct", tc.name, int64(i))
		m := natsMsg(eventSubject("us", "acct", zoom.EventBotNotification, body), body, tc.headers)
		publishMsg(t, ns.JS, m)
		bodies[string(body)] = tc.name
	}
	waitEventsGone(t, ns.JS, "us")
	dl := deadLetters(t, ns.JS, "us")
	if len(dl) != len(cases) {
		t.Fatalf("%d dead letters, want %d", len(dl), len(cases))
	}
	for _, d := range dl {
		name, ok := bodies[string(d.Data)]
		if !ok {
			t.Errorf("dead letter with unknown payload %s", d.Data)
			continue
		}
		delete(bodies, string(d.Data))
		if r, a := d.Header.Get(proto.HeaderDeadReason), d.Header.Get(proto.HeaderAttempts); r != proto.DeadReasonPermanent || a != "1" {
			t.Errorf("%s: dead letter reason %q attempts %q, want permanent 1", name, r, a)
		}
		if e := d.Header.Get(proto.HeaderDeadError); !strings.Contains(e, "geomux headers") {
			t.Errorf("%s: dead error = %q", name, e)
		}
		if r := d.Header.Get(proto.HeaderRegion); r != "us" {
			t.Errorf("%s: dead letter region = %q, want us", name, r)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if called != 0 {
		t.Errorf("handler called %d times for events without headers", called)
	}
	if n := z.Requests(); n != 0 {
		t.Errorf("Zoom received %d requests", n)
	}
}

// ---------------------------------------------------------------- lifecycle

func TestReady(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	w := workers.New(ns.JS, workers.Echo, withBot(testOptions("us"), zoomClient(t, z)), workers.NewMetrics(newRegistry()), nopLogger())
	if w.Ready() == nil {
		t.Error("Ready before Start = nil, want an error")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Ready(); err != nil {
		t.Errorf("Ready after Start = %v", err)
	}
	if err := w.Stop(ctx); err != nil {
		t.Errorf("Stop = %v", err)
	}
	if w.Ready() == nil {
		t.Error("Ready after Stop = nil, want an error")
	}
	// Stop of a worker never started does nothing.
	w2 := workers.New(ns.JS, workers.Echo, withBot(testOptions("us"), zoomClient(t, z)), workers.NewMetrics(newRegistry()), nopLogger())
	if err := w2.Stop(ctx); err != nil {
		t.Errorf("Stop before Start = %v", err)
	}
}

// Start sets up what the region needs, and is idempotent across restarts.
func TestStartSetsUpRegion(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	opts := testOptions("ap-south")
	opts.Concurrency = 3
	opts.HandlerTimeout = 2 * time.Second
	opts.Retry.MaxAttempts = 4
	startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), opts)

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for _, name := range []string{"GEOMUX_AP_SOUTH_EVENTS", "GEOMUX_AP_SOUTH_DLQ"} {
		if _, err := ns.JS.Stream(ctx, name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
	if _, err := ns.JS.KeyValue(ctx, "geomux-ap-south-replies"); err != nil {
		t.Errorf("replies bucket: %v", err)
	}
	ci := consumerInfo(t, ns.JS, "ap-south")
	want := topology.WorkerConsumer("ap-south", 0, opts.ConsumerSettings()).Config
	if ci.Config.MaxDeliver <= opts.Retry.MaxAttempts || ci.Config.MaxDeliver != want.MaxDeliver || ci.Config.AckPolicy != jetstream.AckExplicitPolicy || ci.Config.MaxAckPending != want.MaxAckPending {
		t.Errorf("consumer config: max deliver %d ack policy %s max ack pending %d; want above max_attempts (%d), explicit, %d",
			ci.Config.MaxDeliver, ci.Config.AckPolicy, ci.Config.MaxAckPending, want.MaxDeliver, want.MaxAckPending)
	}
	if !slices.Contains(ci.Config.FilterSubjects, proto.RegionEventsPartitionFilter("ap-south", 0)) {
		t.Errorf("partition 0 consumer filters %q, want its partition's subjects", ci.Config.FilterSubjects)
	}
	if ci.Config.AckWait <= opts.HandlerTimeout {
		t.Errorf("ack wait %v is not longer than the handler timeout %v", ci.Config.AckWait, opts.HandlerTimeout)
	}
	// A second worker of the same region shares the durable consumer.
	startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), opts)
	publish(t, ns.JS, "ap-south", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "shared", 1))
	waitEventsGone(t, ns.JS, "ap-south")
	if got := z.Texts(); !slices.Equal(got, []string{"shared"}) {
		t.Errorf("Zoom accepted %q, want one reply from the two workers", got)
	}
}

// ---------------------------------------------------------------- limits

// An attempt that outlasts the handler timeout is a transient failure: it
// is retried, and the reply then goes out once.
func TestHandlerTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	backend := newFakeBackend(t, func(n int, req proto.BackendRequest) backendAnswer {
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("eventually")}}})
	})
	// The first call hangs until geomux gives up on it.
	var once sync.Once
	hang := make(chan struct{})
	slow := httptestWrap(t, backend, func(w http.ResponseWriter, r *http.Request) bool {
		hung := false
		once.Do(func() {
			hung = true
			// The server notices the client giving up only once the body is read.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
				close(hang)
			case <-time.After(waitFor): // never hang the suite
			}
		})
		return hung
	})
	opts := testOptions("eu")
	opts.HandlerTimeout = 300 * time.Millisecond
	// The backend's own timeout is long: the handler timeout must cut the call.
	h := &workers.HTTPBackend{URL: slow, Region: "eu", Timeout: time.Minute, Client: newHTTPClient(t, 0)}
	startWorker(t, ns.JS, h, zoomClient(t, z), opts)

	start := time.Now()
	publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "slow", 1))
	waitEventsGone(t, ns.JS, "eu")
	select {
	case <-hang:
	default:
		t.Fatal("the first backend call did not hang")
	}
	if took := time.Since(start); took < opts.HandlerTimeout || took > 5*time.Second {
		t.Errorf("handled in %v; want the hung attempt cut at the handler timeout (%v) and retried", took, opts.HandlerTimeout)
	}
	if got := z.Texts(); !slices.Equal(got, []string{"eventually"}) {
		t.Errorf("Zoom accepted %q, want one reply", got)
	}
	if dl := deadLetters(t, ns.JS, "eu"); len(dl) != 0 {
		t.Errorf("%d dead letters: a timeout is not permanent", len(dl))
	}
}

// httptestWrap serves b behind f, which may answer a request itself (true)
// instead. It returns the URL to call.
func httptestWrap(t *testing.T, b *fakeBackend, f func(http.ResponseWriter, *http.Request) bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f(w, r) {
			b.serve(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// No more than BackendConcurrency handler calls run at once, while more
// events are held.
func TestConcurrencyIsBounded(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	const concurrency, events = 2, 8
	var (
		mu          sync.Mutex
		inFlight    int
		maxInFlight int
		handled     int
	)
	release := make(chan struct{})
	h := workers.HandlerFunc(func(ctx context.Context, ev workers.Event) ([]proto.ChatMessage, error) {
		mu.Lock()
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		mu.Unlock()
		select {
		case <-release:
		case <-ctx.Done():
		}
		mu.Lock()
		inFlight--
		handled++
		mu.Unlock()
		return nil, ctx.Err()
	})
	opts := testOptions("us")
	opts.BackendConcurrency = concurrency
	startWorker(t, ns.JS, h, zoomClient(t, z), opts)
	for i := range events {
		acct := fmt.Sprintf("acct-%d", i) // conversations of their own
		publish(t, ns.JS, "us", "bot_installed", acct, zoomtest.BotNotification(acct, "x", int64(i)))
	}
	// The slots are full and more events have reached the worker: had it no
	// bound, they would be in the handler too.
	natstest.Eventually(t, waitFor, func() bool {
		mu.Lock()
		n := inFlight
		mu.Unlock()
		return n == concurrency && consumerInfo(t, ns.JS, "us").NumAckPending > concurrency
	}, "%d events in the handler and more delivered", concurrency)
	close(release)
	waitEventsGone(t, ns.JS, "us")

	mu.Lock()
	defer mu.Unlock()
	if maxInFlight != concurrency {
		t.Errorf("at most %d events in the handler at once, want %d", maxInFlight, concurrency)
	}
	if handled != events {
		t.Errorf("handled %d events, want %d", handled, events)
	}
}

// An event body that is not JSON cannot be answered: Echo and the HTTP
// backend both give it up at once.
func TestUnreadableEventBodyIsPermanent(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	backend := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer { return backendAnswer{Status: http.StatusNoContent} })
	startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), testOptions("us"))
	startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), testOptions("eu"))

	body := []byte("{not json")
	for _, region := range []string{"us", "eu"} {
		publish(t, ns.JS, region, zoom.EventBotNotification, "acct", body)
		dl := waitDeadLetter(t, ns.JS, region)
		if r, a := dl.Header.Get(proto.HeaderDeadReason), dl.Header.Get(proto.HeaderAttempts); r != proto.DeadReasonPermanent || a != "1" {
			t.Errorf("%s: dead letter reason %q attempts %q, want permanent 1", region, r, a)
		}
		if !bytes.Equal(dl.Data, body) {
			t.Errorf("%s: dead letter payload = %q", region, dl.Data)
		}
	}
	if n := backend.Hits(); n != 0 {
		t.Errorf("backend called %d times with an unreadable event", n)
	}
	if n := z.Requests(); n != 0 {
		t.Errorf("Zoom received %d requests", n)
	}
}

// A full dead-letter stream (worker.dead_letter_max_bytes) refuses new dead
// letters: the event is not dropped but stays in the events stream, and
// its conversation waits for it, until there is room; then it is
// dead-lettered as usual.
func TestFullDeadLetterStreamKeepsTheEvent(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	opts := testOptions("us")
	opts.Apps = []workers.App{{Name: config.DefaultAppName, BotJID: "unknown-bot@xmpp.zoom.us"}} // Zoom refuses every reply for good
	opts.Streams.DeadLetterMaxBytes = 4 << 10
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	dlqs, err := natsx.EnsureStream(ctx, ns.JS, topology.RegionDeadLetterConfig("us", opts.Streams))
	if err != nil {
		t.Fatal(err)
	}
	// Fill it.
	for i := 0; ; i++ {
		if _, err := ns.JS.Publish(ctx, proto.RegionDeadLetterSubject("us"), make([]byte, 512)); err != nil {
			break
		}
		if i > 100 {
			t.Fatal("the dead-letter stream takes more than its cap")
		}
	}
	_, reg := startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), opts)
	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "hi", 1))
	// Zoom refuses the reply twice: the dead letter was tried and refused.
	natstest.Eventually(t, waitFor, func() bool { return z.Requests() >= 2 }, "two attempts")
	if n := streamMsgs(t, ns.JS, proto.RegionEventsStream("us")); n != 1 {
		t.Fatalf("the events stream holds %d events, want the one whose dead letter found no room", n)
	}
	if got := metricValue(t, reg, "geomux_worker_failed_total", map[string]string{"region": "us", "reason": proto.DeadReasonPermanent}); got != 0 {
		t.Errorf("counted %v dead letters while none could be stored", got)
	}
	// The operator makes room: the event is dead-lettered.
	if err := dlqs.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	dl := waitDeadLetter(t, ns.JS, "us")
	if r := dl.Header.Get(proto.HeaderDeadReason); r != proto.DeadReasonPermanent {
		t.Errorf("dead letter reason %q", r)
	}
	waitEventsGone(t, ns.JS, "us")
}

// A reply the backend leaves unaddressed goes where Zoom documents each
// event: a welcome on bot_installed to the installing user, a reply to an
// app mention to its channel on behalf of the user who mentioned the app;
// each carries every field Zoom requires. A reply nothing can address is a
// dead letter naming the missing field, not a 400 from Zoom.
func TestReplyDefaultsPerEvent(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	backend := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer {
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("hello")}}})
	})
	startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), testOptions("eu"))

	installed := zoomtest.Event("bot_installed")
	mention := zoomtest.Event("team_chat_app_mention")
	publish(t, ns.JS, "eu", "bot_installed", "CDSCdcsdv", installed)
	publish(t, ns.JS, "eu", "team_chat.app_mention", "asgVcjZnWWRLWvv_GtyGuaxg", mention)
	natstest.Eventually(t, 10*time.Second, func() bool { return len(z.SB.Delivered()) == 2 }, "two replies delivered")
	want := map[string][2]string{
		"CDSCdcsdv":                {"fvdfvfdvfd@xmpp.zoom.us", "fvdfvfdvfd@xmpp.zoom.us"},
		"asgVcjZnWWRLWvv_GtyGuaxg": {"8amq0wooq1o3a84yyfc2xq@conference.xmpp.zoom.us", "z8ycxjabcdefghfp8uq@xmpp.zoom.us"},
	}
	for _, d := range z.SB.Delivered() {
		w, ok := want[d.Message.AccountID]
		if !ok || d.Message.ToJID != w[0] || d.Message.UserJID != w[1] || d.Message.RobotJID == "" {
			t.Errorf("delivered %+v, want to %q as %q", d.Message, w[0], w[1])
		}
	}

	// A mention that names neither a channel nor a user.
	bare := []byte(`{"event":"team_chat.app_mention","event_ts":1,"payload":{"account_id":"acct-bare","object":{"message":"hi"}}}`)
	publish(t, ns.JS, "eu", "team_chat.app_mention", "acct-bare", bare)
	dl := waitDeadLetter(t, ns.JS, "eu")
	if r, e := dl.Header.Get(proto.HeaderDeadReason), dl.Header.Get(proto.HeaderDeadError); r != proto.DeadReasonPermanent || !strings.Contains(e, "to_jid") || !strings.Contains(e, "user_jid") {
		t.Errorf("dead letter %q: %q, want permanent naming to_jid and user_jid", r, e)
	}
	if n := len(z.SB.Delivered()); n != 2 {
		t.Errorf("%d messages reached Zoom, want 2", n)
	}
}

// A backend can edit the card a button was clicked on, delete a message
// and unfurl a shared link: the envelope carries the clicked card's
// message_id and the link's unfurl address; the worker calls Zoom's API for
// each with the app's chatbot token, once.
func TestBackendEditsDeletesAndUnfurls(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	var mu sync.Mutex
	var seen []proto.BackendRequest
	backend := newFakeBackend(t, func(_ int, req proto.BackendRequest) backendAnswer {
		mu.Lock()
		seen = append(seen, req)
		mu.Unlock()
		switch req.Event {
		case zoom.EventBotNotification:
			return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("pick one")}, {Content: card("to delete")}}})
		case "interactive_message_actions":
			return answerJSON(proto.BackendResponse{
				Edits:   []proto.EditMessage{{Content: card("picked")}},
				Deletes: []proto.DeleteMessage{{MessageID: z.SB.Delivered()[1].MessageID}},
			})
		case "team_chat.link_shared":
			return answerJSON(proto.BackendResponse{Unfurls: []proto.UnfurlLink{{Content: json.RawMessage(`{"head":{"text":"Preview"}}`)}}})
		}
		return backendAnswer{Status: http.StatusNoContent}
	})
	startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), testOptions("eu"))

	publish(t, ns.JS, "eu", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "start", 1))
	natstest.Eventually(t, 10*time.Second, func() bool { return len(z.SB.Delivered()) == 2 }, "two messages sent")
	cardID := z.SB.Delivered()[0].MessageID
	click := []byte(`{"event":"interactive_message_actions","payload":{"accountId":"acct","messageId":"` + cardID + `","actionItem":{"text":"Go","value":"go"},"toJid":"user-acct@xmpp.zoom.us","userJid":"user-acct@xmpp.zoom.us"}}`)
	publish(t, ns.JS, "eu", "interactive_message_actions", "acct", click)
	natstest.Eventually(t, 10*time.Second, func() bool {
		d := z.SB.Delivered()
		return d[0].Text == "picked" && d[1].Deleted
	}, "the clicked card edited, the other message deleted")
	if d := z.SB.Delivered()[0]; d.Edits != 1 {
		t.Errorf("card edited %d times, want 1", d.Edits)
	}
	link := []byte(`{"event":"team_chat.link_shared","response_url":"https://api.zoom.us/v2/im/chat/users/u-7/unfurls/trig-3","payload":{"account_id":"acct","operator_id":"u-7","object":{"channel_id":"chan1","message":"https://example.com"}}}`)
	publish(t, ns.JS, "eu", "team_chat.link_shared", "acct", link)
	natstest.Eventually(t, 10*time.Second, func() bool { return len(z.SB.Unfurls()) == 1 }, "the link unfurled")
	if u := z.SB.Unfurls()[0]; u.UserID != "u-7" || u.TriggerID != "trig-3" {
		t.Errorf("unfurl %+v", u)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range seen {
		switch r.Event {
		case "interactive_message_actions":
			if r.MessageID != cardID {
				t.Errorf("envelope message_id %q, want the clicked card %q", r.MessageID, cardID)
			}
		case "team_chat.link_shared":
			if r.Unfurl == nil || r.Unfurl.UserID != "u-7" || r.Unfurl.TriggerID != "trig-3" {
				t.Errorf("envelope unfurl %+v", r.Unfurl)
			}
		}
	}
	// An edit nothing addresses is a dead letter naming what is missing.
	backend2 := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer {
		return answerJSON(proto.BackendResponse{Edits: []proto.EditMessage{{Content: card("x")}}})
	})
	startWorker(t, ns.JS, backendHandler(t, backend2, "us", 0), zoomClient(t, z), testOptions("us"))
	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct2", zoomtest.BotNotification("acct2", "hi", 2))
	dl := waitDeadLetter(t, ns.JS, "us")
	if e := dl.Header.Get(proto.HeaderDeadError); !strings.Contains(e, "message_id") {
		t.Errorf("dead letter error %q, want it to name message_id", e)
	}
}
