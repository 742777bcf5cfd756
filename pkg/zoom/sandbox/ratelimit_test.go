package sandbox_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
)

// Zoom's 429 bodies, verbatim (its API reference, "Rate limits").
const (
	qpsBody   = `{"code":429,"message":"You have reached the maximum per-second rate limit for this API. Try again later."}`
	dailyBody = `{"code":429,"message":"You have reached the maximum daily rate limit for this API. Refer to the response header for details on when you can make another request."}`
)

// clock is a settable time for the sandbox.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// answer is a chat API answer as it came over the wire.
type answer struct {
	status int
	header http.Header
	body   string
}

// post sends a valid message for account with the bearer token tok.
func (e *env) post(t *testing.T, tok, account string) answer {
	t.Helper()
	m := validMessage()
	m["account_id"] = account
	return e.postMessage(t, tok, m)
}

func (e *env) postMessage(t *testing.T, tok string, m map[string]any) answer {
	t.Helper()
	raw, _ := json.Marshal(m)
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v2/im/chat/messages", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, strings.TrimSpace(string(b))}
}

// sendN sends n messages for account and fails the test unless each is
// accepted.
func (e *env) sendN(t *testing.T, tok, account string, n int) {
	t.Helper()
	for i := range n {
		if a := e.post(t, tok, account); a.status != http.StatusCreated {
			t.Fatalf("%s: message %d of %d: %d %s, want 201", account, i+1, n, a.status, a.body)
		}
	}
}

// wantQPS fails the test unless a is Zoom's per-second 429.
func wantQPS(t *testing.T, what string, a answer) {
	t.Helper()
	if a.status != http.StatusTooManyRequests || a.body != qpsBody {
		t.Fatalf("%s: %d %s, want 429 %s", what, a.status, a.body, qpsBody)
	}
	for k, v := range map[string]string{"X-RateLimit-Category": "Medium", "X-RateLimit-Type": "QPS", "Content-Type": "application/json; charset=utf-8"} {
		if got := a.header.Get(k); got != v {
			t.Errorf("%s: %s = %q, want %q", what, k, got, v)
		}
	}
	// Zoom sends none of these with a per-second 429.
	for _, k := range []string{"Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"} {
		if got := a.header.Get(k); got != "" {
			t.Errorf("%s: %s = %q, want none", what, k, got)
		}
	}
}

// wantDaily fails the test unless a is Zoom's daily 429 for limit, to be
// retried at retryAfter.
func wantDaily(t *testing.T, what string, a answer, limit int, retryAfter string) {
	t.Helper()
	if a.status != http.StatusTooManyRequests || a.body != dailyBody {
		t.Fatalf("%s: %d %s, want 429 %s", what, a.status, a.body, dailyBody)
	}
	for k, v := range map[string]string{
		"X-RateLimit-Category": "Medium", "X-RateLimit-Type": "Daily-limit",
		"X-RateLimit-Limit": fmt.Sprint(limit), "X-RateLimit-Remaining": "0", "Retry-After": retryAfter,
	} {
		if got := a.header.Get(k); got != v {
			t.Errorf("%s: %s = %q, want %q", what, k, got, v)
		}
	}
}

func limited(t *testing.T, sb *sandbox.Sandbox, qps, daily int) {
	t.Helper()
	if q, d := sb.Limited(); q != qps || d != daily {
		t.Errorf("Limited() = %d, %d; want %d, %d", q, d, qps, daily)
	}
}

var noon = time.Date(2025, 8, 22, 12, 0, 0, 0, time.UTC)

