package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// benchSecret is the webhook secret token of the benchmark's Zoom app.
const benchSecret = "bench-webhook-secret"

// account is a Zoom account of the load, with its region.
type account struct {
	id, region, channel, user string
	// users are the account's people who chat with the bot one to one
	// (the realistic-load phases): usersPerAccount JIDs, users[0] = user.
	users []string
}

// usersPerAccount is how many people of each account talk to the bot in
// the realistic-load phases, each in a 1:1 chat of their own.
const usersPerAccount = 20

// newAccounts returns n accounts per region, with ids shaped like Zoom's
// (22 URL-safe characters). The accounts of a smaller n are the first ones
// of a larger n.
func newAccounts(regions []string, n int) []account {
	var out []account
	for i := range n {
		for _, r := range regions {
			h := sha256.Sum256([]byte(fmt.Sprintf("bench-%s-%d", r, i)))
			id := base64.RawURLEncoding.EncodeToString(h[:16])
			a := account{id: id, region: r,
				channel: fmt.Sprintf("%x@conference.xmpp.zoom.us", h[16:28]),
				user:    fmt.Sprintf("%x@xmpp.zoom.us", h[20:30])}
			a.users = append(a.users, a.user)
			for u := 1; u < usersPerAccount; u++ {
				hu := sha256.Sum256([]byte(fmt.Sprintf("bench-%s-%d-user-%d", r, i, u)))
				a.users = append(a.users, fmt.Sprintf("%x@xmpp.zoom.us", hu[:10]))
			}
			out = append(out, a)
		}
	}
	return out
}

// eventTemplate is Zoom's example bot_notification (pkg/zoom/zoomtest, from
// Zoom's documentation), compacted as Zoom sends it, cut around the fields
// that differ between events.
type eventTemplate struct {
	lits   [][]byte
	fields []string
}

var placeholder = regexp.MustCompile(`"\\u0001(\w+)"`)

func newTemplate() (*eventTemplate, error) {
	var ev map[string]any
	if err := json.Unmarshal(zoomtest.Event("bot_notification"), &ev); err != nil {
		return nil, err
	}
	p, ok := ev["payload"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("example bot_notification has no payload")
	}
	ev["event_ts"], p["timestamp"] = "\x01ts", "\x01ts"
	p["accountId"], p["cmd"], p["toJid"], p["userJid"] = "\x01account", "\x01cmd", "\x01channel", "\x01user"
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	t := &eventTemplate{}
	last := 0
	for _, m := range placeholder.FindAllSubmatchIndex(b, -1) {
		t.lits = append(t.lits, b[last:m[0]])
		t.fields = append(t.fields, string(b[m[2]:m[3]]))
		last = m[1]
	}
	t.lits = append(t.lits, b[last:])
	return t, nil
}

// render returns the body of event seq of account a, in its channel.
func (t *eventTemplate) render(dst []byte, a account, seq int64, at time.Time) []byte {
	return t.renderChat(dst, a, a.channel, a.user, seq, at)
}

// renderChat returns the body of event seq of account a: user wrote to the
// bot in chat toJID (a channel, or for a 1:1 chat the user's own JID, as
// Zoom sends it).
func (t *eventTemplate) renderChat(dst []byte, a account, toJID, user string, seq int64, at time.Time) []byte {
	for i, f := range t.fields {
		dst = append(dst, t.lits[i]...)
		switch f {
		case "ts":
			dst = strconv.AppendInt(dst, at.UnixMilli(), 10)
		case "account":
			dst = strconv.AppendQuote(dst, a.id)
		case "channel":
			dst = strconv.AppendQuote(dst, toJID)
		case "user":
			dst = strconv.AppendQuote(dst, user)
		case "cmd":
			dst = append(dst, `"b`...)
			dst = strconv.AppendInt(dst, seq, 10)
			dst = append(dst, ` what is on my calendar this afternoon"`...)
		}
	}
	return append(dst, t.lits[len(t.lits)-1]...)
}

