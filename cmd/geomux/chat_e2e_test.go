package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The sandbox's developer chat, as a bot developer uses it: geomux runs as
// `make run` does (one process, embedded NATS, the sandbox as Zoom, region
// eu answered by the sandbox's example backend), and a real Chromium plays
// the Zoom user. Every step goes through the whole pipeline: signed events
// into the ingress, the router, the eu worker, the backend, Zoom's chat API.
func TestE2EDeveloperChatInBrowser(t *testing.T) {
	t.Parallel()
	bctx := newBrowser(t, 150*time.Second)
	ingress, admin, sandboxAddr := freePort(t), freePort(t), freePort(t)
	cfg := processConfig(t, t.TempDir(), ingress, admin, "http://"+sandboxAddr, fmt.Sprintf(`
sandbox: {listen: %q, rate_limit: {per_second: -1}}
worker: {handler_timeout: 10s}
regions:
  - {name: us, display_name: United States, handler: echo}
  - {name: eu, display_name: European Union, handler: http, backend_url: "http://%s/example-backend", timeout: 5s}
`, sandboxAddr, sandboxAddr))
	startProcess(t, cfg, "http://"+admin+"/readyz")
	chat := "http://" + sandboxAddr + "/chat/"
	b := browserSteps{t: t, ctx: bctx}

	if err := chromedp.Do(bctx, chromedp.Navigate(chat)); err != nil {
		b.fail("open the chat", err)
	}
	b.do("chat page shown", chromedp.WaitReady(chromedp.CSS(`#region option[value="eu"]`)))
	b.js("choose the account and the user", `setField("account", "acct-chat-eu"); setField("user", "Ada Lovelace")`)
	b.waitText("the account has no region yet", "#region-note", "has no region for acct-chat-eu")

	// A message before the account has a region waits, parked; placing the
	// account in the European Union lets it through.
	b.do("say hello with a link",
		chromedp.SendKeys(chromedp.ID("text"), "hello world https://example.com/doc"),
		chromedp.Click(chromedp.ID("send")),
	)
	b.waitText("the message reached geomux", "#messages li.user .status", "delivered to geomux")
	b.js("choose the European Union", `document.getElementById("region").value = "eu"`)
	b.do("place the account", chromedp.Click(chromedp.ID("place")))
	b.waitText("the account is placed", "#region-note", "places acct-chat-eu in eu")

	// The bot's card, drawn as Zoom draws it; the link's preview under the
	// message.
	b.waitText("the bot's card", "#messages li.bot .card-head", "Example backend (eu)")
	b.waitText("the link's preview", "#messages li.user .preview .card-head", "Preview from the eu backend")
	b.waitText("the card's sub head", "#messages li.bot .card-sub", "Answered in region eu")
	b.waitText("markdown drawn bold", "#messages li.bot .item-message strong", "hello world https://example.com/doc")
	b.waitText("the card's buttons", "#messages li.bot .item-actions", "Approve")
	b.waitText("the card's select", "#messages li.bot .item-select", "Priority")
	b.waitText("the card's fields", "#messages li.bot .item-fields", "Note")
	b.screenshot("chat-card.png")

	// Choosing an option: the card is edited in place.
	b.js("choose High", `pick(document.querySelector("#messages li.bot select"), "high")`)
	b.waitText("the card edited", "#messages li.bot .card", "Priority set to high")
	b.waitText("the edit shown", "#messages li.bot .edited", "(edited)")

	// A button.
	b.say("second")
	b.do("click Approve", chromedp.Click(chromedp.CSS(`#messages > li:last-child button[data-value="approve"]`)))
	b.waitText("the second card edited", "#messages > li:last-child .card", "You chose Approve.")

	// An editable field.
	b.say("third")
	b.do("edit the note",
		chromedp.Click(chromedp.CSS(`#messages > li:last-child .field-value.editable`)),
		chromedp.SendKeys(chromedp.CSS(`#messages > li:last-child .inline-edit input`), "call me"),
		chromedp.Click(chromedp.CSS(`#messages > li:last-child .inline-edit button`)),
	)
	b.waitText("the third card edited", "#messages > li:last-child .card", "Note is now call me.")

	// Delete.
	b.say("fourth")
	b.do("click Delete", chromedp.Click(chromedp.CSS(`#messages > li:last-child button[data-value="delete"]`)))
	b.waitText("the fourth card deleted", "#messages > li:last-child", "The bot deleted this message.")
	b.screenshot("chat-actions.png")
	if e := b.eval(`document.getElementById("error").innerText`); e != "" {
		t.Errorf("the page shows an error: %s", e)
	}

	// The sandbox, as Zoom, holds the same: four cards, three edited once,
	// one deleted, and the link's preview.
	q := url.Values{"app": {"default"}, "account": {"acct-chat-eu"}, "name": {"Ada Lovelace"}}
	resp, err := http.Get(chat + "api/conversation?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var conv struct {
		Items []struct {
			From  string
			Links []struct{ Preview json.RawMessage }
			Card  *struct {
				Edits   int
				Deleted bool
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&conv); err != nil {
		t.Fatal(err)
	}
	var edited, deleted, bot, previews int
	for _, it := range conv.Items {
		if it.Card != nil {
			bot++
			if it.Card.Edits == 1 {
				edited++
			}
			if it.Card.Deleted {
				deleted++
			}
		}
		for _, l := range it.Links {
			if len(l.Preview) > 0 {
				previews++
			}
		}
	}
	if bot != 4 || edited != 3 || deleted != 1 || previews != 1 {
		t.Errorf("sandbox: %d cards, %d edited, %d deleted, %d previews; want 4, 3, 1, 1", bot, edited, deleted, previews)
	}
}

// chatHelpers are defined in the page for the test's steps: set a field as
// a person does (a change event), pick an option of a select.
const chatHelpers = `
function setField(id, v) { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event("change")); }
function pick(sel, v) { sel.value = v; sel.dispatchEvent(new Event("change")); }
`

// js runs script in the page, with chatHelpers.
func (b browserSteps) js(name, script string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](chatHelpers+script+"; null")); err != nil {
		b.fail(name, err)
	}
}

// eval is the string value of expr in the page ("" on an error).
func (b browserSteps) eval(expr string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	return s
}

// waitText waits until the element sel shows text containing want.
func (b browserSteps) waitText(name, sel, want string) {
	b.t.Helper()
	expr := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.innerText : ""; })()`, sel)
	var got string
	ok := poll(30*time.Second, func() bool {
		got = b.eval(expr)
		return strings.Contains(got, want)
	})
	if !ok {
		b.fail(name, fmt.Errorf("%s shows %q, want %q", sel, got, want))
	}
}

// say sends text and waits for the bot's answer to it.
func (b browserSteps) say(text string) {
	b.t.Helper()
	n := b.eval(`String(document.querySelectorAll("#messages li.bot").length)`)
	b.do("say "+text, chromedp.SendKeys(chromedp.ID("text"), text), chromedp.Click(chromedp.ID("send")))
	ok := poll(30*time.Second, func() bool {
		return b.eval(`String(document.querySelectorAll("#messages li.bot").length)`) != n &&
			strings.Contains(b.eval(`document.querySelector("#messages > li:last-child").className`), "bot")
	})
	if !ok {
		b.fail("the bot answers "+text, fmt.Errorf("still %s cards", n))
	}
}

// poll checks cond every 50 ms until it holds or timeout passes, and says
// whether it held.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
