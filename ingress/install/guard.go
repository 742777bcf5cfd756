package install

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"
)

// Guards of the flow's routes against other sites and floods.
//
// A form post (the region choice) must come from the flow's own pages: the
// standard library's cross-origin protection refuses a browser's post sent
// by another site (Sec-Fetch-Site, else Origin against Host), so a page
// elsewhere cannot start an install with a region of its choosing.
//
// The OAuth callback costs a request to Zoom with the app's credentials;
// junk codes are refused by Zoom, but each costs that call. It is limited
// per client address and overall, and what it logs is sampled.

// sameSite wraps the flow's form posts: a cross-site post is answered 403
// with the flow's problem page.
func (h *Handler) sameSite(next http.HandlerFunc) http.Handler {
	cop := http.NewCrossOriginProtection()
	if u, err := url.Parse(h.opts.PublicURL); err == nil && u.Scheme != "" && u.Host != "" {
		// Behind a proxy that rewrites Host, the public origin is ours too.
		_ = cop.AddTrustedOrigin(u.Scheme + "://" + u.Host)
	}
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.sampled.Info("Install form post from another site refused")
		h.problem(w, http.StatusForbidden, "Not installed",
			"This form can only be sent from this site's own install page. Please start again there.", true)
	}))
	return cop.Handler(next)
}

// The callback's limits: a person installing calls it once; a flood is cut
// to a few requests a second.
const (
	callbackRate       = 10 // per second, every address together
	callbackBurst      = 50
	callbackAddrEvery  = time.Second // one per address that often...
	callbackAddrBurst  = 10          // ...after this many at once
	callbackAddrsKept  = 10_000      // addresses tracked before starting afresh
	callbackRetryAfter = 5 * time.Second
)

// limiter limits the callback overall and per client address.
type limiter struct {
	all       *rate.Limiter
	addrLimit rate.Limit
	mu        sync.Mutex
	addrs     map[string]*rate.Limiter
}

func newLimiter() *limiter {
	return &limiter{all: rate.NewLimiter(callbackRate, callbackBurst), addrLimit: rate.Every(callbackAddrEvery), addrs: map[string]*rate.Limiter{}}
}

// allow reports whether a request from remoteAddr may go on.
func (l *limiter) allow(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	l.mu.Lock()
	a := l.addrs[host]
	if a == nil {
		if len(l.addrs) >= callbackAddrsKept {
			// Many addresses: start afresh; the overall limit still holds.
			clear(l.addrs)
		}
		a = rate.NewLimiter(l.addrLimit, callbackAddrBurst)
		l.addrs[host] = a
	}
	l.mu.Unlock()
	// The address's limit first: one address's flood does not use up the
	// overall budget that others need.
	return a.Allow() && l.all.Allow()
}

// limited wraps the callback with the limiter: past it, 429 with
// Retry-After and the flow's problem page, and no call to Zoom.
func (h *Handler) limited(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !h.limit.allow(r.RemoteAddr) {
			h.sampled.Warn("Install callback over its rate limit; refused")
			w.Header().Set("Retry-After", strconv.Itoa(int(callbackRetryAfter/time.Second)))
			h.problem(w, http.StatusTooManyRequests, "Please try again",
				"Too many installation attempts. Please wait a few seconds and start again.", true)
			return
		}
		next(w, r)
	}
}

// sampledLogger keeps the first few lines of each message a second: what a
// flood of bad requests makes the flow log.
func sampledLogger(log *zap.Logger) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, 5, 0)
	}))
}
