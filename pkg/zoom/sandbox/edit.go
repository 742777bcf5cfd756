package sandbox

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/geomux/geomux/pkg/httpx"
)

// Editing, deleting and unfurling, as Zoom's chatbot API does them
// (PUT and DELETE /v2/im/chat/messages/{message_id}, POST
// /v2/im/chat/users/{userId}/unfurls/{triggerId}): the same paths, status
// codes and error bodies, on the messages this sandbox delivered.

// Unfurl is a link preview the sandbox accepted.
type Unfurl struct {
	UserID, TriggerID string
	// Content is the request body, as sent.
	Content json.RawMessage
}

// Unfurls are the link previews the sandbox accepted, in order.
func (s *Sandbox) Unfurls() []Unfurl {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Unfurl(nil), s.unfurls...)
}

// caller is the app whose chatbot token authorises r, or a 401 written.
func (s *Sandbox) caller(w http.ResponseWriter, r *http.Request) (issued, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	iss, known := s.tokens[tok]
	s.mu.Unlock()
	if !ok || !known || s.cfg.Now().After(iss.expires) {
		httpx.WriteJSON(w, http.StatusUnauthorized, zoomError{7010, "Invalid access token."})
		return issued{}, false
	}
	return iss, true
}

// delivered is the index of message id among the delivered messages, or -1.
// Call with s.mu held.
func (s *Sandbox) deliveredIndex(id string) int {
	for i := range s.delivered {
		if s.delivered[i].MessageID == id && !s.delivered[i].Deleted {
			return i
		}
	}
	return -1
}

func (s *Sandbox) edit(w http.ResponseWriter, r *http.Request) {
	iss, ok := s.caller(w, r)
	if !ok {
		return
	}
	var m struct {
		RobotJID  string          `json:"robot_jid"`
		AccountID string          `json:"account_id"`
		UserJID   string          `json:"user_jid"`
		Content   json.RawMessage `json:"content"`
		// IsMarkdownSupport, when sent, replaces the message's.
		IsMarkdownSupport *bool `json:"is_markdown_support"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m); err != nil {
		httpx.WriteJSON(w, http.StatusBadRequest, zoomError{7001, "Invalid request body."})
		return
	}
	text, valid := cardText(m.Content)
	if !required(w, valid, field{"robot_jid", m.RobotJID}, field{"account_id", m.AccountID}) {
		return
	}
	if m.RobotJID != iss.app.BotJID {
		httpx.WriteJSON(w, http.StatusNotFound, zoomError{7002, "Invalid robot_jid."})
		return
	}
	id := r.PathValue("messageId")
	s.mu.Lock()
	i := s.deliveredIndex(id)
	if i < 0 || s.delivered[i].Message.AccountID != m.AccountID {
		s.mu.Unlock()
		httpx.WriteJSON(w, http.StatusNotFound, zoomError{8001, "Invalid message_id."})
		return
	}
	d := &s.delivered[i]
	d.Message.Content, d.Text, d.Edits = m.Content, text, d.Edits+1
	if m.IsMarkdownSupport != nil {
		d.Message.IsMarkdownSupport = m.IsMarkdownSupport
	}
	s.touch()
	out := *d
	if s.out != nil {
		fmt.Fprintf(s.out, "[zoom sandbox] message %s edited (account %s): %s\n", id, m.AccountID, text)
	}
	s.mu.Unlock()
	httpx.WriteJSON(w, http.StatusOK, map[string]string{
		"message_id": id, "robot_jid": out.Message.RobotJID, "sent_time": s.cfg.Now().UTC().Format("2006-01-02 15:04:05"),
		"to_jid": out.Message.ToJID, "user_jid": out.Message.UserJID,
	})
}

func (s *Sandbox) deleteMessage(w http.ResponseWriter, r *http.Request) {
	iss, ok := s.caller(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	account, robot := q.Get("account_id"), q.Get("robot_jid")
	if account == "" || robot == "" {
		httpx.WriteJSON(w, http.StatusBadRequest, zoomError{7001, "Invalid request: account_id and robot_jid are required."})
		return
	}
	if robot != iss.app.BotJID {
		httpx.WriteJSON(w, http.StatusNotFound, zoomError{7002, "Invalid robot_jid."})
		return
	}
	id := r.PathValue("messageId")
	s.mu.Lock()
	i := s.deliveredIndex(id)
	if i < 0 || s.delivered[i].Message.AccountID != account {
		s.mu.Unlock()
		httpx.WriteJSON(w, http.StatusNotFound, zoomError{8001, "Invalid message_id."})
		return
	}
	s.delivered[i].Deleted = true
	s.touch()
	if s.out != nil {
		fmt.Fprintf(s.out, "[zoom sandbox] message %s deleted (account %s)\n", id, account)
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (s *Sandbox) unfurl(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.caller(w, r); !ok {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var v map[string]json.RawMessage
	if err != nil || json.Unmarshal(body, &v) != nil || len(v["content"]) == 0 {
		httpx.WriteJSON(w, http.StatusBadRequest, zoomError{7001, "Invalid request body: missing content"})
		return
	}
	u := Unfurl{UserID: r.PathValue("userId"), TriggerID: r.PathValue("triggerId"), Content: body}
	s.mu.Lock()
	s.unfurls = append(s.unfurls, u)
	s.touch()
	if s.out != nil {
		fmt.Fprintf(s.out, "[zoom sandbox] link unfurled for user %s (trigger %s)\n", u.UserID, u.TriggerID)
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// field is a required field of a request body: its name and value.
type field struct{ name, v string }

// required answers Zoom's 400 (code 7001) naming what a request body
// lacks: an empty field of fields, or its content unless contentOK; it
// reports whether the body has everything.
func required(w http.ResponseWriter, contentOK bool, fields ...field) bool {
	var missing []string
	for _, f := range fields {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if !contentOK {
		missing = append(missing, "content")
	}
	if len(missing) > 0 {
		httpx.WriteJSON(w, http.StatusBadRequest, zoomError{7001, "Invalid request body: missing " + strings.Join(missing, ", ")})
		return false
	}
	return true
}

// cardText is the text of a message card's message items, joined by
// newlines, and whether content is a card (a head or a body).
func cardText(content json.RawMessage) (string, bool) {
	var c struct {
		Head *json.RawMessage `json:"head"`
		Body []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"body"`
	}
	if len(content) == 0 || json.Unmarshal(content, &c) != nil || (c.Head == nil && len(c.Body) == 0) {
		return "", false
	}
	var texts []string
	for _, b := range c.Body {
		if b.Type == "message" && b.Text != "" {
			texts = append(texts, b.Text)
		}
	}
	return strings.Join(texts, "\n"), true
}
