package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/vault"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
	"github.com/geomux/geomux/regional-workers/dlq"
)

// The install flow end to end: a real Chromium drives the region picker,
// the Zoom sandbox's authorize page and the callback of a pipeline running
// in-process; the tokens must end up encrypted in the chosen region's vault
// only. Then uninstall (app_deauthorized) erases the account in its region,
// and a bot_installed that comes before the install waits for it.

// requireBrowserEnv, set to 1 (CI sets it), makes a missing Chromium fail
// the browser test instead of skipping it.
const requireBrowserEnv = "GEOMUXTEST_REQUIRE_BROWSER"

// sandboxTokenPrefixes begin every token the sandbox issues at install
// (access and refresh): no stream may hold them in plaintext.
var sandboxTokenPrefixes = []string{"sandbox-user.", "sandbox-refresh."}

// newBrowser starts a headless Chromium for the test, stopped when the test
// ends; the whole browser session is bounded by timeout.
func newBrowser(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv(requireBrowserEnv) == "1" {
			t.Fatalf("chromium not found on PATH (%v), and %s=1", err, requireBrowserEnv)
		}
		t.Skipf("chromium not found on PATH (%v); set %s=1 to make this a failure", err, requireBrowserEnv)
	}
	profile := t.TempDir() // removed after the browser has exited (cleanups run last in, first out)
	var out lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // tests may run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1000, 900),
		chromedp.CombinedOutput(&out),
	)
	t.Cleanup(func() {
		cancelAlloc() // waits for the browser process to exit
		if t.Failed() && out.Len() > 0 {
			t.Logf("chromium output:\n%s", out.String())
		}
	})
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	return bctx
}

// lockedBuffer is a bytes.Buffer safe for the browser's output goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// browserSteps runs a browser test's steps, each bounded, and on a failure
// saves what the browser shows before failing the test.
type browserSteps struct {
	t   *testing.T
	ctx context.Context
}

func (b browserSteps) do(name string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fail(name, err)
	}
}

func (b browserSteps) text(name string, sel chromedp.CSS) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		b.fail(name, err)
	}
	return s
}

func (b browserSteps) screenshot(file string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.fail("screenshot "+file, err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		b.t.Fatalf("screenshot %s is not a PNG", file)
	}
	path := filepath.Join(b.t.ArtifactDir(), file)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
}

// fail reports where the browser is and what it shows, keeps a screenshot,
// and fails the test.
func (b browserSteps) fail(name string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	body, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
	if png, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil {
		path := filepath.Join(b.t.ArtifactDir(), "failure.png")
		if os.WriteFile(path, png, 0o644) == nil {
			b.t.Logf("screenshot at the failure: %s", path)
		}
	}
	b.t.Fatalf("browser step %q: %v\nat %s, showing:\n%s", name, err, loc, body)
}

