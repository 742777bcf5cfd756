package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
)

func TestTemplateRendersZoomsExampleEvent(t *testing.T) {
	tmpl, err := newTemplate()
	if err != nil {
		t.Fatal(err)
	}
	a := newAccounts([]string{"eu"}, 1)[0]
	body := tmpl.render(nil, a, 42, time.UnixMilli(1_700_000_000_123))
	if !json.Valid(body) {
		t.Fatalf("not JSON: %s", body)
	}
	head, err := zoom.ParseHead(body)
	if err != nil || head.Event != "bot_notification" || head.AccountID != a.id || !proto.ValidAccountID(a.id) {
		t.Fatalf("ParseHead = %+v, %v; want bot_notification of %s", head, err, a.id)
	}
	chat, err := zoom.ParseChat(body)
	if err != nil || chat.ToJID != a.channel || chat.UserJID != a.user || !strings.HasPrefix(chat.Text, "b42 ") {
		t.Fatalf("ParseChat = %+v, %v", chat, err)
	}
	// The rest is Zoom's example, as it was.
	for _, want := range []string{`"channelName":"Photos"`, `"robotJid":"v10r4uxexurcasg-pwh8hyh7sg@xmpp.zoom.us"`, `"event_ts":1700000000123`, `"timestamp":1700000000123`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("body lacks %s: %s", want, body)
		}
	}
}

// The generator's events verify as Zoom's do, and the open loop sends as
// many as it was asked to.
func TestGeneratorSignsAsZoomAndKeepsItsSchedule(t *testing.T) {
	v := zoom.NewVerifier([]string{benchSecret}, time.Minute)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if _, err := v.Verify(r.Header.Get(zoom.HeaderSignature), r.Header.Get(zoom.HeaderTimestamp), body); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	tmpl, err := newTemplate()
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker(1000)
	g := newGenerator(srv.URL, newAccounts(benchRegions, 3), tmpl, tr)
	defer g.close()
	rec := newRecorder(100)
	g.openLoop(context.Background(), 400, 250*time.Millisecond, rec)
	if rec.statuses[http.StatusOK] != 100 || len(rec.statuses) != 1 {
		t.Fatalf("statuses %v, want 100 200s", rec.statuses)
	}
	if tr.accepted.Load() != 100 || tr.next.Load() != 100 {
		t.Fatalf("tracker: %d accepted of %d sent", tr.accepted.Load(), tr.next.Load())
	}
	rate, statuses := g.closedLoop(context.Background(), 4, 50*time.Millisecond, 200*time.Millisecond)
	if rate <= 0 || len(statuses) != 1 || statuses[http.StatusOK] == 0 {
		t.Fatalf("closed loop: %.0f/s, %v", rate, statuses)
	}
}

