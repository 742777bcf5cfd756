package ingress_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/geomux/geomux/ingress"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
)

const (
	secret    = "current-secret"
	oldSecret = "previous-secret"
)

type fixture struct {
	handler *ingress.Handler
	nats    *natstest.Server
	srv     *httptest.Server
	url     string
	metrics *ingress.Metrics
	stream  jetstream.Stream
	health  *health.Registry
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ns := natstest.Start(t, "")
	ctx := context.Background()
	stream, err := natsx.EnsureStream(ctx, ns.JS, topology.TransitConfig(topology.OptionsFrom(config.Default()), 0))
	if err != nil {
		t.Fatal(err)
	}
	m := ingress.NewMetrics(prometheus.NewRegistry())
	reg := health.NewRegistry()
	h := ingress.NewHandler(ns.JS, ingress.Options{
		Apps:           []ingress.App{{Name: config.DefaultAppName, Verifier: zoom.NewVerifier([]string{secret, oldSecret}, 5*time.Minute)}},
		PublishTimeout: 2 * time.Second,
	}, m, reg, zap.NewNop())
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{handler: h, nats: ns, srv: srv, url: srv.URL + ingress.WebhookPath, metrics: m, stream: stream, health: reg}
}

func (f *fixture) msgs(t *testing.T) uint64 {
	t.Helper()
	info, err := f.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAcceptedEventIsPersistedWithMetadata(t *testing.T) {
	f := newFixture(t)
	body := zoomtest.Event("bot_notification")
	status, _ := do(t, zoomtest.NewRequest(f.url, secret, body, time.Now()))
	if status != http.StatusOK {
		t.Fatalf("status %d, want 200", status)
	}
	// 200 was answered: the event must already be in the stream.
	m, err := f.stream.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatalf("event not in the stream after 200: %v", err)
	}
	if !bytes.Equal(m.Data, body) {
		t.Errorf("stored body differs from the raw body received")
	}
	want := map[string]string{
		proto.HeaderEventID:        proto.EventID(body),
		jetstream.MsgIDHeader:      proto.EventID(body),
		proto.HeaderEventType:      "bot_notification",
		proto.HeaderAccountID:      "gVcjZnWWRLWvv_GtyGuaxg",
		proto.HeaderTraceparent:    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		proto.HeaderZoomTrackingID: "v=2.0;clid=us06;rid=test",
		proto.HeaderApp:            "default",
		// The example is written in a channel: that is its conversation.
		proto.HeaderConversation: proto.ConversationKey("channel:b1c841dc7b0b4a69287e6be05c7f93f25@conference.xmpp.zoom.us"),
	}
	for k, v := range want {
		if got := m.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	at, err := time.Parse(proto.TimeFormat, m.Header.Get(proto.HeaderReceivedAt))
	if err != nil || time.Since(at) > time.Minute {
		t.Errorf("received-at header %q not a recent time: %v", m.Header.Get(proto.HeaderReceivedAt), err)
	}
	if got := testutil.ToFloat64(f.metrics.Published.WithLabelValues("default")); got != 1 {
		t.Errorf("published metric = %v, want 1", got)
	}
}

func TestSnakeCaseAccountID(t *testing.T) {
	f := newFixture(t)
	for _, name := range []string{"team_chat_app_mention", "app_deauthorized_2"} {
		body := zoomtest.Event(name)
		if status, msg := do(t, zoomtest.NewRequest(f.url, secret, body, time.Now())); status != http.StatusOK {
			t.Fatalf("%s: status %d %s", name, status, msg)
		}
	}
	m, err := f.stream.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(proto.HeaderAccountID); got != "asgVcjZnWWRLWvv_GtyGuaxg" {
		t.Errorf("team_chat account = %q", got)
	}
}

func TestRejections(t *testing.T) {
	f := newFixture(t)
	body := zoomtest.Event("bot_notification")
	now := time.Now()
	tests := []struct {
		name   string
		req    func() *http.Request
		status int
		reason string
	}{
		{"bad signature", func() *http.Request {
			r := zoomtest.NewRequest(f.url, "not-the-secret", body, now)
			return r
		}, 401, "bad_signature"},
		{"one byte changed", func() *http.Request {
			r := zoomtest.NewRequest(f.url, secret, body, now)
			changed := bytes.Replace(body, []byte("island"), []byte("islanD"), 1)
			r.Body = io.NopCloser(bytes.NewReader(changed))
			r.ContentLength = int64(len(changed))
			return r
		}, 401, "bad_signature"},
		{"stale timestamp", func() *http.Request {
			return zoomtest.NewRequest(f.url, secret, body, now.Add(-6*time.Minute))
		}, 401, "stale_timestamp"},
		{"future timestamp", func() *http.Request {
			return zoomtest.NewRequest(f.url, secret, body, now.Add(6*time.Minute))
		}, 401, "stale_timestamp"},
		{"no signature", func() *http.Request {
			r := zoomtest.NewRequest(f.url, secret, body, now)
			r.Header.Del("X-Zm-Signature")
			return r
		}, 401, "missing_signature"},
		{"not JSON", func() *http.Request {
			return zoomtest.NewRequest(f.url, secret, []byte("event=bot_notification"), now)
		}, 400, "not_json"},
		{"no event", func() *http.Request {
			return zoomtest.NewRequest(f.url, secret, []byte(`{"payload":{"accountId":"a"}}`), now)
		}, 400, "no_event"},
		{"account id twice", func() *http.Request {
			return zoomtest.NewRequest(f.url, secret, []byte(`{"event":"bot_notification","payload":{"accountId":"eu1","accountId":"us1"}}`), now)
		}, 400, "duplicate_key"},
		{"too large", func() *http.Request {
			big := append([]byte(`{"event":"x","pad":"`), bytes.Repeat([]byte("a"), ingress.MaxBody)...)
			big = append(big, '"', '}')
			return zoomtest.NewRequest(f.url, secret, big, now)
		}, 413, "too_large"},
		{"too large, chunked", func() *http.Request {
			big := bytes.Repeat([]byte("a"), ingress.MaxBody+10)
			r := zoomtest.NewRequest(f.url, secret, big, now)
			r.ContentLength = -1 // no Content-Length: the limit must hold while reading
			r.Body = io.NopCloser(bytes.NewReader(big))
			return r
		}, 413, "too_large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(f.metrics.Rejected.WithLabelValues("default", tc.reason))
			status, msg := do(t, tc.req())
			if status != tc.status {
				t.Fatalf("status %d (%s), want %d", status, msg, tc.status)
			}
			var eb struct{ Error string }
			if err := json.Unmarshal([]byte(msg), &eb); err != nil || eb.Error == "" {
				t.Errorf("error answer %q is not {\"error\": ...}", msg)
			}
			if got := testutil.ToFloat64(f.metrics.Rejected.WithLabelValues("default", tc.reason)); got != before+1 {
				t.Errorf("rejected{reason=%s} = %v, want %v", tc.reason, got, before+1)
			}
		})
	}
	if n := f.msgs(t); n != 0 {
		t.Errorf("%d rejected events were stored", n)
	}
}

