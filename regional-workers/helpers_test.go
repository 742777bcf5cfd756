package workers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/httpx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// The Zoom app the fake Zoom knows and the workers act as.
const (
	clientID     = "test-client-id"
	clientSecret = "test-client-secret"
	botJID       = "v1testbot@xmpp.zoom.us"
)

// waitFor is how long a test waits for something that should happen at once.
const waitFor = 10 * time.Second

// ---------------------------------------------------------------- fake Zoom

// sendAttempt is one POST /v2/im/chat/messages the fake Zoom received.
type sendAttempt struct {
	At     time.Time
	Auth   string
	Status int
	Msg    zoom.Message
}

// fakeZoom is the Zoom sandbox behind a wrapper that records every send
// attempt and can answer chosen ones with a failure instead.
type fakeZoom struct {
	SB  *sandbox.Sandbox
	URL string

	mu          sync.Mutex
	sends       []sendAttempt
	tokenCalls  int
	failureFunc func(n int) (status int, retryAfter string)
}

// newFakeZoom serves a sandbox. fail, if not nil, is asked about the n-th
// (1-based) send attempt: a non-zero status is answered instead of passing
// the request to the sandbox.
func newFakeZoom(t *testing.T, fail func(n int) (status int, retryAfter string)) *fakeZoom {
	t.Helper()
	// No rate limit: tests of pacing set one (newFakeZoomWith).
	z := newFakeZoomWith(t, sandbox.RateLimit{PerSecond: -1})
	z.failureFunc = fail
	return z
}

// newFakeZoomWith serves a sandbox enforcing limits.
func newFakeZoomWith(t *testing.T, limits sandbox.RateLimit) *fakeZoom {
	t.Helper()
	z := &fakeZoom{
		SB: sandbox.New(sandbox.Config{ClientID: clientID, ClientSecret: clientSecret, BotJID: botJID, RateLimit: limits}, nil),
	}
	srv := httptest.NewServer(http.HandlerFunc(z.serve))
	t.Cleanup(srv.Close)
	z.URL = srv.URL
	return z
}

func (z *fakeZoom) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/oauth/token" {
		z.mu.Lock()
		z.tokenCalls++
		z.mu.Unlock()
		z.SB.ServeHTTP(w, r)
		return
	}
	if r.URL.Path != "/v2/im/chat/messages" {
		z.SB.ServeHTTP(w, r)
		return
	}
	at := time.Now()
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var m zoom.Message
	_ = json.Unmarshal(body, &m)
	z.mu.Lock()
	n := len(z.sends) + 1
	z.sends = append(z.sends, sendAttempt{At: at, Auth: r.Header.Get("Authorization"), Msg: m})
	fail := z.failureFunc
	z.mu.Unlock()

	status := 0
	if fail != nil {
		var retryAfter string
		if status, retryAfter = fail(n); status != 0 {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = fmt.Fprintf(w, `{"code":%d,"message":"injected by the test"}`, status)
		}
	}
	if status == 0 {
		rec := &statusRecorder{ResponseWriter: w}
		z.SB.ServeHTTP(rec, r)
		status = rec.status
	}
	z.mu.Lock()
	z.sends[n-1].Status = status
	z.mu.Unlock()
}

// Sends returns the send attempts so far.
func (z *fakeZoom) Sends() []sendAttempt {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]sendAttempt(nil), z.sends...)
}

// Requests is how many requests of any kind (token or send) Zoom received.
func (z *fakeZoom) Requests() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return len(z.sends) + z.tokenCalls
}

// Texts returns the texts of the messages the sandbox accepted, in order.
func (z *fakeZoom) Texts() []string {
	var out []string
	for _, d := range z.SB.Delivered() {
		out = append(out, d.Text)
	}
	return out
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// ---------------------------------------------------------------- fake backend

// backendCall is one request the fake backend received.
type backendCall struct {
	At     time.Time
	Method string
	Header http.Header
	Body   []byte
	Req    proto.BackendRequest
	// DecodeErr is why Body did not decode as a proto.BackendRequest.
	DecodeErr error
}

// backendAnswer is what the fake backend answers a call with.
type backendAnswer struct {
	Status int
	Header map[string]string
	Body   string
}

type fakeBackend struct {
	URL string

	mu     sync.Mutex
	calls  []backendCall
	answer func(n int, req proto.BackendRequest) backendAnswer
}

// newFakeBackend serves a backend answering the n-th (1-based) call with
// answer(n, request).
func newFakeBackend(t *testing.T, answer func(n int, req proto.BackendRequest) backendAnswer) *fakeBackend {
	t.Helper()
	b := &fakeBackend{answer: answer}
	srv := httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(srv.Close)
	b.URL = srv.URL + "/bot"
	return b
}

func (b *fakeBackend) serve(w http.ResponseWriter, r *http.Request) {
	c := backendCall{At: time.Now(), Method: r.Method, Header: r.Header.Clone()}
	c.Body, _ = io.ReadAll(r.Body)
	c.DecodeErr = json.Unmarshal(c.Body, &c.Req)
	b.mu.Lock()
	b.calls = append(b.calls, c)
	n := len(b.calls)
	b.mu.Unlock()
	a := b.answer(n, c.Req)
	for k, v := range a.Header {
		w.Header().Set(k, v)
	}
	if a.Body != "" && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(a.Status)
	_, _ = io.WriteString(w, a.Body)
}

// Calls returns the calls so far.
func (b *fakeBackend) Calls() []backendCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]backendCall(nil), b.calls...)
}

