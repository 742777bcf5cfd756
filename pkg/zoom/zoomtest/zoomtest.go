// Package zoomtest helps tests speak Zoom's webhook wire format: it holds
// example event bodies (from Zoom's documentation and field reports) and signs
// requests exactly as Zoom does.
package zoomtest

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/geomux/geomux/pkg/zoom"
)

//go:embed testdata/*.json
var events embed.FS

// Names of the example events.
var Names = []string{
	"app_deauthorized", "app_deauthorized_2", "bot_installed", "bot_notification",
	"endpoint_url_validation", "interactive_message_actions", "interactive_message_editable",
	"interactive_message_fields_editable", "interactive_message_select", "team_chat_app_mention",
}

// Event returns an example body, compacted as Zoom sends it.
func Event(name string) []byte {
	raw, err := events.ReadFile("testdata/" + name + ".json")
	if err != nil {
		panic(fmt.Sprintf("zoomtest: no example event %q", name))
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		panic(fmt.Sprintf("zoomtest: example %q is not JSON: %v", name, err))
	}
	return buf.Bytes()
}

// RawEvent returns the example event name byte for byte as it is written,
// whitespace and all, as Zoom may send it.
func RawEvent(name string) []byte {
	raw, err := events.ReadFile("testdata/" + name + ".json")
	if err != nil {
		panic(fmt.Sprintf("zoomtest: no example event %q", name))
	}
	return raw
}

// BotNotification returns a bot_notification body for account with the
// user's text; unique makes two calls differ, as two real events do.
func BotNotification(account, text string, unique int64) []byte {
	b, _ := json.Marshal(map[string]any{
		"event":    "bot_notification",
		"event_ts": 1700000000000 + unique,
		"payload": map[string]any{
			"accountId":   account,
			"channelName": "Test",
			"cmd":         text,
			"name":        "geomux",
			"robotJid":    "robot@xmpp.zoom.us",
			"timestamp":   1700000000000 + unique,
			"toJid":       "user-" + account + "@xmpp.zoom.us",
			"triggerId":   "t" + strconv.FormatInt(unique, 10),
			"userId":      "U" + account,
			"userJid":     "user-" + account + "@xmpp.zoom.us",
			"userName":    "Test User",
		},
	})
	return b
}

// NewRequest returns a webhook POST of body to url, signed with secret at
// time at, with the headers Zoom sends.
func NewRequest(url, secret string, body []byte, at time.Time) *http.Request {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	ts := strconv.FormatInt(at.Unix(), 10)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Zoom Marketplace/1.0a")
	req.Header.Set("X-Zm-Request-Timestamp", ts)
	req.Header.Set("X-Zm-Signature", zoom.Sign(secret, ts, body))
	req.Header.Set("X-Zm-Trackingid", "v=2.0;clid=us06;rid=test")
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	return req
}

// Post sends a signed webhook and returns the response status.
func Post(c *http.Client, url, secret string, body []byte) (int, error) {
	resp, err := c.Do(NewRequest(url, secret, body, time.Now()))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
