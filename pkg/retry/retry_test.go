package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/retry"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 8, 22, 23, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		v      string
		want   time.Duration
		wantOK bool
	}{
		{"seconds", "120", 120 * time.Second, true},
		{"seven", "7", 7 * time.Second, true},
		{"zero", "0", 0, true},
		{"padded", "  30 ", 30 * time.Second, true},
		{"HTTP date (IMF-fixdate)", "Fri, 22 Aug 2025 23:01:30 GMT", 90 * time.Second, true},
		{"HTTP date (RFC 850)", "Friday, 22-Aug-25 23:01:30 GMT", 90 * time.Second, true},
		{"HTTP date (asctime)", "Fri Aug 22 23:01:30 2025", 90 * time.Second, true},
		{"Zoom's ISO timestamp", "2025-08-23T00:00:00Z", time.Hour, true},
		{"ISO with offset", "2025-08-23T02:00:00+02:00", time.Hour, true},
		{"ISO with fraction", "2025-08-23T00:00:00.5Z", time.Hour + 500*time.Millisecond, true},
		{"ISO now", "2025-08-22T23:00:00Z", 0, true},
		{"ISO in the past", "2025-08-22T00:00:00Z", 0, true},
		{"HTTP date in the past", "Fri, 31 Dec 1999 23:59:59 GMT", 0, true},
		{"negative", "-5", 0, false},
		{"garbage", "soon", 0, false},
		{"fraction of seconds", "1.5", 0, false},
		{"seconds with unit", "5s", 0, false},
		{"empty", "", 0, false},
		{"blank", "   ", 0, false},
		{"date without zone", "2025-08-23T00:00:00", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := retry.ParseRetryAfter(tc.v, now)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tc.v, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// A Retry-After is a wait: however large the number a server sends, it must
// never come out negative (a negative wait is retried at once, hammering a
// server that asked to be left alone).
func TestParseRetryAfterHugeSecondsIsNotNegative(t *testing.T) {
	for _, v := range []string{"10000000000", "9223372036854775807"} {
		got, ok := retry.ParseRetryAfter(v, time.Now())
		if ok && got < 0 {
			t.Errorf("ParseRetryAfter(%q) = %s, true: a huge wait came out negative", v, got)
		}
	}
}

func TestStatusRetryable(t *testing.T) {
	for code, want := range map[int]bool{
		0:   true, // no status: the call did not complete
		200: false,
		400: false,
		401: false,
		403: false,
		404: false,
		409: false,
		408: true,
		422: false,
		429: true,
		500: true,
		501: false,
		502: true,
		503: true,
		504: true,
		599: true,
	} {
		if got := retry.StatusRetryable(code); got != want {
			t.Errorf("StatusRetryable(%d) = %v, want %v", code, got, want)
		}
	}
}

func TestRetryable(t *testing.T) {
	se := func(code int) *retry.StatusError { return &retry.StatusError{Service: "zoom", StatusCode: code} }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"ErrPermanent", retry.ErrPermanent, false},
		{"wrapped ErrPermanent", fmt.Errorf("%w: backend answer unusable", retry.ErrPermanent), false},
		{"twice wrapped ErrPermanent", fmt.Errorf("handle: %w", fmt.Errorf("%w: x", retry.ErrPermanent)), false},
		{"joined ErrPermanent", errors.Join(io.EOF, retry.ErrPermanent), false},
		{"context.Canceled", context.Canceled, false},
		{"wrapped context.Canceled", fmt.Errorf("zoom: send: %w", context.Canceled), false},
		{"deadline exceeded", context.DeadlineExceeded, true},
		{"wrapped deadline exceeded", fmt.Errorf("backend: %w", context.DeadlineExceeded), true},
		{"429", se(429), true},
		{"503", se(503), true},
		{"wrapped 502", fmt.Errorf("backend: %w", se(502)), true},
		{"400", se(400), false},
		{"401", se(401), false},
		{"wrapped 404", fmt.Errorf("x: %w", se(404)), false},
		{"501", se(501), false},
		{"plain error", errors.New("connection reset by peer"), true},
		{"net error", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, true},
		{"EOF", io.ErrUnexpectedEOF, true},
		// A permanent marker wins over a retryable status.
		{"permanent wrapping 503", fmt.Errorf("%w: %w", retry.ErrPermanent, se(503)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retry.Retryable(tc.err); got != tc.want {
				t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestAfter(t *testing.T) {
	ra := &retry.StatusError{Service: "zoom", StatusCode: 429, RetryAfter: 7 * time.Second}
	for _, tc := range []struct {
		name string
		err  error
		want time.Duration
	}{
		{"nil", nil, 0},
		{"plain", errors.New("x"), 0},
		{"status without Retry-After", &retry.StatusError{StatusCode: 503}, 0},
		{"status with Retry-After", ra, 7 * time.Second},
		{"wrapped", fmt.Errorf("send reply 2: %w", ra), 7 * time.Second},
	} {
		if got := retry.After(tc.err); got != tc.want {
			t.Errorf("%s: After = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestStatusErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		err  *retry.StatusError
		want string
	}{
		{&retry.StatusError{Service: "backend", StatusCode: 503}, "backend answered 503"},
		{&retry.StatusError{Service: "zoom", StatusCode: 429, Detail: "code 429: rate limit"}, "zoom answered 429: code 429: rate limit"},
		{&retry.StatusError{Service: "zoom", StatusCode: 429, RateLimit: "Daily-limit", Detail: "code 429: daily"}, "zoom answered 429 (Daily-limit): code 429: daily"},
		{&retry.StatusError{Service: "zoom", StatusCode: 429, RateLimit: "QPS"}, "zoom answered 429 (QPS)"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestStatusErrorDailyLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  retry.StatusError
		want bool
	}{
		{"daily", retry.StatusError{StatusCode: 429, RateLimit: retry.RateLimitDaily}, true},
		{"daily, other case", retry.StatusError{StatusCode: 429, RateLimit: "daily-LIMIT"}, true},
		{"per second", retry.StatusError{StatusCode: 429, RateLimit: retry.RateLimitQPS}, false},
		{"429 without type", retry.StatusError{StatusCode: 429}, false},
		{"unknown type", retry.StatusError{StatusCode: 429, RateLimit: "Daily"}, false},
		// Only a 429 is a rate limit, whatever the header said.
		{"503 with daily type", retry.StatusError{StatusCode: 503, RateLimit: retry.RateLimitDaily}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.DailyLimit(); got != tc.want {
				t.Errorf("DailyLimit() = %v, want %v", got, tc.want)
			}
		})
	}
	// A daily limit is still a transient failure: retried after Retry-After.
	daily := &retry.StatusError{Service: "zoom", StatusCode: 429, RateLimit: retry.RateLimitDaily, RetryAfter: time.Hour}
	if !retry.Retryable(fmt.Errorf("send: %w", daily)) {
		t.Error("a daily-limit 429 is not retryable")
	}
}