// tracker follows each event of one geomux run from its send to its reply,
// by its sequence number (carried in the user's text, "b<seq>").
type tracker struct {
	sentAt  []atomic.Int64 // unix nanoseconds at send; 0: not sent
	e2e     []atomic.Int64 // nanoseconds from send to the first reply
	replies []atomic.Int32 // replies Zoom received
	backend []atomic.Int32 // calls each backend received
	// tags are what the realistic-load phases count each event under
	// (region and class, see tagOf); 0 for the instant profile.
	tags     []atomic.Uint32
	byTag    [tagCount]atomic.Int64 // events with at least one reply, by tag
	next     atomic.Int64
	accepted atomic.Int64 // answered 200
	replied  atomic.Int64 // events with at least one reply
	misroute atomic.Int64 // backend calls of another region's account
}

func newTracker(capacity int) *tracker {
	return &tracker{sentAt: make([]atomic.Int64, capacity), e2e: make([]atomic.Int64, capacity),
		replies: make([]atomic.Int32, capacity), backend: make([]atomic.Int32, capacity),
		tags: make([]atomic.Uint32, capacity)}
}

// reply records Zoom receiving a reply to event seq.
func (t *tracker) reply(seq int64, now time.Time) {
	if seq < 0 || seq >= int64(len(t.replies)) {
		return
	}
	if t.replies[seq].Add(1) == 1 {
		if s := t.sentAt[seq].Load(); s != 0 {
			t.e2e[seq].Store(now.UnixNano() - s)
		}
		t.byTag[t.tags[seq].Load()%tagCount].Add(1)
		t.replied.Add(1)
	}
}

func (t *tracker) backendCall(seq int64) {
	if seq >= 0 && seq < int64(len(t.backend)) {
		t.backend[seq].Add(1)
	}
}

// outstanding is how many accepted events await their reply.
func (t *tracker) outstanding() int64 { return t.accepted.Load() - t.replied.Load() }

// generator sends signed events to a webhook URL.
type generator struct {
	url      string
	accounts []account
	tmpl     *eventTemplate
	client   *http.Client
	t        *tracker
	bufs     sync.Pool
}

func newGenerator(url string, accounts []account, tmpl *eventTemplate, t *tracker) *generator {
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute, DisableCompression: true}
	return &generator{url: url, accounts: accounts, tmpl: tmpl, t: t,
		client: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		bufs:   sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}}
}

func (g *generator) close() { g.client.CloseIdleConnections() }

// send posts the next event, of the next account in turn in its channel,
// signed as Zoom signs it, and returns its status (0: no answer) and when it
// went out.
func (g *generator) send() (status int, sent time.Time) {
	seq := g.t.next.Add(1) - 1
	a := g.accounts[seq%int64(len(g.accounts))]
	return g.post(seq, func(dst []byte, now time.Time) []byte { return g.tmpl.render(dst, a, seq, now) })
}

// sendChat posts the next event: a.users[user] writing to the bot in their
// 1:1 chat with it, counted under tag.
func (g *generator) sendChat(a account, user int, tag uint32) (status int, sent time.Time, seq int64) {
	seq = g.t.next.Add(1) - 1
	if seq < int64(len(g.t.tags)) {
		g.t.tags[seq].Store(tag)
	}
	u := a.users[user%len(a.users)]
	status, sent = g.post(seq, func(dst []byte, now time.Time) []byte { return g.tmpl.renderChat(dst, a, u, u, seq, now) })
	return status, sent, seq
}