// TestE2EInstallInBrowser installs an account the way an admin does, in a
// real (headless) Chromium: the region picker, Zoom's authorize page, the
// callback's success page. Its tokens end up encrypted in the chosen
// region's vault and nowhere else.
func TestE2EInstallInBrowser(t *testing.T) {
	t.Parallel()
	const account, user = "acct-browser-eu", "browser-admin"
	bctx := newBrowser(t, 60*time.Second)
	p := newPipelineWith(t, t.TempDir(), pipelineOptions{install: true})
	b := browserSteps{t: t, ctx: bctx}

	// The first action starts the browser: it runs on the context without
	// a step timeout, which would stop the browser with it.
	if err := chromedp.Do(bctx, chromedp.Navigate(p.publicURL+"/install")); err != nil {
		b.fail("open the install page", err)
	}
	b.do("install page shown", chromedp.WaitVisible(chromedp.ID("region-eu")))
	b.screenshot("install-page.png")
	page := b.text("read the install page", "body")
	for _, want := range []string{p.cfg.Install.BotName, "United States", "United Kingdom", "European Union"} {
		if !strings.Contains(page, want) {
			t.Errorf("install page does not name %q:\n%s", want, page)
		}
	}

	// The admin picks the European Union (by its label, as a person clicks)
	// and goes on to Zoom.
	b.do("choose the European Union", chromedp.Click(chromedp.CSS(`label[for="region-eu"]`)))
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	checked, err := chromedp.Run(ctx, chromedp.JavascriptAttribute[bool](chromedp.ID("region-eu"), "checked"))
	cancel()
	if err != nil || !checked {
		b.fail("the European Union is chosen", fmt.Errorf("radio region-eu checked=%v (%v)", checked, err))
	}
	b.do("continue to Zoom",
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("account")), // the sandbox's authorize page
	)
	ctx, cancel = context.WithTimeout(bctx, 20*time.Second)
	loc, err := chromedp.Run(ctx, chromedp.Location())
	cancel()
	if err != nil || !strings.HasPrefix(loc, p.zoom.srv.URL+"/oauth/authorize?") {
		b.fail("at Zoom's authorize page", fmt.Errorf("location %q (%v)", loc, err))
	}

	// At "Zoom", the admin of account acct-browser-eu allows the app.
	b.do("allow the app",
		chromedp.SetValue(chromedp.ID("account"), account),
		chromedp.SetValue(chromedp.ID("user"), user),
		chromedp.Click(chromedp.CSS(`button[name="decision"][value="allow"]`)),
		chromedp.WaitVisible(chromedp.CSS("div.status")), // the callback's page: success or problem
	)
	if h1 := b.text("read the heading", "h1"); !strings.Contains(h1, "installed") {
		b.fail("success page", fmt.Errorf("heading %q, want the success page", h1))
	}
	b.screenshot("success-page.png")
	done := b.text("read the success page", "main")
	if !strings.Contains(done, "European Union") || !strings.Contains(done, p.cfg.Install.BotName) {
		t.Errorf("success page does not name the region and the bot:\n%s", done)
	}

	// The directory says where the account lives, and the API URL Zoom gave.
	rec := p.account(account)
	if rec.Region != "eu" || rec.APIURL != p.zoom.srv.URL {
		t.Errorf("directory: %+v, want region eu, api_url %s", rec, p.zoom.srv.URL)
	}
	// The EU vault holds the account's tokens, encrypted for that account.
	raw := p.vaultRecord("eu", account)
	if raw == nil {
		t.Fatal("no record of the account in the EU vault")
	}
	for _, plain := range append([]string{`"access_token"`, `"refresh_token"`, user}, sandboxTokenPrefixes...) {
		if bytes.Contains(raw, []byte(plain)) {
			t.Errorf("the EU vault record holds %q in plaintext", plain)
		}
	}
	r := p.openVaultRecord("eu", account, raw)
	if !strings.HasPrefix(r.AccessToken, "sandbox-user.") || !strings.HasPrefix(r.RefreshToken, "sandbox-refresh.") ||
		r.UserID != user || r.APIURL != p.zoom.srv.URL || r.ExpiresAt.Before(time.Now()) {
		t.Errorf("EU vault record of %s: user %q, api_url %q, expires %s, tokens %t/%t", account, r.UserID, r.APIURL, r.ExpiresAt,
			strings.HasPrefix(r.AccessToken, "sandbox-user."), strings.HasPrefix(r.RefreshToken, "sandbox-refresh."))
	}
	key, _ := vault.ParseKey(p.region("eu").VaultKey)
	if _, err := key.Open("acct-someone-else", raw); err == nil {
		t.Error("the EU vault record of one account opens as another's")
	}
	// The other regions hold nothing at all.
	for _, region := range []string{"us", "uk"} {
		if keys := p.vaultKeys(region); len(keys) != 0 {
			t.Errorf("the %s vault holds %v, want nothing", region, keys)
		}
	}
	// No stream holds the tokens in plaintext: not the transit streams,
	// not the directory, not the install nonces.
	p.assertNoPlaintextTokens()

	// Going back to the callback (reload) does not install anything twice:
	// the install cookie is gone and the state is used.
	b.do("reload the callback", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("div.status")))
	if h1 := b.text("read the heading after reload", "h1"); strings.Contains(h1, "installed") {
		t.Errorf("reloading the callback installed again: %q", h1)
	}
	if rec := p.account(account); rec.Region != "eu" {
		t.Errorf("after the reload, directory: %+v", rec)
	}
	if !bytes.Equal(p.vaultRecord("eu", account), raw) {
		t.Error("reloading the callback changed the EU vault record")
	}
}

