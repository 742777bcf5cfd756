package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/fx"

	"github.com/geomux/geomux/ingress"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/platformfx"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
)

// The whole pipeline in one process, as `geomux run --target all` runs it:
// embedded nats-server, real HTTP everywhere, Zoom played by the sandbox
// (Zoom's wire format), one fake backend per region.

const (
	e2eSecret     = "e2e-webhook-secret"
	e2eAdminToken = "e2e-admin-token-0123456789"
	e2eBotJID     = "e2e-bot@xmpp.zoom.us"
)

var e2eRegions = []string{"us", "uk", "eu"}

// fakeZoom is the sandbox behind a hook that can refuse chat messages.
type fakeZoom struct {
	sb  *sandbox.Sandbox
	srv *httptest.Server

	mu    sync.Mutex
	sends []time.Time // every POST /v2/im/chat/messages, refused or not
	// refuse, if set, may answer a chat message itself (n counts sends from 1).
	refuse func(n int, w http.ResponseWriter) bool
}

func newFakeZoom(t *testing.T) *fakeZoom { return newFakeZoomFor(t, "") }

// newFakeZoomFor is newFakeZoom for an app whose OAuth redirect URI is
// redirectURI (the sandbox's Marketplace install sends browsers there).
func newFakeZoomFor(t *testing.T, redirectURI string, apps ...config.App) *fakeZoom {
	// No rate limit: these tests are not about Zoom's limits, and the
	// supercluster's fault test sends some 65 messages a second per account,
	// over Zoom Pro's 20 (TestE2EZoomRateLimitIsHonoured answers its 429
	// itself).
	cfg := sandbox.Config{ClientID: "e2e-id", ClientSecret: "e2e-secret", BotJID: e2eBotJID, RedirectURI: redirectURI,
		RateLimit: sandbox.RateLimit{PerSecond: -1}}
	for _, a := range apps {
		cfg.Apps = append(cfg.Apps, sandbox.App{ClientID: a.ClientID, ClientSecret: a.ClientSecret, BotJID: a.BotJID})
	}
	z := &fakeZoom{sb: sandbox.New(cfg, nil)}
	z.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/im/chat/messages" {
			z.mu.Lock()
			z.sends = append(z.sends, time.Now())
			n, refuse := len(z.sends), z.refuse
			z.mu.Unlock()
			if refuse != nil && refuse(n, w) {
				return
			}
		}
		z.sb.ServeHTTP(w, r)
	}))
	t.Cleanup(z.srv.Close)
	return z
}

func (z *fakeZoom) sendTimes() []time.Time {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]time.Time(nil), z.sends...)
}

// fakeBackend is a region's backend: it records requests and answers a
// bot_notification with the user's text and any other event with no reply
// (204), as the backend contract asks, unless fail or refuse says otherwise.
type fakeBackend struct {
	region string
	srv    *httptest.Server

	mu   sync.Mutex
	reqs []proto.BackendRequest
	// traceparents are the requests' W3C traceparent headers.
	traceparents []string
	fail         func(n int) int // status to answer the n-th request with, 0 for normal
	// refuse, if set, is the status to answer req with, 0 for normal.
	refuse func(req proto.BackendRequest) int
}

// setFail sets fail; safe while requests are being served.
func (b *fakeBackend) setFail(fail func(n int) int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail = fail
}

func newFakeBackend(t *testing.T, region string) *fakeBackend {
	b := &fakeBackend{region: region}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req proto.BackendRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		if r.Header.Get(proto.HTTPHeaderRegion) != region || r.Header.Get(proto.HTTPHeaderEventID) != req.ID {
			http.Error(w, "bad geomux headers", 400)
			return
		}
		b.mu.Lock()
		b.reqs = append(b.reqs, req)
		b.traceparents = append(b.traceparents, r.Header.Get("Traceparent"))
		n, fail, refuse := len(b.reqs), b.fail, b.refuse
		b.mu.Unlock()
		if fail != nil {
			if status := fail(n); status != 0 {
				w.WriteHeader(status)
				return
			}
		}
		if refuse != nil {
			if status := refuse(req); status != 0 {
				w.WriteHeader(status)
				return
			}
		}
		var p struct {
			Payload struct {
				Cmd    string
				Object struct{ Message string }
			} `json:"payload"`
		}
		_ = json.Unmarshal(req.Payload, &p)
		text := p.Payload.Cmd
		switch req.Event {
		case "bot_notification":
		case "team_chat.app_mention": // answered without to_jid, user_jid: geomux's defaults
			text = "mention: " + p.Payload.Object.Message
		default:
			w.WriteHeader(http.StatusNoContent)
			return
		}
		content, _ := json.Marshal(map[string]any{"body": []map[string]string{{"type": "message", "text": region + ": " + text}}})
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: content}}})
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *fakeBackend) requests() []proto.BackendRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]proto.BackendRequest(nil), b.reqs...)
}

