package main

import (
	"bytes"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The benchmark's Zoom (OAuth and chat API) and regional backends. They
// speak the wire format geomux expects and do as little as they can besides,
// since they share the machine with what is measured.

const (
	benchClientID     = "bench-client-id"
	benchClientSecret = "bench-client-secret"
	benchBotJID       = "bench-bot@xmpp.zoom.us"
	benchToken        = "bench-chatbot-token"
)

// fakes serves Zoom and one backend per region on loopback, reporting what
// they see to the current tracker, behaving as the current profile says.
type fakes struct {
	t        atomic.Pointer[tracker]
	profile  atomic.Pointer[profile] // nil: the instant profile
	zoomURL  string
	backends map[string]string // region → URL
	regionOf map[string]string // account id → region
	servers  []*http.Server
	bufs     sync.Pool
	// memoryLimit is the memory_limit of the geomux started next ("": its
	// default).
	memoryLimit string
}

func startFakes(accounts []account, regions []string) (*fakes, error) {
	f := &fakes{backends: map[string]string{}, regionOf: map[string]string{},
		bufs: sync.Pool{New: func() any { return new(bytes.Buffer) }}}
	for _, a := range accounts {
		f.regionOf[a.id] = a.region
	}
	zm := http.NewServeMux()
	zm.HandleFunc("POST /oauth/token", f.token)
	zm.HandleFunc("POST /v2/im/chat/messages", f.message)
	url, err := f.serve(zm)
	if err != nil {
		return nil, err
	}
	f.zoomURL = url
	for _, r := range regions {
		if f.backends[r], err = f.serve(f.backend(r)); err != nil {
			f.close()
			return nil, err
		}
	}
	return f, nil
}

func (f *fakes) serve(h http.Handler) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	f.servers = append(f.servers, s)
	go func() { _ = s.Serve(l) }()
	return "http://" + l.Addr().String(), nil
}

func (f *fakes) close() {
	for _, s := range f.servers {
		_ = s.Close()
	}
}

// token issues the chatbot token (client_credentials).
func (f *fakes) token(w http.ResponseWriter, r *http.Request) {
	if id, secret, ok := r.BasicAuth(); !ok || id != benchClientID || secret != benchClientSecret {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"access_token":"` + benchToken + `","token_type":"bearer","expires_in":3600,"scope":"imchat:bot","api_url":"` + f.zoomURL + `"}`))
}

var (
	saidPrefix = []byte(`You said: b`)
	sentReply  = []byte(`{"message_id":"DWQ2A82E-9220-4600-AFB2-A028852E377C","robot_jid":"` + benchBotJID + `","sent_time":"2026-11-30 12:00:00","to_jid":"c@conference.xmpp.zoom.us","user_jid":"u@xmpp.zoom.us"}`)
)

// message is POST /v2/im/chat/messages: the reply reached Zoom, unless the
// profile's limit refuses it (then Zoom answers 429, and it did not).
func (f *fakes) message(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	if r.Header.Get("Authorization") != "Bearer "+benchToken {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	buf := f.bufs.Get().(*bytes.Buffer)
	defer f.bufs.Put(buf)
	buf.Reset()
	_, _ = buf.ReadFrom(r.Body)
	p := f.profile.Load()
	limited := false
	if p != nil {
		p.zoomSends.Add(1)
		if p.zoomLimit != nil {
			acct, _ := stringAfter(buf.Bytes(), accountPrefix)
			if limited = !p.zoomLimit.take(acct, now); limited {
				p.zoom429.Add(1)
			}
		}
	}
	if seq, ok := seqAfter(buf.Bytes(), saidPrefix); ok && !limited {
		if t := f.t.Load(); t != nil {
			t.reply(seq, now)
		}
	}
	if p != nil && !p.pause(r, p.zoomLatency) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if limited {
		// Zoom's per-second limit: no Retry-After (shared/zoom, rate limits).
		w.Header().Set("X-RateLimit-Category", "Medium")
		w.Header().Set("X-RateLimit-Type", "QPS")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write(zoomRateLimited)
		return
	}
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(sentReply)
}

// zoomRateLimited is Zoom's answer over a per-second limit.
var zoomRateLimited = []byte(`{"code":429,"message":"You have reached the maximum per-second rate limit for this API. Try again later."}`)

var (
	cmdPrefix     = []byte(`"cmd":"b`)
	accountPrefix = []byte(`"account_id":"`)
)