// TestE2EUninstallErasesTheAccountInItsRegion: app_deauthorized erases the
// account's tokens, dead letters, reply records and directory entry in its
// region, records the erase in the region's audit, and touches nothing of
// another account of the same region. A re-delivery changes nothing.
func TestE2EUninstallErasesTheAccountInItsRegion(t *testing.T) {
	t.Parallel()
	const gone, stays, region = "acct-leaving", "acct-staying", "eu"
	p := newPipelineWith(t, t.TempDir(), pipelineOptions{install: true})
	p.installByHTTP(gone, "admin-leaving", region)
	p.installByHTTP(stays, "admin-staying", region)

	// Each account has a reply record of an event answered and a dead
	// letter (its backend refuses "please fail" with a 400), so two reply
	// records: the dead letter's event keeps its last error.
	p.backends[region].refuse = func(req proto.BackendRequest) int {
		if req.Event == "bot_notification" && bytes.Contains(req.Payload, []byte("please fail")) {
			return http.StatusBadRequest
		}
		return 0
	}
	for _, a := range []string{gone, stays} {
		p.send(a, "please fail")
		p.send(a, "hello")
	}
	p.waitDelivered(2)
	for _, a := range []string{gone, stays} {
		natstest.Eventually(t, 20*time.Second, func() bool { return len(p.deadLetters(region, a)) == 1 }, "a dead letter of %s", a)
		natstest.Eventually(t, 20*time.Second, func() bool { return len(p.replyKeys(region, a)) == 2 }, "two reply records of %s", a)
		if p.vaultRecord(region, a) == nil {
			t.Fatalf("no tokens of %s before the uninstall", a)
		}
	}
	before := p.snapshot(region, stays)

	deauth := accountEvent(t, "app_deauthorized_2", gone, 0)
	p.post(deauth)
	var erase dlq.Action
	natstest.Eventually(t, 20*time.Second, func() bool {
		erases := p.erasures(region, gone)
		if len(erases) > 0 {
			erase = erases[0]
		}
		return len(erases) > 0
	}, "the erase of %s in the audit", gone)
	// The backend gets the event too, after geomux has erased its own data;
	// wait until the region has finished it, so that nothing it does after
	// the erase goes unseen.
	natstest.Eventually(t, 20*time.Second, func() bool {
		return p.backendSaw(region, gone, "app_deauthorized") == 1 && p.regionIdle(region)
	}, "the region to finish the app_deauthorized event")

	if e := erase.Erased; e == nil || !e.Tokens || e.DeadLetters != 1 || e.ReplyRecords != 2 || !e.Directory {
		t.Errorf("audit: erased %+v, want tokens, 1 dead letter, 2 reply records, directory", e)
	}
	if erase.Action != "erase" || !strings.Contains(erase.Operator, "app_deauthorized") || erase.At.IsZero() || !strings.Contains(erase.Selection, gone) {
		t.Errorf("audit record: %+v", erase)
	}
	p.assertErased(region, gone)
	if after := p.snapshot(region, stays); !after.equal(before) {
		t.Errorf("the uninstall of %s changed %s's data:\nbefore %+v\nafter  %+v", gone, stays, before, after)
	}

	// Zoom re-delivers the event (same body, new timestamp and signature):
	// accepted, and nothing changes.
	resp, err := http.DefaultClient.Do(zoomtest.NewRequest(p.webhook, e2eSecret, deauth, time.Now().Add(time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("re-delivered app_deauthorized: %d, want 200", resp.StatusCode)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.metrics(), `geomux_ingress_duplicates_total{app="default"} 1`)
	}, "the re-delivery recognised as a duplicate")
	natstest.Eventually(t, 10*time.Second, func() bool { return p.regionIdle(region) }, "the region idle")
	if n := len(p.erasures(region, gone)); n != 1 {
		t.Errorf("%d erase records after the re-delivery, want 1", n)
	}
	if n := p.backendSaw(region, gone, "app_deauthorized"); n != 1 {
		t.Errorf("the backend got app_deauthorized %d times, want 1", n)
	}
	p.assertErased(region, gone)
	if after := p.snapshot(region, stays); !after.equal(before) {
		t.Errorf("the re-delivery changed %s's data:\nbefore %+v\nafter  %+v", stays, before, after)
	}
	// Four chat events (two dead-lettered) and one app_deauthorized, each
	// handled once, none retried.
	m := p.metrics()
	for _, want := range []string{
		`geomux_worker_handled_total{outcome="ok",region="eu"} 3`,
		`geomux_worker_handled_total{outcome="dead",region="eu"} 2`,
		`geomux_worker_handled_total{outcome="retry",region="eu"} 0`,
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(m, "geomux_worker_handled_total"))
		}
	}
}

