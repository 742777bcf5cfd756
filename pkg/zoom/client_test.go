package zoom_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/httpx"
	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
)

const (
	testClientID     = "test-client-id"
	testClientSecret = "test-client-secret"
	testBotJID       = "geomux-test-bot@xmpp.zoom.us"
)

// fakeZoom is the sandbox behind an httptest server, with a way to answer
// the first chat requests itself (as Zoom does when it revokes a token or
// rate-limits).
type fakeZoom struct {
	sb  *sandbox.Sandbox
	srv *httptest.Server

	mu     sync.Mutex
	faults []http.HandlerFunc
	// chatHits counts requests to the chat API, answered or faulted.
	chatHits atomic.Int32
	// bearers are the Authorization headers of the chat requests, in order.
	bearers []string
}

func newFakeZoom(t *testing.T, cfg sandbox.Config) *fakeZoom {
	t.Helper()
	if cfg.ClientID == "" {
		cfg.ClientID, cfg.ClientSecret, cfg.BotJID = testClientID, testClientSecret, testBotJID
	}
	if cfg.RateLimit.PerSecond == 0 {
		// No limit unless a test sets one: these tests send bursts for one
		// account with no in-process retries, and are not about limits.
		cfg.RateLimit.PerSecond = -1
	}
	f := &fakeZoom{sb: sandbox.New(cfg, nil)}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/im/chat/messages" {
			f.chatHits.Add(1)
			f.mu.Lock()
			f.bearers = append(f.bearers, r.Header.Get("Authorization"))
			var fault http.HandlerFunc
			if len(f.faults) > 0 {
				fault, f.faults = f.faults[0], f.faults[1:]
			}
			f.mu.Unlock()
			if fault != nil {
				fault(w, r)
				return
			}
		}
		f.sb.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// failNext makes the next chat requests fail with these answers.
func (f *fakeZoom) failNext(h ...http.HandlerFunc) {
	f.mu.Lock()
	f.faults = append(f.faults, h...)
	f.mu.Unlock()
}

func (f *fakeZoom) bearer(i int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bearers[i]
}

func answer(status int, header map[string]string, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

func fastHTTP(retries int) *httpx.Options {
	return &httpx.Options{Retries: retries, WaitMin: time.Millisecond, WaitMax: 10 * time.Millisecond}
}

func (f *fakeZoom) client(secret string) *zoom.Client {
	return f.clientWith(secret, fastHTTP(0))
}

func (f *fakeZoom) clientWith(secret string, o *httpx.Options) *zoom.Client {
	hc := httpx.NewClient(*o, zap.NewNop())
	return zoom.NewClient(zoom.ClientConfig{
		ClientID:     testClientID,
		ClientSecret: secret,
		// Trailing slashes, as an operator may write them.
		APIBaseURL:   f.srv.URL + "/v2/",
		OAuthBaseURL: f.srv.URL + "/",
	}, hc)
}

func message(i int) zoom.Message {
	return zoom.Message{
		RobotJID:  testBotJID,
		ToJID:     "user@xmpp.zoom.us",
		AccountID: "acct-1",
		UserJID:   "user@xmpp.zoom.us",
		Content:   json.RawMessage(fmt.Sprintf(`{"body":[{"type":"message","text":"hello %d"}]}`, i)),
	}
}

// clock is a settable time for the client's token ageing.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }
func ctx(t *testing.T) context.Context   { return t.Context() }
func statusErr(t *testing.T, err error) *retry.StatusError {
	t.Helper()
	var se *retry.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *retry.StatusError", err, err)
	}
	return se
}

func TestClientSendsWithOneToken(t *testing.T) {
	f := newFakeZoom(t, sandbox.Config{})
	c := f.client(testClientSecret)
	const n = 10
	for i := range n {
		sent, err := c.SendMessage(ctx(t), message(i))
		if err != nil {
			t.Fatalf("SendMessage %d: %v", i, err)
		}
		if sent.MessageID == "" || sent.SentTime == "" {
			t.Errorf("SendMessage %d: answer %+v lacks message_id or sent_time", i, sent)
		}
	}
	if got := f.sb.TokensIssued(); got != 1 {
		t.Errorf("tokens issued = %d, want 1", got)
	}
	d := f.sb.Delivered()
	if len(d) != n {
		t.Fatalf("delivered %d messages, want %d", len(d), n)
	}
	for i, m := range d {
		if m.Text != fmt.Sprintf("hello %d", i) {
			t.Errorf("message %d text = %q", i, m.Text)
		}
		if m.Token != d[0].Token {
			t.Errorf("message %d sent with another token", i)
		}
		if m.Message.RobotJID != testBotJID || m.Message.AccountID != "acct-1" || m.Message.UserJID != "user@xmpp.zoom.us" {
			t.Errorf("message %d fields = %+v", i, m.Message)
		}
	}
	tok, err := c.Token(ctx(t))
	if err != nil || tok != d[0].Token {
		t.Errorf("Token = %q, %v; want the cached %q", tok, err, d[0].Token)
	}
}

