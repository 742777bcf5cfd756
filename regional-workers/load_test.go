package workers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// The worker under real chatbot load: slow backends, uneven accounts,
// Zoom's rate limits. Speeds are measured by `make bench`; these tests keep
// the guarantees behind them.

// userEvent is a bot_notification of user u of account, the n-th of the
// test: each user is a conversation of its own.
func userEvent(account string, u int, text string, n int64) []byte {
	b, _ := json.Marshal(map[string]any{
		"event": "bot_notification", "event_ts": 1700000000000 + n,
		"payload": map[string]any{
			"accountId": account, "cmd": text, "robotJid": "robot@xmpp.zoom.us", "timestamp": 1700000000000 + n,
			"toJid":   fmt.Sprintf("user-%d-%s@xmpp.zoom.us", u, account),
			"userJid": fmt.Sprintf("user-%d-%s@xmpp.zoom.us", u, account), "userName": "Test User",
		},
	})
	return b
}

// publishAll publishes events without waiting for each acknowledgement.
func publishAll(t *testing.T, js jetstream.JetStream, region string, events []published, accounts []string) {
	t.Helper()
	if _, err := natsx.EnsureStream(context.Background(), js, topology.RegionEventsConfig(region, testOptions(region).Streams)); err != nil {
		t.Fatal(err)
	}
	var futs []jetstream.PubAckFuture
	for i, ev := range events {
		m := newEventMsg(region, accounts[i], ev)
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		case <-time.After(waitFor):
			t.Fatal("publish not acknowledged")
		}
	}
}

// slowBackend answers every call with a card after delay, counting the
// calls running at once.
type slowBackend struct {
	delay   time.Duration
	running atomic.Int64
	peak    atomic.Int64
	calls   atomic.Int64
}

// Answer answers with the replies of handle.
func (b *slowBackend) Answer(ctx context.Context, ev workers.Event) (proto.BackendResponse, error) {
	return workers.HandlerFunc(b.handle).Answer(ctx, ev)
}

