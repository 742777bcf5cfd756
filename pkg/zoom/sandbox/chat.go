package sandbox

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/geomux/geomux/pkg/httpx"
	"github.com/geomux/geomux/proto"
)

// The developer chat (GET /chat): a web page where a bot developer plays a
// Zoom user. What the user types goes to geomux's ingress as a signed
// bot_notification, a click on a card's button or select as the matching
// interactive_message_* event, a link in a message as team_chat.link_shared,
// each built, signed and posted as Zoom would. The bot's replies are the
// messages this sandbox accepted on its chat API, shown as Zoom Team Chat
// shows a message card, with their edits, deletions and link previews.
//
// The page's JSON API (under /chat/api/) is for the page alone: it answers
// only same-origin JSON requests, so that another site open in the
// developer's browser cannot make the sandbox sign events.

// ChatConfig is what the developer chat needs. The chat is off (404) when
// it has no apps.
type ChatConfig struct {
	// Apps are the Zoom apps the developer can write to.
	Apps []ChatApp
	// Regions are the regions an account can be placed in.
	Regions []ChatRegion
	// AdminURL and AdminToken reach geomux's admin API, where the page reads
	// and sets an account's region as an operator would (PUT
	// /admin/v1/accounts/{id}). Without them the page only shows the region
	// of apps pinned to one.
	AdminURL, AdminToken string
}

// ChatApp is a Zoom app as the chat sends its events: to its Bot Endpoint
// URL, signed with its secret token.
type ChatApp struct {
	Name          string
	WebhookURL    string
	WebhookSecret string
	BotJID        string
	// Region is the app's pinned region, if any.
	Region string
}

// ChatRegion is a region the page offers.
type ChatRegion struct {
	Name, DisplayName string
}

//go:embed chat
var chatFiles embed.FS

// chatAPI is the part of the sandbox behind /chat.
type chatAPI struct {
	s      *Sandbox
	cfg    ChatConfig
	client *http.Client
}

func (s *Sandbox) routeChat() {
	c := &chatAPI{s: s, cfg: s.cfg.Chat, client: &http.Client{Timeout: 10 * time.Second}}
	static, _ := fs.Sub(chatFiles, "chat")
	s.mux.Handle("GET /chat/", c.enabled(pageHeaders(http.StripPrefix("/chat/", http.FileServerFS(static)))))
	s.mux.Handle("GET /chat", http.RedirectHandler("/chat/", http.StatusFound))
	s.mux.Handle("GET /chat/api/setup", c.enabled(c.pageOnly(c.setup)))
	s.mux.Handle("GET /chat/api/accounts/{account}", c.enabled(c.pageOnly(c.account)))
	s.mux.Handle("PUT /chat/api/accounts/{account}", c.enabled(c.pageOnly(c.place)))
	s.mux.Handle("POST /chat/api/say", c.enabled(c.pageOnly(c.say)))
	s.mux.Handle("POST /chat/api/act", c.enabled(c.pageOnly(c.act)))
	s.mux.Handle("GET /chat/api/conversation", c.enabled(c.pageOnly(c.conversation)))
}

// pageHeaders keeps the page to its own script and styles (a card's
// images may come from any https site) and out of other sites' frames.
func pageHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' https: data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

// enabled answers 404 (in Zoom's error shape) while the chat has no apps.
func (c *chatAPI) enabled(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(c.cfg.Apps) == 0 {
			httpx.WriteJSON(w, http.StatusNotFound, zoomError{http.StatusNotFound, "The developer chat is off: it needs a Zoom app with a webhook URL."})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// pageOnly refuses a request another site's page could make: a cross-site
// fetch (Sec-Fetch-Site, Origin) or, for a write, a body that is not JSON
// (which a plain HTML form can send without asking).
func (c *chatAPI) pageOnly(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		site := r.Header.Get("Sec-Fetch-Site")
		origin := r.Header.Get("Origin")
		crossSite := (site != "" && site != "same-origin" && site != "none") ||
			(origin != "" && origin != "http://"+r.Host && origin != "https://"+r.Host)
		notJSON := r.Method != http.MethodGet && !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json")
		if crossSite || notJSON {
			httpx.WriteJSON(w, http.StatusForbidden, chatError{"the chat API answers its own page only"})
			return
		}
		h(w, r)
	})
}

