package sandbox_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
)

const (
	chatSecret = "chat-webhook-secret"
	chatAdmin  = "chat-admin-token"
)

// ingressRecorder is a Bot Endpoint URL that verifies each event as
// geomux's ingress does, and keeps it.
type ingressRecorder struct {
	mu     sync.Mutex
	events [][]byte
	srv    *httptest.Server
}

func newIngressRecorder(t *testing.T) *ingressRecorder {
	t.Helper()
	r := &ingressRecorder{}
	v := zoom.NewVerifier([]string{chatSecret}, time.Minute)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if _, err := v.Verify(req.Header.Get(zoom.HeaderSignature), req.Header.Get(zoom.HeaderTimestamp), body); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		r.mu.Lock()
		r.events = append(r.events, body)
		r.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *ingressRecorder) got() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.events...)
}

// adminRecorder is geomux's admin API for accounts' regions.
func adminRecorder(t *testing.T) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	regions := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+chatAdmin {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id := strings.TrimPrefix(r.URL.Path, "/admin/v1/accounts/")
		mu.Lock()
		defer mu.Unlock()
		switch r.Method {
		case http.MethodPut:
			var b struct{ Region string }
			_ = json.NewDecoder(r.Body).Decode(&b)
			if b.Region != "eu" && b.Region != "us" {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, `{"error":"region \"`+b.Region+`\" is not configured"}`)
				return
			}
			regions[id] = b.Region
		case http.MethodGet:
			if regions[id] == "" {
				w.WriteHeader(http.StatusNotFound)
				_, _ = io.WriteString(w, `{"error":"no region"}`)
				return
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"account_id": id, "region": regions[id]})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func startChat(t *testing.T) (*env, *ingressRecorder) {
	t.Helper()
	in := newIngressRecorder(t)
	adm := adminRecorder(t)
	e := startWith(t, sandbox.Config{Chat: sandbox.ChatConfig{
		Apps:     []sandbox.ChatApp{{Name: "default", WebhookURL: in.srv.URL + "/zoom/webhook", WebhookSecret: chatSecret, BotJID: botJID}},
		Regions:  []sandbox.ChatRegion{{Name: "eu", DisplayName: "European Union"}, {Name: "us", DisplayName: "United States"}},
		AdminURL: adm.URL, AdminToken: chatAdmin,
	}})
	return e, in
}

// chatCall is the page's own request: JSON, same origin.
func (e *env) chatCall(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader = http.NoBody
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, e.srv.URL+"/chat/api/"+path, rd)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return do(t, req)
}

var ada = map[string]any{"app": "default", "account": "acct-chat", "name": "Ada Lovelace"}