// A verified event that names no account (Zoom leaves payload.account_id
// empty on an external user's app mention) is stored, never refused: Zoom
// would not retry a 4xx. It carries its channel's key, by which the router
// finds its account; so does one whose account id could never be one.
func TestEventWithoutAccountIsStored(t *testing.T) {
	f := newFixture(t)
	mention := bytes.Replace(zoomtest.Event("team_chat_app_mention"), []byte(`"asgVcjZnWWRLWvv_GtyGuaxg"`), []byte(`""`), 1)
	if bytes.Contains(mention, []byte("asgVcjZnWWRLWvv_GtyGuaxg")) {
		t.Fatal("the example's account id was not emptied")
	}
	for i, body := range [][]byte{
		mention,
		[]byte(`{"event":"bot_notification","payload":{"accountId":"a.b c","toJid":"x@conference.xmpp.zoom.us"}}`),
	} {
		if status, msg := do(t, zoomtest.NewRequest(f.url, secret, body, time.Now())); status != http.StatusOK {
			t.Fatalf("event %d: status %d %s, want 200", i, status, msg)
		}
		m, err := f.stream.GetLastMsgForSubject(context.Background(), proto.IngressSubject)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.Data, body) {
			t.Errorf("event %d: stored body differs from Zoom's", i)
		}
		if a := m.Header.Get(proto.HeaderAccountID); a != "" {
			t.Errorf("event %d: stored with account %q", i, a)
		}
		if c := m.Header.Get(proto.HeaderChannel); !proto.ValidChannelKey(c) {
			t.Errorf("event %d: channel key %q", i, c)
		}
	}
	if n := f.msgs(t); n != 2 {
		t.Errorf("%d events stored, want 2", n)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	f := newFixture(t)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequest(m, f.url, nil)
		if status, _ := do(t, req); status != http.StatusMethodNotAllowed {
			t.Errorf("%s: status %d, want 405", m, status)
		}
	}
}