// TestE2EBotInstalledWaitsForTheInstall: Zoom's bot_installed can arrive
// before the admin has finished the install; it is parked, seen by no
// region, and handled in the region the install then records.
func TestE2EBotInstalledWaitsForTheInstall(t *testing.T) {
	t.Parallel()
	const account = "acct-early-bot"
	p := newPipelineWith(t, t.TempDir(), pipelineOptions{install: true})
	p.post(accountEvent(t, "bot_installed", account, 0))
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.metrics(), "geomux_router_parked_total 1")
	}, "bot_installed parked")
	for _, r := range e2eRegions {
		if n := len(p.backends[r].requests()); n != 0 {
			t.Fatalf("region %s saw an event of an account without region", r)
		}
	}

	p.installByHTTP(account, "early-admin", "uk")
	natstest.Eventually(t, 20*time.Second, func() bool { return p.backendSaw("uk", account, "bot_installed") == 1 },
		"bot_installed at the uk backend")
	for _, r := range []string{"us", "eu"} {
		if n := len(p.backends[r].requests()); n != 0 {
			t.Errorf("region %s saw %d events of an account of uk", r, n)
		}
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return p.regionIdle("uk") }, "the uk region idle")
	if dl := p.deadLetters("uk", account); len(dl) != 0 {
		t.Errorf("bot_installed dead-lettered: %+v", dl)
	}
}

