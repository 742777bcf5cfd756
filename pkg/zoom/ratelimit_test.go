package zoom_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
)

// Zoom's two 429s, as its API reference shows them, are told apart by their
// X-RateLimit-Type.
func TestClientRateLimitType(t *testing.T) {
	const (
		qpsBody   = `{"code":429,"message":"You have reached the maximum per-second rate limit for this API. Try again later."}`
		dailyBody = `{"code":429,"message":"You have reached the maximum daily rate limit for this API. Refer to the response header for details on when you can make another request."}`
	)
	// Zoom's is the next UTC midnight; any time hours away reads the same.
	reset := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	for _, tc := range []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		rateLimit  string
		daily      bool
		retryAfter time.Duration // at least; 0 for none
	}{
		{"per second", http.StatusTooManyRequests,
			map[string]string{"X-RateLimit-Category": "Medium", "X-RateLimit-Type": "QPS"},
			qpsBody, "QPS", false, 0},
		{"daily", http.StatusTooManyRequests,
			map[string]string{"X-RateLimit-Category": "Medium", "X-RateLimit-Type": "Daily-limit", "X-RateLimit-Limit": "2000",
				"X-RateLimit-Remaining": "0", "Retry-After": reset.Format(time.RFC3339)},
			dailyBody, "Daily-limit", true, 2*time.Hour - 5*time.Second},
		{"daily, lower case", http.StatusTooManyRequests,
			map[string]string{"X-RateLimit-Type": "daily-limit", "Retry-After": reset.Format(time.RFC3339)},
			dailyBody, "daily-limit", true, 2*time.Hour - 5*time.Second},
		{"429 without a type", http.StatusTooManyRequests, nil, qpsBody, "", false, 0},
		// Only a 429 is a rate limit.
		{"503 with a type", http.StatusServiceUnavailable, map[string]string{"X-RateLimit-Type": "Daily-limit"},
			`{"code":503,"message":"Service unavailable"}`, "", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeZoom(t, sandbox.Config{})
			// No in-process retries: this is about reading one answer.
			c := f.client(testClientSecret)
			f.failNext(answer(tc.status, tc.header, tc.body))
			_, err := c.SendMessage(ctx(t), message(0))
			se := statusErr(t, err)
			if se.StatusCode != tc.status || se.RateLimit != tc.rateLimit || se.DailyLimit() != tc.daily {
				t.Errorf("error = %+v (DailyLimit %v), want %d, RateLimit %q, DailyLimit %v",
					se, se.DailyLimit(), tc.status, tc.rateLimit, tc.daily)
			}
			if (tc.retryAfter == 0) != (se.RetryAfter == 0) || se.RetryAfter < tc.retryAfter {
				t.Errorf("RetryAfter = %s, want at least %s", se.RetryAfter, tc.retryAfter)
			}
			if !retry.Retryable(err) {
				t.Error("not retryable")
			}
		})
	}
}

// The sandbox's 429s are Zoom's: the client reads them as it will read
// Zoom's.
func TestClientAgainstSandboxLimits(t *testing.T) {
	t.Run("per second", func(t *testing.T) {
		clk := newClock() // frozen: every attempt in the same second
		f := newFakeZoom(t, sandbox.Config{Now: clk.now, RateLimit: sandbox.RateLimit{PerSecond: 1}})
		c := f.clientWith(testClientSecret, fastHTTP(2))
		if _, err := c.SendMessage(ctx(t), message(0)); err != nil {
			t.Fatal(err)
		}
		_, err := c.SendMessage(ctx(t), message(1))
		se := statusErr(t, err)
		if se.StatusCode != http.StatusTooManyRequests || se.RateLimit != retry.RateLimitQPS || se.DailyLimit() || se.RetryAfter != 0 {
			t.Errorf("error = %+v, want a per-second 429 without Retry-After", se)
		}
		// Not retried in-process (package httpx leaves a 429 to its caller
		// to pace): one refusal.
		if qps, daily := f.sb.Limited(); qps != 1 || daily != 0 {
			t.Errorf("sandbox limited %d per-second, %d daily; want 1, 0", qps, daily)
		}
		clk.advance(time.Second)
		if _, err := c.SendMessage(ctx(t), message(2)); err != nil {
			t.Errorf("a second later: %v", err)
		}
	})

	t.Run("daily", func(t *testing.T) {
		// The real time, frozen: the client measures Retry-After against
		// time.Now, and both messages fall in the same UTC day.
		clk := newClock()
		start := clk.now()
		f := newFakeZoom(t, sandbox.Config{Now: clk.now, RateLimit: sandbox.RateLimit{PerDay: 1}})
		c := f.clientWith(testClientSecret, fastHTTP(2))
		if _, err := c.SendMessage(ctx(t), message(0)); err != nil {
			t.Fatal(err)
		}
		_, err := c.SendMessage(ctx(t), message(1))
		se := statusErr(t, err)
		if !se.DailyLimit() || se.RateLimit != retry.RateLimitDaily {
			t.Errorf("error = %+v, want a daily-limit 429", se)
		}
		untilMidnight := time.Until(start.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour))
		if se.RetryAfter > untilMidnight+time.Minute || se.RetryAfter < untilMidnight-time.Minute {
			t.Errorf("RetryAfter = %s, want about %s (the next UTC midnight)", se.RetryAfter, untilMidnight)
		}
		if got := f.chatHits.Load(); got != 2 {
			t.Errorf("chat API called %d times, want 2: a daily limit is not retried in-process", got)
		}
		if qps, daily := f.sb.Limited(); qps != 0 || daily != 1 {
			t.Errorf("sandbox limited %d per-second, %d daily; want 0, 1", qps, daily)
		}
		if len(f.sb.Delivered()) != 1 {
			t.Errorf("delivered %d, want 1", len(f.sb.Delivered()))
		}
	})
}