func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// What the developer types reaches the Bot Endpoint URL as Zoom sends it:
// a signed bot_notification of the account, and a team_chat.link_shared
// for each link, whose response_url addresses the preview.
func TestChatSaySendsSignedEvents(t *testing.T) {
	e, in := startChat(t)
	status, m := e.chatCall(t, http.MethodPost, "say", with(ada, "text", "read https://example.com/a and https://example.com/b."))
	if status != http.StatusOK || m["delivery"] != "200 OK" {
		t.Fatalf("say: %d %v", status, m)
	}
	evs := in.got()
	if len(evs) != 3 {
		t.Fatalf("the ingress got %d events, want a bot_notification and two link_shared", len(evs))
	}
	h, err := zoom.ParseHead(evs[0])
	chat, _ := zoom.ParseChat(evs[0])
	if err != nil || h.Event != zoom.EventBotNotification || h.AccountID != "acct-chat" || chat.Text != "read https://example.com/a and https://example.com/b." {
		t.Errorf("bot_notification: %+v %v %+v", h, err, chat)
	}
	if chat.ToJID != chat.UserJID || !strings.HasSuffix(chat.UserJID, "@xmpp.zoom.us") || chat.UserJID != strings.ToLower(chat.UserJID) {
		t.Errorf("a 1:1 chat's toJid is the user's JID: to %q, user %q", chat.ToJID, chat.UserJID)
	}
	for i, link := range []string{"https://example.com/a", "https://example.com/b"} {
		h, _ := zoom.ParseHead(evs[1+i])
		c, _ := zoom.ParseChat(evs[1+i])
		if h.Event != zoom.EventLinkShared || h.AccountID != "acct-chat" || c.UnfurlUserID == "" || c.UnfurlTriggerID == "" ||
			!bytes.Contains(evs[1+i], []byte(`"link":"`+link+`"`)) {
			t.Errorf("link_shared %d: %+v %+v %s", i, h, c, evs[1+i])
		}
		if to, _ := c.ReplyTo(botJID); to != chat.UserJID {
			t.Errorf("a reply to the link's event goes to %q, not to the user's chat %q", to, chat.UserJID)
		}
	}

	for name, body := range map[string]map[string]any{
		"no text":       with(ada, "text", "  "),
		"no account":    with(ada, "account", "", "text", "x"),
		"bad account":   with(ada, "account", "a b", "text", "x"),
		"no user":       with(ada, "name", "", "text", "x"),
		"unknown app":   with(ada, "app", "nope", "text", "x"),
		"too long text": with(ada, "text", strings.Repeat("x", 4097)),
	} {
		if status, m := e.chatCall(t, http.MethodPost, "say", body); status != http.StatusBadRequest || m["error"] == "" {
			t.Errorf("%s: %d %v, want 400 with an error", name, status, m)
		}
	}
	if n := len(in.got()); n != 3 {
		t.Errorf("refused messages sent %d events", n-3)
	}
}

// The conversation holds what the developer wrote and the bot's messages
// to them, with their edits, deletion and link previews; a waiting page
// is woken by a change.
func TestChatConversation(t *testing.T) {
	e, in := startChat(t)
	e.chatCall(t, http.MethodPost, "say", with(ada, "text", "see https://example.com/doc"))
	evs := in.got()
	chat, _ := zoom.ParseChat(evs[0])
	link, _ := zoom.ParseChat(evs[1])

	conv := func(query string) map[string]any {
		q := url.Values{"app": {"default"}, "account": {"acct-chat"}, "name": {"Ada Lovelace"}}
		extra, _ := url.ParseQuery(query)
		for k, v := range extra {
			q[k] = v
		}
		status, m := e.chatCall(t, http.MethodGet, "conversation?"+q.Encode(), nil)
		if status != http.StatusOK {
			t.Fatalf("conversation: %d %v", status, m)
		}
		return m
	}
	first := conv("")
	if items := first["items"].([]any); len(items) != 1 || items[0].(map[string]any)["from"] != "user" {
		t.Fatalf("conversation = %v, want the user's message", first)
	}

	// The bot answers in the user's chat, as a worker would; the waiting
	// page gets it.
	woke := make(chan map[string]any, 1)
	go func() { // not conv: a goroutine must not call t.Fatal
		var m map[string]any
		resp, err := http.Get(e.srv.URL + "/chat/api/conversation?app=default&account=acct-chat&name=Ada+Lovelace&after=" + first["version"].(string))
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
		}
		woke <- m
	}()
	bearer := "Bearer " + e.token(t)
	card := map[string]any{"head": map[string]string{"text": "Hi"}, "body": []map[string]string{{"type": "message", "text": "*bold*"}}}
	status, sent := e.send(t, bearer, map[string]any{"robot_jid": botJID, "account_id": "acct-chat", "to_jid": chat.ToJID, "user_jid": chat.UserJID,
		"content": card, "is_markdown_support": true})
	if status != http.StatusCreated {
		t.Fatalf("send: %d %v", status, sent)
	}
	got := <-woke
	if items, _ := got["items"].([]any); got["version"] == first["version"] || len(items) != 2 {
		t.Fatalf("the waiting page got %v, want the bot's message", got)
	}
	// Someone else's chat is not shown.
	e.send(t, bearer, map[string]any{"robot_jid": botJID, "account_id": "acct-chat", "to_jid": "other@xmpp.zoom.us", "user_jid": "other@xmpp.zoom.us", "content": card})

	id := sent["message_id"].(string)
	e.call(t, http.MethodPut, "/v2/im/chat/messages/"+id, bearer, map[string]any{"robot_jid": botJID, "account_id": "acct-chat", "content": card})
	e.call(t, http.MethodPost, "/v2/im/chat/users/"+link.UnfurlUserID+"/unfurls/"+link.UnfurlTriggerID, bearer,
		map[string]any{"content": map[string]any{"head": map[string]string{"text": "Preview"}}})
	items := conv("")["items"].([]any)
	if len(items) != 2 {
		t.Fatalf("items = %v, want the user's message and the bot's", items)
	}
	user, bot := items[0].(map[string]any), items[1].(map[string]any)
	preview, _ := json.Marshal(user["links"].([]any)[0].(map[string]any)["preview"])
	if !strings.Contains(string(preview), "Preview") || user["delivery"] != "200 OK" {
		t.Errorf("user's message = %v, want its delivery and the link's preview", user)
	}
	c := bot["card"].(map[string]any)
	if bot["id"] != id || c["edits"] != 1.0 || c["markdown"] != true || c["deleted"] != false {
		t.Errorf("bot's message = %v, want edited once, markdown", bot)
	}
	e.call(t, http.MethodDelete, "/v2/im/chat/messages/"+id+"?account_id=acct-chat&robot_jid="+url.QueryEscape(botJID), bearer, nil)
	if c := conv("")["items"].([]any)[1].(map[string]any)["card"].(map[string]any); c["deleted"] != true {
		t.Errorf("after the delete: %v", c)
	}
	// Another user of the account has a chat of their own.
	if items := conv("name=Grace+Hopper")["items"].([]any); len(items) != 0 {
		t.Errorf("another user's conversation = %v, want empty", items)
	}
}