// TestE2EStaleUninstallDoesNotEraseALaterInstall: an app_deauthorized that
// arrives while its account has no region has nothing to erase. Were it
// parked like any event, it would be routed when the account next gets a
// region and erase that new install.
func TestE2EStaleUninstallDoesNotEraseALaterInstall(t *testing.T) {
	t.Parallel()
	const account = "acct-changed-mind"
	p := newPipelineWith(t, t.TempDir(), pipelineOptions{install: true})

	// The admin approves the app in Zoom's Marketplace, but closes the page
	// that asks for the region: nothing is recorded.
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	resp, body := do(t, c, http.MethodGet, p.zoom.srv.URL+"/marketplace/install?account="+account, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="region"`) {
		t.Fatalf("Marketplace install: %d at %s:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	// They remove the app in Zoom: app_deauthorized, for an account without
	// a region.
	p.post(accountEvent(t, "app_deauthorized_2", account, 0))
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.metrics(), `geomux_router_dropped_total{reason="uninstall_without_region"} 1`)
	}, "the uninstall of an account without region dropped, not parked")
	if strings.Contains(p.metrics(), "geomux_router_parked_total 1") {
		t.Error("the uninstall was parked")
	}

	// Later that day they install through the install page.
	p.installByHTTP(account, "admin", "eu")
	natstest.Eventually(t, 20*time.Second, func() bool {
		return strings.Contains(p.metrics(), `geomux_router_parked_messages{waiting_for="region"} 0`) && p.regionIdle("eu")
	}, "nothing parked, the region idle")
	if p.vaultRecord("eu", account) == nil {
		t.Error("the install's tokens were erased by the earlier uninstall")
	}
	if rec := p.account(account); rec.Region != "eu" {
		t.Errorf("the install's directory entry was erased by the earlier uninstall: %+v", rec)
	}
}

// accountEvent is the example event name with its account replaced, and
// event_ts set to ts when not 0 (two events then differ, as two real ones do).
func accountEvent(t *testing.T, name, account string, ts int64) []byte {
	t.Helper()
	var ev map[string]any
	if err := json.Unmarshal(zoomtest.Event(name), &ev); err != nil {
		t.Fatal(err)
	}
	payload := ev["payload"].(map[string]any)
	switch {
	case payload["account_id"] != nil:
		payload["account_id"] = account
	case payload["accountId"] != nil:
		payload["accountId"] = account
	default:
		t.Fatalf("example %s has no account", name)
	}
	if ts != 0 {
		ev["event_ts"] = ts
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// installByHTTP plays an admin's browser through the install flow with an
// http.Client and a cookie jar: the region form, Zoom's authorize page
// (allowed, as account and user), the callback. It fails the test unless
// the success page names the region.
func (p *pipeline) installByHTTP(account, user, region string) {
	p.t.Helper()
	status, body := installByHTTP(p.t, p.publicURL, p.zoom.srv.URL, account, user, region)
	if status != http.StatusOK || !strings.Contains(body, "is installed") || !strings.Contains(body, e2eDisplayNames[region]) {
		p.t.Fatalf("install of %s: %d:\n%s", account, status, body)
	}
}

// installByHTTP goes through the install flow served at publicURL with
// Zoom's sandbox at zoomURL, and returns the status and page it ends on
// (the callback's).
func installByHTTP(t *testing.T, publicURL, zoomURL, account, user, region string) (int, string) {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	// The region form redirects to Zoom's authorize page; its form carries
	// the authorize URL's parameters back to Zoom with the admin's answer.
	resp, body := do(t, c, http.MethodPost, publicURL+"/install", url.Values{"region": {region}})
	authorize := resp.Request.URL
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(authorize.String(), zoomURL+"/oauth/authorize?") || !strings.Contains(body, `id="account"`) {
		t.Fatalf("install of %s: at %s, %d:\n%s", account, authorize, resp.StatusCode, body)
	}
	q := authorize.Query()
	form := url.Values{"account": {account}, "user": {user}, "decision": {"allow"}}
	for _, k := range []string{"client_id", "redirect_uri", "state", "code_challenge"} {
		form.Set(k, q.Get(k))
	}
	resp, body = do(t, c, http.MethodPost, zoomURL+"/oauth/authorize", form)
	if resp.Request.URL.Path != "/oauth/callback" {
		t.Fatalf("install of %s: ended at %s, %d:\n%s", account, resp.Request.URL, resp.StatusCode, body)
	}
	return resp.StatusCode, body
}

func do(t *testing.T, c *http.Client, method, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if form != nil {
		rd = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// accountRecord is the admin API's view of an account; zero if it has no
// region.
type accountRecord struct {
	Region string `json:"region"`
	APIURL string `json:"api_url"`
}

func (p *pipeline) account(account string) accountRecord {
	p.t.Helper()
	status, body := p.adminDo(http.MethodGet, "/admin/v1/accounts/"+account, "")
	var rec accountRecord
	switch status {
	case http.StatusNotFound:
	case http.StatusOK:
		if err := json.Unmarshal([]byte(body), &rec); err != nil {
			p.t.Fatalf("account %s: %v in %s", account, err, body)
		}
	default:
		p.t.Fatalf("account %s: %d %s", account, status, body)
	}
	return rec
}

func (p *pipeline) region(name string) config.Region {
	p.t.Helper()
	for _, r := range p.cfg.Regions {
		if r.Name == name {
			return r
		}
	}
	p.t.Fatalf("no region %s", name)
	return config.Region{}
}

func (p *pipeline) kv(bucket string) jetstream.KeyValue {
	p.t.Helper()
	kv, err := p.js.KeyValue(p.t.Context(), bucket)
	if err != nil {
		p.t.Fatalf("bucket %s: %v", bucket, err)
	}
	return kv
}

func (p *pipeline) keys(bucket string) []string {
	p.t.Helper()
	keys, err := p.kv(bucket).Keys(p.t.Context())
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		p.t.Fatalf("keys of %s: %v", bucket, err)
	}
	return keys
}

func (p *pipeline) vaultKeys(region string) []string { return p.keys(proto.RegionVaultBucket(region)) }

// vaultRecord is the raw (sealed) vault record of account, nil if none.
func (p *pipeline) vaultRecord(region, account string) []byte {
	p.t.Helper()
	e, err := p.kv(proto.RegionVaultBucket(region)).Get(p.t.Context(), account)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		p.t.Fatalf("vault of %s: %v", region, err)
	}
	return e.Value()
}

func (p *pipeline) openVaultRecord(region, account string, raw []byte) vault.Record {
	p.t.Helper()
	key, err := vault.ParseKey(p.region(region).VaultKey)
	if err != nil {
		p.t.Fatal(err)
	}
	plain, err := key.Open(account, raw)
	if err != nil {
		p.t.Fatalf("vault record of %s: %v", account, err)
	}
	var r vault.Record
	if err := json.Unmarshal(plain, &r); err != nil {
		p.t.Fatalf("vault record of %s: %v", account, err)
	}
	return r
}

// replyKeys are the keys of account's reply records in region.
func (p *pipeline) replyKeys(region, account string) []string {
	var out []string
	for _, k := range p.keys(proto.RegionRepliesBucket(region)) {
		if strings.HasPrefix(k, account+".") {
			out = append(out, k)
		}
	}
	return out
}

func (p *pipeline) dlqStore(region string) *dlq.Store {
	p.t.Helper()
	s, err := dlq.Open(p.t.Context(), p.js, region)
	if err != nil {
		p.t.Fatalf("dead letters of %s: %v", region, err)
	}
	return s
}

func (p *pipeline) deadLetters(region, account string) []dlq.Entry {
	p.t.Helper()
	es, err := p.dlqStore(region).List(p.t.Context(), dlq.Filter{Account: account})
	if err != nil {
		p.t.Fatalf("dead letters of %s: %v", account, err)
	}
	return es
}

// erasures are the erase records of account in region's audit.
func (p *pipeline) erasures(region, account string) []dlq.Action {
	p.t.Helper()
	h, err := p.dlqStore(region).History(p.t.Context())
	if err != nil {
		p.t.Fatalf("audit of %s: %v", region, err)
	}
	var out []dlq.Action
	for _, a := range h {
		if a.Action == "erase" && a.Account == account {
			out = append(out, a)
		}
	}
	return out
}

// backendSaw is how many events of type event of account region's backend
// got.
func (p *pipeline) backendSaw(region, account, event string) int {
	n := 0
	for _, r := range p.backends[region].requests() {
		if r.AccountID == account && r.Event == event {
			n++
		}
	}
	return n
}

// regionIdle reports whether region's workers have finished every event of
// their stream (none waiting, none in hand).
func (p *pipeline) regionIdle(region string) bool {
	p.t.Helper()
	for part := range topology.DefaultPartitions {
		c, err := p.js.Consumer(p.t.Context(), proto.RegionEventsStream(region), proto.WorkersConsumer(part))
		if err != nil {
			p.t.Fatalf("workers of %s: %v", region, err)
		}
		info, err := c.Info(p.t.Context())
		if err != nil {
			p.t.Fatalf("workers of %s: %v", region, err)
		}
		if info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 {
			return false
		}
	}
	return true
}

// assertErased checks that region keeps nothing of account and that the
// directory no longer knows it.
func (p *pipeline) assertErased(region, account string) {
	p.t.Helper()
	if p.vaultRecord(region, account) != nil {
		p.t.Errorf("the %s vault still holds tokens of %s", region, account)
	}
	if dl := p.deadLetters(region, account); len(dl) != 0 {
		p.t.Errorf("%d dead letters of %s left in %s: %+v", len(dl), account, region, dl)
	}
	if keys := p.replyKeys(region, account); len(keys) != 0 {
		p.t.Errorf("reply records of %s left in %s: %v", account, region, keys)
	}
	if status, body := p.adminDo(http.MethodGet, "/admin/v1/accounts/"+account, ""); status != http.StatusNotFound {
		p.t.Errorf("directory still has %s: %d %s", account, status, body)
	}
}

// accountData is what a region keeps of an account.
type accountData struct {
	Vault       []byte
	DeadLetters []uint64
	Replies     []string
	Directory   accountRecord
}

func (a accountData) equal(b accountData) bool {
	return bytes.Equal(a.Vault, b.Vault) && slices.Equal(a.DeadLetters, b.DeadLetters) &&
		slices.Equal(a.Replies, b.Replies) && a.Directory == b.Directory
}

func (p *pipeline) snapshot(region, account string) accountData {
	p.t.Helper()
	d := accountData{Vault: p.vaultRecord(region, account), Replies: p.replyKeys(region, account), Directory: p.account(account)}
	for _, e := range p.deadLetters(region, account) {
		d.DeadLetters = append(d.DeadLetters, e.ID)
	}
	slices.Sort(d.Replies)
	if d.Vault == nil || len(d.DeadLetters) == 0 || len(d.Replies) == 0 || d.Directory.Region != region {
		p.t.Fatalf("%s is not fully installed in %s: %+v", account, region, d)
	}
	return d
}

// assertNoPlaintextTokens reads every message of every stream and fails if
// one holds a token the sandbox issued at install.
func (p *pipeline) assertNoPlaintextTokens() {
	p.t.Helper()
	ctx := p.t.Context()
	names := p.js.StreamNames(ctx)
	n := 0
	for name := range names.Name() {
		s, err := p.js.Stream(ctx, name)
		if err != nil {
			p.t.Fatalf("stream %s: %v", name, err)
		}
		st := s.CachedInfo().State
		for seq := st.FirstSeq; st.Msgs > 0 && seq <= st.LastSeq; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				p.t.Fatalf("stream %s, message %d: %v", name, seq, err)
			}
			n++
			hdr := fmt.Sprint(m.Header)
			for _, tok := range sandboxTokenPrefixes {
				if bytes.Contains(m.Data, []byte(tok)) || strings.Contains(hdr, tok) {
					p.t.Errorf("stream %s, message %d (%s) holds a token in plaintext", name, seq, m.Subject)
				}
			}
		}
	}
	if err := names.Err(); err != nil {
		p.t.Fatalf("streams: %v", err)
	}
	if n == 0 {
		p.t.Fatal("read no message at all: the check checks nothing")
	}
}

// grepLines are the lines of s containing sub.
func grepLines(s, sub string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}
