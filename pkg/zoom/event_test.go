package zoom_test

import (
	"errors"
	"testing"

	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

func TestParseHeadExamples(t *testing.T) {
	want := map[string]zoom.Head{
		// app_deauthorized and team_chat.* carry payload.account_id.
		"app_deauthorized":      {Event: "app_deauthorized", AccountID: "AAAAAABBBB"},
		"app_deauthorized_2":    {Event: "app_deauthorized", AccountID: "MXEuWmOmTsKWUswrfpPslg"},
		"team_chat_app_mention": {Event: "team_chat.app_mention", AccountID: "asgVcjZnWWRLWvv_GtyGuaxg", Conversation: "channel:8AmQ0WOoQ1O3a84yYFc2xQ"},
		// Chatbot events carry payload.accountId.
		// Their conversation: a channel (toJid @conference.), else the user.
		"bot_installed":                       {Event: "bot_installed", AccountID: "CDSCdcsdv", Conversation: "user:fvdfvfdvfd@xmpp.zoom.us"},
		"bot_notification":                    {Event: zoom.EventBotNotification, AccountID: "gVcjZnWWRLWvv_GtyGuaxg", Conversation: "channel:b1c841dc7b0b4a69287e6be05c7f93f25@conference.xmpp.zoom.us"},
		"interactive_message_actions":         {Event: "interactive_message_actions", AccountID: "gVcjZnWWRLWvv_GtyGuaxg", Conversation: "user:kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us"},
		"interactive_message_editable":        {Event: "interactive_message_editable", AccountID: "gVcjZnWWRLWvv_GtyGuaxg", Conversation: "user:kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us"},
		"interactive_message_fields_editable": {Event: "interactive_message_fields_editable", AccountID: "gVcjZnWWRLWvv_GtyGuaxg", Conversation: "user:kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us"},
		"interactive_message_select":          {Event: "interactive_message_select", AccountID: "gVcjZnWWRLWvv_GtyGuaxg", Conversation: "user:kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us"},
		// The challenge has no account, only a token.
		"endpoint_url_validation": {Event: zoom.EventURLValidation, PlainToken: "qgg8vlvZRS6UYooatFL8Aw"},
	}
	if len(want) != len(zoomtest.Names) {
		t.Errorf("table has %d events, zoomtest.Names %d: keep them in step", len(want), len(zoomtest.Names))
	}
	for _, name := range zoomtest.Names {
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("no expectation for example %q", name)
			}
			got, err := zoom.ParseHead(zoomtest.Event(name))
			if err != nil {
				t.Fatalf("ParseHead: %v", err)
			}
			if got != w {
				t.Errorf("ParseHead = %+v, want %+v", got, w)
			}
		})
	}
}