type pipeline struct {
	t        *testing.T
	cfg      config.Config
	zoom     *fakeZoom
	backends map[string]*fakeBackend
	app      *fx.App
	js       jetstream.JetStream
	webhook  string
	admin    string
	n        int64
	extra    []fx.Option
	// publicURL is install.public_url, when the install flow is served.
	publicURL string
	// client posts the webhooks (http.DefaultClient unless the ingress
	// serves HTTPS).
	client *http.Client
}

// pipelineOptions change what newPipelineWith builds.
type pipelineOptions struct {
	// install serves the install flow. install.public_url must name the
	// ingress before it starts, so the ingress listens on a port chosen
	// beforehand (freePort); every region gets a display name and a vault
	// key, and the sandbox knows the app's redirect URI.
	install bool
	// apps are zoom.apps, beside the default app; the sandbox knows them.
	apps []config.App
	// backendURLs replace the fake backend of a region (by name) with
	// another backend_url.
	backendURLs map[string]string
	// tls is ingress.tls, and client the client that trusts its
	// certificate.
	tls    config.IngressTLS
	client *http.Client
}

// e2eDisplayNames are the regions' names on the install page.
var e2eDisplayNames = map[string]string{"us": "United States", "uk": "United Kingdom", "eu": "European Union"}

func newPipeline(t *testing.T, storeDir string, extra ...fx.Option) *pipeline {
	t.Helper()
	return newPipelineWith(t, storeDir, pipelineOptions{}, extra...)
}