// The fakes speak geomux's wire formats: the backend answers the envelope
// with a reply that names the event, and Zoom, given that reply, counts it
// against the event; a token that is not Zoom's is refused.
func TestFakesFollowAnEventToItsReply(t *testing.T) {
	accounts := newAccounts(benchRegions, 1)
	f, err := startFakes(accounts, benchRegions)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	tr := newTracker(10)
	f.t.Store(tr)
	tr.sentAt[7].Store(time.Now().Add(-time.Millisecond).UnixNano())

	tmpl, _ := newTemplate()
	eu := accounts[2]
	env, _ := json.Marshal(proto.BackendRequest{ID: "x", Region: "eu", AccountID: eu.id, Event: "bot_notification",
		Payload: tmpl.render(nil, eu, 7, time.Now())})
	resp, err := http.Post(f.backends["eu"], "application/json", bytes.NewReader(env))
	if err != nil {
		t.Fatal(err)
	}
	var answer proto.BackendResponse
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || len(answer.Messages) != 1 {
		t.Fatalf("backend answer: %+v, %v", answer, err)
	}
	resp.Body.Close()
	if tr.backend[7].Load() != 1 || tr.misroute.Load() != 0 {
		t.Fatalf("backend calls %d, misrouted %d", tr.backend[7].Load(), tr.misroute.Load())
	}
	// The same event at another region's backend is a misroute.
	resp, _ = http.Post(f.backends["us"], "application/json", bytes.NewReader(env))
	resp.Body.Close()
	if tr.misroute.Load() != 1 {
		t.Fatalf("misrouted %d, want 1", tr.misroute.Load())
	}

	send := func(token string) int {
		msg, _ := json.Marshal(zoom.Message{RobotJID: benchBotJID, ToJID: eu.channel, UserJID: eu.user, AccountID: eu.id, Content: answer.Messages[0].Content})
		req, _ := http.NewRequest(http.MethodPost, f.zoomURL+"/v2/im/chat/messages", bytes.NewReader(msg))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send("not-the-token"); code != http.StatusUnauthorized {
		t.Fatalf("a wrong token: %d", code)
	}
	if code := send(benchToken); code != http.StatusCreated {
		t.Fatalf("the reply: %d", code)
	}
	if tr.replies[7].Load() != 1 || tr.replied.Load() != 1 || tr.e2e[7].Load() <= 0 {
		t.Fatalf("replies %d, replied %d, e2e %d", tr.replies[7].Load(), tr.replied.Load(), tr.e2e[7].Load())
	}

	// The chatbot token: for the app's credentials only.
	token := func(id, secret string) int {
		req, _ := http.NewRequest(http.MethodPost, f.zoomURL+"/oauth/token?grant_type=client_credentials", nil)
		req.SetBasicAuth(id, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if token(benchClientID, "wrong") != http.StatusUnauthorized || token(benchClientID, benchClientSecret) != http.StatusOK {
		t.Fatal("token endpoint")
	}
}

func TestStatistics(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	s := sortedCopy(ms(5, 1, 4, 2, 3, 10, 9, 8, 7, 6))
	for q, want := range map[float64]float64{0.5: 5, 0.99: 10, 0.1: 1, 0.91: 10, 0.9: 9} {
		if got := percentile(s, q); got != want {
			t.Errorf("percentile %.2f = %v, want %v", q, got, want)
		}
	}
	if percentile(nil, 0.99) != 0 {
		t.Error("percentile of nothing")
	}
	if got := slope([]float64{0, 1, 2, 3}, []float64{10, 12, 14, 16}); got != 2 {
		t.Errorf("slope = %v, want 2", got)
	}
	if got := slope([]float64{1}, []float64{1}); got != 0 {
		t.Errorf("slope of one point = %v", got)
	}
	if median([]float64{3, 1, 2}) != 2 || median([]float64{4, 1, 3, 2}) != 2.5 || median(nil) != 0 {
		t.Error("median")
	}
	if n, ok := seqAfter([]byte(`x"cmd":"b1234 hello"`), cmdPrefix); !ok || n != 1234 {
		t.Errorf("seqAfter = %d, %v", n, ok)
	}
	if _, ok := seqAfter([]byte(`"cmd":"bx"`), cmdPrefix); ok {
		t.Error("seqAfter of no digits")
	}
}

func TestBadArgumentsAreOneLineAndExit2(t *testing.T) {
	for _, args := range [][]string{
		{"--rates", "fast"},
		{"--phases", "e2e,nope"},
		{"--geomux", "/nonexistent/geomux"},
		{"--geomux", "bench_test.go", "--phases", "e2e", "--step", "1ms"},
		{"--geomux", "bench_test.go", "--rounds", "0"},
		{"--geomux", "bench_test.go", "--slow-for", "1s"},
		{"--geomux", "bench_test.go", "--realistic-rate", "0"},
		{"stray"},
	} {
		if code := run(args); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code := run([]string{"--help"}); code != 0 {
		t.Errorf("--help: exit %d", code)
	}
}

// The realistic-load phases' events are 1:1 chats: each account's users in
// turn, toJid the user's own JID, each a valid bot_notification.
func TestChatsAreOneToOneAndCycleThroughTheUsers(t *testing.T) {
	tmpl, err := newTemplate()
	if err != nil {
		t.Fatal(err)
	}
	a := newAccounts(benchRegions, 2)[4]
	if a.region != "uk" || len(a.users) != usersPerAccount || a.users[0] != a.user {
		t.Fatalf("account %+v", a)
	}
	if first := newAccounts(benchRegions, 5)[4]; first.id != a.id || first.users[7] != a.users[7] {
		t.Fatal("a larger set of accounts does not begin with the smaller one")
	}
	seen := map[string]bool{}
	next := steady(100, 2*usersPerAccount, func(int) (account, bool) { return a, false })
	for i := 0; ; i++ {
		s, ok := next()
		if !ok {
			if i != 2*usersPerAccount {
				t.Fatalf("%d shots, want %d", i, 2*usersPerAccount)
			}
			break
		}
		if s.user != i%usersPerAccount || s.at != time.Duration(i)*10*time.Millisecond || tagRegion(s.tag) != "uk" || tagNoisy(s.tag) {
			t.Fatalf("shot %d: %+v", i, s)
		}
		body := tmpl.renderChat(nil, a, a.users[s.user], a.users[s.user], int64(i), time.Now())
		chat, err := zoom.ParseChat(body)
		if err != nil || chat.ToJID != a.users[s.user] || chat.UserJID != a.users[s.user] || !strings.HasPrefix(chat.Text, fmt.Sprintf("b%d ", i)) {
			t.Fatalf("ParseChat = %+v, %v", chat, err)
		}
		seen[chat.UserJID] = true
	}
	if len(seen) != usersPerAccount {
		t.Fatalf("%d distinct users, want %d", len(seen), usersPerAccount)
	}
	if tg := tagOf(a, true); tagRegion(tg) != "uk" || !tagNoisy(tg) || tg >= tagCount {
		t.Fatalf("tag %d", tg)
	}
}

func TestZoomLimiterIsPerAccountAndSliding(t *testing.T) {
	l := newZoomLimiter(3)
	t0 := time.Now()
	for i := range 3 {
		if !l.take("a", t0.Add(time.Duration(i)*100*time.Millisecond)) {
			t.Fatalf("message %d refused", i)
		}
	}
	if l.take("a", t0.Add(999*time.Millisecond)) {
		t.Fatal("a 4th message within the second was accepted")
	}
	if !l.take("b", t0.Add(999*time.Millisecond)) {
		t.Fatal("another account's message was refused")
	}
	// The first message is a second old: one more fits, not two.
	if !l.take("a", t0.Add(time.Second)) || l.take("a", t0.Add(time.Second+50*time.Millisecond)) {
		t.Fatal("the window did not slide by one message")
	}
}

// Over its limit the fake Zoom answers as Zoom does, and the refused reply
// does not count as delivered; the profile counts sends and 429s.
func TestFakeZoomAnswers429OverTheLimit(t *testing.T) {
	accounts := newAccounts(benchRegions, 1)
	f, err := startFakes(accounts, benchRegions)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	tr := newTracker(10)
	f.t.Store(tr)
	p := &profile{zoomLimit: newZoomLimiter(2), zoomLatency: 20 * time.Millisecond}
	f.profile.Store(p)
	us := accounts[0]
	send := func(seq int) (*http.Response, []byte) {
		content := json.RawMessage(fmt.Sprintf(`{"body":[{"type":"message","text":"You said: b%d"}]}`, seq))
		msg, _ := json.Marshal(zoom.Message{RobotJID: benchBotJID, ToJID: us.users[seq], UserJID: us.users[seq], AccountID: us.id, Content: content})
		req, _ := http.NewRequest(http.MethodPost, f.zoomURL+"/v2/im/chat/messages", bytes.NewReader(msg))
		req.Header.Set("Authorization", "Bearer "+benchToken)
		began := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if time.Since(began) < p.zoomLatency {
			t.Errorf("answered within %s, before the profile's latency", time.Since(began))
		}
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	for seq := range 2 {
		if resp, _ := send(seq); resp.StatusCode != http.StatusCreated {
			t.Fatalf("message %d: %d", seq, resp.StatusCode)
		}
	}
	resp, body := send(2)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("X-RateLimit-Type") != "QPS" || resp.Header.Get("X-RateLimit-Category") != "Medium" ||
		string(body) != `{"code":429,"message":"You have reached the maximum per-second rate limit for this API. Try again later."}` {
		t.Fatalf("over the limit: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if tr.replies[0].Load() != 1 || tr.replies[1].Load() != 1 || tr.replies[2].Load() != 0 || p.zoomSends.Load() != 3 || p.zoom429.Load() != 1 {
		t.Fatalf("replies %d %d %d, sends %d, 429s %d", tr.replies[0].Load(), tr.replies[1].Load(), tr.replies[2].Load(), p.zoomSends.Load(), p.zoom429.Load())
	}
}

func TestLognormalLatencyHasTheWantedPercentiles(t *testing.T) {
	draw := lognormalLatency(300*time.Millisecond, 3*time.Second, 8*time.Second)
	var d []time.Duration
	for range 50000 {
		d = append(d, draw())
	}
	d = sortedCopy(d)
	if p50 := percentile(d, 0.5); p50 < 285 || p50 > 315 {
		t.Errorf("p50 %.0f ms, want 300", p50)
	}
	if p99 := percentile(d, 0.99); p99 < 2700 || p99 > 3300 {
		t.Errorf("p99 %.0f ms, want 3000", p99)
	}
	if top := d[len(d)-1]; top > 8*time.Second {
		t.Errorf("max %s, over the ceiling", top)
	}
}
