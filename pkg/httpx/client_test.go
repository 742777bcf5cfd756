package httpx_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/geomux/geomux/pkg/httpx"
)

var fast = httpx.Options{Retries: 2, WaitMin: time.Millisecond, WaitMax: 10 * time.Millisecond}

// server answers the n-th request (0-based) with answers[n], repeating the
// last one, and counts the requests.
func server(t *testing.T, answers ...func(w http.ResponseWriter)) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(hits.Add(1)) - 1
		// The body is resent on every attempt.
		if b, _ := io.ReadAll(r.Body); r.Method == http.MethodPost && string(b) != "payload" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		answers[min(n, len(answers)-1)](w)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func status(code int, retryAfter string, body string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

func post(t *testing.T, c *retryablehttp.Client, url string) (*http.Response, string, error) {
	t.Helper()
	// Bounded, so that a wait the client should not make fails the test
	// instead of hanging it.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, url, []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), nil
}

func TestRetriesTransientThenSucceeds(t *testing.T) {
	for _, code := range []int{http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusInternalServerError, http.StatusRequestTimeout} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			srv, hits := server(t, status(code, "", "down"), status(code, "", "down"), status(200, "", "ok"))
			resp, body, err := post(t, httpx.NewClient(fast, zap.NewNop()), srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || body != "ok" {
				t.Errorf("answer = %d %q, want 200 ok", resp.StatusCode, body)
			}
			if got := hits.Load(); got != 3 {
				t.Errorf("server hit %d times, want 3", got)
			}
		})
	}
}

// A redirect is not followed: the POST would arrive elsewhere as a GET
// without its body. The 3xx comes back as it is.
func TestFollowsNoRedirect(t *testing.T) {
	var elsewhere atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(target.Close)
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect} {
		srv, hits := server(t, func(w http.ResponseWriter) {
			w.Header().Set("Location", target.URL)
			w.WriteHeader(code)
		})
		resp, _, err := post(t, httpx.NewClient(fast, zap.NewNop()), srv.URL)
		if err != nil || resp.StatusCode != code || hits.Load() != 1 {
			t.Errorf("%d: answer %v, %v after %d hits; want the %d itself, once", code, resp, err, hits.Load(), code)
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect's target got %d requests", n)
	}
}

func TestDoesNotRetryPermanent(t *testing.T) {
	for _, code := range []int{400, 401, 403, 404, 422, 501} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			srv, hits := server(t, status(code, "", "no"), status(200, "", "ok"))
			resp, body, err := post(t, httpx.NewClient(fast, zap.NewNop()), srv.URL)
			if err != nil {
				t.Fatalf("Do = %v, want the %d response", err, code)
			}
			if resp.StatusCode != code || body != "no" {
				t.Errorf("answer = %d %q, want %d no", resp.StatusCode, body, code)
			}
			if got := hits.Load(); got != 1 {
				t.Errorf("server hit %d times, want 1", got)
			}
		})
	}
}

func TestLongRetryAfterIsHandedBack(t *testing.T) {
	for _, tc := range []struct {
		name, retryAfter string
		code             int
	}{
		{"429 seconds", "5", 429},
		{"429 ISO timestamp", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), 429},
		{"503 seconds", "2", 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, hits := server(t, status(tc.code, tc.retryAfter, "later"), status(200, "", "ok"))
			start := time.Now()
			resp, body, err := post(t, httpx.NewClient(fast, zap.NewNop()), srv.URL)
			if err != nil {
				t.Fatalf("Do = %v, want the %d response", err, tc.code)
			}
			if resp.StatusCode != tc.code || body != "later" || resp.Header.Get("Retry-After") != tc.retryAfter {
				t.Errorf("answer = %d %q Retry-After %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
			}
			if got := hits.Load(); got != 1 {
				t.Errorf("server hit %d times, want 1 (no in-process retry past WaitMax)", got)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %s: the Retry-After was slept on", d)
			}
		})
	}
}