func newPipelineWith(t *testing.T, storeDir string, o pipelineOptions, extra ...fx.Option) *pipeline {
	t.Helper()
	p := &pipeline{t: t, backends: map[string]*fakeBackend{}, extra: extra, client: http.DefaultClient}
	if o.client != nil {
		p.client = o.client
	}
	cfg := config.Default()
	cfg.Log.Level = "error"
	cfg.NATS.StoreDir, cfg.NATS.Listen = storeDir, ""
	cfg.Ingress.Listen = "127.0.0.1:0"
	cfg.Ingress.TLS = o.tls
	if o.install {
		cfg.Ingress.Listen = freePort(t)
		p.publicURL = "http://" + cfg.Ingress.Listen
		cfg.Install = config.Install{PublicURL: p.publicURL, StateKey: randomKey(t), BotName: "Geomux Test Bot", Vendor: "geomux e2e"}
	}
	p.zoom = newFakeZoomFor(t, p.callbackURL(), o.apps...)
	cfg.Admin.Listen, cfg.Admin.Token = "127.0.0.1:0", e2eAdminToken
	cfg.Zoom = config.Zoom{
		WebhookSecretTokens: []string{e2eSecret},
		ClientID:            "e2e-id", ClientSecret: "e2e-secret", BotJID: e2eBotJID,
		APIBaseURL: p.zoom.srv.URL + "/v2", OAuthBaseURL: p.zoom.srv.URL,
		Apps: o.apps,
	}
	cfg.Retry = config.Retry{MaxAttempts: 5, HTTPRetries: 0, Backoff: []config.Duration{config.Duration(100 * time.Millisecond)}}
	cfg.ShutdownTimeout = config.Duration(10 * time.Second)
	cfg.Worker.HandlerTimeout = config.Duration(5 * time.Second)
	for _, r := range e2eRegions {
		b := newFakeBackend(t, r)
		p.backends[r] = b
		region := config.Region{Name: r, Handler: config.HandlerHTTP, BackendURL: b.srv.URL, Timeout: config.Duration(3 * time.Second)}
		if u := o.backendURLs[r]; u != "" {
			region.BackendURL = u
		}
		if o.install {
			region.DisplayName, region.VaultKey = e2eDisplayNames[r], randomKey(t)
		}
		cfg.Regions = append(cfg.Regions, region)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p.cfg = cfg
	p.start()
	return p
}

func (p *pipeline) start() {
	p.t.Helper()
	var in *ingress.Server
	var adm *platformfx.AdminServer
	p.app = newApp(p.cfg, config.Target{Name: config.TargetAll}, append(p.extra, fx.Populate(&in, &adm, &p.js))...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.app.Start(ctx); err != nil {
		p.t.Fatalf("start: %v", err)
	}
	p.t.Cleanup(p.stop)
	scheme := "http://"
	if p.cfg.Ingress.TLS.Enabled() {
		scheme = "https://"
	}
	p.webhook = scheme + in.Addr() + ingress.WebhookPath
	p.admin = "http://" + adm.Addr()
}

// callbackURL is the app's OAuth redirect URI, when the install flow is
// served.
func (p *pipeline) callbackURL() string {
	if p.publicURL == "" {
		return ""
	}
	return p.publicURL + "/oauth/callback"
}

// randomKey is 32 random bytes, base64: a vault key, or a state key.
func randomKey(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func (p *pipeline) stop() {
	if p.app == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := p.app.Stop(ctx); err != nil {
		p.t.Errorf("stop: %v", err)
	}
	p.app = nil
}

// send posts a new signed bot_notification for account; it returns the body.
func (p *pipeline) send(account, text string) []byte {
	p.t.Helper()
	p.n++
	body := zoomtest.BotNotification(account, text, p.n)
	p.post(body)
	return body
}

func (p *pipeline) post(body []byte) {
	p.t.Helper()
	status, err := zoomtest.Post(p.client, p.webhook, e2eSecret, body)
	if err != nil || status != http.StatusOK {
		p.t.Fatalf("webhook: status %d, err %v", status, err)
	}
}

func (p *pipeline) adminDo(method, path, body string) (int, string) {
	p.t.Helper()
	req, _ := http.NewRequest(method, p.admin+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e2eAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *pipeline) setRegion(account, region string) {
	p.t.Helper()
	if status, body := p.adminDo(http.MethodPut, "/admin/v1/accounts/"+account, `{"region":"`+region+`"}`); status != 200 {
		p.t.Fatalf("set region: %d %s", status, body)
	}
}

func (p *pipeline) delivered() []sandbox.Delivered { return p.zoom.sb.Delivered() }

func (p *pipeline) waitDelivered(n int) []sandbox.Delivered {
	p.t.Helper()
	natstest.Eventually(p.t, 20*time.Second, func() bool { return len(p.delivered()) >= n }, "%d replies at Zoom (have %d)", n, len(p.delivered()))
	return p.delivered()
}

func TestE2ERegionsSeeOnlyTheirAccountsAndRepliesReachZoom(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, t.TempDir())
	for _, r := range e2eRegions {
		p.setRegion("acct-"+r, r)
	}
	sent := map[string][]byte{}
	for i := 0; i < 4; i++ {
		for _, r := range e2eRegions {
			body := p.send("acct-"+r, fmt.Sprintf("msg %d", i))
			sent[proto.EventID(body)] = body
		}
	}
	got := p.waitDelivered(len(sent))

	for _, r := range e2eRegions {
		reqs := p.backends[r].requests()
		if len(reqs) != 4 {
			t.Errorf("backend %s got %d requests, want 4", r, len(reqs))
		}
		for _, req := range reqs {
			if req.AccountID != "acct-"+r || req.Region != r {
				t.Errorf("backend %s saw account %s (region %s): data left its region", r, req.AccountID, req.Region)
			}
			if !bytes.Equal(req.Payload, sent[req.ID]) {
				t.Errorf("backend %s: payload of %s is not the body Zoom sent", r, req.ID)
			}
			if req.Event != "bot_notification" || req.ReceivedAt.IsZero() {
				t.Errorf("backend %s: envelope %+v incomplete", r, req)
			}
		}
	}
	tokens := map[string]bool{}
	for _, d := range got {
		m := d.Message
		region := strings.TrimPrefix(m.AccountID, "acct-")
		if m.RobotJID != e2eBotJID || m.ToJID != "user-"+m.AccountID+"@xmpp.zoom.us" || m.UserJID != m.ToJID {
			t.Errorf("reply fields wrong: %+v", m)
		}
		if !strings.HasPrefix(d.Text, region+": msg ") {
			t.Errorf("reply %q to account %s was not made by its region's backend", d.Text, m.AccountID)
		}
		tokens[d.Token] = true
	}
	if len(tokens) != 1 || p.zoom.sb.TokensIssued() != 1 {
		t.Errorf("used %d tokens, %d issued: want one cached chatbot token", len(tokens), p.zoom.sb.TokensIssued())
	}
}

func TestE2EDuplicateProcessedOnce(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, t.TempDir())
	p.setRegion("acct-dup", "uk")
	body := zoomtest.BotNotification("acct-dup", "once", 1)
	p.post(body)
	p.waitDelivered(1)
	// Zoom's retry: same body, new timestamp and signature, later on.
	req := zoomtest.NewRequest(p.webhook, e2eSecret, body, time.Now().Add(90*time.Second))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("re-delivery: %v %v", resp, err)
	}
	resp.Body.Close()
	// A later, distinct event shows the pipeline has moved past the duplicate.
	p.send("acct-dup", "after")
	got := p.waitDelivered(2)
	if len(got) != 2 || len(p.backends["uk"].requests()) != 2 {
		t.Errorf("duplicate handled again: %d replies, %d backend calls", len(got), len(p.backends["uk"].requests()))
	}
}

func TestE2ETransientBackendFailureIsRetried(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, t.TempDir())
	p.backends["eu"].setFail(func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	p.setRegion("acct-flaky", "eu")
	p.send("acct-flaky", "retry me")
	p.waitDelivered(1)
	if n := len(p.backends["eu"].requests()); n != 3 {
		t.Errorf("backend called %d times, want 3 (two failures, one success)", n)
	}
	// Nothing more arrives: the retried event is sent to Zoom once.
	p.send("acct-flaky", "marker")
	got := p.waitDelivered(2)
	if len(got) != 2 || got[0].Text != "eu: retry me" {
		t.Errorf("replies %v, want the retried one once then the marker", texts(got))
	}
}

func TestE2EZoomRateLimitIsHonoured(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, t.TempDir())
	p.zoom.refuse = func(n int, w http.ResponseWriter) bool {
		if n != 1 {
			return false
		}
		w.Header().Set("Retry-After", "2")
		w.Header().Set("X-RateLimit-Category", "Medium")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"code":429,"message":"You have reached the maximum per-second rate limit for this API. Try again later."}`)
		return true
	}
	p.setRegion("acct-busy", "us")
	p.send("acct-busy", "slow down")
	p.waitDelivered(1)
	times := p.zoom.sendTimes()
	if len(times) != 2 {
		t.Fatalf("%d sends to Zoom, want 2 (refused, then accepted)", len(times))
	}
	if gap := times[1].Sub(times[0]); gap < 2*time.Second {
		t.Errorf("retried %s after a 429 asking for 2s", gap)
	}
	if n := len(p.backends["us"].requests()); n != 1 {
		t.Errorf("backend asked %d times: a Zoom retry must not call it again", n)
	}
}

func TestE2EParkedEventsFlowOnceTheRegionIsSet(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, t.TempDir())
	p.send("acct-new", "before install finished")
	// The event is accepted and parked: no region sees it.
	natstest.Eventually(t, 10*time.Second, func() bool {
		m := p.metrics()
		return strings.Contains(m, "geomux_router_parked_total 1") && strings.Contains(m, `geomux_router_parked_messages{waiting_for="region"} 1`) &&
			strings.Contains(m, `geomux_router_parked_messages{waiting_for="account"} 0`)
	}, "event parked, waiting for a region")
	for _, r := range e2eRegions {
		if n := len(p.backends[r].requests()); n != 0 {
			t.Fatalf("region %s saw an event of an account without region", r)
		}
	}
	p.setRegion("acct-new", "eu")
	got := p.waitDelivered(1)
	if got[0].Text != "eu: before install finished" {
		t.Errorf("reply %q", got[0].Text)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.metrics(), `geomux_router_parked_messages{waiting_for="region"} 0`)
	}, "nothing parked any more")
}

func TestE2EDirectorySurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := newPipeline(t, dir)
	p.setRegion("acct-keep", "uk")
	p.stop()

	p.start()
	status, body := p.adminDo(http.MethodGet, "/admin/v1/accounts/acct-keep", "")
	if status != 200 || !strings.Contains(body, `"region": "uk"`) {
		t.Fatalf("after restart: %d %s", status, body)
	}
	p.send("acct-keep", "still here")
	if got := p.waitDelivered(1); got[0].Text != "uk: still here" {
		t.Errorf("reply %q", got[0].Text)
	}
}

func TestE2EAdminAndHealth(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, t.TempDir())
	for _, u := range []string{p.admin + "/readyz", strings.TrimSuffix(p.webhook, ingress.WebhookPath) + "/readyz"} {
		resp, err := http.Get(u)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", u, resp, err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get(p.admin + "/admin/v1/accounts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("accounts without token: %d, want 401", resp.StatusCode)
	}
	if status, _ := p.adminDo(http.MethodPut, "/admin/v1/accounts/a1", `{"region":"mars"}`); status != 400 {
		t.Errorf("unconfigured region: %d, want 400", status)
	}
	if status, _ := p.adminDo(http.MethodGet, "/admin/v1/accounts/nobody", ""); status != 404 {
		t.Errorf("unknown account: %d, want 404", status)
	}
	p.setRegion("a1", "us")
	if status, body := p.adminDo(http.MethodGet, "/admin/v1/accounts", ""); status != 200 || !strings.Contains(body, `"account_id": "a1"`) {
		t.Errorf("list: %d %s", status, body)
	}
	if status, _ := p.adminDo(http.MethodDelete, "/admin/v1/accounts/a1", ""); status != 204 {
		t.Errorf("delete: %d", status)
	}
	for _, m := range []string{"geomux_ingress_received_total", "geomux_router_routed_total", "geomux_worker_handled_total", "go_goroutines",
		`geomux_build_info{go_version="` + runtime.Version() + `",version="dev"} 1`} {
		if !strings.Contains(p.metrics(), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

func (p *pipeline) metrics() string {
	resp, err := http.Get(p.admin + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func texts(ds []sandbox.Delivered) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Text
	}
	return out
}
