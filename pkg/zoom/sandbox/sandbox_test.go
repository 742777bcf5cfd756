package sandbox_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
)

const (
	clientID     = "sb-client"
	clientSecret = "sb-secret"
	botJID       = "sb-bot@xmpp.zoom.us"
)

type env struct {
	sb  *sandbox.Sandbox
	srv *httptest.Server
	out *bytes.Buffer
}

func start(t *testing.T, lifetime time.Duration) *env {
	t.Helper()
	return startWith(t, sandbox.Config{TokenLifetime: lifetime})
}

// startWith serves a sandbox for cfg, whose main app is clientID's.
func startWith(t *testing.T, cfg sandbox.Config) *env {
	t.Helper()
	cfg.ClientID, cfg.ClientSecret, cfg.BotJID = clientID, clientSecret, botJID
	out := &bytes.Buffer{}
	sb := sandbox.New(cfg, out)
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	return &env{sb: sb, srv: srv, out: out}
}

func do(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("answer %d is not a JSON object: %s", resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, m
}

func (e *env) tokenRequest(t *testing.T, id, secret, query string) *http.Request {
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/oauth/token"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(id, secret)
	return req
}

func (e *env) token(t *testing.T) string {
	t.Helper()
	status, m := do(t, e.tokenRequest(t, clientID, clientSecret, "?grant_type=client_credentials"))
	if status != http.StatusOK {
		t.Fatalf("token: %d %v", status, m)
	}
	return m["access_token"].(string)
}

func (e *env) send(t *testing.T, bearer string, body any) (int, map[string]any) {
	t.Helper()
	var raw []byte
	switch b := body.(type) {
	case string:
		raw = []byte(b)
	default:
		raw, _ = json.Marshal(b)
	}
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v2/im/chat/messages", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", bearer)
	}
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

func validMessage() map[string]any {
	return map[string]any{
		"robot_jid":  botJID,
		"to_jid":     "user@xmpp.zoom.us",
		"account_id": "acct-1",
		"user_jid":   "user@xmpp.zoom.us",
		"content": map[string]any{
			"head": map[string]string{"text": "Hi"},
			"body": []map[string]string{{"type": "message", "text": "line one"}, {"type": "message", "text": "line two"}},
		},
	}
}

func code(m map[string]any) int {
	c, _ := m["code"].(float64)
	return int(c)
}

func TestToken(t *testing.T) {
	e := start(t, 0)
	for _, tc := range []struct {
		name, id, secret, query string
		want                    int
	}{
		{"wrong secret", clientID, "nope", "?grant_type=client_credentials", http.StatusUnauthorized},
		{"wrong id", "other", clientSecret, "?grant_type=client_credentials", http.StatusUnauthorized},
		{"no grant type", clientID, clientSecret, "", http.StatusBadRequest},
		{"other grant type", clientID, clientSecret, "?grant_type=authorization_code", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := do(t, e.tokenRequest(t, tc.id, tc.secret, tc.query))
			if status != tc.want {
				t.Errorf("status = %d (%v), want %d", status, m, tc.want)
			}
			if _, ok := m["access_token"]; ok {
				t.Error("a token was issued")
			}
		})
	}
	if got := e.sb.TokensIssued(); got != 0 {
		t.Fatalf("tokens issued after refusals = %d", got)
	}

	status, m := do(t, e.tokenRequest(t, clientID, clientSecret, "?grant_type=client_credentials"))
	if status != http.StatusOK {
		t.Fatalf("status = %d %v", status, m)
	}
	if tok, _ := m["access_token"].(string); m["token_type"] != "bearer" || m["expires_in"] != float64(3600) || !strings.HasPrefix(tok, "sandbox.") {
		t.Errorf("token answer = %v, want a bearer token for 3600 s (the default hour)", m)
	}
	// grant_type in a form body works too.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/oauth/token", strings.NewReader("grant_type=client_credentials"))
	req.SetBasicAuth(clientID, clientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if status, m := do(t, req); status != http.StatusOK || m["access_token"] == nil || m["access_token"] == "" {
		t.Errorf("form grant: %d %v", status, m)
	}
	if got := e.sb.TokensIssued(); got != 2 {
		t.Errorf("tokens issued = %d, want 2", got)
	}
}