type chatError struct {
	Error string `json:"error"`
}

func (c *chatAPI) app(name string) (ChatApp, bool) {
	for _, a := range c.cfg.Apps {
		if a.Name == name {
			return a, true
		}
	}
	return ChatApp{}, false
}

// setup is what the page offers: apps, regions, and whether it can place
// accounts.
func (c *chatAPI) setup(w http.ResponseWriter, r *http.Request) {
	type app struct {
		Name   string `json:"name"`
		BotJID string `json:"bot_jid"`
		Region string `json:"region,omitempty"`
	}
	type region struct {
		Name        string `json:"name"`
		DisplayName string `json:"display_name"`
	}
	out := struct {
		Apps      []app    `json:"apps"`
		Regions   []region `json:"regions"`
		Directory bool     `json:"directory"`
	}{Apps: []app{}, Regions: []region{}, Directory: c.cfg.AdminURL != ""}
	for _, a := range c.cfg.Apps {
		out.Apps = append(out.Apps, app{a.Name, a.BotJID, a.Region})
	}
	for _, g := range c.cfg.Regions {
		out.Regions = append(out.Regions, region(g))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// accountRegion is an account's region as the page shows it.
type accountRegion struct {
	Account string `json:"account"`
	// Region is empty when the directory has none for the account.
	Region string `json:"region"`
}

// account reads the account's region from geomux's directory.
func (c *chatAPI) account(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("account")
	if !proto.ValidAccountID(id) {
		httpx.WriteJSON(w, http.StatusBadRequest, chatError{"an account id is letters, digits, '-', '_' or '='"})
		return
	}
	if c.cfg.AdminURL == "" {
		httpx.WriteJSON(w, http.StatusOK, accountRegion{Account: id})
		return
	}
	var rec proto.AccountRecord
	status, err := c.admin(r.Context(), http.MethodGet, id, nil, &rec)
	switch {
	case err != nil:
		httpx.WriteJSON(w, http.StatusBadGateway, chatError{err.Error()})
	case status == http.StatusNotFound:
		httpx.WriteJSON(w, http.StatusOK, accountRegion{Account: id})
	default:
		httpx.WriteJSON(w, http.StatusOK, accountRegion{Account: id, Region: rec.Region})
	}
}

// place sets the account's region in geomux's directory, as an operator
// does with the admin API.
func (c *chatAPI) place(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("account")
	var body struct {
		Region string `json:"region"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil || !proto.ValidAccountID(id) {
		httpx.WriteJSON(w, http.StatusBadRequest, chatError{`send {"region": "<name>"} for a valid account id`})
		return
	}
	if c.cfg.AdminURL == "" {
		httpx.WriteJSON(w, http.StatusConflict, chatError{"the sandbox has no admin API to set regions with"})
		return
	}
	req, _ := json.Marshal(map[string]string{"region": body.Region})
	var answer struct {
		proto.AccountRecord
		Error string `json:"error"`
	}
	status, err := c.admin(r.Context(), http.MethodPut, id, req, &answer)
	switch {
	case err != nil:
		httpx.WriteJSON(w, http.StatusBadGateway, chatError{err.Error()})
	case status != http.StatusOK:
		httpx.WriteJSON(w, status, chatError{"geomux's admin API answered: " + answer.Error})
	default:
		httpx.WriteJSON(w, http.StatusOK, accountRegion{Account: id, Region: answer.Region})
	}
}

// admin calls geomux's admin API on an account's record.
func (c *chatAPI) admin(ctx context.Context, method, account string, body []byte, out any) (int, error) {
	u := strings.TrimRight(c.cfg.AdminURL, "/") + "/admin/v1/accounts/" + account
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(string(body)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, errors.New("cannot reach geomux's admin API at " + c.cfg.AdminURL + " (is geomux running?)")
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(out)
	return resp.StatusCode, nil
}

// person is the Zoom user the developer plays.
type person struct {
	App     string `json:"app"`
	Account string `json:"account"`
	Name    string `json:"name"`
}

func (p person) check() string {
	switch {
	case !proto.ValidAccountID(p.Account):
		return "choose an account id (letters, digits, '-', '_', '=')"
	case strings.TrimSpace(p.Name) == "" || len(p.Name) > 100:
		return "choose a user name (1 to 100 characters)"
	}
	return ""
}

// user is the person's Zoom identity: a user id stable for the account and
// name, and its JID.
func (p person) user() zoomUser {
	id := "U" + stableID(p.Account+"\x00"+strings.TrimSpace(p.Name))
	return zoomUser{ID: id, JID: strings.ToLower(id) + "@xmpp.zoom.us", Name: strings.TrimSpace(p.Name)}
}

type zoomUser struct{ ID, JID, Name string }

// said is a message the developer wrote, kept to show it in the
// conversation with the links it shared.
type said struct {
	ID      string
	App     string
	Account string
	UserJID string
	Text    string
	At      time.Time
	// Delivery is what the ingress answered ("200 OK", or why not).
	Delivery string
	Links    []sharedLink
}

type sharedLink struct {
	URL, TriggerID, Delivery string
}

// say sends what the developer typed as a bot_notification, and each link
// in it as a team_chat.link_shared.
func (c *chatAPI) say(w http.ResponseWriter, r *http.Request) {
	var in struct {
		person
		Text string `json:"text"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&in); err != nil {
		httpx.WriteJSON(w, http.StatusBadRequest, chatError{"the body is not JSON"})
		return
	}
	app, ok := c.app(in.App)
	msg := in.person.check()
	switch {
	case !ok:
		msg = "no app " + in.App
	case msg == "" && (strings.TrimSpace(in.Text) == "" || len(in.Text) > 4096):
		msg = "type a message (1 to 4096 characters)"
	}
	if msg != "" {
		httpx.WriteJSON(w, http.StatusBadRequest, chatError{msg})
		return
	}
	u := in.user()
	now := c.s.cfg.Now()
	entry := said{ID: randomID(), App: app.Name, Account: in.Account, UserJID: u.JID, Text: in.Text, At: now}
	entry.Delivery = c.post(r.Context(), app, botNotification(app, in.Account, u, in.Text, now))
	for _, link := range links(in.Text) {
		trigger := randomID()
		ev := linkShared(app, in.Account, u, link, trigger, "http://"+r.Host, now)
		entry.Links = append(entry.Links, sharedLink{URL: link, TriggerID: trigger, Delivery: c.post(r.Context(), app, ev)})
	}
	c.s.mu.Lock()
	c.s.said = append(c.s.said, entry)
	c.s.touch()
	c.s.mu.Unlock()
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"id": entry.ID, "delivery": entry.Delivery})
}

