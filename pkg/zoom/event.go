package zoom

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
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
	// ErrDuplicateKey: a field geomux routes by appears twice in its object.
	// Parsers disagree on which one counts (geomux reads the first, most
	// read the last), so such a body could be routed by one value and
	// handled by the backend with the other.
	ErrDuplicateKey = errors.New("zoom: a field geomux routes by (event, payload, payload.accountId, account_id, toJid, userJid, object, operator_id, plainToken) appears twice")
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
	// Conversation names the event's conversation (see Conversation).
	Conversation string
}

// ParseHead reads the routing fields of a webhook body. It is on the
// ingress's hot path: gjson validates the body and picks the few fields out
// of it in one pass, without decoding the rest (a fifth of the time of
// encoding/json). Keys match exactly, as Zoom spells them; of a key repeated
// in one object the first counts. A field of the wrong type makes the body
// ErrNotJSON; a null field counts as absent.
func ParseHead(body []byte) (Head, error) {
	top, ok := parseObject(body)
	if !ok {
		return Head{}, ErrNotJSON
	}
	var t [2]gjson.Result
	dupTop := firstFields(top, headKeys[:], t[:])
	var p [len(payloadKeys)]gjson.Result
	if !isObjectOrAbsent(t[1]) {
		return Head{}, ErrNotJSON
	}
	dupPayload := firstFields(t[1], payloadKeys[:], p[:])
	str, valid := stringReader()
	h := Head{Event: str(t[0]), AccountID: str(p[0]), PlainToken: str(p[2])}
	if snake := str(p[1]); h.AccountID == "" {
		h.AccountID = snake // payload.account_id, when accountId is empty
	}
	if !valid() {
		return Head{}, ErrNotJSON
	}
	if h.Event == "" {
		return Head{}, ErrNoEvent
	}
	if dupTop || dupPayload {
		return Head{}, ErrDuplicateKey
	}
	h.Conversation = conversation(h.Event, p[3:])
	return h, nil
}

var (
	headKeys    = [2]string{"event", "payload"}
	payloadKeys = [...]string{"accountId", "account_id", "plainToken", "toJid", "userJid", "object", "operator_id"}
	chatKeys    = [3]string{"toJid", "userJid", "cmd"}
)

// parseObject validates body and returns it, if it is a JSON object or null
// (null, like an empty object, has no fields).
func parseObject(body []byte) (gjson.Result, bool) {
	if !gjson.ValidBytes(body) {
		return gjson.Result{}, false
	}
	top := gjson.ParseBytes(body)
	return top, top.IsObject() || top.Type == gjson.Null
}

// firstFields sets out[i] to the first field of obj named keys[i], if obj is
// an object that has one, in one pass over obj, and reports whether one of
// keys appears twice.
func firstFields(obj gjson.Result, keys []string, out []gjson.Result) (dup bool) {
	if !obj.IsObject() {
		return false
	}
	obj.ForEach(func(k, v gjson.Result) bool {
		for i, key := range keys {
			if k.Str == key {
				if out[i].Exists() {
					dup = true
					return false
				}
				out[i] = v
				break
			}
		}
		return true
	})
	return dup
}

func isObjectOrAbsent(v gjson.Result) bool {
	return !v.Exists() || v.Type == gjson.Null || v.IsObject()
}

// stringReader returns a reader of string fields (stringValue) and a
// report of whether every field it read was a string, null or absent.
func stringReader() (str func(gjson.Result) string, valid func() bool) {
	ok := true
	return func(v gjson.Result) string {
			s, good := stringValue(v)
			ok = ok && good
			return s
		}, func() bool {
			return ok
		}
}

// stringValue is v's string ("" if absent or null); ok is false if v is
// there with another type. Invalid UTF-8 becomes U+FFFD, byte by byte, as
// encoding/json decodes it.
func stringValue(v gjson.Result) (string, bool) {
	switch v.Type {
	case gjson.String:
		if !utf8.ValidString(v.Str) {
			return validUTF8(v.Str), true
		}
		return v.Str, true
	case gjson.Null:
		return "", true
	default:
		return "", !v.Exists()
	}
}

func validUTF8(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r) // utf8.RuneError for an invalid byte
		i += n
	}
	return b.String()
}

// Chat is what a reply to an event needs from it: whom to answer, on
// whose behalf, and what the user wrote.
type Chat struct {
	// ToJID is the user or channel the event came from (payload.toJid).
	ToJID string
	// UserJID is the user who triggered the event (payload.userJid).
	UserJID string
	// Text is what the user wrote (payload.cmd of bot_notification,
	// payload.object.message of a team_chat event).
	Text string
	// ChannelID and OperatorID are a team_chat event's channel and user
	// (payload.object.channel_id, payload.operator_id): Zoom ids, not JIDs.
	ChannelID, OperatorID string
	// MessageID is the bot's message an interactive event is about
	// (payload.messageId: the clicked card).
	MessageID string
	// UnfurlUserID and UnfurlTriggerID address the preview of a shared
	// link (team_chat.link_shared), from Zoom's response_url
	// (.../im/chat/users/{userId}/unfurls/{triggerId}).
	UnfurlUserID, UnfurlTriggerID string
}