func TestMessageAuth(t *testing.T) {
	e := start(t, 0)
	for _, tc := range []struct{ name, bearer string }{
		{"no authorization", ""},
		{"unknown bearer", "Bearer sandbox.made-up"},
		{"not bearer", "Basic " + "c2I6c2I="},
		{"token without scheme", e.token(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := e.send(t, tc.bearer, validMessage())
			if status != http.StatusUnauthorized || code(m) != 7010 {
				t.Errorf("answer = %d %v, want 401 code 7010", status, m)
			}
		})
	}
	if len(e.sb.Delivered()) != 0 {
		t.Error("a message was delivered without a valid token")
	}
}

func TestMessageExpiredToken(t *testing.T) {
	e := start(t, time.Nanosecond) // expired as soon as issued
	tok := e.token(t)
	status, m := e.send(t, "Bearer "+tok, validMessage())
	if status != http.StatusUnauthorized || code(m) != 7010 {
		t.Errorf("answer = %d %v, want 401 code 7010", status, m)
	}
}

func TestMessageValidation(t *testing.T) {
	e := start(t, 0)
	bearer := "Bearer " + e.token(t)
	without := func(field string) map[string]any {
		m := validMessage()
		delete(m, field)
		return m
	}
	for _, tc := range []struct {
		name    string
		body    any
		status  int
		code    int
		mention []string
	}{
		{"not JSON", "robot_jid=x", http.StatusBadRequest, 7001, nil},
		{"empty object", map[string]any{}, http.StatusBadRequest, 7001, []string{"robot_jid", "to_jid", "account_id", "user_jid", "content"}},
		{"no robot_jid", without("robot_jid"), http.StatusBadRequest, 7001, []string{"robot_jid"}},
		{"no to_jid", without("to_jid"), http.StatusBadRequest, 7001, []string{"to_jid"}},
		{"no account_id", without("account_id"), http.StatusBadRequest, 7001, []string{"account_id"}},
		{"no user_jid", without("user_jid"), http.StatusBadRequest, 7001, []string{"user_jid"}},
		{"no content", without("content"), http.StatusBadRequest, 7001, []string{"content"}},
		{"empty content", func() any { m := validMessage(); m["content"] = map[string]any{}; return m }(), http.StatusBadRequest, 7001, []string{"content"}},
		{"content not an object", func() any { m := validMessage(); m["content"] = "hello"; return m }(), http.StatusBadRequest, 7001, []string{"content"}},
		{"wrong robot_jid", func() any { m := validMessage(); m["robot_jid"] = "other@xmpp.zoom.us"; return m }(), http.StatusNotFound, 7002, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := e.send(t, bearer, tc.body)
			if status != tc.status || code(m) != tc.code {
				t.Fatalf("answer = %d %v, want %d code %d", status, m, tc.status, tc.code)
			}
			msg, _ := m["message"].(string)
			for _, f := range tc.mention {
				if !strings.Contains(msg, f) {
					t.Errorf("message %q does not name %s", msg, f)
				}
			}
		})
	}
	if len(e.sb.Delivered()) != 0 {
		t.Errorf("invalid messages were delivered: %+v", e.sb.Delivered())
	}
}

