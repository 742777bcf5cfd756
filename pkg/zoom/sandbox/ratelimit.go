package sandbox

import (
	"maps"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/geomux/geomux/pkg/httpx"
	"github.com/geomux/geomux/pkg/retry"
)

// DefaultPerSecond is the per-second limit of RateLimit.PerSecond 0: a Zoom
// Pro account's limit for the "Medium" APIs, which chat messages are.
const DefaultPerSecond = 20

// RateLimit is how many chat messages (POST /v2/im/chat/messages) an account
// may send. As Zoom does, the sandbox counts them per account (the message's
// account_id), whichever app sends them: the apps installed on an account
// share its limits. Only messages the sandbox accepts count; one refused
// (invalid, or over a limit) does not.
//
// The zero value is a Zoom Pro account's limits: 20 a second, none a day.
type RateLimit struct {
	// PerSecond is how many messages an account may send in any one second
	// (a sliding window). 0 means DefaultPerSecond; negative means no limit.
	// Over it the sandbox answers Zoom's per-second 429 (X-RateLimit-Type:
	// QPS, no Retry-After).
	PerSecond int
	// PerDay is how many messages an account may send in one UTC day. 0 or
	// negative means no limit (Zoom Free's is 2000). Over it the sandbox
	// answers Zoom's daily 429 (X-RateLimit-Type: Daily-limit), whose
	// Retry-After is the next UTC midnight, when the count starts again.
	PerDay int
	// Accounts replaces these limits for the accounts it names, by account
	// id: {"acct-free": {PerSecond: 2, PerDay: 2000}} makes one account a
	// Free one. An entry's fields mean what they mean above (its PerSecond 0
	// is DefaultPerSecond, not this RateLimit's); its own Accounts is
	// ignored.
	Accounts map[string]RateLimit
}

// limits are the per-second and per-day limits of account, <= 0 for none.
func (r RateLimit) limits(account string) (perSecond, perDay int) {
	if o, ok := r.Accounts[account]; ok {
		r = o
	}
	perSecond = r.PerSecond
	if perSecond == 0 {
		perSecond = DefaultPerSecond
	}
	return perSecond, r.PerDay
}

// limiter counts each account's accepted messages against its RateLimit.
type limiter struct {
	cfg RateLimit

	mu       sync.Mutex
	accounts map[string]*usage
	// qps and daily count the 429s answered, by limit.
	qps, daily int
}

func newLimiter(cfg RateLimit) *limiter {
	// A copy: the caller's map may change after New.
	cfg.Accounts = maps.Clone(cfg.Accounts)
	return &limiter{cfg: cfg, accounts: map[string]*usage{}}
}

// usage is what one account has sent.
type usage struct {
	// sent holds the times of the account's last PerSecond accepted
	// messages, a ring whose oldest entry is at next once it is full. A
	// message is within the per-second limit when the oldest is at least a
	// second old: then fewer than PerSecond were accepted in the last second.
	sent []time.Time
	next int
	// today counts the messages accepted in the UTC day that begins at day.
	day   time.Time
	today int
}

// refusal is a message over a limit: which, and for a daily one, the limit
// and when it resets.
type refusal struct {
	kind  string // retry.RateLimitQPS or retry.RateLimitDaily
	limit int
	reset time.Time
}

// take counts a message of account sent at now, or says which limit it is
// over (and then does not count it).
func (l *limiter) take(account string, now time.Time) (refusal, bool) {
	perSecond, perDay := l.cfg.limits(account)
	if perSecond < 0 && perDay <= 0 {
		return refusal{}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.accounts[account]
	if u == nil {
		u = &usage{}
		l.accounts[account] = u
	}
	if day := utcDay(now); !day.Equal(u.day) {
		u.day, u.today = day, 0
	}
	// The daily limit first: while it holds, waiting a second does not help,
	// and its answer says how long to wait.
	if perDay > 0 && u.today >= perDay {
		l.daily++
		return refusal{kind: retry.RateLimitDaily, limit: perDay, reset: u.day.AddDate(0, 0, 1)}, false
	}
	if perSecond > 0 {
		if len(u.sent) < perSecond {
			u.sent = append(u.sent, now)
		} else if now.Sub(u.sent[u.next]) >= time.Second {
			u.sent[u.next] = now
			u.next = (u.next + 1) % perSecond
		} else {
			l.qps++
			return refusal{kind: retry.RateLimitQPS, limit: perSecond}, false
		}
	}
	u.today++
	return refusal{}, true
}

// utcDay is the UTC midnight that begins t's UTC day.
func utcDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// limited returns how many 429s the limiter answered, by limit.
func (l *limiter) limited() (qps, daily int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.qps, l.daily
}

// Zoom's 429 messages (its API reference, "Rate limits").
const (
	qpsMessage   = "You have reached the maximum per-second rate limit for this API. Try again later."
	dailyMessage = "You have reached the maximum daily rate limit for this API. Refer to the response header for details on when you can make another request."
)

// writeRefusal answers a message over a limit as Zoom does. Chat messages
// are in Zoom's "Medium" category. Zoom sends no Retry-After with a
// per-second 429, and an ISO-8601 timestamp (not seconds) with a daily one.
func writeRefusal(w http.ResponseWriter, r refusal) {
	h := w.Header()
	h.Set("X-RateLimit-Category", "Medium")
	h.Set("X-RateLimit-Type", r.kind)
	msg := qpsMessage
	if r.kind == retry.RateLimitDaily {
		h.Set("X-RateLimit-Limit", strconv.Itoa(r.limit))
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("Retry-After", r.reset.UTC().Format(time.RFC3339))
		msg = dailyMessage
	}
	httpx.WriteJSON(w, http.StatusTooManyRequests, zoomError{http.StatusTooManyRequests, msg})
}