func (b *slowBackend) handle(ctx context.Context, ev workers.Event) ([]proto.ChatMessage, error) {
	n := b.running.Add(1)
	defer b.running.Add(-1)
	for {
		p := b.peak.Load()
		if n <= p || b.peak.CompareAndSwap(p, n) {
			break
		}
	}
	b.calls.Add(1)
	select {
	case <-time.After(b.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	chat, _ := zoom.ParseChat(ev.Body)
	return []proto.ChatMessage{{Content: card(chat.Text)}}, nil
}

// loadOptions are the default limits, with quick retries.
func loadOptions(region string) workers.Options {
	o := testOptions(region)
	o.Concurrency = 0 // the defaults: the memory budget bounds
	return o
}

// A backend that takes 2 s does not cap the region at a few dozen events
// per second: a thousand events of a hundred accounts are in the backend at
// once (500 events/s at 2 s each needs a thousand), and each is replied to once.
func TestSlowBackendHasAThousandCallsAtOnce(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	const accounts, users = 100, 10
	var events []published
	var owners []string
	for a := range accounts {
		for u := range users {
			acct := fmt.Sprintf("acct-%03d", a)
			events = append(events, newPublished(userEvent(acct, u, fmt.Sprintf("%s user %d", acct, u), int64(a*users+u))))
			owners = append(owners, acct)
		}
	}
	// All stored before the worker starts: it finds them at once.
	publishAll(t, ns.JS, "us", events, owners)
	b := &slowBackend{delay: 2 * time.Second}
	startWorker(t, ns.JS, b, zoomClient(t, z), loadOptions("us"))
	natstest.Eventually(t, time.Minute, func() bool { return len(z.SB.Delivered()) >= len(events) }, "every event replied to")
	waitEventsGone(t, ns.JS, "us")
	if p := b.peak.Load(); p < int64(len(events)) {
		t.Errorf("at most %d backend calls at once, want all %d (2 s each: 500 events/s needs a thousand)", p, len(events))
	}
	assertOnce(t, z, len(events))
}

// assertOnce checks that Zoom accepted n messages, each text once.
func assertOnce(t *testing.T, z *fakeZoom, n int) {
	t.Helper()
	seen := map[string]int{}
	for _, txt := range z.Texts() {
		seen[txt]++
	}
	if len(seen) != n {
		t.Errorf("Zoom accepted %d distinct replies, want %d", len(seen), n)
	}
	for txt, c := range seen {
		if c != 1 {
			t.Errorf("reply %q sent %d times", txt, c)
		}
	}
}

// One account's burst does not hold up the others: while it drains (at its
// share of the worker), each quiet account's event is replied to at once.
func TestNoisyAccountDoesNotHoldUpOthers(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	const burst, quiet = 300, 20
	var events []published
	var owners []string
	for i := range burst {
		events = append(events, newPublished(userEvent("noisy", i%50, fmt.Sprintf("noisy %d", i), int64(i))))
		owners = append(owners, "noisy")
	}
	publishAll(t, ns.JS, "us", events, owners)
	opts := loadOptions("us")
	opts.AccountConcurrency = 4 // the noisy account drains at 4 / 200 ms: 15 s
	b := &slowBackend{delay: 200 * time.Millisecond}
	startWorker(t, ns.JS, b, zoomClient(t, z), opts)
	natstest.Eventually(t, waitFor, func() bool { return len(z.SB.Delivered()) >= 8 }, "the burst draining")

	var qs []published
	var qowners []string
	for i := range quiet {
		acct := fmt.Sprintf("quiet-%02d", i)
		qs = append(qs, newPublished(userEvent(acct, 0, acct+" hello", int64(burst+i))))
		qowners = append(qowners, acct)
	}
	publishAll(t, ns.JS, "us", qs, qowners)
	quietDone := func() (quietN, noisyN int) {
		for _, txt := range z.Texts() {
			if len(txt) > 5 && txt[:5] == "quiet" {
				quietN++
			} else {
				noisyN++
			}
		}
		return
	}
	natstest.Eventually(t, waitFor, func() bool { q, _ := quietDone(); return q == quiet }, "every quiet account's reply")
	if _, n := quietDone(); n > burst/2 {
		t.Errorf("the quiet accounts were answered only once %d of the noisy account's %d events were: they waited for the burst", n, burst)
	}
	if p := b.peak.Load(); p > int64(opts.AccountConcurrency+quiet) {
		t.Errorf("%d backend calls at once, want at most the noisy account's %d and one per quiet account", p, opts.AccountConcurrency)
	}
}

// A backend asking the region to slow down (503 with Retry-After) pauses the
// region's calls for that long and uses no attempt: with a single attempt
// allowed, the event still gets its reply.
func TestBackendSlowDownUsesNoAttempt(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	b := newFakeBackend(t, func(n int, req proto.BackendRequest) backendAnswer {
		if n == 1 {
			return backendAnswer{Status: http.StatusServiceUnavailable, Header: map[string]string{"Retry-After": "1"}}
		}
		return answerJSON(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card("after the pause")}}})
	})
	opts := loadOptions("us")
	opts.Retry.MaxAttempts = 1
	_, reg := startWorker(t, ns.JS, backendHandler(t, b, "us", 0), zoomClient(t, z), opts)
	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct", zoomtest.BotNotification("acct", "slow down", 1))
	natstest.Eventually(t, waitFor, func() bool { return len(z.SB.Delivered()) == 1 }, "the reply after the pause")
	calls := b.Calls()
	if len(calls) != 2 {
		t.Fatalf("backend called %d times, want 2", len(calls))
	}
	if gap := calls[1].At.Sub(calls[0].At); gap < time.Second {
		t.Errorf("asked again %v after Retry-After: 1, want at least 1s", gap)
	}
	waitMetric(t, reg, "geomux_worker_backend_slow_downs_total", map[string]string{"region": "us"}, 1)
	if dls := deadLetters(t, ns.JS, "us"); len(dls) != 0 {
		t.Errorf("%d dead letters, want none", len(dls))
	}
}

// Zoom allows an account 10 messages a second: a burst of replies for it all
// go through, paced, with few sends answered 429.
func TestZoomPaceIsLearnt(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoomWith(t, sandbox.RateLimit{PerSecond: 10})
	const n = 60
	var events []published
	var owners []string
	for i := range n {
		events = append(events, newPublished(userEvent("acct", i, fmt.Sprintf("paced %d", i), int64(i))))
		owners = append(owners, "acct")
	}
	publishAll(t, ns.JS, "us", events, owners)
	_, reg := startWorker(t, ns.JS, workers.Echo, zoomClient(t, z), loadOptions("us"))
	natstest.Eventually(t, 3*waitFor, func() bool { return len(z.SB.Delivered()) == n }, "every reply through")
	// Learning the pace probes above Zoom's limit about once a second, and
	// a loaded machine bunches sends: a handful of 429s is the pace working.
	// Unpaced, most of the burst would be answered 429.
	qps, daily := z.SB.Limited()
	if qps > n/4 || daily != 0 {
		t.Errorf("Zoom answered %d sends 429 (per second) and %d (daily), want at most %d and none", qps, daily, n/4)
	}
	waitMetric(t, reg, "geomux_worker_zoom_rate_limited_total", map[string]string{"region": "us", "type": "qps"}, float64(qps))
	assertOnce(t, z, n)
}