func TestRateLimitPerSecond(t *testing.T) {
	clk := newClock(noon)
	e := startWith(t, sandbox.Config{Now: clk.Now, RateLimit: sandbox.RateLimit{PerSecond: 3}})
	tok := e.token(t)

	e.sendN(t, tok, "acct-1", 1)
	clk.advance(500 * time.Millisecond)
	e.sendN(t, tok, "acct-1", 2)
	wantQPS(t, "4th in a second", e.post(t, tok, "acct-1"))
	// Accounts are limited each on its own.
	e.sendN(t, tok, "acct-2", 3)
	wantQPS(t, "acct-2's 4th", e.post(t, tok, "acct-2"))

	// The window slides: a second after the first message, one more fits;
	// the next waits for the second and third to age.
	clk.advance(499 * time.Millisecond)
	wantQPS(t, "999 ms after the first", e.post(t, tok, "acct-1"))
	clk.advance(time.Millisecond)
	e.sendN(t, tok, "acct-1", 1)
	wantQPS(t, "a second after the first, 2nd", e.post(t, tok, "acct-1"))
	clk.advance(500 * time.Millisecond)
	e.sendN(t, tok, "acct-1", 2)

	limited(t, e.sb, 4, 0)
	if got := len(e.sb.Delivered()); got != 9 {
		t.Errorf("delivered %d, want 9: a refused message is not delivered", got)
	}
	if got := strings.Count(e.out.String(), "[zoom sandbox] message"); got != 9 {
		t.Errorf("printed %d messages, want one per delivered message (none per 429)", got)
	}
}

func TestRateLimitDefaultIsZoomPro(t *testing.T) {
	clk := newClock(noon) // frozen: every message in the same instant
	e := startWith(t, sandbox.Config{Now: clk.Now})
	tok := e.token(t)
	e.sendN(t, tok, "acct-1", sandbox.DefaultPerSecond)
	wantQPS(t, "21st", e.post(t, tok, "acct-1"))
	// No daily limit by default.
	for range 5 {
		clk.advance(time.Second)
		e.sendN(t, tok, "acct-1", sandbox.DefaultPerSecond)
	}
	limited(t, e.sb, 1, 0)
}

func TestRateLimitNone(t *testing.T) {
	clk := newClock(noon)
	e := startWith(t, sandbox.Config{Now: clk.Now, RateLimit: sandbox.RateLimit{PerSecond: -1}})
	e.sendN(t, e.token(t), "acct-1", 100)
	limited(t, e.sb, 0, 0)
}

func TestRateLimitPerDay(t *testing.T) {
	clk := newClock(time.Date(2025, 8, 22, 23, 59, 58, 0, time.UTC))
	e := startWith(t, sandbox.Config{Now: clk.Now, RateLimit: sandbox.RateLimit{PerSecond: -1, PerDay: 2}})
	tok := e.token(t)

	e.sendN(t, tok, "acct-1", 2)
	a := e.post(t, tok, "acct-1")
	wantDaily(t, "3rd of the day", a, 2, "2025-08-23T00:00:00Z")
	if wait, ok := retry.ParseRetryAfter(a.header.Get("Retry-After"), clk.Now()); !ok || wait != 2*time.Second {
		t.Errorf("Retry-After is a wait of %s (%v), want 2s: the next UTC midnight", wait, ok)
	}
	e.sendN(t, tok, "acct-2", 2) // another account has its own day
	clk.advance(time.Second)
	wantDaily(t, "a second before midnight", e.post(t, tok, "acct-1"), 2, "2025-08-23T00:00:00Z")

	// The count starts again at UTC midnight.
	clk.advance(time.Second)
	e.sendN(t, tok, "acct-1", 2)
	wantDaily(t, "3rd of the next day", e.post(t, tok, "acct-1"), 2, "2025-08-24T00:00:00Z")
	limited(t, e.sb, 0, 3)

	// A day later the token has long expired on the sandbox's clock too.
	clk.advance(24 * time.Hour)
	if a := e.post(t, tok, "acct-1"); a.status != http.StatusUnauthorized {
		t.Fatalf("a day-old token: %d %s, want 401", a.status, a.body)
	}
	e.sendN(t, e.token(t), "acct-1", 2)
}

// The daily limit is checked first: while it holds, a per-second answer would
// send the caller back in a second for nothing.
func TestRateLimitDailyBeforePerSecond(t *testing.T) {
	clk := newClock(noon)
	e := startWith(t, sandbox.Config{Now: clk.Now, RateLimit: sandbox.RateLimit{PerSecond: 2, PerDay: 2}})
	tok := e.token(t)
	e.sendN(t, tok, "acct-1", 2)
	wantDaily(t, "over both", e.post(t, tok, "acct-1"), 2, "2025-08-23T00:00:00Z")
	limited(t, e.sb, 0, 1)
}