// A click on a card is the matching interactive_message_* event, with the
// card as Zoom echoes it (original) and its message id.
func TestChatActSendsInteractiveEvents(t *testing.T) {
	e, in := startChat(t)
	e.chatCall(t, http.MethodPost, "say", with(ada, "text", "hi"))
	chat, _ := zoom.ParseChat(in.got()[0])
	card := `{"head":{"text":"Pick"},"body":[{"type":"actions","items":[{"text":"Go","value":"go"}]}]}`
	_, sent := e.send(t, "Bearer "+e.token(t), `{"robot_jid":"`+botJID+`","account_id":"acct-chat","to_jid":"`+chat.ToJID+`","user_jid":"`+chat.UserJID+`","content":`+card+`}`)
	id := sent["message_id"].(string)

	for _, tc := range []struct {
		action map[string]any
		event  string
		want   string
	}{
		{map[string]any{"kind": "actions", "text": "Go", "value": "go"}, "interactive_message_actions", `"actionItem":{"text":"Go","value":"go"}`},
		{map[string]any{"kind": "select", "text": "High", "value": "high"}, "interactive_message_select", `"selectedItems":[{"value":"high"}]`},
		{map[string]any{"kind": "editable", "origin": "a", "target": "b"}, "interactive_message_editable", `"editItem":{"origin":"a","target":"b"}`},
		{map[string]any{"kind": "fields_editable", "key": "Title", "origin": " ", "target": "CTO"}, "interactive_message_fields_editable", `"fieldEditItem":{"currentValue":" ","key":"Title","newValue":"CTO"}`},
	} {
		before := len(in.got())
		status, m := e.chatCall(t, http.MethodPost, "act", with(with(ada, "message_id", id), flatten(tc.action)...))
		if status != http.StatusOK || m["delivery"] != "200 OK" || len(in.got()) != before+1 {
			t.Fatalf("%s: %d %v", tc.event, status, m)
		}
		ev := in.got()[before]
		h, _ := zoom.ParseHead(ev)
		c, _ := zoom.ParseChat(ev)
		if h.Event != tc.event || h.AccountID != "acct-chat" || c.MessageID != id || !bytes.Contains(ev, []byte(tc.want)) ||
			!bytes.Contains(ev, []byte(`"original":`+card)) || c.ToJID != chat.UserJID+"/robot_"+botJID {
			t.Errorf("%s: event %s", tc.event, ev)
		}
	}
	for name, tc := range map[string]struct {
		body   map[string]any
		status int
	}{
		"no such card":           {with(ada, "message_id", "NOPE", "kind", "actions", "value", "go"), http.StatusNotFound},
		"another account's card": {with(ada, "account", "acct-other", "message_id", id, "kind", "actions", "value", "go"), http.StatusNotFound},
		"unknown kind":           {with(ada, "message_id", id, "kind", "swipe"), http.StatusBadRequest},
		"button without a value": {with(ada, "message_id", id, "kind", "actions"), http.StatusBadRequest},
	} {
		if status, m := e.chatCall(t, http.MethodPost, "act", tc.body); status != tc.status || m["error"] == "" {
			t.Errorf("%s: %d %v, want %d", name, status, m, tc.status)
		}
	}
}