// An account over Zoom's daily limit is held until the time Zoom names:
// across a restart of the worker, using no attempt and dead-lettering
// nothing, while other accounts go on; the region says it is held.
func TestDailyLimitHoldsAcrossRestart(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	until := time.Now().Add(5 * time.Second).Truncate(time.Second)
	var mu sync.Mutex
	var heldSends []time.Time // sends for the held account, after the first
	daily := &dailyZoom{z: z, account: "held", until: until, onSend: func(at time.Time) {
		mu.Lock()
		heldSends = append(heldSends, at)
		mu.Unlock()
	}}
	srv := newServer(t, daily)
	zc := zoom.NewClient(zoom.ClientConfig{ClientID: clientID, ClientSecret: clientSecret, APIBaseURL: srv + "/v2", OAuthBaseURL: srv}, newHTTPClient(t, 0))
	opts := loadOptions("us")
	opts.Retry.MaxAttempts = 1 // a hold that used an attempt would dead-letter

	w1, _ := startWorker(t, ns.JS, workers.Echo, zc, opts)
	for i := range 3 {
		publish(t, ns.JS, "us", zoom.EventBotNotification, "held", userEvent("held", i, fmt.Sprintf("held %d", i), int64(i)))
	}
	natstest.Eventually(t, waitFor, func() bool { return daily.limited.Load() >= 1 }, "Zoom's daily-limit answer")
	holds := askHolds(t, ns, "us")
	if len(holds) != 1 || holds[0].AccountID != "held" || holds[0].HeldUntil.Sub(until).Abs() > time.Second {
		t.Errorf("holds = %+v, want account held until %s", holds, until)
	}
	if _, err := stopWithin(t, w1, waitFor); err != nil {
		t.Fatal(err)
	}

	startWorker(t, ns.JS, workers.Echo, zc, opts)
	publish(t, ns.JS, "us", zoom.EventBotNotification, "free", userEvent("free", 0, "free 0", 10))
	natstest.Eventually(t, waitFor, func() bool { return len(z.SB.Delivered()) == 1 }, "the other account's reply, at once")
	if time.Now().After(until) {
		t.Fatalf("the other account waited for the held one's reset (%s)", until)
	}
	natstest.Eventually(t, waitFor+5*time.Second, func() bool { return len(z.SB.Delivered()) == 4 }, "the held account's replies after the reset")
	mu.Lock()
	defer mu.Unlock()
	for _, at := range heldSends {
		if at.Before(until) {
			t.Errorf("a send for the held account at %s, before the reset at %s", at.Format(time.StampMilli), until.Format(time.StampMilli))
		}
	}
	if dls := deadLetters(t, ns.JS, "us"); len(dls) != 0 {
		t.Errorf("%d dead letters, want none", len(dls))
	}
	if n := daily.limited.Load(); n != 1 {
		t.Errorf("Zoom answered the daily limit %d times, want once: the hold kept the account's sends back", n)
	}
}

// dailyZoom is Zoom holding one account until a time: its first send is
// answered with the daily-limit 429, as Zoom does; sends before the reset too.
type dailyZoom struct {
	z       *fakeZoom
	account string
	until   time.Time
	onSend  func(time.Time)
	limited atomic.Int64
}

func (d *dailyZoom) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/im/chat/messages" {
		var m zoom.Message
		body := readBody(r)
		_ = json.Unmarshal(body, &m)
		if m.AccountID == d.account {
			now := time.Now()
			if d.limited.Load() > 0 {
				d.onSend(now)
			}
			if d.limited.Load() == 0 || now.Before(d.until) {
				d.limited.Add(1)
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("X-RateLimit-Category", "Medium")
				w.Header().Set("X-RateLimit-Type", "Daily-limit")
				w.Header().Set("X-RateLimit-Limit", "2000")
				w.Header().Set("X-RateLimit-Remaining", "0")
				w.Header().Set("Retry-After", d.until.UTC().Format(time.RFC3339))
				w.WriteHeader(http.StatusTooManyRequests)
				_, _ = w.Write([]byte(`{"code":429,"message":"You have reached the maximum daily rate limit for this API. Refer to the response header for details on when you can make another request."}`))
				return
			}
		}
	}
	d.z.serve(w, r)
}