func TestRateLimitAccountOverride(t *testing.T) {
	clk := newClock(noon)
	accounts := map[string]sandbox.RateLimit{
		"acct-free": {PerSecond: 2, PerDay: 3},
		"acct-zero": {}, // the zero value, not the top-level limits: 20 a second
	}
	e := startWith(t, sandbox.Config{Now: clk.Now, RateLimit: sandbox.RateLimit{PerSecond: 5, Accounts: accounts}})
	// The sandbox keeps its own copy of the overrides.
	accounts["acct-free"] = sandbox.RateLimit{PerSecond: -1}
	tok := e.token(t)

	e.sendN(t, tok, "acct-free", 2)
	wantQPS(t, "acct-free's 3rd", e.post(t, tok, "acct-free"))
	clk.advance(time.Second)
	e.sendN(t, tok, "acct-free", 1)
	wantDaily(t, "acct-free's 4th of the day", e.post(t, tok, "acct-free"), 3, "2025-08-23T00:00:00Z")

	e.sendN(t, tok, "acct-pro", 5)
	wantQPS(t, "acct-pro's 6th", e.post(t, tok, "acct-pro"))
	e.sendN(t, tok, "acct-zero", sandbox.DefaultPerSecond)
	wantQPS(t, "acct-zero's 21st", e.post(t, tok, "acct-zero"))
	limited(t, e.sb, 3, 1)
}

// An account's limits are shared by every app that sends for it.
func TestRateLimitSharedByApps(t *testing.T) {
	clk := newClock(noon)
	e := startWith(t, sandbox.Config{Now: clk.Now, RateLimit: sandbox.RateLimit{PerSecond: 2},
		Apps: []sandbox.App{{ClientID: "other-id", ClientSecret: "other-secret", BotJID: "other@xmpp.zoom.us"}}})
	status, m := do(t, e.tokenRequest(t, "other-id", "other-secret", "?grant_type=client_credentials"))
	if status != http.StatusOK {
		t.Fatalf("other app's token: %d %v", status, m)
	}
	other := m["access_token"].(string)
	otherMessage := validMessage()
	otherMessage["robot_jid"] = "other@xmpp.zoom.us"

	tok := e.token(t)
	e.sendN(t, tok, "acct-1", 1)
	if a := e.postMessage(t, other, otherMessage); a.status != http.StatusCreated {
		t.Fatalf("other app's message: %d %s", a.status, a.body)
	}
	wantQPS(t, "3rd for the account, from either app", e.postMessage(t, other, otherMessage))
	wantQPS(t, "3rd for the account, from the main app", e.post(t, tok, "acct-1"))
}

// Only accepted messages count: a refused one (invalid, or over the limit)
// takes nothing from the account's allowance.
func TestRateLimitCountsAcceptedOnly(t *testing.T) {
	clk := newClock(noon)
	e := startWith(t, sandbox.Config{Now: clk.Now, RateLimit: sandbox.RateLimit{PerSecond: 1, PerDay: 2}})
	tok := e.token(t)
	invalid := validMessage()
	delete(invalid, "content")
	for range 5 {
		if a := e.postMessage(t, tok, invalid); a.status != http.StatusBadRequest {
			t.Fatalf("invalid message: %d %s, want 400", a.status, a.body)
		}
	}
	e.sendN(t, tok, "acct-1", 1)
	for range 5 {
		wantQPS(t, "2nd in a second", e.post(t, tok, "acct-1"))
	}
	clk.advance(time.Second)
	e.sendN(t, tok, "acct-1", 1)
	limited(t, e.sb, 5, 0)
}

// Concurrent senders get exactly the limit through, no more.
func TestRateLimitConcurrent(t *testing.T) {
	clk := newClock(noon)
	e := startWith(t, sandbox.Config{Now: clk.Now, RateLimit: sandbox.RateLimit{PerSecond: 10}})
	tok := e.token(t)
	const n = 50
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			m := validMessage()
			raw, _ := json.Marshal(m)
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v2/im/chat/messages", bytes.NewReader(raw))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[http.StatusCreated] != 10 || count[http.StatusTooManyRequests] != n-10 {
		t.Errorf("answers %v, want 10 × 201 and %d × 429", count, n-10)
	}
	limited(t, e.sb, n-10, 0)
	if got := len(e.sb.Delivered()); got != 10 {
		t.Errorf("delivered %d, want 10", got)
	}
}