// backend implements geomux's backend contract for region: one reply,
// saying back what the user wrote.
func (f *fakes) backend(region string) http.HandlerFunc {
	head := []byte(`{"messages":[{"content":{"head":{"text":"Bench backend (` + region + `)"},"body":[{"type":"message","text":"You said: b`)
	return func(w http.ResponseWriter, r *http.Request) {
		buf := f.bufs.Get().(*bytes.Buffer)
		defer f.bufs.Put(buf)
		buf.Reset()
		_, _ = buf.ReadFrom(r.Body)
		body := buf.Bytes()
		seq, ok := seqAfter(body, cmdPrefix)
		if !ok {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if t := f.t.Load(); t != nil {
			t.backendCall(seq)
			if acct, ok := stringAfter(body, accountPrefix); ok && f.regionOf[acct] != region {
				t.misroute.Add(1)
			}
		}
		out := append(append([]byte(nil), head...), strconv.FormatInt(seq, 10)...)
		if p := f.profile.Load(); p != nil && p.backendLatency != nil && !p.pause(r, p.backendLatency()) {
			return
		}
		out = append(out, `"}]}}]}`...)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	}
}

// seqAfter reads the decimal number that follows prefix in b.
func seqAfter(b, prefix []byte) (int64, bool) {
	i := bytes.Index(b, prefix)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(prefix):]
	var n int64
	j := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		n = n*10 + int64(b[j]-'0')
	}
	return n, j > 0
}

// stringAfter reads the JSON string (without escapes) that prefix opens.
func stringAfter(b, prefix []byte) (string, bool) {
	i := bytes.Index(b, prefix)
	if i < 0 {
		return "", false
	}
	b = b[i+len(prefix):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return "", false
	}
	return string(b[:j]), true
}

// profile is how the fakes behave during a realistic-load phase: how long
// the backends and Zoom take to answer, and Zoom's per-account limit. It
// counts the chat messages Zoom was sent and refused during the phase. nil
// is the instant profile: everything answers at once, nothing is limited.
type profile struct {
	backendLatency func() time.Duration // nil: at once
	zoomLatency    time.Duration
	zoomLimit      *zoomLimiter // nil: no limit

	zoomSends, zoom429 atomic.Int64
}

// pause waits d before an answer to r, without holding up other requests;
// false if r was given up meanwhile.
func (p *profile) pause(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// fixedLatency is a backend that always takes d.
func fixedLatency(d time.Duration) func() time.Duration { return func() time.Duration { return d } }

// lognormalLatency is a long-tailed latency: median, and 99th percentile
// p99 (z = 2.326), never over ceiling (so that answers outlasting geomux's
// backend timeout, and their retries, are not what is measured).
func lognormalLatency(median, p99, ceiling time.Duration) func() time.Duration {
	sigma := math.Log(float64(p99)/float64(median)) / 2.326
	return func() time.Duration {
		return min(time.Duration(float64(median)*math.Exp(sigma*rand.NormFloat64())), ceiling)
	}
}

// zoomLimiter is Zoom's per-second limit on one account's chat messages
// (the message's account_id, whichever app sends it): perSecond in any one
// second, a sliding window as Zoom's sandbox counts it. A message over it
// is refused and does not count.
type zoomLimiter struct {
	perSecond int

	mu   sync.Mutex
	sent map[string]*window
}

// window holds the times of an account's last perSecond accepted messages,
// a ring whose oldest entry is at next once it is full.
type window struct {
	at   []time.Time
	next int
}

func newZoomLimiter(perSecond int) *zoomLimiter {
	return &zoomLimiter{perSecond: perSecond, sent: map[string]*window{}}
}

// take counts a message of account sent at now, or reports that it is over
// the limit.
func (l *zoomLimiter) take(account string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.sent[account]
	if w == nil {
		w = &window{at: make([]time.Time, 0, l.perSecond)}
		l.sent[account] = w
	}
	switch {
	case len(w.at) < l.perSecond:
		w.at = append(w.at, now)
	case now.Sub(w.at[w.next]) >= time.Second:
		w.at[w.next] = now
		w.next = (w.next + 1) % l.perSecond
	default:
		return false
	}
	return true
}
