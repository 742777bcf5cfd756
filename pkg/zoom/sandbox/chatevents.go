package sandbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/geomux/geomux/pkg/zoom"
)

// The events the developer chat sends, shaped as Zoom's documentation
// shows them (Zoom's chatbot events reference; team_chat.link_shared as
// Zoom's Node SDK types it) for a user's 1:1 chat with the bot.

// botNotification is what the user typed to the bot.
func botNotification(app ChatApp, account string, u zoomUser, text string, now time.Time) []byte {
	return event(zoom.EventBotNotification, now, nil, map[string]any{
		"accountId":   account,
		"channelName": u.Name, // a 1:1 chat: the user's name
		"cmd":         text,
		"name":        app.Name,
		"robotJid":    app.BotJID,
		"timestamp":   now.UnixMilli(),
		"toJid":       u.JID, // a 1:1 chat: the user's JID
		"triggerId":   randomID(),
		"userId":      u.ID,
		"userJid":     u.JID,
		"userName":    u.Name,
	})
}

// linkShared is a link the user shared, which the app may unfurl through
// response_url.
func linkShared(app ChatApp, account string, u zoomUser, link, trigger, apiBase string, now time.Time) []byte {
	top := map[string]any{"response_url": apiBase + "/v2/im/chat/users/" + url.PathEscape(u.ID) + "/unfurls/" + url.PathEscape(trigger)}
	bot, _, _ := strings.Cut(app.BotJID, "@")
	return event(zoom.EventLinkShared, now, top, map[string]any{
		"account_id":         account,
		"by_external_user":   false,
		"operator":           strings.ToLower(u.ID) + "@example.com",
		"operator_id":        u.ID,
		"operator_member_id": u.ID,
		"object": map[string]any{
			"contact_id":        bot,
			"contact_member_id": bot,
			"date_time":         now.UTC().Format(time.RFC3339),
			"link":              link,
			"message_id":        messageID(),
			"timestamp":         now.UnixMilli(),
			"trigger_id":        trigger,
			"type":              "to_contact",
		},
	})
}

// action is what the user did to a card.
type action struct {
	// Kind is the interactive event: "actions" (a button), "select" (an
	// option), "editable" (an editable message), "fields_editable" (an
	// editable field).
	Kind string `json:"kind"`
	// Text and Value: the button clicked, the option chosen.
	Text  string `json:"text"`
	Value string `json:"value"`
	// Key, Origin and Target: the field edited (Key) or the message, from
	// what to what.
	Key    string `json:"key"`
	Origin string `json:"origin"`
	Target string `json:"target"`
}

func (a action) check() string {
	switch a.Kind {
	case "actions", "select":
		if a.Value == "" {
			return "a button or option needs its value"
		}
	case "editable", "fields_editable":
		if a.Kind == "fields_editable" && a.Key == "" {
			return "an edited field needs its key"
		}
	default:
		return "kind is one of actions, select, editable, fields_editable"
	}
	return ""
}

// interactive is the interactive_message_* event of a user's action on the
// bot's card messageID, whose content is card.
func interactive(app ChatApp, account string, u zoomUser, messageID string, card json.RawMessage, a action, now time.Time) []byte {
	p := map[string]any{
		"accountId":   account,
		"channelName": u.Name,
		"messageId":   messageID,
		"original":    card,
		"robotJid":    app.BotJID,
		"timestamp":   now.UnixMilli(),
		"toJid":       u.JID + "/robot_" + app.BotJID, // as in Zoom's 1:1 examples
		"userId":      u.ID,
		"userJid":     u.JID,
		"userName":    u.Name,
	}
	switch a.Kind {
	case "actions":
		p["actionItem"] = map[string]string{"text": a.Text, "value": a.Value}
	case "select":
		p["selectedItems"] = []map[string]string{{"value": a.Value}}
	case "editable":
		p["editItem"] = map[string]string{"origin": a.Origin, "target": a.Target}
	case "fields_editable":
		p["fieldEditItem"] = map[string]string{"currentValue": a.Origin, "key": a.Key, "newValue": a.Target}
	}
	return event("interactive_message_"+a.Kind, now, nil, p)
}

// event is a Zoom event body: event, event_ts, top-level extras, payload.
func event(name string, now time.Time, top map[string]any, payload map[string]any) []byte {
	ev := map[string]any{"event": name, "event_ts": now.UnixMilli(), "payload": payload}
	for k, v := range top {
		ev[k] = v
	}
	b, _ := json.Marshal(ev) // maps of strings, numbers and raw JSON
	return b
}

// signedEvent is a POST of body to the app's Bot Endpoint URL with the
// headers Zoom sends, signed with the app's secret token.
func signedEvent(ctx context.Context, app ChatApp, body []byte, now time.Time) *http.Request {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, app.WebhookURL, bytes.NewReader(body))
	if err != nil { // the URL is checked with the configuration
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, "http://invalid.invalid/", bytes.NewReader(body))
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Zoom Marketplace/1.0a (geomux sandbox chat)")
	req.Header.Set(zoom.HeaderTimestamp, ts)
	req.Header.Set(zoom.HeaderSignature, zoom.Sign(app.WebhookSecret, ts, body))
	req.Header.Set("X-Zm-Trackingid", "v=2.0;clid=sandbox;rid="+randomID())
	return req
}

var linkPattern = regexp.MustCompile(`https?://[^\s<>"]+`)

// links are the http(s) links in text, each once (the first five: a
// developer's message, not a crawl).
func links(text string) []string {
	var out []string
	for _, l := range linkPattern.FindAllString(text, -1) {
		l = strings.TrimRight(l, ".,;:!?)")
		if _, err := url.ParseRequestURI(l); err == nil && !slices.Contains(out, l) && len(out) < 5 {
			out = append(out, l)
		}
	}
	return out
}

// stableID is a Zoom-like id (22 characters) derived from s.
func stableID(s string) string {
	sum := sha256.Sum256([]byte(s))
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])[:21])
}
