package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// Every example event of Zoom's documentation (testdata of zoomtest),
// signed and sent as Zoom sends it, whitespace and all, goes through the
// whole pipeline to its account's region: the backend gets Zoom's bytes,
// and a reply to an app mention reaches Zoom's API with every field it
// requires. An external user's mention, which names no account, waits in
// the hub until its channel's account is known, then follows.
func TestE2EEveryZoomExampleEvent(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, t.TempDir())
	examples := map[string]string{ // example -> its account
		"bot_notification":                    "gVcjZnWWRLWvv_GtyGuaxg",
		"interactive_message_actions":         "gVcjZnWWRLWvv_GtyGuaxg",
		"interactive_message_select":          "gVcjZnWWRLWvv_GtyGuaxg",
		"interactive_message_editable":        "gVcjZnWWRLWvv_GtyGuaxg",
		"interactive_message_fields_editable": "gVcjZnWWRLWvv_GtyGuaxg",
		"bot_installed":                       "CDSCdcsdv",
		"team_chat_app_mention":               "asgVcjZnWWRLWvv_GtyGuaxg",
	}
	for _, a := range []string{"gVcjZnWWRLWvv_GtyGuaxg", "CDSCdcsdv", "asgVcjZnWWRLWvv_GtyGuaxg"} {
		p.setRegion(a, "eu")
	}
	for name := range examples {
		p.post(zoomtest.RawEvent(name))
	}
	natstest.Eventually(t, 20*time.Second, func() bool { return len(p.backends["eu"].requests()) == len(examples) }, "every example at eu's backend")
	for _, r := range p.backends["eu"].requests() {
		var raw []byte
		for name, account := range examples {
			if body := zoomtest.RawEvent(name); r.AccountID == account && bytes.Contains(body, []byte(`"`+r.Event+`"`)) && bytes.Equal(bytes.TrimSpace(body), r.Payload) {
				raw = body
			}
		}
		if raw == nil {
			t.Errorf("%s of %s: payload is not one of Zoom's examples byte for byte: %s", r.Event, r.AccountID, r.Payload)
		}
	}
	for _, r := range []string{"us", "uk"} {
		if n := len(p.backends[r].requests()); n != 0 {
			t.Errorf("%d events reached %s's backend", n, r)
		}
	}
	// The mention's reply, addressed by geomux: Zoom (the sandbox) checks
	// every required field.
	natstest.Eventually(t, 20*time.Second, func() bool { return len(p.deliveredTo("mention: hello")) == 1 }, "the mention answered")
	if d := p.deliveredTo("mention: hello")[0].Message; d.ToJID != "8amq0wooq1o3a84yyfc2xq@conference.xmpp.zoom.us" || d.UserJID != "z8ycxjabcdefghfp8uq@xmpp.zoom.us" {
		t.Errorf("mention answered to %q as %q", d.ToJID, d.UserJID)
	}

	// An external user's mention in another channel: no account.
	external := bytes.Replace(zoomtest.Event("team_chat_app_mention"), []byte(`"asgVcjZnWWRLWvv_GtyGuaxg"`), []byte(`""`), 1)
	external = bytes.Replace(external, []byte("8AmQ0WOoQ1O3a84yYFc2xQ"), []byte("OtherChannel01"), 1)
	external = bytes.Replace(external, []byte(`"hello"`), []byte(`"from outside"`), 1)
	if status, err := zoomtest.Post(http.DefaultClient, p.webhook, e2eSecret, external); err != nil || status != http.StatusOK {
		t.Fatalf("external mention: %d, %v", status, err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		code, body := p.adminDo(http.MethodGet, "/admin/v1/parked/without-account", "")
		var parked struct{ Events int }
		return code == http.StatusOK && json.Unmarshal([]byte(body), &parked) == nil && parked.Events == 1
	}, "the external mention parked without account")
	if m := p.metrics(); !strings.Contains(m, `geomux_router_parked_messages{waiting_for="account"} 1`) {
		t.Errorf("the parked gauge does not count the mention as waiting for an account:\n%s", regexp.MustCompile(`(?m)^geomux_router_parked_messages.*$`).FindAllString(m, -1))
	}
	// The account adds the app to that channel: the mention follows.
	added := bytes.Replace(zoomtest.Event("team_chat_app_mention"), []byte("8AmQ0WOoQ1O3a84yYFc2xQ"), []byte("OtherChannel01"), 1)
	added = bytes.Replace(added, []byte(`"team_chat.app_mention"`), []byte(`"team_chat.channel_app_added"`), 1)
	p.post(added)
	natstest.Eventually(t, 20*time.Second, func() bool { return len(p.deliveredTo("mention: from outside")) == 1 }, "the external mention answered")
	if d := p.deliveredTo("mention: from outside")[0].Message; d.AccountID != "asgVcjZnWWRLWvv_GtyGuaxg" || d.ToJID != "otherchannel01@conference.xmpp.zoom.us" {
		t.Errorf("external mention answered for %q to %q", d.AccountID, d.ToJID)
	}
}