// Conversation per event type, as the README documents it; a field of
// another type than Zoom's counts as absent, and never fails the event.
func TestConversation(t *testing.T) {
	for _, c := range []struct{ name, body, want string }{
		{"1:1 chat", `{"event":"bot_notification","payload":{"toJid":"u1@xmpp.zoom.us","userJid":"u1@xmpp.zoom.us"}}`, "user:u1@xmpp.zoom.us"},
		{"channel, with a resource", `{"event":"bot_notification","payload":{"toJid":"c1@conference.xmpp.zoom.us/robot","userJid":"u1@xmpp.zoom.us"}}`, "channel:c1@conference.xmpp.zoom.us"},
		{"no userJid: toJid's user", `{"event":"interactive_message_select","payload":{"toJid":"u2@xmpp.zoom.us/robot"}}`, "user:u2@xmpp.zoom.us"},
		{"team chat channel", `{"event":"team_chat.channel_app_added","payload":{"operator_id":"op","object":{"channel_id":"ch"}}}`, "channel:ch"},
		{"team chat without a channel", `{"event":"team_chat.link_shared","payload":{"operator_id":"op"}}`, "user:op"},
		{"the account's own", `{"event":"app_deauthorized","payload":{"account_id":"a","user_id":"u"}}`, ""},
		{"an unknown event", `{"event":"meeting.started","payload":{"toJid":"u1@xmpp.zoom.us"}}`, ""},
		{"userJid a number", `{"event":"bot_notification","payload":{"toJid":"u3@xmpp.zoom.us","userJid":7}}`, "user:u3@xmpp.zoom.us"},
		{"object a string", `{"event":"team_chat.app_mention","payload":{"object":"x","operator_id":"op"}}`, "user:op"},
		{"no payload", `{"event":"bot_notification"}`, ""},
	} {
		if got := zoom.Conversation([]byte(c.body)); got != c.want {
			t.Errorf("%s: Conversation = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestParseHeadShapes(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want zoom.Head
	}{
		{"no payload", `{"event":"x"}`, zoom.Head{Event: "x"}},
		{"null payload", `{"event":"x","payload":null}`, zoom.Head{Event: "x"}},
		{"camelCase wins over snake_case", `{"event":"x","payload":{"account_id":"snake","accountId":"camel"}}`, zoom.Head{Event: "x", AccountID: "camel"}},
		{"empty camelCase falls back", `{"event":"x","payload":{"accountId":"","account_id":"snake"}}`, zoom.Head{Event: "x", AccountID: "snake"}},
		{"unknown fields ignored", `{"event":"x","extra":[1,2],"payload":{"accountId":"a","deep":{"accountId":"no"}}}`, zoom.Head{Event: "x", AccountID: "a"}},
		{"whitespace", " \n{ \"event\" : \"x\" }\n", zoom.Head{Event: "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := zoom.ParseHead([]byte(tc.body))
			if err != nil {
				t.Fatalf("ParseHead(%s): %v", tc.body, err)
			}
			if got != tc.want {
				t.Errorf("ParseHead(%s) = %+v, want %+v", tc.body, got, tc.want)
			}
		})
	}
}

func TestParseHeadErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want error
	}{
		{"empty", ``, zoom.ErrNotJSON},
		{"text", `hello`, zoom.ErrNotJSON},
		{"truncated", `{"event":"bot_notification","payload":{`, zoom.ErrNotJSON},
		{"array", `[{"event":"x"}]`, zoom.ErrNotJSON},
		{"string", `"event"`, zoom.ErrNotJSON},
		{"number", `42`, zoom.ErrNotJSON},
		{"form", `event=bot_notification`, zoom.ErrNotJSON},
		{"event is a number", `{"event":1}`, zoom.ErrNotJSON},
		{"payload is a string", `{"event":"x","payload":"abc"}`, zoom.ErrNotJSON},
		{"payload is an array", `{"event":"x","payload":[]}`, zoom.ErrNotJSON},
		{"accountId is a number", `{"event":"x","payload":{"accountId":5}}`, zoom.ErrNotJSON},
		// A field geomux routes by, twice: parsers disagree on which counts.
		{"event twice", `{"event":"bot_notification","event":"app_deauthorized","payload":{"accountId":"a"}}`, zoom.ErrDuplicateKey},
		{"payload twice", `{"event":"x","payload":{"accountId":"a"},"payload":{"accountId":"b"}}`, zoom.ErrDuplicateKey},
		{"accountId twice", `{"event":"x","payload":{"accountId":"a","accountId":"b"}}`, zoom.ErrDuplicateKey},
		{"userJid twice", `{"event":"bot_notification","payload":{"accountId":"a","userJid":"u1","userJid":"u2"}}`, zoom.ErrDuplicateKey},
		{"empty object", `{}`, zoom.ErrNoEvent},
		{"null", `null`, zoom.ErrNoEvent},
		{"empty event", `{"event":""}`, zoom.ErrNoEvent},
		{"payload only", `{"payload":{"accountId":"a"}}`, zoom.ErrNoEvent},
		{"Event capitalised elsewhere", `{"Event_name":"x"}`, zoom.ErrNoEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := zoom.ParseHead([]byte(tc.body))
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseHead(%q) = %+v, %v; want %v", tc.body, h, err, tc.want)
			}
			if h != (zoom.Head{}) {
				t.Errorf("ParseHead(%q) returned %+v with its error", tc.body, h)
			}
		})
	}
}