func TestClientConcurrentSendsShareOneToken(t *testing.T) {
	f := newFakeZoom(t, sandbox.Config{})
	c := f.client(testClientSecret)
	const n = 20
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := c.SendMessage(ctx(t), message(i))
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := f.sb.TokensIssued(); got != 1 {
		t.Errorf("tokens issued = %d, want 1 for %d concurrent sends", got, n)
	}
	texts := map[string]bool{}
	for _, d := range f.sb.Delivered() {
		texts[d.Text] = true
	}
	if len(texts) != n {
		t.Errorf("delivered %d distinct messages, want %d", len(texts), n)
	}
}

func TestClientRenewsExpiringToken(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		// keep is the client-clock age at which the token is still used,
		// renew the age at which it is replaced.
		keep, renew time.Duration
	}{
		// Renewed a minute before Zoom's expiry.
		{"one hour", time.Hour, 58 * time.Minute, 59*time.Minute + time.Second},
		// A lifetime under two minutes is halved instead.
		{"100s", 100 * time.Second, 49 * time.Second, 51 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeZoom(t, sandbox.Config{TokenLifetime: tc.lifetime})
			c := f.client(testClientSecret)
			clk := newClock()
			zoom.SetClientNow(c, clk.now)

			if _, err := c.SendMessage(ctx(t), message(0)); err != nil {
				t.Fatal(err)
			}
			clk.advance(tc.keep)
			if _, err := c.SendMessage(ctx(t), message(1)); err != nil {
				t.Fatal(err)
			}
			if got := f.sb.TokensIssued(); got != 1 {
				t.Fatalf("after %s: tokens issued = %d, want 1", tc.keep, got)
			}
			clk.advance(tc.renew - tc.keep)
			if _, err := c.SendMessage(ctx(t), message(2)); err != nil {
				t.Fatal(err)
			}
			if got := f.sb.TokensIssued(); got != 2 {
				t.Fatalf("after %s: tokens issued = %d, want 2", tc.renew, got)
			}
			d := f.sb.Delivered()
			if d[1].Token != d[0].Token || d[2].Token == d[1].Token {
				t.Errorf("tokens used: %q %q %q; want the second renewed only for the third message", d[0].Token, d[1].Token, d[2].Token)
			}
		})
	}
}

func TestClientRenewsRefusedTokenOnce(t *testing.T) {
	refused := answer(http.StatusUnauthorized, nil, `{"code":124,"message":"Invalid access token."}`)

	t.Run("retry succeeds", func(t *testing.T) {
		f := newFakeZoom(t, sandbox.Config{})
		c := f.client(testClientSecret)
		f.failNext(refused)
		sent, err := c.SendMessage(ctx(t), message(0))
		if err != nil {
			t.Fatalf("SendMessage after a refused token: %v", err)
		}
		if sent.MessageID == "" {
			t.Error("no message id")
		}
		if got := f.sb.TokensIssued(); got != 2 {
			t.Errorf("tokens issued = %d, want 2 (the refused one and its replacement)", got)
		}
		if got := f.chatHits.Load(); got != 2 {
			t.Errorf("chat API called %d times, want 2", got)
		}
		d := f.sb.Delivered()
		if len(d) != 1 {
			t.Fatalf("delivered %d, want 1", len(d))
		}
		if refusedTok := strings.TrimPrefix(f.bearer(0), "Bearer "); d[0].Token == refusedTok {
			t.Error("the message was resent with the refused token")
		}
		// The new token is kept.
		if _, err := c.SendMessage(ctx(t), message(1)); err != nil {
			t.Fatal(err)
		}
		if got := f.sb.TokensIssued(); got != 2 {
			t.Errorf("tokens issued after another send = %d, want still 2", got)
		}
	})

	t.Run("refused twice", func(t *testing.T) {
		f := newFakeZoom(t, sandbox.Config{})
		c := f.client(testClientSecret)
		f.failNext(refused, refused)
		_, err := c.SendMessage(ctx(t), message(0))
		se := statusErr(t, err)
		if se.StatusCode != http.StatusUnauthorized || se.Service != "zoom" {
			t.Errorf("error = %+v, want zoom 401", se)
		}
		if !strings.Contains(se.Detail, "124") {
			t.Errorf("detail %q lacks Zoom's code", se.Detail)
		}
		if got := f.chatHits.Load(); got != 2 {
			t.Errorf("chat API called %d times, want 2 (one renewal only)", got)
		}
		if got := f.sb.TokensIssued(); got != 2 {
			t.Errorf("tokens issued = %d, want 2", got)
		}
		if retry.Retryable(err) {
			t.Error("a 401 is retryable")
		}
	})
}

