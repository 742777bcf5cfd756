// Package sandbox is a stand-in for Zoom's OAuth and chat API that speaks
// their wire format: it issues chatbot tokens (client_credentials) to the
// configured app, accepts chat messages sent with them, keeps them, and prints
// each one. `make run` points geomux at it, so that the whole round trip can
// be tried without a Zoom account; tests use it as their fake Zoom.
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
	"github.com/geomux/geomux/proto"
)

// Config is the app the sandbox knows.
type Config struct {
	ClientID     string
	ClientSecret string
	BotJID       string
	// TokenLifetime is the expires_in of issued tokens; 1h like Zoom when 0.
	TokenLifetime time.Duration
	// RedirectURI is the app's OAuth redirect URI, where the sandbox's
	// "Marketplace" install (GET /marketplace/install) sends the browser.
	RedirectURI string
}

// Delivered is a chat message the sandbox accepted.
type Delivered struct {
	MessageID string
	Token     string
	Message   zoom.Message
	// Text is the text of the message's body items, joined by newlines.
	Text string
	At   time.Time
}

// Sandbox is an http.Handler. The zero value is not usable: use New.
type Sandbox struct {
	cfg Config
	out io.Writer
	mux *http.ServeMux

	mu        sync.Mutex
	tokens    map[string]time.Time
	issued    int
	delivered []Delivered
	oauth     oauthState
}

// New returns a sandbox for the app cfg. Every message it accepts is printed
// to out, one line each, if out is not nil.
func New(cfg Config, out io.Writer) *Sandbox {
	if cfg.TokenLifetime == 0 {
		cfg.TokenLifetime = time.Hour
	}
	s := &Sandbox{cfg: cfg, out: out, tokens: map[string]time.Time{}, mux: http.NewServeMux(), oauth: newOAuthState()}
	s.mux.HandleFunc("POST /oauth/token", s.token)
	s.mux.HandleFunc("GET /oauth/authorize", s.authorizePage)
	s.mux.HandleFunc("POST /oauth/authorize", s.authorize)
	s.mux.HandleFunc("GET /marketplace/install", s.marketplaceInstall)
	s.mux.HandleFunc("GET /v2/users/me", s.usersMe)
	s.mux.HandleFunc("POST /v2/im/chat/messages", s.message)
	s.mux.HandleFunc("POST /example-backend", ExampleBackend)
	return s
}

func (s *Sandbox) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Delivered returns the messages accepted so far.
func (s *Sandbox) Delivered() []Delivered {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivered(nil), s.delivered...)
}

// TokensIssued is how many tokens the sandbox has issued.
func (s *Sandbox) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

func (s *Sandbox) token(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok || id != s.cfg.ClientID || secret != s.cfg.ClientSecret {
		httpx.WriteJSON(w, http.StatusUnauthorized, map[string]string{"reason": "Invalid client_id or client_secret", "error": "invalid_client"})
		return
	}
	_ = r.ParseForm() // grant_type may come in the query or the form body
	switch gt := r.Form.Get("grant_type"); gt {
	case "client_credentials":
	case "authorization_code", "refresh_token":
		s.userToken(w, r)
		return
	default:
		httpx.WriteJSON(w, http.StatusBadRequest, map[string]string{"reason": "Unsupported grant type", "error": "unsupported_grant_type"})
		return
	}
	tok := "sandbox." + randomID()
	s.mu.Lock()
	s.tokens[tok] = time.Now().Add(s.cfg.TokenLifetime)
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
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	exp, known := s.tokens[tok]
	s.mu.Unlock()
	if !ok || !known || time.Now().After(exp) {
		httpx.WriteJSON(w, http.StatusUnauthorized, zoomError{7010, "Invalid access token."})
		return
	}
	var m zoom.Message
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m); err != nil {
		httpx.WriteJSON(w, http.StatusBadRequest, zoomError{7001, "Invalid request body."})
		return
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"robot_jid", m.RobotJID}, {"to_jid", m.ToJID}, {"account_id", m.AccountID}, {"user_jid", m.UserJID}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	var content struct {
		Head *json.RawMessage `json:"head"`
		Body []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"body"`
	}
	if len(m.Content) == 0 || json.Unmarshal(m.Content, &content) != nil || (content.Head == nil && len(content.Body) == 0) {
		missing = append(missing, "content")
	}
	if len(missing) > 0 {
		httpx.WriteJSON(w, http.StatusBadRequest, zoomError{7001, "Invalid request body: missing " + strings.Join(missing, ", ")})
		return
	}
	if m.RobotJID != s.cfg.BotJID {
		httpx.WriteJSON(w, http.StatusNotFound, zoomError{7002, "Invalid robot_jid."})
		return
	}
	var texts []string
	for _, b := range content.Body {
		if b.Text != "" {
			texts = append(texts, b.Text)
		}
	}
	d := Delivered{MessageID: messageID(), Token: tok, Message: m, Text: strings.Join(texts, "\n"), At: time.Now()}
	s.mu.Lock()
	s.delivered = append(s.delivered, d)
	s.mu.Unlock()
	if s.out != nil {
		fmt.Fprintf(s.out, "[zoom sandbox] message %s to %s (account %s): %s\n", d.MessageID, m.ToJID, m.AccountID, d.Text)
	}
	httpx.WriteJSON(w, http.StatusCreated, map[string]string{
		"message_id": d.MessageID, "robot_jid": m.RobotJID, "sent_time": d.At.UTC().Format("2006-01-02 15:04:05"),
		"to_jid": m.ToJID, "user_jid": m.UserJID,
	})
}

// ExampleBackend is a regional backend implementing geomux's backend
// contract: it answers a bot_notification with the user's text and the region
// that handled it, and any other event with no reply (204).
func ExampleBackend(w http.ResponseWriter, r *http.Request) {
	var req proto.BackendRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 2<<20)).Decode(&req); err != nil {
		http.Error(w, "body is not a geomux backend request", http.StatusBadRequest)
		return
	}
	chat, err := zoom.ParseChat(req.Payload)
	if err != nil || req.Event != zoom.EventBotNotification || chat.Text == "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	content, _ := json.Marshal(map[string]any{
		"head": map[string]string{"text": "Example backend (" + req.Region + ")"},
		"body": []map[string]string{{"type": "message", "text": "You said: " + chat.Text}},
	})
	httpx.WriteJSON(w, http.StatusOK, proto.BackendResponse{Messages: []proto.ChatMessage{{Content: content}}})
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