// act sends a click on a bot's card: a button, an option of a select, an
// editable message or field.
func (c *chatAPI) act(w http.ResponseWriter, r *http.Request) {
	var in struct {
		person
		MessageID string `json:"message_id"`
		action
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&in); err != nil {
		httpx.WriteJSON(w, http.StatusBadRequest, chatError{"the body is not JSON"})
		return
	}
	app, ok := c.app(in.App)
	msg := in.person.check()
	if !ok {
		msg = "no app " + in.App
	}
	if msg == "" {
		msg = in.action.check()
	}
	if msg != "" {
		httpx.WriteJSON(w, http.StatusBadRequest, chatError{msg})
		return
	}
	c.s.mu.Lock()
	i := c.s.deliveredIndex(in.MessageID)
	var card json.RawMessage
	if i >= 0 && c.s.delivered[i].Message.AccountID == in.Account && c.s.delivered[i].Message.RobotJID == app.BotJID {
		card = c.s.delivered[i].Message.Content
	}
	c.s.mu.Unlock()
	if card == nil {
		httpx.WriteJSON(w, http.StatusNotFound, chatError{"no card " + in.MessageID + " of this app and account"})
		return
	}
	ev := interactive(app, in.Account, in.user(), in.MessageID, card, in.action, c.s.cfg.Now())
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"delivery": c.post(r.Context(), app, ev)})
}

