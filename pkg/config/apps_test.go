package config_test

import (
	"reflect"
	"slices"
	"testing"

	"github.com/geomux/geomux/pkg/config"
)

func withApps(apps string) string {
	return `
admin:
  token: 0123456789abcdef
zoom:
  webhook_secret_tokens: [wh-secret]
  client_id: cid
  client_secret: csecret
  bot_jid: bot@xmpp.zoom.us
` + apps + `
regions:
  - {name: eu, handler: echo}
  - {name: us, handler: echo}
`
}

func TestAppsBesideTheOneAppKeys(t *testing.T) {
	c := mustRead(t, withApps(`
  apps:
    - {name: us-bot, webhook_secret_tokens: [us-secret], client_id: us-id, client_secret: us-cs, bot_jid: us@xmpp.zoom.us, region: us}
    - {name: spare, webhook_secret_tokens: [sp], client_id: sp-id, client_secret: sp-cs, bot_jid: sp@xmpp.zoom.us}
`), []string{"GEOMUX_ZOOM_APPS_US_BOT_CLIENT_SECRET=from-env"})
	var names []string
	for _, a := range c.Zoom.AllApps() {
		names = append(names, a.Name)
	}
	if !slices.Equal(names, []string{"default", "us-bot", "spare"}) {
		t.Errorf("apps %v", names)
	}
	if d := c.Zoom.DefaultApp(); d.Name != config.DefaultAppName || d.ClientID != "cid" || d.BotJID != "bot@xmpp.zoom.us" || d.WebhookSecretTokens[0] != "wh-secret" {
		t.Errorf("default app %+v", d)
	}
	if a, ok := c.Zoom.App("us-bot"); !ok || a.ClientSecret != "from-env" || a.Region != "us" {
		t.Errorf("us-bot %+v %v (its secret from GEOMUX_ZOOM_APPS_US_BOT_CLIENT_SECRET)", a, ok)
	}
	if !reflect.DeepEqual(c.Zoom.Pins(), map[string]string{"us-bot": "us"}) {
		t.Errorf("pins %v", c.Zoom.Pins())
	}
}

// Without the one-app keys, the first of zoom.apps is the default app.
func TestAppsWithoutTheOneAppKeys(t *testing.T) {
	c := mustRead(t, `
admin: {token: 0123456789abcdef}
zoom:
  apps:
    - {name: eu-bot, webhook_secret_tokens: [s1], client_id: i1, client_secret: c1, bot_jid: b1@xmpp.zoom.us, region: eu}
    - {name: us-bot, webhook_secret_tokens: [s2], client_id: i2, client_secret: c2, bot_jid: b2@xmpp.zoom.us, region: us}
regions: [{name: eu, handler: echo}, {name: us, handler: echo}]
`, nil)
	if d := c.Zoom.DefaultApp(); d.Name != "eu-bot" || len(c.Zoom.AllApps()) != 2 {
		t.Errorf("default app %+v of %d", d, len(c.Zoom.AllApps()))
	}
}

func TestAppProblems(t *testing.T) {
	_, err := read(t, withApps(`
  apps:
    - {name: Bad_Name}
    - {name: default, webhook_secret_tokens: [x], client_id: x, client_secret: x, bot_jid: x@y}
    - {name: twice, webhook_secret_tokens: [x], client_id: x, client_secret: x, bot_jid: x@y}
    - {name: twice, webhook_secret_tokens: [x], client_id: x, client_secret: x, bot_jid: x@y}
    - {name: nowhere, webhook_secret_tokens: [x], client_id: x, client_secret: x, bot_jid: x@y, region: mars}
    - {name: bare}
`), nil)
	ps := problems(t, err)
	for _, want := range [][]string{
		{"zoom.apps[0].name", "Bad_Name", "not an app name"},
		{"zoom.apps[default].name", "one-app keys"},
		{"zoom.apps[twice].name", "twice"},
		{"zoom.apps[nowhere].region", "mars", "not a configured region"},
		{"zoom.apps[bare].webhook_secret_tokens", "required"},
		{"zoom.apps[bare].client_id", "required"},
		{"zoom.apps[bare].bot_jid", "required"},
	} {
		if !hasProblem(ps, want[0], want[1:]...) {
			t.Errorf("no problem %q in:\n%v", want, ps)
		}
	}
	// A router needs no app's secrets: only names and pins.
	c, err := read(t, `
admin: {token: 0123456789abcdef}
zoom:
  apps: [{name: us-bot, region: us}]
regions: [{name: us, handler: echo}]
`, nil, config.RoleRouter)
	if err != nil {
		t.Fatalf("router config: %v", err)
	}
	if c.Zoom.Pins()["us-bot"] != "us" {
		t.Errorf("pins %v", c.Zoom.Pins())
	}
}
