package proto

import (
	"encoding/json"
	"time"
)

// BackendRequest is what a regional worker POSTs to a region's backend_url
// (handler: http), with the headers HTTPHeaderEventID and HTTPHeaderRegion.
type BackendRequest struct {
	// ID is the geomux event id, stable across Zoom's re-deliveries and
	// geomux's own retries: use it to make the backend idempotent.
	ID string `json:"id"`
	// Region is the region the event was routed to.
	Region string `json:"region"`
	// AccountID is the Zoom account the event belongs to.
	AccountID string `json:"account_id"`
	// Event is Zoom's event name, e.g. "bot_notification".
	Event string `json:"event"`
	// App is the Zoom app (zoom.apps name, "default" for the one-app keys)
	// the event came through; geomux replies as that app's bot.
	App string `json:"app,omitempty"`
	// ReceivedAt is when geomux's ingress received the event.
	ReceivedAt time.Time `json:"received_at"`
	// Payload is the Zoom event body exactly as Zoom sent it.
	Payload json.RawMessage `json:"payload"`
	// MessageID is the id of the bot's message the event is about: the card
	// whose button was clicked, select changed or field edited
	// (payload.messageId of interactive_message_*). An edit or delete
	// without a message_id applies to it.
	MessageID string `json:"message_id,omitempty"`
	// Unfurl addresses the preview of a shared link (team_chat.link_shared:
	// from Zoom's response_url). An unfurl without user_id and trigger_id
	// answers it.
	Unfurl *UnfurlTarget `json:"unfurl,omitempty"`
	// UserToken is the access token of the Zoom user who installed the app
	// for the account, renewed before it expires, when the region is
	// configured to pass it (user_token: true) and the region's vault holds
	// one. Use it to call Zoom's API as that user, at api_url.
	UserToken *UserToken `json:"user_token,omitempty"`
}

// UserToken is a user's Zoom access token, as a backend gets it.
type UserToken struct {
	AccessToken string    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
	// APIURL is the Zoom API host serving the account (no /v2).
	APIURL string `json:"api_url,omitempty"`
}

// UnfurlTarget is the shared link an unfurl answers: Zoom's user and
// trigger ids.
type UnfurlTarget struct {
	UserID    string `json:"user_id"`
	TriggerID string `json:"trigger_id"`
}

// BackendResponse is what a backend answers with status 200. Status 204 means
// "no reply". geomux performs its actions in this order: messages, edits,
// deletes, unfurls, each once.
type BackendResponse struct {
	Messages []ChatMessage `json:"messages"`
	// Edits change messages the bot sent (Zoom's PUT
	// /im/chat/messages/{message_id}).
	Edits []EditMessage `json:"edits,omitempty"`
	// Deletes delete messages the bot sent (Zoom's DELETE
	// /im/chat/messages/{message_id}).
	Deletes []DeleteMessage `json:"deletes,omitempty"`
	// Unfurls answer shared links with a preview (Zoom's POST
	// /im/chat/users/{userId}/unfurls/{triggerId}).
	Unfurls []UnfurlLink `json:"unfurls,omitempty"`
}

// EditMessage is an edit of a message the bot sent, with the fields of
// Zoom's request body. MessageID defaults to the event's (the clicked
// card); robot_jid and account_id are geomux's.
type EditMessage struct {
	MessageID         string          `json:"message_id,omitempty"`
	Content           json.RawMessage `json:"content"`
	UserJID           string          `json:"user_jid,omitempty"`
	IsMarkdownSupport *bool           `json:"is_markdown_support,omitempty"`
}

// DeleteMessage deletes a message the bot sent. MessageID defaults to the
// event's.
type DeleteMessage struct {
	MessageID string `json:"message_id,omitempty"`
	UserJID   string `json:"user_jid,omitempty"`
}

// UnfurlLink is a shared link's preview. UserID and TriggerID default to
// the event's (BackendRequest.Unfurl); Content is Zoom's unfurl content,
// passed through.
type UnfurlLink struct {
	UserID    string          `json:"user_id,omitempty"`
	TriggerID string          `json:"trigger_id,omitempty"`
	Content   json.RawMessage `json:"content"`
}

// ChatMessage is one reply to send through Zoom's chat API
// (POST /im/chat/messages). Fields left empty default from the event:
// ToJID from payload.toJid, UserJID from payload.userJid.
type ChatMessage struct {
	ToJID   string `json:"to_jid,omitempty"`
	UserJID string `json:"user_jid,omitempty"`
	// Content is Zoom's message card, {"head":{...},"body":[...]}, passed
	// through unchanged.
	Content           json.RawMessage `json:"content"`
	IsMarkdownSupport *bool           `json:"is_markdown_support,omitempty"`
	// VisibleToUser, a Zoom user id, makes the reply visible to that user
	// only (in a channel).
	VisibleToUser string `json:"visible_to_user,omitempty"`
	// ReplyTo is the id of the message to reply to, in its thread.
	ReplyTo string `json:"reply_to,omitempty"`
}

// AccountRecord is the value of an account in the directory (DirectoryBucket).
type AccountRecord struct {
	AccountID string `json:"account_id"`
	Region    string `json:"region"`
	// APIURL is the Zoom API base the account is served from, when known
	// (from the install's token response); empty means the configured default.
	APIURL    string    `json:"api_url,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// PaceRecord is an account's entry in its region's pacing bucket
// (RegionPacingBucket, keyed by account id): what the region's workers
// learnt of the account's Zoom rate limits. No content.
type PaceRecord struct {
	// Rate is the messages per second the account was last paced at.
	Rate float64 `json:"rate"`
	// HeldUntil, when in the future, is when Zoom's daily message limit of
	// the account resets: its replies are held until then.
	HeldUntil time.Time `json:"held_until,omitzero"`
}
