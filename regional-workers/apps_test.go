package workers_test

import (
	"net/http/httptest"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// An event is replied to by the bot of the app it came through, with that
// app's chatbot token; an app the worker does not know is retried, not
// answered by another app's bot.
func TestRepliesAsTheEventsApp(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	sb := sandbox.New(sandbox.Config{ClientID: clientID, ClientSecret: clientSecret, BotJID: botJID,
		Apps: []sandbox.App{{ClientID: "eu-bot-id", ClientSecret: "eu-bot-secret", BotJID: "eu-bot@xmpp.zoom.us"}}}, nil)
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	client := func(id, secret string) *zoom.Client {
		return zoom.NewClient(zoom.ClientConfig{ClientID: id, ClientSecret: secret, APIBaseURL: srv.URL + "/v2", OAuthBaseURL: srv.URL}, newHTTPClient(t, 0))
	}
	opts := testOptions("eu")
	opts.Apps = []workers.App{{Name: "eu-bot", BotJID: "eu-bot@xmpp.zoom.us", Zoom: client("eu-bot-id", "eu-bot-secret")}}
	startWorker(t, ns.JS, workers.Echo, client(clientID, clientSecret), opts)

	send := func(app, text string, n int64) {
		body := zoomtest.BotNotification("acct", text, n)
		m := nats.NewMsg(eventSubject("eu", "acct", zoom.EventBotNotification, body))
		m.Data = body
		for k, v := range map[string]string{proto.HeaderEventID: proto.EventID(body), jetstream.MsgIDHeader: proto.EventID(body),
			proto.HeaderEventType: zoom.EventBotNotification, proto.HeaderAccountID: "acct", proto.HeaderApp: app} {
			if v != "" {
				m.Header.Set(k, v)
			}
		}
		publishMsg(t, ns.JS, m)
	}
	send("eu-bot", "to the eu bot", 1)
	send("", "to the default bot", 2) // stored before apps were: the default app's
	send("default", "to the default bot by name", 3)
	send("gone-bot", "to a bot this worker does not know", 4)
	natstest.Eventually(t, waitFor, func() bool { return len(sb.Delivered()) == 3 }, "three replies")
	for _, d := range sb.Delivered() {
		want, id := botJID, clientID
		if d.Text == "to the eu bot" {
			want, id = "eu-bot@xmpp.zoom.us", "eu-bot-id"
		}
		if d.Message.RobotJID != want || d.ClientID != id {
			t.Errorf("%q sent by %s with %s's token, want %s, %s", d.Text, d.Message.RobotJID, d.ClientID, want, id)
		}
	}
	// The unknown app's event is retried (the config may catch up), never
	// answered by another bot: after its attempts, it is a dead letter.
	natstest.Eventually(t, waitFor, func() bool {
		for _, dl := range deadLetters(t, ns.JS, "eu") {
			if dl.Header.Get(proto.HeaderDeadReason) == proto.DeadReasonMaxAttempts && dl.Header.Get(proto.HeaderApp) == "gone-bot" {
				return true
			}
		}
		return false
	}, "the unknown app's event dead-lettered after its attempts")
	if n := len(sb.Delivered()); n != 3 {
		t.Errorf("%d replies, want 3", n)
	}
}