// Hits is how many calls the backend received.
func (b *fakeBackend) Hits() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.calls)
}

// answerJSON answers 200 with v encoded.
func answerJSON(v any) backendAnswer {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return backendAnswer{Status: http.StatusOK, Body: string(b)}
}

// card is a Zoom message card with one text item.
func card(text string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"body": []map[string]string{{"type": "message", "text": text}}})
	return b
}

// ---------------------------------------------------------------- clients and workers

// newHTTPClient is geomux's HTTP client making retries quick in-process
// retries; its idle connections are closed when the test ends.
func newHTTPClient(t *testing.T, retries int) *retryablehttp.Client {
	hc := httpx.NewClient(httpx.Options{Retries: retries, WaitMin: time.Millisecond, WaitMax: 10 * time.Millisecond}, zap.NewNop())
	t.Cleanup(hc.HTTPClient.CloseIdleConnections)
	return hc
}

// zoomClient is a Zoom client for the fake Zoom at z.
func zoomClient(t *testing.T, z *fakeZoom) *zoom.Client {
	return zoom.NewClient(zoom.ClientConfig{
		ClientID: clientID, ClientSecret: clientSecret,
		APIBaseURL: z.URL + "/v2", OAuthBaseURL: z.URL,
	}, newHTTPClient(t, 0))
}

// backendHandler is the HTTP handler of a region, calling b with an HTTP
// client that retries retries times in-process.
func backendHandler(t *testing.T, b *fakeBackend, region string, retries int) *workers.HTTPBackend {
	return &workers.HTTPBackend{URL: b.URL, Region: region, Timeout: 5 * time.Second, Client: newHTTPClient(t, retries)}
}

// testOptions are worker options with quick retries.
func testOptions(region string) workers.Options {
	return workers.Options{
		Region: region,
		Retry: config.Retry{
			MaxAttempts: 5,
			Backoff:     []config.Duration{config.Duration(50 * time.Millisecond)},
		},
		Concurrency:    4,
		HandlerTimeout: 5 * time.Second,
		Streams: topology.Options{
			DedupWindow:      2 * time.Minute,
			ParkTTL:          time.Hour,
			DeadLetterMaxAge: time.Hour,
		},
	}
}

// withBot gives opts the test's default app, replying as botJID through
// zc, ahead of the apps it has (or fills in the sender of its own first
// app).
func withBot(opts workers.Options, zc workers.Sender) workers.Options {
	if len(opts.Apps) > 0 && opts.Apps[0].Name == config.DefaultAppName {
		if opts.Apps[0].Zoom == nil {
			opts.Apps[0].Zoom = zc
		}
		return opts
	}
	opts.Apps = append([]workers.App{{Name: config.DefaultAppName, BotJID: botJID, Zoom: zc}}, opts.Apps...)
	return opts
}

// startWorker builds and starts a worker; it is stopped when the test ends.
func startWorker(t *testing.T, js jetstream.JetStream, h workers.Handler, zc workers.Sender, opts workers.Options) (*workers.Worker, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w := workers.New(js, h, withBot(opts, zc), workers.NewMetrics(reg), testLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatalf("Start worker %s: %v", opts.Region, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("Stop worker %s: %v", opts.Region, err)
		}
	})
	return w, reg
}

// ---------------------------------------------------------------- NATS

// published is an event as the router published it.
type published struct {
	ID         string
	Body       []byte
	ReceivedAt time.Time
}

// publish puts an event on a region's subject as the router does.
func publish(t *testing.T, js jetstream.JetStream, region, eventType, account string, body []byte) published {
	t.Helper()
	p := newPublished(body)
	m := newEventMsg(region, account, p)
	m.Header.Set(proto.HeaderEventType, eventType)
	m.Header.Set(proto.HeaderConversation, proto.ConversationKey(zoom.Conversation(body)))
	m.Subject = eventSubject(region, account, eventType, body)
	publishMsg(t, js, m)
	return p
}