func TestURLValidation(t *testing.T) {
	f := newFixture(t)
	for _, s := range []string{secret, oldSecret} {
		body := zoomtest.Event("endpoint_url_validation")
		status, msg := do(t, zoomtest.NewRequest(f.url, s, body, time.Now()))
		if status != http.StatusOK {
			t.Fatalf("status %d %s", status, msg)
		}
		var got struct{ PlainToken, EncryptedToken string }
		if err := json.Unmarshal([]byte(msg), &got); err != nil {
			t.Fatal(err)
		}
		mac := hmac.New(sha256.New, []byte(s))
		mac.Write([]byte("qgg8vlvZRS6UYooatFL8Aw"))
		if got.PlainToken != "qgg8vlvZRS6UYooatFL8Aw" || got.EncryptedToken != hex.EncodeToString(mac.Sum(nil)) {
			t.Errorf("answer %+v does not answer the challenge with the signing secret", got)
		}
	}
	if n := f.msgs(t); n != 0 {
		t.Errorf("url validation was stored (%d messages)", n)
	}
}

func TestSecretRotation(t *testing.T) {
	f := newFixture(t)
	status, _ := do(t, zoomtest.NewRequest(f.url, oldSecret, zoomtest.Event("bot_notification"), time.Now()))
	if status != http.StatusOK {
		t.Fatalf("event signed with the previous secret: status %d", status)
	}
}

// Zoom re-delivers an event with the same body and a new timestamp and
// signature; it must be stored once and answered 200 each time.
func TestRedeliveryStoredOnce(t *testing.T) {
	f := newFixture(t)
	body := zoomtest.Event("bot_notification")
	for i, at := range []time.Time{time.Now().Add(-4 * time.Minute), time.Now().Add(-time.Minute), time.Now()} {
		if status, _ := do(t, zoomtest.NewRequest(f.url, secret, body, at)); status != http.StatusOK {
			t.Fatalf("delivery %d: status %d", i, status)
		}
	}
	if n := f.msgs(t); n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
	if got := testutil.ToFloat64(f.metrics.Duplicates.WithLabelValues("default")); got != 2 {
		t.Errorf("duplicates = %v, want 2", got)
	}
}

// Never 200 unless stored: with NATS gone, ingress answers 503 (Zoom retries).
func TestNATSDownAnswers503(t *testing.T) {
	f := newFixture(t)
	f.nats.NS.Shutdown()
	f.nats.NS.WaitForShutdown()
	natstest.Eventually(t, 5*time.Second, func() bool { return !f.nats.Conn.IsConnected() }, "client to notice the server is gone")
	status, msg := do(t, zoomtest.NewRequest(f.url, secret, zoomtest.Event("bot_notification"), time.Now()))
	if status != http.StatusServiceUnavailable {
		t.Fatalf("status %d (%s), want 503", status, msg)
	}
	if testutil.ToFloat64(f.metrics.PublishFailures.WithLabelValues("default")) != 1 {
		t.Errorf("publish failures metric not counted")
	}
}

// A stream that refuses the event (here: it does not exist) also yields 503.
func TestPublishRejectedAnswers503(t *testing.T) {
	f := newFixture(t)
	if err := f.nats.JS.DeleteStream(context.Background(), proto.IngressStream); err != nil {
		t.Fatal(err)
	}
	status, _ := do(t, zoomtest.NewRequest(f.url, secret, zoomtest.Event("bot_notification"), time.Now()))
	if status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", status)
	}
}

func TestHealthEndpoints(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(f.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
	}
}

func TestEventIDStableAcrossSignatures(t *testing.T) {
	body := zoomtest.Event("bot_notification")
	a := zoomtest.NewRequest("http://x", secret, body, time.Now())
	b := zoomtest.NewRequest("http://x", secret, body, time.Now().Add(-time.Minute))
	if a.Header.Get("X-Zm-Signature") == b.Header.Get("X-Zm-Signature") {
		t.Fatal("test setup: signatures should differ")
	}
	if id := proto.EventID(body); len(id) != 22 || strings.ContainsAny(id, "+/=") {
		t.Errorf("event id %q is not 22 URL-safe characters", id)
	}
	if proto.EventID(body) == proto.EventID(zoomtest.BotNotification("a", "island", 1)) {
		t.Error("distinct events share an id")
	}
}