// post sends a signed event to the app's Bot Endpoint URL and says what the
// ingress answered.
func (c *chatAPI) post(ctx context.Context, app ChatApp, body []byte) string {
	resp, err := c.client.Do(signedEvent(ctx, app, body, c.s.cfg.Now()))
	if err != nil {
		return "cannot reach geomux's ingress at " + app.WebhookURL + " (is geomux running?)"
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return resp.Status + ": " + strings.TrimSpace(string(answer))
	}
	return resp.Status
}

// conversation is the developer's chat with the bot: what they wrote and
// what the bot sent them, in order. With ?after=N it waits (up to 25 s) for
// something newer than version N.
func (c *chatAPI) conversation(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := person{App: q.Get("app"), Account: q.Get("account"), Name: q.Get("name")}
	app, ok := c.app(p.App)
	if msg := p.check(); msg != "" || !ok {
		if msg == "" {
			msg = "no app " + p.App
		}
		httpx.WriteJSON(w, http.StatusBadRequest, chatError{msg})
		return
	}
	if after := q.Get("after"); after != "" {
		wait, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		c.s.waitChange(wait, after)
		cancel()
	}
	httpx.WriteJSON(w, http.StatusOK, c.s.conversation(app, p.Account, p.user().JID))
}

// chatItem is one message of the conversation, as the page draws it.
type chatItem struct {
	// From is "user" or "bot".
	From string    `json:"from"`
	ID   string    `json:"id"`
	At   time.Time `json:"at"`
	// A user's message: its text, what the ingress answered, and the
	// previews of its links.
	Text     string       `json:"text,omitempty"`
	Delivery string       `json:"delivery,omitempty"`
	Links    []chatLink   `json:"links,omitempty"`
	Card     *chatCardOut `json:"card,omitempty"`
}

type chatLink struct {
	URL      string          `json:"url"`
	Delivery string          `json:"delivery"`
	Preview  json.RawMessage `json:"preview,omitempty"`
}

// chatCardOut is a bot's message: its card, and what happened to it.
type chatCardOut struct {
	Content  json.RawMessage `json:"content"`
	Markdown bool            `json:"markdown"`
	Edits    int             `json:"edits"`
	Deleted  bool            `json:"deleted"`
}

type chatConversation struct {
	Version string     `json:"version"`
	Items   []chatItem `json:"items"`
}

func (s *Sandbox) conversation(app ChatApp, account, userJID string) chatConversation {
	s.mu.Lock()
	defer s.mu.Unlock()
	previews := map[string]json.RawMessage{}
	for _, u := range s.unfurls {
		previews[u.TriggerID] = u.Content
	}
	out := chatConversation{Version: s.versionString(), Items: []chatItem{}}
	for _, e := range s.said {
		if e.App != app.Name || e.Account != account || e.UserJID != userJID {
			continue
		}
		it := chatItem{From: "user", ID: e.ID, At: e.At, Text: e.Text, Delivery: e.Delivery}
		for _, l := range e.Links {
			it.Links = append(it.Links, chatLink{URL: l.URL, Delivery: l.Delivery, Preview: previews[l.TriggerID]})
		}
		out.Items = append(out.Items, it)
	}
	for _, d := range s.delivered {
		to, _, _ := strings.Cut(d.Message.ToJID, "/")
		if d.Message.RobotJID != app.BotJID || d.Message.AccountID != account || (to != userJID && d.Message.UserJID != userJID) {
			continue
		}
		md := d.Message.IsMarkdownSupport != nil && *d.Message.IsMarkdownSupport
		out.Items = append(out.Items, chatItem{From: "bot", ID: d.MessageID, At: d.At,
			Card: &chatCardOut{Content: d.Message.Content, Markdown: md, Edits: d.Edits, Deleted: d.Deleted}})
	}
	slices.SortStableFunc(out.Items, func(a, b chatItem) int { return a.At.Compare(b.At) })
	return out
}
