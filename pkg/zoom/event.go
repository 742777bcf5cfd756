package zoom

import (
	"encoding/json"
	"errors"
)

// EventURLValidation is Zoom's endpoint URL validation challenge.
const EventURLValidation = "endpoint.url_validation"

// EventBotNotification is sent when a user writes to the chatbot.
const EventBotNotification = "bot_notification"

// EventAppDeauthorized is sent when an account uninstalls the app.
const EventAppDeauthorized = "app_deauthorized"

// Parse failures. Each is answered 400.
var (
	ErrNotJSON = errors.New("zoom: body is not a JSON object")
	ErrNoEvent = errors.New("zoom: body has no \"event\"")
)

// Head is what geomux reads of every webhook body to route it.
type Head struct {
	// Event is Zoom's event name.
	Event string
	// AccountID is payload.accountId (chatbot events) or payload.account_id
	// (team_chat.* and app_deauthorized).
	AccountID string
	// PlainToken is payload.plainToken of endpoint.url_validation.
	PlainToken string
}

type rawHead struct {
	Event   string `json:"event"`
	Payload *struct {
		AccountID      string `json:"accountId"`
		AccountIDSnake string `json:"account_id"`
		PlainToken     string `json:"plainToken"`
	} `json:"payload"`
}

// ParseHead reads the routing fields of a webhook body.
func ParseHead(body []byte) (Head, error) {
	var r rawHead
	if err := json.Unmarshal(body, &r); err != nil {
		return Head{}, ErrNotJSON
	}
	if r.Event == "" {
		return Head{}, ErrNoEvent
	}
	h := Head{Event: r.Event}
	if r.Payload != nil {
		h.AccountID = r.Payload.AccountID
		if h.AccountID == "" {
			h.AccountID = r.Payload.AccountIDSnake
		}
		h.PlainToken = r.Payload.PlainToken
	}
	return h, nil
}

// Chat is what a reply to an event needs from it: whom to answer and what the
// user wrote.
type Chat struct {
	// ToJID is the user or channel the event came from (payload.toJid).
	ToJID string
	// UserJID is the user who triggered the event (payload.userJid).
	UserJID string
	// Text is what the user wrote (payload.cmd of bot_notification).
	Text string
}

type rawChat struct {
	Payload struct {
		ToJID   string `json:"toJid"`
		UserJID string `json:"userJid"`
		Cmd     string `json:"cmd"`
	} `json:"payload"`
}

// ParseChat reads the reply fields of a chatbot event body (bot_notification,
// interactive_message_*). Other events yield an empty Chat.
func ParseChat(body []byte) (Chat, error) {
	var r rawChat
	if err := json.Unmarshal(body, &r); err != nil {
		return Chat{}, ErrNotJSON
	}
	return Chat{ToJID: r.Payload.ToJID, UserJID: r.Payload.UserJID, Text: r.Payload.Cmd}, nil
}
