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
		"team_chat_app_mention": {Event: "team_chat.app_mention", AccountID: "asgVcjZnWWRLWvv_GtyGuaxg"},
		// Chatbot events carry payload.accountId.
		"bot_installed":                       {Event: "bot_installed", AccountID: "CDSCdcsdv"},
		"bot_notification":                    {Event: zoom.EventBotNotification, AccountID: "gVcjZnWWRLWvv_GtyGuaxg"},
		"interactive_message_actions":         {Event: "interactive_message_actions", AccountID: "gVcjZnWWRLWvv_GtyGuaxg"},
		"interactive_message_editable":        {Event: "interactive_message_editable", AccountID: "gVcjZnWWRLWvv_GtyGuaxg"},
		"interactive_message_fields_editable": {Event: "interactive_message_fields_editable", AccountID: "gVcjZnWWRLWvv_GtyGuaxg"},
		"interactive_message_select":          {Event: "interactive_message_select", AccountID: "gVcjZnWWRLWvv_GtyGuaxg"},
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
			ToJID:   "kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us/robot_v1m0yn1imztuogsxjje8fdew@xmpp.zoom.us",
			UserJID: "kdykjnimt4kpd8kkdqt9fq@xmpp.zoom.us",
		}},
		// Not a chatbot event: nothing to reply to.
		{"team_chat_app_mention", zoom.Chat{}},
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

	for _, body := range []string{``, `nope`, `{"payload":"x"}`, `{"payload":{"cmd":3}}`} {
		if _, err := zoom.ParseChat([]byte(body)); !errors.Is(err, zoom.ErrNotJSON) {
			t.Errorf("ParseChat(%q) = %v, want ErrNotJSON", body, err)
		}
	}
}