func flatten(m map[string]any) []any {
	var out []any
	for k, v := range m {
		out = append(out, k, v)
	}
	return out
}

// The page reads and sets an account's region through geomux's admin
// API, with its token, and says what geomux answered.
func TestChatPlacesAccounts(t *testing.T) {
	e, _ := startChat(t)
	if status, m := e.chatCall(t, http.MethodGet, "accounts/acct-chat", nil); status != http.StatusOK || m["region"] != "" {
		t.Errorf("unplaced account: %d %v", status, m)
	}
	if status, m := e.chatCall(t, http.MethodPut, "accounts/acct-chat", map[string]string{"region": "eu"}); status != http.StatusOK || m["region"] != "eu" {
		t.Errorf("place: %d %v", status, m)
	}
	if status, m := e.chatCall(t, http.MethodGet, "accounts/acct-chat", nil); status != http.StatusOK || m["region"] != "eu" {
		t.Errorf("placed account: %d %v", status, m)
	}
	if status, m := e.chatCall(t, http.MethodPut, "accounts/acct-chat", map[string]string{"region": "mars"}); status != http.StatusBadRequest ||
		!strings.Contains(m["error"].(string), `region "mars" is not configured`) {
		t.Errorf("unknown region: %d %v, want geomux's 400 passed on", status, m)
	}
	status, m := e.chatCall(t, http.MethodGet, "setup", nil)
	if status != http.StatusOK || m["directory"] != true || len(m["apps"].([]any)) != 1 || len(m["regions"].([]any)) != 2 {
		t.Errorf("setup: %d %v", status, m)
	}
}

// Another site open in the developer's browser cannot use the chat's API
// to have events signed: cross-site requests and non-JSON writes are
// refused.
func TestChatAnswersItsPageOnly(t *testing.T) {
	e, in := startChat(t)
	body := `{"app":"default","account":"acct-chat","name":"Eve","text":"hi"}`
	for name, set := range map[string]func(*http.Request){
		"cross-site fetch":   func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") },
		"another origin":     func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") },
		"a form post":        func(r *http.Request) { r.Header.Set("Content-Type", "application/x-www-form-urlencoded") },
		"a text/plain fetch": func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") },
	} {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/chat/api/say", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		set(req)
		if status, _ := do(t, req); status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, status)
		}
	}
	if n := len(in.got()); n != 0 {
		t.Errorf("refused requests sent %d events", n)
	}
	// The page itself is served with a policy that keeps it to its own
	// script.
	resp, err := http.Get(e.srv.URL + "/chat/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(page, []byte(`<script src="chat.js"`)) ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("GET /chat/: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
}

// Without an app to write to, the chat is off, answered in Zoom's error
// shape.
func TestChatOffWithoutApps(t *testing.T) {
	e := start(t, 0)
	for _, path := range []string{"/chat/", "/chat/api/setup"} {
		status, m := e.call(t, http.MethodGet, path, "", nil)
		if status != http.StatusNotFound || !strings.Contains(m["message"].(string), "developer chat is off") {
			t.Errorf("GET %s: %d %v", path, status, m)
		}
	}
}
