package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// Several Zoom apps in one deployment: an app per region (us-bot pinned to
// us, eu-bot to eu) beside the one-app flow's default app (unpinned: the
// directory routes its events).
var e2eApps = []config.App{
	{Name: "us-bot", WebhookSecretTokens: []string{"us-bot-webhook-secret"}, ClientID: "us-bot-id", ClientSecret: "us-bot-client-secret",
		BotJID: "us-bot@xmpp.zoom.us", Region: "us"},
	{Name: "eu-bot", WebhookSecretTokens: []string{"eu-bot-webhook-secret"}, ClientID: "eu-bot-id", ClientSecret: "eu-bot-client-secret",
		BotJID: "eu-bot@xmpp.zoom.us", Region: "eu"},
}

// postAs posts body to app's Bot Endpoint URL, signed with secret, and
// returns the status.
func (p *pipeline) postAs(app, secret string, body []byte) int {
	p.t.Helper()
	url := p.webhook
	if app != "" {
		url += "/" + app
	}
	status, err := zoomtest.Post(http.DefaultClient, url, secret, body)
	if err != nil {
		p.t.Fatalf("webhook %s: %v", url, err)
	}
	return status
}

// deliveredTo returns the replies Zoom accepted whose text is text.
func (p *pipeline) deliveredTo(text string) []sandbox.Delivered {
	var out []sandbox.Delivered
	for _, d := range p.zoom.sb.Delivered() {
		if strings.HasSuffix(d.Text, ": "+text) {
			out = append(out, d)
		}
	}
	return out
}

func TestE2EAppsPinnedAndUnpinned(t *testing.T) {
	t.Parallel()
	p := newPipelineWith(t, t.TempDir(), pipelineOptions{apps: e2eApps})
	p.setRegion("acct-dir-uk", "uk")

	cases := []struct {
		app, secret, account, text, region, bot, clientID string
	}{
		// Pinned apps: their region, with no directory entry at all.
		{"us-bot", "us-bot-webhook-secret", "acct-new-1", "via the us app", "us", "us-bot@xmpp.zoom.us", "us-bot-id"},
		{"eu-bot", "eu-bot-webhook-secret", "acct-new-2", "via the eu app", "eu", "eu-bot@xmpp.zoom.us", "eu-bot-id"},
		// The default app, at /zoom/webhook and at its own name: the directory decides.
		{"", e2eSecret, "acct-dir-uk", "via the default app", "uk", e2eBotJID, "e2e-id"},
		{"default", e2eSecret, "acct-dir-uk", "via the default app by name", "uk", e2eBotJID, "e2e-id"},
	}
	for i, c := range cases {
		if status := p.postAs(c.app, c.secret, zoomtest.BotNotification(c.account, c.text, int64(100+i))); status != http.StatusOK {
			t.Fatalf("%s: status %d", c.text, status)
		}
	}
	for _, c := range cases {
		natstest.Eventually(t, 20*time.Second, func() bool { return len(p.deliveredTo(c.text)) == 1 }, "the reply to %q", c.text)
		d := p.deliveredTo(c.text)[0]
		if d.Message.RobotJID != c.bot || d.ClientID != c.clientID || d.Text != c.region+": "+c.text {
			t.Errorf("%q: replied by %s with %s's token, text %q; want %s, %s, from region %s", c.text, d.Message.RobotJID, d.ClientID, d.Text, c.bot, c.clientID, c.region)
		}
		saw := 0
		for _, r := range e2eRegions {
			for _, req := range p.backends[r].requests() {
				if strings.Contains(string(req.Payload), c.text+`"`) {
					saw++
					want := c.app
					if want == "" {
						want = "default"
					}
					if r != c.region || req.App != want {
						t.Errorf("%q reached region %s's backend as app %q; want region %s, app %s", c.text, r, req.App, c.region, want)
					}
				}
			}
		}
		if saw != 1 {
			t.Errorf("%q reached the backends %d times, want once", c.text, saw)
		}
	}

	// The default app's event of an account without a region waits, as
	// ever; the same account's events through a pinned app do not.
	if status := p.postAs("", e2eSecret, zoomtest.BotNotification("acct-new-1", "no region yet", 200)); status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.metrics(), "geomux_router_parked_total 1\n")
	}, "the default app's event parked")

	// A request is verified against its app's secrets only.
	for _, c := range []struct{ app, secret string }{
		{"us-bot", "eu-bot-webhook-secret"}, {"us-bot", e2eSecret}, {"eu-bot", "us-bot-webhook-secret"}, {"", "us-bot-webhook-secret"},
	} {
		if status := p.postAs(c.app, c.secret, zoomtest.BotNotification("acct-new-1", "forged", 300)); status != http.StatusUnauthorized {
			t.Errorf("app %q signed with another app's secret: status %d, want 401", c.app, status)
		}
	}
	if status := p.postAs("no-such-bot", e2eSecret, zoomtest.BotNotification("acct-new-1", "lost", 301)); status != http.StatusNotFound {
		t.Errorf("an unknown app: status %d, want 404", status)
	}
	// Endpoint URL validation answers with the app's own secret.
	body := zoomtest.Event("endpoint_url_validation")
	status, answer := postValidation(t, p.webhook+"/eu-bot", "eu-bot-webhook-secret", body)
	if status != http.StatusOK || !strings.Contains(answer, zoomEncryptToken("eu-bot-webhook-secret", body)) {
		t.Errorf("URL validation of eu-bot: %d %s", status, answer)
	}

	m := p.metrics()
	for _, want := range []string{
		`geomux_ingress_published_total{app="us-bot"} 1`,
		`geomux_ingress_published_total{app="eu-bot"} 1`,
		`geomux_ingress_published_total{app="default"} 3`,
		`geomux_ingress_rejected_total{app="us-bot",reason="bad_signature"} 2`,
		`geomux_ingress_rejected_total{app="",reason="unknown_app"} 1`,
		`geomux_router_routed_total{app="us-bot",region="us"} 1`,
		`geomux_router_routed_total{app="eu-bot",region="eu"} 1`,
		`geomux_router_routed_total{app="default",region="uk"} 2`,
		`geomux_worker_replied_total{app="eu-bot",region="eu"} 1`,
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(m, strings.SplitN(want, "{", 2)[0]))
		}
	}
}