// A 429 is its caller's to pace: retried at once, it would meet the limit
// again (and, at Zoom, count as one more refused send).
func TestRateLimitIsNotRetried(t *testing.T) {
	for _, ra := range []string{"", "0"} {
		t.Run("Retry-After "+ra, func(t *testing.T) {
			srv, hits := server(t, status(429, ra, "slow down"), status(200, "", "ok"))
			resp, _, err := post(t, httpx.NewClient(fast, zap.NewNop()), srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 429 {
				t.Errorf("answer = %d, want the 429", resp.StatusCode)
			}
			if got := hits.Load(); got != 1 {
				t.Errorf("server hit %d times, want 1", got)
			}
		})
	}
}

func TestShortRetryAfterIsRetried(t *testing.T) {
	for _, ra := range []string{"0", time.Now().Add(-time.Minute).UTC().Format(http.TimeFormat)} {
		t.Run(ra, func(t *testing.T) {
			srv, hits := server(t, status(503, ra, "slow down"), status(200, "", "ok"))
			resp, body, err := post(t, httpx.NewClient(fast, zap.NewNop()), srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || body != "ok" {
				t.Errorf("answer = %d %q, want 200 ok", resp.StatusCode, body)
			}
			if got := hits.Load(); got != 2 {
				t.Errorf("server hit %d times, want 2", got)
			}
		})
	}
}

func TestLastResponseReturnedAfterRetries(t *testing.T) {
	srv, hits := server(t, status(503, "", "still down"))
	resp, body, err := post(t, httpx.NewClient(fast, zap.NewNop()), srv.URL)
	if err != nil {
		t.Fatalf("Do = %v, want the last 503 response", err)
	}
	if resp.StatusCode != 503 || body != "still down" {
		t.Errorf("answer = %d %q, want 503 still down", resp.StatusCode, body)
	}
	if got := hits.Load(); got != int32(fast.Retries+1) {
		t.Errorf("server hit %d times, want %d", got, fast.Retries+1)
	}

	// No retries at all: one hit.
	srv1, hits1 := server(t, status(503, "", "down"))
	resp, _, err = post(t, httpx.NewClient(httpx.Options{Retries: 0, WaitMin: time.Millisecond, WaitMax: time.Millisecond}, zap.NewNop()), srv1.URL)
	if err != nil || resp.StatusCode != 503 || hits1.Load() != 1 {
		t.Errorf("Retries 0: %v, %v, %d hits", err, resp, hits1.Load())
	}
}

func TestConnectionRefusedIsRetried(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	c := httpx.NewClient(fast, zap.NewNop())
	var attempts atomic.Int32
	c.RequestLogHook = func(_ retryablehttp.Logger, _ *http.Request, _ int) { attempts.Add(1) }
	resp, _, err := post(t, c, "http://"+addr+"/")
	if err == nil {
		t.Fatalf("Do to a closed port succeeded: %v", resp.Status)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error = %v, want connection refused", err)
	}
	if got := attempts.Load(); got != int32(fast.Retries+1) {
		t.Errorf("attempts = %d, want %d", got, fast.Retries+1)
	}
}

func TestCanceledContextStopsRetrying(t *testing.T) {
	var hits atomic.Int32
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		cancel() // the caller gives up while the server answers 503
		w.WriteHeader(503)
	}))
	t.Cleanup(srv.Close)
	req, _ := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	_, err := httpx.NewClient(httpx.Options{Retries: 5, WaitMin: time.Millisecond, WaitMax: time.Millisecond}, zap.NewNop()).Do(req)
	if err == nil {
		t.Fatal("Do succeeded after its context was canceled")
	}
	if got := hits.Load(); got != 1 {
		t.Errorf("server hit %d times after cancel, want 1", got)
	}
}