// Each event's reply goes where Zoom documents it, with Zoom's required
// to_jid and user_jid both set.
func TestReplyDefaults(t *testing.T) {
	const bot = "v1bot@xmpp.zoom.us"
	for _, tc := range []struct {
		name     string
		to, user string
	}{
		{"bot_notification", "b1c841dc7b0b4a69287e6be05c7f93f25@conference.xmpp.zoom.us", "kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us"},
		{"interactive_message_select", "kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us/robot_v1m0yn1imztuogsxjje8fdew@xmpp.zoom.us", "kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us"},
		// The installing user is welcomed.
		{"bot_installed", "fvdfvfdvfd@xmpp.zoom.us", "fvdfvfdvfd@xmpp.zoom.us"},
		// The channel, on behalf of the user who mentioned the app.
		{"team_chat_app_mention", "8amq0wooq1o3a84yyfc2xq@conference.xmpp.zoom.us", "z8ycxjabcdefghfp8uq@xmpp.zoom.us"},
		{"app_deauthorized", "", ""},
	} {
		chat, err := zoom.ParseChat(zoomtest.Event(tc.name))
		if err != nil {
			t.Fatal(err)
		}
		if to, user := chat.ReplyTo(bot); to != tc.to || user != tc.user {
			t.Errorf("%s: reply to %q as %q, want %q as %q", tc.name, to, user, tc.to, tc.user)
		}
	}
	// The XMPP domain is the bot's (another Zoom cloud, a sandbox).
	chat, _ := zoom.ParseChat(zoomtest.Event("team_chat_app_mention"))
	if to, user := chat.ReplyTo("bot@xmpp.example.gov"); to != "8amq0wooq1o3a84yyfc2xq@conference.xmpp.example.gov" || user != "z8ycxjabcdefghfp8uq@xmpp.example.gov" {
		t.Errorf("on another domain: %q as %q", to, user)
	}
}

func TestParseChat(t *testing.T) {
	for _, tc := range []struct {
		name string
		want zoom.Chat
	}{
		{"bot_notification", zoom.Chat{
			ToJID:   "b1c841dc7b0b4a69287e6be05c7f93f25@conference.xmpp.zoom.us",
			UserJID: "kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us",
			Text:    "island",
		}},
		{"interactive_message_actions", zoom.Chat{
			ToJID:     "kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us/robot_v1m0yn1imztuogsxjje8fdew@xmpp.zoom.us",
			UserJID:   "kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us",
			MessageID: "20190618205516496_ynICmz8_aw1",
		}},
		{"team_chat_app_mention", zoom.Chat{Text: "hello", ChannelID: "8AmQ0WOoQ1O3a84yYFc2xQ", OperatorID: "z8yCxjabcdEFGHfp8uQ"}},
		{"bot_installed", zoom.Chat{UserJID: "fvdfvfdvfd@xmpp.zoom.us"}},
		{"endpoint_url_validation", zoom.Chat{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := zoom.ParseChat(zoomtest.Event(tc.name))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("ParseChat = %+v, want %+v", got, tc.want)
			}
		})
	}

	got, err := zoom.ParseChat(zoomtest.BotNotification("acct1", "hi there", 7))
	if err != nil {
		t.Fatal(err)
	}
	if want := (zoom.Chat{ToJID: "user-acct1@xmpp.zoom.us", UserJID: "user-acct1@xmpp.zoom.us", Text: "hi there"}); got != want {
		t.Errorf("ParseChat(BotNotification) = %+v, want %+v", got, want)
	}

	// A shared link: the preview's address, from Zoom's response_url.
	link := []byte(`{"event":"team_chat.link_shared","response_url":"https://api.zoom.us/v2/im/chat/users/u-1/unfurls/trig-9","payload":{"account_id":"a","operator_id":"u-1","object":{"channel_id":"c"}}}`)
	if got, err := zoom.ParseChat(link); err != nil || got.UnfurlUserID != "u-1" || got.UnfurlTriggerID != "trig-9" {
		t.Errorf("ParseChat(link_shared) = %+v, %v", got, err)
	}

	for _, body := range []string{``, `nope`, `{"payload":"x"}`, `{"payload":{"cmd":3}}`} {
		if _, err := zoom.ParseChat([]byte(body)); !errors.Is(err, zoom.ErrNotJSON) {
			t.Errorf("ParseChat(%q) = %v, want ErrNotJSON", body, err)
		}
	}
}