// An account the directory puts in eu whose event comes through the app
// pinned to us: not routed to either, but parked, counted, and shown by
// geomux accounts; moving the account settles it and the event flows.
func TestE2EAppConflictIsParkedAndShown(t *testing.T) {
	t.Parallel()
	p := newPipelineWith(t, t.TempDir(), pipelineOptions{apps: e2eApps})
	const account = "acct-in-eu"
	p.setRegion(account, "eu")
	// The router learns the region from the directory's watch, a moment
	// after the admin API stored it: an event of the unpinned app answered
	// in eu says it has (before, it would be parked, and answered once the
	// router knows). Only then is the pinned app's event a conflict.
	p.send(account, "known in eu?")
	natstest.Eventually(t, 10*time.Second, func() bool { return len(p.deliveredTo("known in eu?")) == 1 }, "the router to know the account's region")
	if status := p.postAs("us-bot", "us-bot-webhook-secret", zoomtest.BotNotification(account, "which region", 1)); status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.metrics(), `geomux_router_conflicts_total{app="us-bot"} 1`+"\n")
	}, "the conflict counted")
	cfg := writeConfig(t, fmt.Sprintf(`
admin: {listen: %q, token: %s}
zoom: {webhook_secret_tokens: [x], client_id: x, client_secret: x, bot_jid: x@xmpp.zoom.us}
regions: [{name: us, handler: echo}, {name: uk, handler: echo}, {name: eu, handler: echo}]
`, strings.TrimPrefix(p.admin, "http://"), e2eAdminToken))
	var out string
	natstest.Eventually(t, 10*time.Second, func() bool {
		code, o, errOut := runCLI(t, "accounts", "--config", cfg)
		if code != 0 {
			t.Fatalf("geomux accounts: exit %d: %s", code, errOut)
		}
		out = o
		return strings.Contains(o, "1 conflicts")
	}, "geomux accounts to show the conflict")
	for _, want := range []string{account + "  eu", "us-bot (us)", "1 accounts with a region"} {
		if !strings.Contains(out, want) {
			t.Errorf("geomux accounts lacks %q:\n%s", want, out)
		}
	}
	for _, r := range e2eRegions {
		n := 0
		for _, req := range p.backends[r].requests() {
			if bytes.Contains(req.Payload, []byte("which region")) {
				n++
			}
		}
		if n != 0 {
			t.Errorf("region %s saw the conflicted event %d times", r, n)
		}
	}

	// The operator settles it: the account's data goes with its app, to us.
	p.setRegion(account, "us")
	natstest.Eventually(t, 20*time.Second, func() bool { return len(p.deliveredTo("which region")) == 1 }, "the parked event's reply")
	if d := p.deliveredTo("which region")[0]; d.Message.RobotJID != "us-bot@xmpp.zoom.us" || d.Text != "us: which region" {
		t.Errorf("reply %q by %s, want from us by the us bot", d.Text, d.Message.RobotJID)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		_, o, _ := runCLI(t, "accounts", "--config", cfg, "--conflicts")
		return strings.Contains(o, "no conflicts")
	}, "the conflict forgotten")
}

// postValidation posts Zoom's endpoint URL validation challenge body to url,
// signed with secret, and returns the answer.
func postValidation(t *testing.T, url, secret string, body []byte) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(zoomtest.NewRequest(url, secret, body, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// zoomEncryptToken is the encryptedToken Zoom expects for the challenge
// body: hex(HMAC-SHA256(secret, plainToken)).
func zoomEncryptToken(secret string, body []byte) string {
	var c struct {
		Payload struct {
			PlainToken string `json:"plainToken"`
		} `json:"payload"`
	}
	_ = json.Unmarshal(body, &c)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(c.Payload.PlainToken))
	return hex.EncodeToString(m.Sum(nil))
}