func TestBackoff(t *testing.T) {
	c := httpx.NewClient(httpx.Options{Retries: 3, WaitMin: 10 * time.Millisecond, WaitMax: 80 * time.Millisecond}, zap.NewNop())
	for attempt := range 70 {
		for range 20 {
			d := c.Backoff(c.RetryWaitMin, c.RetryWaitMax, attempt, nil)
			if d < 10*time.Millisecond || d > 80*time.Millisecond {
				t.Fatalf("Backoff(attempt %d) = %s, want within [10ms, 80ms]", attempt, d)
			}
		}
	}
	// The first retry waits exactly the minimum.
	if d := c.Backoff(c.RetryWaitMin, c.RetryWaitMax, 0, nil); d != 10*time.Millisecond {
		t.Errorf("Backoff(attempt 0) = %s, want 10ms", d)
	}
	// A Retry-After is obeyed as is.
	resp := &http.Response{Header: http.Header{"Retry-After": {"3"}}}
	if d := c.Backoff(c.RetryWaitMin, c.RetryWaitMax, 0, resp); d != 3*time.Second {
		t.Errorf("Backoff with Retry-After 3 = %s, want 3s", d)
	}
	if got := c.HTTPClient.Transport.(*http.Transport).MaxIdleConnsPerHost; got != 1024 {
		t.Errorf("MaxIdleConnsPerHost = %d, want 1024", got)
	}
	if c.RetryMax != 3 {
		t.Errorf("RetryMax = %d, want 3", c.RetryMax)
	}
}

func TestDefaultOptions(t *testing.T) {
	o := httpx.DefaultOptions()
	if o.Retries != 2 || o.WaitMin != 100*time.Millisecond || o.WaitMax != time.Second {
		t.Errorf("DefaultOptions = %+v", o)
	}
}

// Hundreds of calls at once (a slow backend) keep their connections: a
// second round opens none, where cleanhttp's pool of 100 idle connections
// in all made it dial most of them anew.
func TestManyConcurrentCallsReuseConnections(t *testing.T) {
	const n = 300
	var opened atomic.Int64
	release := make(chan struct{})
	var inFlight atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		<-release
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := httpx.NewClient(httpx.Options{}, zap.NewNop())
	round := func() {
		inFlight.Store(0)
		done := make(chan error, n)
		for range n {
			go func() {
				resp, err := c.Get(srv.URL)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				done <- err
			}()
		}
		for inFlight.Load() < n {
			time.Sleep(time.Millisecond) // polling the condition: all n at the server at once
		}
		for range n {
			release <- struct{}{}
		}
		for range n {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	round()
	first := opened.Load()
	round()
	if again := opened.Load() - first; again > 0 {
		t.Errorf("a second round of %d concurrent calls opened %d new connections (first round: %d), want none", n, again, first)
	}
}

// At debug level the client logs its requests and retries: never a URL's
// password or query (a backend's key), nor one inside an error.
func TestDebugLogsRedactURLs(t *testing.T) {
	srv, _ := server(t, status(500, "", ""), status(200, "", "ok"))
	core, logs := observer.New(zap.DebugLevel)
	c := httpx.NewClient(httpx.Options{Retries: 2, WaitMin: time.Millisecond, WaitMax: time.Millisecond}, zap.New(core))
	u := strings.Replace(srv.URL, "http://", "http://svc:hunter2@", 1) + "/chat?api_key=k3y"
	if _, _, err := post(t, c, u); err != nil {
		t.Fatal(err)
	}
	// A failing call's error names its URL too.
	if _, _, err := post(t, c, "http://svc:hunter2@127.0.0.1:1/chat?api_key=k3y"); err == nil {
		t.Fatal("a call to a closed port succeeded")
	}
	if logs.Len() == 0 {
		t.Fatal("no debug lines: nothing checked")
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + fmt.Sprint(v)
		}
		if strings.Contains(line, "hunter2") || strings.Contains(line, "k3y") {
			t.Errorf("a debug line shows a secret: %s", line)
		}
	}
}