// askHolds asks the region which accounts are held, as the admin API does.
func askHolds(t *testing.T, ns *natstest.Server, region string) []proto.Hold {
	t.Helper()
	m, err := ns.Conn.Request(proto.RegionHoldsSubject(region), nil, waitFor)
	if err != nil {
		t.Fatalf("ask %s for its holds: %v", region, err)
	}
	var a proto.HoldsAnswer
	if err := json.Unmarshal(m.Data, &a); err != nil || a.Error != "" {
		t.Fatalf("holds answer %s: %v %s", m.Data, err, a.Error)
	}
	return a.Holds
}

// An account holding its share of events still takes the first event of a
// conversation it holds later events of: when that event comes back late
// (its worker was killed, or the region's servers restarted before its
// acknowledgement), the later ones wait for it, and handing it back as one
// too many would leave the conversation stuck for as long as the account
// stays full.
func TestFullAccountTakesTheEventItsConversationWaitsFor(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	const n = 24 // three times what the account holds
	var events []published
	var owners []string
	for i := range n {
		events = append(events, newPublished(userEvent("bank", 0, fmt.Sprintf("bank %02d", i), int64(i))))
		owners = append(owners, "bank")
	}
	publishAll(t, ns.JS, "us", events, owners)
	opts := loadOptions("us")
	opts.AccountConcurrency = 1 // holds 8 of the account's events
	// A worker that took the conversation's first event and died: it comes
	// back only after its ack wait, behind later events.
	takeFirst(t, ns.JS, opts, "bank 00")
	startWorker(t, ns.JS, &slowBackend{}, zoomClient(t, z), opts)
	// The events handed back while it waited come back within 9 s each.
	natstest.Eventually(t, time.Minute, func() bool { return len(z.SB.Delivered()) >= n }, "every event replied to")
	for i, txt := range z.Texts() {
		if want := fmt.Sprintf("bank %02d", i); txt != want {
			t.Fatalf("reply %d is %q, want %q: out of order", i, txt, want)
		}
	}
	assertOnce(t, z, n)
}

// An event whose replies all went out but whose acknowledgement was lost
// (the consumer's leader lost or moved as it was sent: a region's server
// killed) stays in the stream until its redelivery, an ack wait later. The
// next event of its conversation does not wait that long: the first one's
// record says it is done.
func TestLostAckDoesNotHoldItsConversation(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	first, second := newPublished(userEvent("bank", 0, "first", 1)), newPublished(userEvent("bank", 0, "second", 2))
	publishAll(t, ns.JS, "us", []published{first, second}, []string{"bank", "bank"})
	opts := loadOptions("us")
	// A worker took the first event, replied, recorded it done, and its
	// acknowledgement was lost.
	takeFirst(t, ns.JS, opts, "first")
	taken := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	kv, err := natsx.EnsureKeyValue(ctx, ns.JS, topology.RepliesConfig("us", opts.Streams))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "bank."+first.ID, []byte(`{"sent":1,"message_ids":["m-1"],"done":true}`)); err != nil {
		t.Fatal(err)
	}

	startWorker(t, ns.JS, &slowBackend{}, zoomClient(t, z), opts)
	natstest.Eventually(t, waitFor, func() bool { return len(z.Texts()) > 0 }, "the second event replied to")
	if waited := time.Since(taken); waited >= topology.WorkerAckWait {
		t.Errorf("the second event was replied to %s after the first was taken, not before the first's ack wait (%s) ended: it waited for the first's redelivery",
			waited.Round(time.Millisecond), topology.WorkerAckWait)
	}
	st, err := ns.JS.Stream(ctx, proto.RegionEventsStream("us"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetMsg(ctx, 1); err != nil {
		t.Errorf("the first event is no longer in the stream when the second is replied to (%v): it was redelivered first", err)
	}
	if got := z.Texts(); len(got) != 1 || got[0] != "second" {
		t.Errorf("Zoom received %q, want the second event's reply", got)
	}
}

// takeFirst takes the first event of region us's stream, as a worker that
// then dies or loses its acknowledgement: it comes back after its ack wait.
func takeFirst(t *testing.T, js jetstream.JetStream, opts workers.Options, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for _, c := range topology.WorkerConsumers("us", topology.DefaultPartitions, opts.ConsumerSettings()) {
		if _, err := js.CreateOrUpdateConsumer(ctx, c.Stream, c.Config); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := pendingConsumer(t, js, "us").Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if got := chatOf(t, m.Data()).Text; got != want {
			t.Fatalf("the worker took %q, want %q", got, want)
		}
	}
}
