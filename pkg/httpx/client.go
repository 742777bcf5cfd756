// Package httpx builds the one HTTP client geomux makes every outbound call
// with: go-retryablehttp, asking package retry whether to retry.
package httpx

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/go-retryablehttp"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/retry"
)

// Options configure the client.
type Options struct {
	// Retries is how many quick retries a call gets in-process.
	Retries int
	// WaitMin and WaitMax bound the wait between in-process retries.
	WaitMin, WaitMax time.Duration
}

// DefaultOptions: two retries, 100 ms to 1 s apart.
func DefaultOptions() Options {
	return Options{Retries: 2, WaitMin: 100 * time.Millisecond, WaitMax: time.Second}
}

// NewClient returns a retrying HTTP client.
//
// It retries in-process only what is quick to mend: a transient failure
// (retry.Retryable) other than 429 whose server asked for no longer than
// WaitMax. A 429 or a longer Retry-After is not retried here: the response is handed back
// so that the caller can schedule the retry (the workers do it through
// JetStream, freeing the goroutine). After the last attempt the last response
// is returned as is, not replaced by an error, so the caller sees its status.
func NewClient(o Options, log *zap.Logger) *retryablehttp.Client {
	c := &retryablehttp.Client{
		HTTPClient:   cleanhttp.DefaultPooledClient(),
		Logger:       leveled{log.Named("http")},
		RetryWaitMin: o.WaitMin,
		RetryWaitMax: o.WaitMax,
		RetryMax:     o.Retries,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	// A region's backend may have a thousand calls running (a slow
	// language model): keep their connections rather than open new ones.
	// cleanhttp keeps 100 idle connections in all, whatever the host: past
	// that, each call beyond the hundredth dialled anew (a tenth of the
	// worker's CPU at 2,000 events/s).
	// Follow no redirect: a 301, 302 or 303 would turn a POST into a GET
	// without its body, and a backend_url that redirects would lose the
	// envelope silently. Zoom's API and a region's backend answer in
	// place; a 3xx comes back to the caller as it is (a permanent failure,
	// its status named), as Zoom itself follows no redirect from a Bot
	// Endpoint URL.
	c.HTTPClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	t := c.HTTPClient.Transport.(*http.Transport)
	t.MaxIdleConnsPerHost = maxIdlePerHost
	t.MaxIdleConns = 4 * maxIdlePerHost
	c.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if err == nil && resp.StatusCode < 400 {
			return false, nil
		}
		var rerr error = err
		if err == nil {
			rerr = &retry.StatusError{StatusCode: resp.StatusCode}
		}
		if !retry.Retryable(rerr) {
			return false, nil
		}
		if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
			// A rate limit is its caller's to pace (the workers pace each
			// account's Zoom sends and a backend's requests to slow down):
			// retried here, it would only meet the limit again.
			return false, nil
		}
		if wait, ok := retryAfter(resp); ok && wait > o.WaitMax {
			return false, nil
		}
		return true, nil
	}
	c.Backoff = func(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
		if wait, ok := retryAfter(resp); ok {
			return wait
		}
		// Exponential with full jitter, between min and max.
		d := min << attempt
		if d > max || d <= 0 {
			d = max
		}
		return min + rand.N(d-min+1)
	}
	return c
}

// maxIdlePerHost is how many idle connections a client keeps to one host.
const maxIdlePerHost = 1024

func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp == nil {
		return 0, false
	}
	return retry.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
}

// leveled adapts zap to retryablehttp's LeveledLogger. retryablehttp logs
// each attempt; those go to debug.
type leveled struct{ l *zap.Logger }

func (l leveled) Error(msg string, kv ...any) { l.l.Sugar().Debugw(msg, redacted(kv)...) }
func (l leveled) Info(msg string, kv ...any)  { l.l.Sugar().Debugw(msg, redacted(kv)...) }
func (l leveled) Debug(msg string, kv ...any) { l.l.Sugar().Debugw(msg, redacted(kv)...) }
func (l leveled) Warn(msg string, kv ...any)  { l.l.Sugar().Debugw(msg, redacted(kv)...) }

// redacted is go-retryablehttp's key-value pairs with every URL shown
// without credentials or query (a backend's URL may carry a key in
// either), and errors, which quote the URL, reduced to the same.
func redacted(kv []any) []any {
	out := make([]any, len(kv))
	for i, v := range kv {
		switch v := v.(type) {
		case *url.URL:
			out[i] = config.RedactURL(v.String())
		case url.URL:
			out[i] = config.RedactURL(v.String())
		case *http.Request:
			out[i] = v.Method + " " + config.RedactURL(v.URL.String())
		case error:
			out[i] = redactError(v)
		case string:
			if strings.Contains(v, "://") {
				out[i] = config.RedactURL(v)
			} else {
				out[i] = v
			}
		default:
			out[i] = v
		}
	}
	return out
}

// redactError is err's message, its URL (a *url.Error's) redacted.
func redactError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + " " + config.RedactURL(ue.URL) + ": " + ue.Err.Error()
	}
	return err.Error()
}