// post sends event seq, whose body render writes, signed as Zoom signs it.
func (g *generator) post(seq int64, render func(dst []byte, now time.Time) []byte) (status int, sent time.Time) {
	bp := g.bufs.Get().(*[]byte)
	defer g.bufs.Put(bp)
	now := time.Now()
	body := render((*bp)[:0], now)
	*bp = body
	ts := strconv.FormatInt(now.Unix(), 10)
	req, _ := http.NewRequest(http.MethodPost, g.url, bytes.NewReader(body))
	// The headers Zoom sends (shared/zoom: REFERENCE 1d).
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Zoom Marketplace/1.0a")
	req.Header.Set("Clientid", benchClientID)
	req.Header.Set("Traceparent", traceparent(seq))
	req.Header.Set(zoom.HeaderRequestID, fmt.Sprintf("6009d653_d487_445d_8406_%012x", seq))
	req.Header.Set(zoom.HeaderTrackingID, "v=2.0;clid=us06;rid=bench")
	req.Header.Set(zoom.HeaderTimestamp, ts)
	req.Header.Set(zoom.HeaderSignature, zoom.Sign(benchSecret, ts, body))
	sent = time.Now()
	if seq < int64(len(g.t.sentAt)) {
		g.t.sentAt[seq].Store(sent.UnixNano())
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, sent
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		g.t.accepted.Add(1)
	}
	return resp.StatusCode, sent
}

// recorder collects the answers of one step.
type recorder struct {
	mu       sync.Mutex
	ack      []time.Duration // from send to the complete answer
	lag      []time.Duration // from the schedule to the send
	statuses map[int]int
	// late counts the answers that came after Zoom gives up (zoomWait).
	late int
}

// zoomWait is how long Zoom waits for an answer before it gives up (and
// retries 5, 20 and 60 minutes later).
const zoomWait = 3 * time.Second

func newRecorder(n int) *recorder {
	return &recorder{ack: make([]time.Duration, 0, n), lag: make([]time.Duration, 0, n), statuses: map[int]int{}}
}

func (r *recorder) add(status int, ack, lag time.Duration) {
	r.mu.Lock()
	r.statuses[status]++
	if status != 0 && ack > zoomWait {
		r.late++
	}
	if status == http.StatusOK {
		r.ack = append(r.ack, ack)
	}
	r.lag = append(r.lag, lag)
	r.mu.Unlock()
}

// openLoop sends rate events per second for d, each at its scheduled time
// whether or not earlier ones were answered: a slow answer delays nothing
// else, so queueing shows in the latencies instead of hiding in a slower
// send rate. The schedule is kept to within the timer's granularity (about
// a millisecond here); each event's lag behind it is recorded.
func (g *generator) openLoop(ctx context.Context, rate float64, d time.Duration, rec *recorder) {
	n := int(rate * d.Seconds())
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n && ctx.Err() == nil; {
		due := min(n, int(time.Since(start).Seconds()*rate)+1)
		for ; i < due; i++ {
			at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			wg.Go(func() {
				status, sent := g.send()
				rec.add(status, time.Since(sent), sent.Sub(at))
			})
		}
		time.Sleep(200 * time.Microsecond)
	}
	wg.Wait()
}

// closedLoop keeps conns requests in flight for warm+d, each connection
// sending its next event as soon as the last is answered, and returns the
// rate of 200s during d: the throughput at saturation.
func (g *generator) closedLoop(ctx context.Context, conns int, warm, d time.Duration) (float64, map[int]int) {
	begin := time.Now().Add(warm)
	end := begin.Add(d)
	var ok atomic.Int64
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			local := map[int]int{}
			for ctx.Err() == nil {
				status, sent := g.send()
				if sent.After(end) {
					break
				}
				if sent.After(begin) {
					local[status]++
					if status == http.StatusOK {
						ok.Add(1)
					}
				}
			}
			mu.Lock()
			for k, v := range local {
				statuses[k] += v
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return float64(ok.Load()) / d.Seconds(), statuses
}

// percentile is the q-quantile (nearest rank) of sorted durations, in ms.
func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Millisecond)
}

func sortedCopy(d []time.Duration) []time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}

// traceparent is a W3C trace context of event seq, sampled, as Zoom sends.
func traceparent(seq int64) string {
	return fmt.Sprintf("00-4bf92f3577b34da6a3ce929d%06x-00f067aa0ba902b7-01", seq&0xffffff)
}