// newPublished is a bot_notification body about to be published.
func newPublished(body []byte) published {
	return published{ID: proto.EventID(body), Body: body, ReceivedAt: time.Now().UTC()}
}

// newEventMsg is the message the router publishes for a bot_notification
// of account.
func newEventMsg(region, account string, p published) *nats.Msg {
	m := nats.NewMsg(eventSubject(region, account, zoom.EventBotNotification, p.Body))
	m.Data = p.Body
	m.Header.Set(proto.HeaderEventID, p.ID)
	m.Header.Set(proto.HeaderEventType, zoom.EventBotNotification)
	m.Header.Set(proto.HeaderAccountID, account)
	m.Header.Set(proto.HeaderReceivedAt, p.ReceivedAt.Format(proto.TimeFormat))
	m.Header.Set(proto.HeaderRegion, region)
	m.Header.Set(proto.HeaderConversation, proto.ConversationKey(zoom.Conversation(p.Body)))
	m.Header.Set(jetstream.MsgIDHeader, p.ID)
	return m
}

func publishMsg(t *testing.T, js jetstream.JetStream, m *nats.Msg) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("publish to %s: %v", m.Subject, err)
	}
}

// streamMsgs is how many messages a stream holds.
func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	return info.State.Msgs
}

// waitEventsGone waits until the region's events stream is empty: every
// event was acknowledged or terminated.
func waitEventsGone(t *testing.T, js jetstream.JetStream, region string) {
	t.Helper()
	name := proto.RegionEventsStream(region)
	natstest.Eventually(t, waitFor, func() bool { return streamMsgs(t, js, name) == 0 },
		"stream %s to be empty", name)
}

// eventSubject is the subject the router publishes an event on.
func eventSubject(region, account, eventType string, body []byte) string {
	return proto.RegionEventSubject(region, account, proto.ConversationKey(zoom.Conversation(body)))
}

// consumerInfo is the workers' consumers of a region, added up over the
// partitions.
func consumerInfo(t *testing.T, js jetstream.JetStream, region string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	sum := &jetstream.ConsumerInfo{}
	for p := range topology.DefaultPartitions {
		c, err := js.Consumer(ctx, proto.RegionEventsStream(region), proto.WorkersConsumer(p))
		if err != nil {
			t.Fatalf("consumer %d of %s: %v", p, region, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatalf("consumer info of %s: %v", region, err)
		}
		if p == 0 {
			sum.Config = info.Config
		}
		sum.NumAckPending += info.NumAckPending
		sum.NumPending += info.NumPending
		sum.NumRedelivered += info.NumRedelivered
		sum.NumWaiting += info.NumWaiting
	}
	return sum
}

// pendingConsumer is the workers' consumer of a region that has an event
// waiting: the one of its account's partition.
func pendingConsumer(t *testing.T, js jetstream.JetStream, region string) jetstream.Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for p := range topology.DefaultPartitions {
		c, err := js.Consumer(ctx, proto.RegionEventsStream(region), proto.WorkersConsumer(p))
		if err != nil {
			t.Fatalf("consumer %d of %s: %v", p, region, err)
		}
		if info, err := c.Info(ctx); err == nil && info.NumPending > 0 {
			return c
		}
	}
	t.Fatalf("no consumer of %s has an event waiting", region)
	return nil
}

// deadLetters returns the region's dead letters, oldest first.
func deadLetters(t *testing.T, js jetstream.JetStream, region string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s, err := js.Stream(ctx, proto.RegionDeadLetterStream(region))
	if err != nil {
		t.Fatalf("dead-letter stream of %s: %v", region, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("dead-letter stream info of %s: %v", region, err)
	}
	var out []*jetstream.RawStreamMsg
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("dead letter %d of %s: %v", seq, region, err)
		}
		out = append(out, m)
	}
	return out
}

// waitDeadLetter waits for the region's one dead letter and for its events
// stream to be empty, and returns the dead letter.
func waitDeadLetter(t *testing.T, js jetstream.JetStream, region string) *jetstream.RawStreamMsg {
	t.Helper()
	natstest.Eventually(t, waitFor, func() bool { return len(deadLetters(t, js, region)) > 0 },
		"a dead letter in region %s", region)
	waitEventsGone(t, js, region)
	dl := deadLetters(t, js, region)
	if len(dl) != 1 {
		t.Fatalf("region %s has %d dead letters, want 1", region, len(dl))
	}
	return dl[0]
}