func TestClientRateLimited(t *testing.T) {
	const limitBody = `{"code":429,"message":"You have reached the maximum per-second rate limit for this API. Try again later."}`
	for _, tc := range []struct {
		name       string
		retryAfter string
		min, max   time.Duration
	}{
		{"seconds", "7", 7 * time.Second, 7 * time.Second},
		{"ISO timestamp", time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339), 2*time.Hour - 5*time.Second, 2 * time.Hour},
		{"HTTP date", time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat), 85 * time.Second, 90 * time.Second},
		{"none", "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeZoom(t, sandbox.Config{})
			// In-process retries allowed: a long Retry-After must still not
			// be slept on here.
			c := f.clientWith(testClientSecret, fastHTTP(2))
			h := map[string]string{}
			if tc.retryAfter != "" {
				h["Retry-After"] = tc.retryAfter
			}
			f.failNext(answer(http.StatusTooManyRequests, h, limitBody))
			_, err := c.SendMessage(ctx(t), message(0))
			se := statusErr(t, err)
			if se.StatusCode != http.StatusTooManyRequests || se.Service != "zoom" {
				t.Errorf("error = %+v, want zoom 429", se)
			}
			if se.RetryAfter < tc.min || se.RetryAfter > tc.max {
				t.Errorf("RetryAfter = %s, want in [%s, %s]", se.RetryAfter, tc.min, tc.max)
			}
			if got := retry.After(err); got != se.RetryAfter {
				t.Errorf("retry.After = %s, want %s", got, se.RetryAfter)
			}
			if !retry.Retryable(err) {
				t.Error("a 429 is not retryable")
			}
			if !strings.Contains(se.Detail, "code 429") || !strings.Contains(se.Detail, "rate limit") {
				t.Errorf("detail = %q", se.Detail)
			}
			// Not retried in-process, even without Retry-After: a rate limit
			// is the caller's to pace (package httpx).
			if got := f.chatHits.Load(); got != 1 {
				t.Errorf("chat API called %d times, want 1", got)
			}
			if got := f.sb.TokensIssued(); got != 1 {
				t.Errorf("a 429 renewed the token: %d issued", got)
			}
			if len(f.sb.Delivered()) != 0 {
				t.Error("a rate-limited message was delivered")
			}
		})
	}
}

func TestClientWrongSecret(t *testing.T) {
	f := newFakeZoom(t, sandbox.Config{})
	c := f.client("not-the-secret")
	_, err := c.SendMessage(ctx(t), message(0))
	se := statusErr(t, err)
	if se.Service != "zoom-oauth" || se.StatusCode != http.StatusUnauthorized {
		t.Errorf("error = %+v, want zoom-oauth 401", se)
	}
	if !strings.Contains(se.Detail, "Invalid client_id or client_secret") {
		t.Errorf("detail = %q, want the oauth reason", se.Detail)
	}
	// The app's credentials, not the event, are at fault (being rotated,
	// say): the event is retried rather than dead-lettered.
	if !retry.Retryable(err) {
		t.Error("a refused chatbot token is not retryable")
	}
	if f.chatHits.Load() != 0 || f.sb.TokensIssued() != 0 {
		t.Errorf("chat hits %d, tokens %d; want none", f.chatHits.Load(), f.sb.TokensIssued())
	}
	if _, err := c.Token(ctx(t)); err == nil {
		t.Error("Token succeeded with a wrong secret")
	}
}

func TestClientTokenAnswerWithoutToken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer(http.StatusOK, nil, `{"token_type":"bearer","expires_in":3600}`)(w, r)
	}))
	t.Cleanup(srv.Close)
	c := zoom.NewClient(zoom.ClientConfig{ClientID: "a", ClientSecret: "b", APIBaseURL: srv.URL + "/v2", OAuthBaseURL: srv.URL},
		httpx.NewClient(*fastHTTP(0), zap.NewNop()))
	_, err := c.Token(ctx(t))
	se := statusErr(t, err)
	if se.Service != "zoom-oauth" || !strings.Contains(se.Detail, "no access_token") {
		t.Errorf("error = %+v", se)
	}
}

func TestClientCanceledContext(t *testing.T) {
	f := newFakeZoom(t, sandbox.Config{})
	c := f.client(testClientSecret)
	cctx, cancel := context.WithCancel(ctx(t))
	cancel()
	_, err := c.SendMessage(cctx, message(0))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("SendMessage with a canceled context = %v, want context.Canceled", err)
	}
	if retry.Retryable(err) {
		t.Error("a canceled send is retryable")
	}
	if len(f.sb.Delivered()) != 0 {
		t.Error("delivered despite the canceled context")
	}
}