var messageIDRe = regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$`)

func TestMessageAccepted(t *testing.T) {
	e := start(t, 0)
	tok := e.token(t)
	status, m := e.send(t, "Bearer "+tok, validMessage())
	if status != http.StatusCreated {
		t.Fatalf("answer = %d %v, want 201", status, m)
	}
	id, _ := m["message_id"].(string)
	if !messageIDRe.MatchString(id) {
		t.Errorf("message_id %q does not look like Zoom's", id)
	}
	if m["robot_jid"] != botJID || m["to_jid"] != "user@xmpp.zoom.us" || m["sent_time"] == "" {
		t.Errorf("answer = %v", m)
	}
	d := e.sb.Delivered()
	if len(d) != 1 {
		t.Fatalf("delivered %d, want 1", len(d))
	}
	got := d[0]
	if got.MessageID != id || got.Token != tok || got.Text != "line one\nline two" || got.Message.AccountID != "acct-1" {
		t.Errorf("delivered = %+v", got)
	}
	if line := e.out.String(); !strings.Contains(line, id) || !strings.Contains(line, "line one") || strings.Count(line, "\n") < 1 {
		t.Errorf("printed %q, want a line naming the message", line)
	}

	// A head-only card is a message too; a second one gets its own id.
	head := validMessage()
	head["content"] = map[string]any{"head": map[string]string{"text": "title only"}}
	status, m2 := e.send(t, "Bearer "+tok, head)
	if status != http.StatusCreated || m2["message_id"] == id {
		t.Errorf("head-only message: %d %v", status, m2)
	}
	if len(e.sb.Delivered()) != 2 {
		t.Errorf("delivered %d, want 2", len(e.sb.Delivered()))
	}
}

func backendRequest(event string, payload []byte) proto.BackendRequest {
	return proto.BackendRequest{ID: "ev-1", Region: "eu", AccountID: "gVcjZnWWRLWvv_GtyGuaxg", Event: event, ReceivedAt: time.Now(), Payload: payload}
}

func callBackend(t *testing.T, h http.Handler, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/example-backend", bytes.NewReader(body)))
	return rec
}

func TestExampleBackend(t *testing.T) {
	e := start(t, 0)
	for name, h := range map[string]http.Handler{"func": http.HandlerFunc(sandbox.ExampleBackend), "sandbox route": e.sb} {
		t.Run(name, func(t *testing.T) {
			resp := backendAnswer(t, h, backendRequest(zoom.EventBotNotification, zoomtest.Event("bot_notification")))
			if len(resp.Messages) != 1 || len(resp.Edits)+len(resp.Deletes)+len(resp.Unfurls) != 0 {
				t.Fatalf("answer = %+v, want one message", resp)
			}
			m := resp.Messages[0]
			c := decodeCard(t, m.Content)
			if c.Head.Text != "Example backend (eu)" || len(c.Body) != 4 || c.Body[0].Text != "You said: *island*" {
				t.Errorf("content = %s", m.Content)
			}
			if types := []string{c.Body[0].Type, c.Body[1].Type, c.Body[2].Type, c.Body[3].Type}; strings.Join(types, ",") != "message,actions,select,fields" {
				t.Errorf("body items %v, want a message, buttons, a select and fields", types)
			}
			if m.IsMarkdownSupport == nil || !*m.IsMarkdownSupport {
				t.Error("the card's markdown is not marked is_markdown_support")
			}
			if m.ToJID != "" || m.UserJID != "" {
				t.Error("the example backend should leave to_jid/user_jid to default from the event")
			}
		})
	}

	// What the user does to the card edits it (the clicked card: no
	// message_id), or deletes it; a shared link gets a preview.
	edits := map[string]string{
		"interactive_message_actions":         "You chose *Add*.",
		"interactive_message_select":          "Priority set to *lions*.",
		"interactive_message_fields_editable": "Title is now _Software Engineer_.",
		"interactive_message_editable":        "Edited to: I am a message with editable text that has been edited",
	}
	for name, want := range edits {
		t.Run("edit on "+name, func(t *testing.T) {
			resp := backendAnswer(t, e.sb, backendRequest(name, zoomtest.Event(name)))
			if len(resp.Edits) != 1 || len(resp.Messages)+len(resp.Deletes)+len(resp.Unfurls) != 0 || resp.Edits[0].MessageID != "" {
				t.Fatalf("answer = %+v, want one edit of the clicked card", resp)
			}
			if c := decodeCard(t, resp.Edits[0].Content); len(c.Body) != 1 || c.Body[0].Text != want {
				t.Errorf("edited card = %s, want the text %q", resp.Edits[0].Content, want)
			}
		})
	}
	del := bytes.Replace(zoomtest.Event("interactive_message_actions"), []byte(`"value":"add"`), []byte(`"value":"delete"`), 1)
	if resp := backendAnswer(t, e.sb, backendRequest("interactive_message_actions", del)); len(resp.Deletes) != 1 || resp.Deletes[0].MessageID != "" || len(resp.Edits) != 0 {
		t.Errorf("Delete clicked: answer = %+v, want one delete of the clicked card", resp)
	}
	shared := []byte(`{"event":"team_chat.link_shared","event_ts":1,"response_url":"https://api.zoom.us/v2/im/chat/users/U1/unfurls/T1","payload":{"account_id":"a","operator_id":"U1","object":{"link":"https://example.com/doc","trigger_id":"T1","type":"to_contact"}}}`)
	if resp := backendAnswer(t, e.sb, backendRequest(zoom.EventLinkShared, shared)); len(resp.Unfurls) != 1 || resp.Unfurls[0].TriggerID != "" ||
		!strings.Contains(string(resp.Unfurls[0].Content), "https://example.com/doc") {
		t.Errorf("link shared: answer = %+v, want one preview of the link", resp)
	}

	noReply := map[string][]byte{}
	for _, name := range []string{"bot_installed", "app_deauthorized", "team_chat_app_mention", "endpoint_url_validation"} {
		ev, _ := zoom.ParseHead(zoomtest.Event(name))
		noReply[name], _ = json.Marshal(backendRequest(ev.Event, zoomtest.Event(name)))
	}
	noReply["bot_notification without text"], _ = json.Marshal(backendRequest(zoom.EventBotNotification, zoomtest.BotNotification("a", "", 1)))
	noReply["bot_notification payload not JSON"], _ = json.Marshal(map[string]any{"event": "bot_notification", "payload": "x"})
	noReply["select of nothing"], _ = json.Marshal(backendRequest("interactive_message_select", []byte(`{"event":"interactive_message_select","payload":{"selectedItems":[]}}`)))
	for name, body := range noReply {
		t.Run("no reply to "+name, func(t *testing.T) {
			if rec := callBackend(t, http.HandlerFunc(sandbox.ExampleBackend), body); rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
				t.Errorf("status = %d %q, want 204 and no body", rec.Code, rec.Body)
			}
		})
	}

	if rec := callBackend(t, http.HandlerFunc(sandbox.ExampleBackend), []byte("not json")); rec.Code != http.StatusBadRequest {
		t.Errorf("not JSON: status = %d, want 400", rec.Code)
	}
}

// backendAnswer is the example backend's 200 answer to req.
func backendAnswer(t *testing.T, h http.Handler, req proto.BackendRequest) proto.BackendResponse {
	t.Helper()
	body, _ := json.Marshal(req)
	rec := callBackend(t, h, body)
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: status = %d %s, want 200", req.Event, rec.Code, rec.Body)
	}
	var resp proto.BackendResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

type card struct {
	Head struct{ Text string } `json:"head"`
	Body []struct{ Type, Text string }
}

func decodeCard(t *testing.T, content json.RawMessage) card {
	t.Helper()
	var c card
	if err := json.Unmarshal(content, &c); err != nil {
		t.Fatalf("card %s: %v", content, err)
	}
	return c
}

// A path or method the sandbox does not serve is answered in Zoom's error
// shape, as a client decoding Zoom's errors expects.
func TestUnknownRoute(t *testing.T) {
	e := start(t, 0)
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/v2/no/such/api", http.StatusNotFound, ""},
		{http.MethodGet, "/v2/im/chat/messages", http.StatusMethodNotAllowed, "POST"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var m map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
				t.Fatalf("answer is not JSON: %v", err)
			}
			if resp.StatusCode != tc.status || code(m) != tc.status || m["message"] != http.StatusText(tc.status) {
				t.Errorf("answer = %d %v, want %d {code %d, message %q}", resp.StatusCode, m, tc.status, tc.status, http.StatusText(tc.status))
			}
			if got := resp.Header.Get("Allow"); !strings.Contains(got, tc.allow) || (tc.allow == "") != (got == "") {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
		})
	}
}