// repliesKV is the region's replies bucket.
func repliesKV(t *testing.T, js jetstream.JetStream, region string) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	kv, err := js.KeyValue(ctx, proto.RegionRepliesBucket(region))
	if err != nil {
		t.Fatalf("replies bucket of %s: %v", region, err)
	}
	return kv
}

// recordKey is the key of an event's record: "<account>.<event id>".
func recordKey(t *testing.T, kv jetstream.KeyValue, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	l, err := kv.ListKeysFiltered(ctx, "*."+id)
	if err != nil {
		t.Fatalf("replies bucket list: %v", err)
	}
	for k := range l.Keys() {
		return k
	}
	return "none." + id
}

// replyStateOf returns the recorded reply state of an event, if any.
func replyStateOf(t *testing.T, kv jetstream.KeyValue, id string) (raw []byte, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	e, err := kv.Get(ctx, recordKey(t, kv, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, false
	}
	if err != nil {
		t.Fatalf("replies bucket get %s: %v", id, err)
	}
	return e.Value(), true
}

// ---------------------------------------------------------------- metrics

// metricValue is the value of a counter (or the sample count of a
// histogram) with exactly the given labels; 0 if it was never observed.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// ---------------------------------------------------------------- misc

// chatOf reads the reply fields of an event body.
func chatOf(t *testing.T, body []byte) zoom.Chat {
	t.Helper()
	c, err := zoom.ParseChat(body)
	if err != nil {
		t.Fatalf("parse chat: %v", err)
	}
	return c
}

// jsonEqual reports whether a and b are the same JSON value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("not JSON: %v: %s", err, a)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

// bearer is the token of an Authorization header.
func bearer(h string) string {
	tok, _ := strings.CutPrefix(h, "Bearer ")
	return tok
}

// natsMsg is a message with the given headers only.
func natsMsg(subject string, body []byte, headers map[string]string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = body
	for k, v := range headers {
		m.Header.Set(k, v)
	}
	return m
}

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

func nopLogger() *zap.Logger { return zap.NewNop() }

// waitMetric waits for a metric to reach want (metrics of an outcome are
// counted just after the event is acknowledged or terminated), then fails
// the test if it goes past it.
func waitMetric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string, want float64) {
	t.Helper()
	natstest.Eventually(t, waitFor, func() bool { return metricValue(t, reg, name, labels) >= want },
		"%s%v to reach %v", name, labels, want)
	if got := metricValue(t, reg, name, labels); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// assertFinishedRecord checks that a handled event's record says it is done,
// with how many replies went out, and keeps none of their content.
func assertFinishedRecord(t *testing.T, kv jetstream.KeyValue, id string, sent int) {
	t.Helper()
	raw, ok := replyStateOf(t, kv, id)
	if !ok {
		t.Fatalf("no record of finished event %s", id)
	}
	var st struct {
		Done     bool              `json:"done"`
		Sent     int               `json:"sent"`
		Messages []json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if !st.Done || st.Sent != sent || len(st.Messages) != 0 {
		t.Errorf("record of %s = %s; want done, %d sent, no content", id, raw, sent)
	}
}

// testLogger logs to the test's output when GEOMUXTEST_LOG is set.
func testLogger(t *testing.T) *zap.Logger {
	if os.Getenv("GEOMUXTEST_LOG") == "" {
		return zap.NewNop()
	}
	return zaptest.NewLogger(t)
}

// exhaustDeliveries plays workers that die during every attempt: it takes
// the region's events and hands them back until JetStream delivers them no
// more (the consumers' MaxDeliver), and returns how many deliveries it took.
// An event still in another delivery's ack wait is waited for.
func exhaustDeliveries(t *testing.T, js jetstream.JetStream, region string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor+time.Minute)
	defer cancel()
	taken := 0
	for ctx.Err() == nil {
		got := 0
		for p := range topology.DefaultPartitions {
			c, err := js.Consumer(ctx, proto.RegionEventsStream(region), proto.WorkersConsumer(p))
			if err != nil {
				t.Fatalf("consumer %d of %s: %v", p, region, err)
			}
			batch, err := c.FetchNoWait(16)
			if err != nil {
				t.Fatal(err)
			}
			for m := range batch.Messages() {
				got++
				if err := m.Nak(); err != nil {
					t.Fatal(err)
				}
			}
		}
		taken += got
		if ci := consumerInfo(t, js, region); got == 0 && ci.NumAckPending == 0 && ci.NumPending == 0 {
			return taken
		}
	}
	t.Fatalf("deliveries of region %s never ran out", region)
	return taken
}

// newServer serves h on loopback until the test ends, and returns its URL.
func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// readBody reads a request's body and puts it back for the next reader.
func readBody(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b
}
