package main

import (
	"bytes"
	"context"
	"encoding/json"
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
