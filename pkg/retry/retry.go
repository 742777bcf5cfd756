// Package retry decides, in one place, whether a failed call is worth
// retrying and when: the HTTP client's in-process retries and the regional
// workers' JetStream redeliveries both ask Retryable.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrPermanent marks a failure that retrying cannot mend, such as a backend
// answer geomux cannot use. Wrap it: fmt.Errorf("%w: ...", retry.ErrPermanent).
var ErrPermanent = errors.New("permanent failure")

// StatusError is an HTTP call answered with a status that is not success.
// Its status says whether to retry (StatusRetryable), unless Retry is set.
type StatusError struct {
	// Service is who answered: "backend", "zoom" or "zoom-oauth".
	Service string
	// StatusCode is the HTTP status.
	StatusCode int
	// RetryAfter is the wait the server asked for (Retry-After), or 0.
	RetryAfter time.Duration
	// Detail is a short, content-free description, e.g. Zoom's error code
	// and message. It never holds customer data.
	Detail string
	// Retry marks a failure worth retrying whatever its status, e.g. a
	// refused chatbot token: the app's credentials, not the event, are at
	// fault.
	Retry bool
	// RateLimit is, on a 429, which limit the call hit: Zoom's
	// X-RateLimit-Type header, RateLimitQPS or RateLimitDaily. Empty
	// otherwise. The two call for different handling: a per-second limit
	// clears within a second, a daily one not before Retry-After (the next
	// UTC midnight).
	RateLimit string
}

// The values of Zoom's X-RateLimit-Type header on a 429.
const (
	// RateLimitQPS is the per-second limit; Zoom sends no Retry-After with it.
	RateLimitQPS = "QPS"
	// RateLimitDaily is the per-day limit; Retry-After says when it resets.
	RateLimitDaily = "Daily-limit"
)

// DailyLimit reports whether the call hit a daily rate limit (a 429 whose
// RateLimit is RateLimitDaily, in any case): retrying before RetryAfter is
// answered the same way.
func (e *StatusError) DailyLimit() bool {
	return e.StatusCode == http.StatusTooManyRequests && strings.EqualFold(e.RateLimit, RateLimitDaily)
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("%s answered %d", e.Service, e.StatusCode)
	if e.RateLimit != "" {
		s += " (" + e.RateLimit + ")"
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// StatusRetryable reports whether an HTTP status is worth retrying: 408, 429
// and 5xx other than 501. Every other 4xx is permanent.
func StatusRetryable(code int) bool {
	switch {
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		return true
	case code == http.StatusNotImplemented:
		return false
	case code >= 500, code == 0:
		return true
	}
	return false
}

// Retryable is geomux's retry predicate. A failure is permanent if it is or
// wraps ErrPermanent, a *StatusError with a permanent status, or a canceled
// context (the process is stopping: not the call's fault, but not to be
// retried here). Everything else (timeouts, refused connections, resets) is
// transient.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrPermanent) || errors.Is(err, context.Canceled) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Retry || StatusRetryable(se.StatusCode)
	}
	return true
}

// After is the wait a failure asked for (a Retry-After), or 0.
func After(err error) time.Duration {
	var se *StatusError
	if errors.As(err, &se) {
		return se.RetryAfter
	}
	return 0
}

// ParseRetryAfter reads a Retry-After header: seconds ("120"), an HTTP date
// ("Fri, 31 Dec 1999 23:59:59 GMT") or, as Zoom's daily-limit 429 sends it,
// an ISO-8601 timestamp ("2025-08-23T00:00:00Z"). A time in the past is 0.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > int64(math.MaxInt64/time.Second) {
			return math.MaxInt64, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		if t, err = time.Parse(time.RFC3339, v); err != nil {
			return 0, false
		}
	}
	return max(t.Sub(now), 0), true
}
