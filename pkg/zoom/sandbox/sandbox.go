// Package sandbox is a stand-in for Zoom's OAuth and chat API that speaks
// their wire format: it issues chatbot tokens (client_credentials) to the
// configured app, accepts chat messages sent with them, keeps them, and prints
// each one. `make run` points geomux at it, so that the whole round trip can
// be tried without a Zoom account; tests use it as their fake Zoom.
//
// It enforces Zoom's per-account rate limits on chat messages, and answers
// over them as Zoom does (see RateLimit), so that geomux meets the 429s it
// will meet in production.
//
// It also serves an example regional backend (POST /example-backend) that
// implements geomux's backend contract.
package sandbox

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/geomux/geomux/pkg/httpx"
	"github.com/geomux/geomux/pkg/zoom"
)

// Config is the apps the sandbox knows: the main one (whose user OAuth
// the sandbox plays too) and others.
type Config struct {
	ClientID     string
	ClientSecret string
	BotJID       string
	// Apps are further chatbot apps: their chatbot tokens are issued and
	// their messages accepted as the main app's are.
	Apps []App
	// TokenLifetime is the expires_in of issued tokens; 1h like Zoom when 0.
	TokenLifetime time.Duration
	// RedirectURI is the app's OAuth redirect URI, where the sandbox's
	// "Marketplace" install (GET /marketplace/install) sends the browser.
	RedirectURI string
	// RateLimit limits the chat messages of each account; the zero value is
	// a Zoom Pro account's (20 a second). Tests that are not about rate
	// limits and send bursts set RateLimit.PerSecond to -1.
	RateLimit RateLimit
	// Chat configures the developer chat page (GET /chat); off without apps.
	Chat ChatConfig
	// Now is the sandbox's clock: for token expiry and for the rate limits'
	// windows (a test can pass a UTC midnight without waiting for it).
	// time.Now when nil.
	Now func() time.Time
}

// App is a chatbot app the sandbox knows.
type App struct {
	ClientID, ClientSecret, BotJID string
}

// Delivered is a chat message the sandbox accepted.
type Delivered struct {
	MessageID string
	Token     string
	// ClientID is the app whose chatbot token sent it.
	ClientID string
	Message  zoom.Message
	// Text is the text of the message's body items, joined by newlines.
	Text string
	At   time.Time
	// Edits is how many times it was edited (PUT); Deleted, whether it
	// was deleted (DELETE).
	Edits   int
	Deleted bool
}

// Sandbox is an http.Handler. The zero value is not usable: use New.
type Sandbox struct {
	cfg Config
	out io.Writer
	mux *http.ServeMux

	mu        sync.Mutex
	tokens    map[string]issued
	issued    int
	delivered []Delivered
	unfurls   []Unfurl
	said      []said
	oauth     oauthState
	// version counts changes to what the chat shows; changed is closed
	// (and replaced) at each.
	version uint64
	changed chan struct{}

	limits *limiter
}

// New returns a sandbox for the app cfg. Every message it accepts is printed
// to out, one line each, if out is not nil.
func New(cfg Config, out io.Writer) *Sandbox {
	if cfg.TokenLifetime == 0 {
		cfg.TokenLifetime = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sandbox{cfg: cfg, out: out, tokens: map[string]issued{}, mux: http.NewServeMux(), oauth: newOAuthState(),
		limits: newLimiter(cfg.RateLimit), changed: make(chan struct{})}
	s.mux.HandleFunc("POST /oauth/token", s.token)
	s.mux.HandleFunc("GET /oauth/authorize", s.authorizePage)
	s.mux.HandleFunc("POST /oauth/authorize", s.authorize)
	s.mux.HandleFunc("GET /marketplace/install", s.marketplaceInstall)
	s.mux.HandleFunc("GET /v2/users/me", s.usersMe)
	s.mux.HandleFunc("POST /v2/im/chat/messages", s.message)
	s.mux.HandleFunc("PUT /v2/im/chat/messages/{messageId}", s.edit)
	s.mux.HandleFunc("DELETE /v2/im/chat/messages/{messageId}", s.deleteMessage)
	s.mux.HandleFunc("POST /v2/im/chat/users/{userId}/unfurls/{triggerId}", s.unfurl)
	s.mux.HandleFunc("POST /example-backend", ExampleBackend)
	s.routeChat()
	return s
}

func (s *Sandbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		// No route: answer a 404 or 405 in Zoom's error shape, not
		// ServeMux's plain text, so that a client decoding Zoom's errors
		// reads it too.
		var c statusOnly
		h.ServeHTTP(&c, r)
		if c.code == http.StatusNotFound || c.code == http.StatusMethodNotAllowed {
			if allow := c.Header().Get("Allow"); allow != "" {
				w.Header().Set("Allow", allow)
			}
			httpx.WriteJSON(w, c.code, zoomError{c.code, http.StatusText(c.code)})
			return
		}
	}
	s.mux.ServeHTTP(w, r) // sets the route's path values
}