// ReplyTo is where a reply to the event goes by default, and on whose
// behalf (Zoom's to_jid and user_jid), as Zoom documents each event:
//
//   - bot_notification, interactive_message_*: payload.toJid (the channel,
//     or the user's chat with the bot) and payload.userJid;
//   - bot_installed: the installing user (payload.userJid), both;
//   - team_chat.* (an app mention, a shared link, ...): the channel
//     (payload.object.channel_id) or, without one, the user, on behalf of
//     the user who acted (payload.operator_id). A JID is a Zoom id in lower
//     case at the XMPP domain of the bot's own JID (xmpp.zoom.us), a
//     channel's at conference.<domain>.
//
// Empty when the event names neither.
func (c Chat) ReplyTo(botJID string) (toJID, userJID string) {
	toJID, userJID = c.ToJID, c.UserJID
	if toJID == "" {
		toJID = userJID // bot_installed: welcome the installing user
	}
	_, domain, ok := strings.Cut(botJID, "@")
	if !ok || domain == "" {
		domain = "xmpp.zoom.us"
	}
	if userJID == "" && c.OperatorID != "" {
		userJID = strings.ToLower(c.OperatorID) + "@" + domain
	}
	if toJID == "" {
		switch {
		case c.ChannelID != "":
			toJID = strings.ToLower(c.ChannelID) + "@conference." + domain
		default:
			toJID = userJID
		}
	}
	return toJID, userJID
}

// ParseChat reads the reply fields of an event body (chatbot events and
// team_chat events; others yield an empty Chat). Like ParseHead, a
// chatbot field of the wrong type makes the body ErrNotJSON; the team_chat
// fields are read leniently.
func ParseChat(body []byte) (Chat, error) {
	top, ok := parseObject(body)
	if !ok {
		return Chat{}, ErrNotJSON
	}
	var t [2]gjson.Result
	firstFields(top, headKeys[:], t[:])
	if !isObjectOrAbsent(t[1]) {
		return Chat{}, ErrNotJSON
	}
	var p [3]gjson.Result
	firstFields(t[1], chatKeys[:], p[:])
	str, valid := stringReader()
	c := Chat{ToJID: str(p[0]), UserJID: str(p[1]), Text: str(p[2])}
	if !valid() {
		return Chat{}, ErrNotJSON
	}
	lenient := func(r gjson.Result) string {
		if r.Type != gjson.String {
			return ""
		}
		return r.Str
	}
	if t[1].IsObject() {
		c.MessageID = lenient(t[1].Get("messageId"))
	}
	if u := lenient(top.Get("response_url")); u != "" {
		c.UnfurlUserID, c.UnfurlTriggerID = unfurlTarget(u)
	}
	if strings.HasPrefix(t[0].Str, "team_chat.") && t[1].IsObject() {
		c.OperatorID = lenient(t[1].Get("operator_id"))
		if o := t[1].Get("object"); o.IsObject() {
			c.ChannelID = lenient(o.Get("channel_id"))
			if c.Text == "" {
				c.Text = lenient(o.Get("message"))
			}
		}
	}
	return c, nil
}

// unfurlTarget reads the user and trigger ids of an unfurl response_url,
// https://api.zoom.us/v2/im/chat/users/{userId}/unfurls/{triggerId}.
func unfurlTarget(u string) (user, trigger string) {
	_, rest, ok := strings.Cut(u, "/im/chat/users/")
	if !ok {
		return "", ""
	}
	user, trigger, ok = strings.Cut(rest, "/unfurls/")
	if !ok || user == "" || trigger == "" || strings.ContainsAny(user+trigger, "/?#") {
		return "", ""
	}
	return user, trigger
}

// Conversation names the conversation an event belongs to, whose events a
// region handles one at a time, in order: a channel ("channel:" and its JID
// or id) or a user's 1:1 chat with the bot ("user:" and the user's JID or
// id). Events of no chat (app_deauthorized, unknown events) belong to the
// account as a whole: "". The result identifies customers' users; it is
// hashed (proto.ConversationKey) before it goes anywhere.
//
//   - bot_notification, interactive_message_*, bot_installed: payload.toJid
//     when it is a channel (…@conference.…), else the user (payload.userJid);
//   - team_chat.*: payload.object.channel_id, else the operator
//     (payload.operator_id);
//   - anything else: the account.
func Conversation(body []byte) string {
	h, _ := ParseHead(body)
	return h.Conversation
}

// ChannelConversation starts the name of a channel's conversation.
const ChannelConversation = "channel:"

// conversation is Conversation from the payload's toJid, userJid, object
// and operator_id. It reads them leniently: a field of another type than
// Zoom's counts as absent (the event is routed all the same).
func conversation(event string, f []gjson.Result) string {
	str := func(r gjson.Result) string {
		if r.Type != gjson.String {
			return ""
		}
		return r.Str
	}
	to, user, object, operator := str(f[0]), str(f[1]), f[2], str(f[3])
	switch {
	case event == EventBotNotification || event == EventBotInstalled || strings.HasPrefix(event, "interactive_message_"):
		base, _, _ := strings.Cut(to, "/")
		switch {
		case strings.Contains(base, "@conference."):
			return ChannelConversation + base
		case user != "":
			return "user:" + user
		case base != "":
			return "user:" + base
		}
	case strings.HasPrefix(event, "team_chat."):
		if object.IsObject() {
			if c := str(object.Get("channel_id")); c != "" {
				return ChannelConversation + c
			}
		}
		if operator != "" {
			return "user:" + operator
		}
	}
	return ""
}

// EventBotInstalled is sent when a user installs the chatbot.
const EventBotInstalled = "bot_installed"

// EventLinkShared is sent when a user shares a link the app may preview
// (unfurl) through the event's response_url.
const EventLinkShared = "team_chat.link_shared"