// statusOnly keeps the status and headers a handler answers, and drops its
// body.
type statusOnly struct {
	header http.Header
	code   int
}

func (c *statusOnly) Header() http.Header {
	if c.header == nil {
		c.header = http.Header{}
	}
	return c.header
}
func (c *statusOnly) WriteHeader(code int) { c.code = code }
func (c *statusOnly) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return len(b), nil
}

// Delivered returns the messages accepted so far.
func (s *Sandbox) Delivered() []Delivered {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivered(nil), s.delivered...)
}

// Limited is how many chat messages the sandbox refused (429) for being over
// an account's per-second (qps) or per-day (daily) limit. It prints nothing
// per refusal: a burst would flood the output.
func (s *Sandbox) Limited() (qps, daily int) { return s.limits.limited() }

// TokensIssued is how many tokens the sandbox has issued.
func (s *Sandbox) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// issued is a chatbot token: which app it is for, until when.
type issued struct {
	app     App
	expires time.Time
	token   string
}

// app is the app of the client credentials id and secret.
func (s *Sandbox) app(id, secret string) (App, bool) {
	for _, a := range append([]App{{s.cfg.ClientID, s.cfg.ClientSecret, s.cfg.BotJID}}, s.cfg.Apps...) {
		if a.ClientID == id && a.ClientSecret == secret {
			return a, true
		}
	}
	return App{}, false
}

func (s *Sandbox) token(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	app, known := s.app(id, secret)
	if !ok || !known {
		httpx.WriteJSON(w, http.StatusUnauthorized, map[string]string{"reason": "Invalid client_id or client_secret", "error": "invalid_client"})
		return
	}
	_ = r.ParseForm() // grant_type may come in the query or the form body
	switch gt := r.Form.Get("grant_type"); gt {
	case "client_credentials":
	case "authorization_code", "refresh_token":
		if id != s.cfg.ClientID {
			httpx.WriteJSON(w, http.StatusBadRequest, map[string]string{"reason": "Invalid client_id", "error": "invalid_client"})
			return
		}
		s.userToken(w, r)
		return
	default:
		httpx.WriteJSON(w, http.StatusBadRequest, map[string]string{"reason": "Unsupported grant type", "error": "unsupported_grant_type"})
		return
	}
	tok := "sandbox." + randomID()
	s.mu.Lock()
	s.tokens[tok] = issued{app: app, expires: s.cfg.Now().Add(s.cfg.TokenLifetime), token: tok}
	s.issued++
	s.mu.Unlock()
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"access_token": tok, "token_type": "bearer", "expires_in": int(s.cfg.TokenLifetime / time.Second),
		"scope": "imchat:bot", "api_url": "http://" + r.Host,
	})
}

type zoomError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (s *Sandbox) message(w http.ResponseWriter, r *http.Request) {
	iss, ok := s.caller(w, r)
	if !ok {
		return
	}
	now := s.cfg.Now()
	var m zoom.Message
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m); err != nil {
		httpx.WriteJSON(w, http.StatusBadRequest, zoomError{7001, "Invalid request body."})
		return
	}
	text, valid := cardText(m.Content)
	if !required(w, valid, field{"robot_jid", m.RobotJID}, field{"to_jid", m.ToJID}, field{"account_id", m.AccountID}, field{"user_jid", m.UserJID}) {
		return
	}
	if m.RobotJID != iss.app.BotJID {
		// A token is its app's: it sends as that app's bot only.
		httpx.WriteJSON(w, http.StatusNotFound, zoomError{7002, "Invalid robot_jid."})
		return
	}
	if refused, ok := s.limits.take(m.AccountID, now); !ok {
		writeRefusal(w, refused)
		return
	}
	d := Delivered{MessageID: messageID(), Token: iss.token, ClientID: iss.app.ClientID, Message: m, Text: text, At: now}
	s.mu.Lock()
	s.delivered = append(s.delivered, d)
	s.touch()
	// Under the lock: out may be a plain buffer (a test's), and concurrent
	// messages must not interleave their lines.
	if s.out != nil {
		fmt.Fprintf(s.out, "[zoom sandbox] message %s to %s (account %s): %s\n", d.MessageID, m.ToJID, m.AccountID, d.Text)
	}
	s.mu.Unlock()
	httpx.WriteJSON(w, http.StatusCreated, map[string]string{
		"message_id": d.MessageID, "robot_jid": m.RobotJID, "sent_time": d.At.UTC().Format("2006-01-02 15:04:05"),
		"to_jid": m.ToJID, "user_jid": m.UserJID,
	})
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// messageID looks like Zoom's: DWQ2A82E-9220-4600-AFB2-A028852E377C.
func messageID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]))
}
