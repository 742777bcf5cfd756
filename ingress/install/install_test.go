package install_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/ingress/install"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/httpx"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/vault"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
	"github.com/geomux/geomux/proto"
)

const (
	clientID     = "geomux-test-client"
	clientSecret = "geomux-test-secret"
	stateKey     = "install-state-key-for-tests-0123456789abcdef"
	botName      = "Geo Bot"
	vendor       = "Example Vendor"

	installCookie = "geomux_install.0"
	pendingCookie = "geomux_pending.0"
)

var regions = []config.Region{
	{Name: "eu", Handler: "echo", DisplayName: "European Union"},
	{Name: "us", Handler: "echo", DisplayName: "United States"},
}

// ---- the environment: NATS, directory, nonces, the Zoom sandbox, geomux ----

type handoffCall struct {
	region string
	h      proto.TokenHandover
}

// recorder is the Handoff: it records every call, and fails with err if set.
type recorder struct {
	mu    sync.Mutex
	calls []handoffCall
	err   error
	gate  func() // if set, called (unlocked) before each handoff returns
}

func (r *recorder) handoff(_ context.Context, region string, h proto.TokenHandover) error {
	r.mu.Lock()
	r.calls = append(r.calls, handoffCall{region: region, h: h})
	err, gate := r.err, r.gate
	r.mu.Unlock()
	if gate != nil {
		gate()
	}
	return err
}

func (r *recorder) all() []handoffCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]handoffCall(nil), r.calls...)
}

// clock is the handler's clock: real time plus an offset the test moves.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) set(off time.Duration) {
	c.mu.Lock()
	c.off = off
	c.mu.Unlock()
}

type envOpts struct {
	publicURL     string        // default: the test server's URL
	zoomURL       string        // default: the sandbox's URL
	tokenLifetime time.Duration // the sandbox's; default 1h
	handoffErr    error
	limited       bool // keep the callback's rate limit (off: tests call it often)
}

type env struct {
	t        *testing.T
	sb       *sandbox.Sandbox
	zoomURL  string
	url      string // where the test reaches geomux
	public   string // geomux's public URL
	h        *install.Handler
	zc       *zoom.Client
	dir      *directory.Directory
	nonces   jetstream.KeyValue
	handoffs *recorder
	clock    *clock

	mu         sync.Mutex
	tokenForms []url.Values // the forms of the sandbox's /oauth/token requests
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	ns := natstest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir, err := directory.Open(ctx, ns.JS)
	if err != nil {
		t.Fatal(err)
	}
	nkv, err := natsx.EnsureKeyValue(ctx, ns.JS, topology.InstallNoncesConfig(topology.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e := &env{t: t, url: srv.URL, public: srv.URL, dir: dir, nonces: nkv, handoffs: &recorder{err: o.handoffErr}, clock: &clock{}}
	if o.publicURL != "" {
		e.public = o.publicURL
	}
	e.sb = sandbox.New(sandbox.Config{
		ClientID: clientID, ClientSecret: clientSecret, BotJID: "bot@xmpp.zoom.us",
		TokenLifetime: o.tokenLifetime, RedirectURI: e.public + install.PathCallback,
	}, nil)
	zsrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth/token" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			form, _ := url.ParseQuery(string(body))
			e.mu.Lock()
			e.tokenForms = append(e.tokenForms, form)
			e.mu.Unlock()
		}
		e.sb.ServeHTTP(w, r)
	}))
	t.Cleanup(zsrv.Close)
	e.zoomURL = zsrv.URL
	if o.zoomURL != "" {
		e.zoomURL = o.zoomURL
	}
	e.zc = zoom.NewClient(zoom.ClientConfig{
		ClientID: clientID, ClientSecret: clientSecret, APIBaseURL: e.zoomURL + "/v2", OAuthBaseURL: e.zoomURL,
	}, httpx.NewClient(httpx.Options{Retries: 0, WaitMin: 10 * time.Millisecond, WaitMax: 100 * time.Millisecond}, zap.NewNop()))
	e.h, err = install.New(install.Options{
		PublicURL: e.public, StateKey: []byte(stateKey), BotName: botName, Vendor: vendor,
		Regions: regions, OAuthOrigin: install.OriginOf(e.zoomURL),
	}, directory.Local{Dir: dir, HandOver: e.handoffs.handoff}, e.zc, &install.KVNonces{KV: nkv}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	install.SetNow(e.h, e.clock.now)
	if !o.limited {
		install.Unlimited(e.h)
	}
	e.h.Mount(mux)
	return e
}

func (e *env) tokenRequests() []url.Values {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]url.Values(nil), e.tokenForms...)
}

// record is the directory's record of account, or fails the test.
func (e *env) record(account string) (rec struct {
	Region, APIURL string
	UpdatedAt      time.Time
}, found bool) {
	e.t.Helper()
	r, err := e.dir.Get(context.Background(), account)
	if errors.Is(err, directory.ErrNotFound) {
		return rec, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	rec.Region, rec.APIURL, rec.UpdatedAt = r.Region, r.APIURL, r.UpdatedAt
	return rec, true
}

// nothingRecorded fails unless account is absent from the directory and no
// handoff happened at all.
func (e *env) nothingRecorded(account string) {
	e.t.Helper()
	if rec, found := e.record(account); found {
		e.t.Errorf("directory holds %s → %+v; want nothing", account, rec)
	}
	if calls := e.handoffs.all(); len(calls) != 0 {
		e.t.Errorf("handoff called %d times (first: region %s, account %s); want never", len(calls), calls[0].region, calls[0].h.AccountID)
	}
}

// ---- a browser: a cookie jar, and each redirect followed by hand ----

type browser struct {
	t   *testing.T
	c   *http.Client
	jar *cookiejar.Jar
}

func newBrowser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, jar: jar, c: &http.Client{
		Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type page struct {
	url      *url.URL
	status   int
	body     string
	header   http.Header
	location string // absolute
	cookies  []*http.Cookie
}

func (b *browser) do(req *http.Request) *page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	p := &page{url: req.URL, status: resp.StatusCode, body: string(body), header: resp.Header, cookies: resp.Cookies()}
	if loc, err := resp.Location(); err == nil {
		p.location = loc.String()
	}
	return p
}

func (b *browser) get(u string) *page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) post(u string, form url.Values) *page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// cookie is the value the jar would send to geomux's callback for name.
func (b *browser) cookie(e *env, name string) (string, bool) {
	u, _ := url.Parse(e.url + install.PathCallback)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c.Value, true
		}
	}
	return "", false
}

// setCookie puts a cookie in the jar as geomux would have set it.
func (b *browser) setCookie(e *env, name, value string) {
	u, _ := url.Parse(e.url + install.PathCallback)
	b.jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/oauth/", HttpOnly: true, MaxAge: 600}})
}

// ---- checks ----

// leaks are what a page shown to an admin must never contain.
var leaks = []string{
	"jwt", "signature", "token is", "invalid_grant", "invalid_request", "invalid authorization code",
	"code verifier", "zoom-oauth", "zoom answered", "dial tcp", "connection refused", "127.0.0.1",
	"nats", "vault:", "handoff", "%!", "sandbox-user.", "sandbox-refresh.",
}

// checkPage checks the status, the security headers, that the body holds
// each of wants, and for an error page that it leaks nothing.
func (e *env) checkPage(p *page, status int, wants ...string) {
	e.t.Helper()
	if p.status != status {
		e.t.Fatalf("%s: status %d, want %d; page:\n%s", p.url.Path, p.status, status, text(p.body))
	}
	if ct := p.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		e.t.Errorf("Content-Type %q", ct)
	}
	csp := p.header.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "form-action 'self' " + install.OriginOf(e.zoomURL), "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, d) {
			e.t.Errorf("Content-Security-Policy %q lacks %q", csp, d)
		}
	}
	if cc := p.header.Get("Cache-Control"); cc != "no-store" {
		e.t.Errorf("Cache-Control %q, want no-store", cc)
	}
	if v := p.header.Get("X-Content-Type-Options"); v != "nosniff" {
		e.t.Errorf("X-Content-Type-Options %q", v)
	}
	if v := p.header.Get("Referrer-Policy"); v != "no-referrer" {
		e.t.Errorf("Referrer-Policy %q", v)
	}
	for _, w := range wants {
		if !strings.Contains(p.body, w) {
			e.t.Errorf("%s (%d): page lacks %q; page:\n%s", p.url.Path, p.status, w, text(p.body))
		}
	}
	if status >= 400 {
		low := strings.ToLower(p.body)
		for _, l := range leaks {
			if strings.Contains(low, l) {
				e.t.Errorf("%s (%d): page leaks %q; page:\n%s", p.url.Path, p.status, l, text(p.body))
			}
		}
	}
}

var tags = regexp.MustCompile(`(?s)<style>.*?</style>|<[^>]*>`)

// text is a page's text, for failure messages.
func text(body string) string {
	return strings.Join(strings.Fields(tags.ReplaceAllString(body, " ")), " ")
}

// checkCookie checks the attributes of a cookie geomux sets.
func checkCookie(t *testing.T, c *http.Cookie, secure bool) {
	t.Helper()
	if !c.HttpOnly {
		t.Errorf("cookie %s is not HttpOnly", c.Name)
	}
	if c.SameSite != http.SameSiteLaxMode {
		t.Errorf("cookie %s SameSite %v, want Lax", c.Name, c.SameSite)
	}
	if c.Path != "/oauth/" {
		t.Errorf("cookie %s Path %q, want /oauth/", c.Name, c.Path)
	}
	if c.Secure != secure {
		t.Errorf("cookie %s Secure %v, want %v", c.Name, c.Secure, secure)
	}
	if c.Domain != "" {
		t.Errorf("cookie %s Domain %q, want host-only", c.Name, c.Domain)
	}
}

func setCookie(p *page, name string) *http.Cookie {
	for _, c := range p.cookies {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func pkce(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// claims reads a state's claims without verifying it.
func claims(t *testing.T, state string) jwt.MapClaims {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(state, jwt.MapClaims{})
	if err != nil {
		t.Fatalf("state %q is not a JWT: %v", state, err)
	}
	return tok.Claims.(jwt.MapClaims)
}

func withQuery(t *testing.T, raw string, set map[string]string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for k, v := range set {
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// flip changes the character at i of s to another of the same alphabet.
func flip(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

// ---- the flow's hops ----

// start posts the region choice and returns Zoom's authorize URL it
// redirects to, after checking the redirect and the install cookie.
func (e *env) start(b *browser, region string) *url.URL {
	e.t.Helper()
	p := b.post(e.url+install.PathInstall, url.Values{"region": {region}})
	if p.status != http.StatusSeeOther {
		e.t.Fatalf("POST /install: status %d, want 303; page:\n%s", p.status, text(p.body))
	}
	if !strings.HasPrefix(p.location, e.zoomURL+"/oauth/authorize?") {
		e.t.Fatalf("POST /install redirects to %q, want %s/oauth/authorize?...", p.location, e.zoomURL)
	}
	c := setCookie(p, installCookie)
	if c == nil {
		e.t.Fatalf("POST /install set no %s cookie (set: %v)", installCookie, p.cookies)
	}
	checkCookie(e.t, c, strings.HasPrefix(e.public, "https://"))
	if c.MaxAge <= 0 || c.MaxAge > 600 {
		e.t.Errorf("install cookie Max-Age %d, want (0, 600]", c.MaxAge)
	}
	u, _ := url.Parse(p.location)
	q := u.Query()
	for k, want := range map[string]string{
		"response_type": "code", "client_id": clientID, "redirect_uri": e.public + install.PathCallback, "code_challenge_method": "S256",
	} {
		if got := q.Get(k); got != want {
			e.t.Errorf("authorize URL %s = %q, want %q", k, got, want)
		}
	}
	if ch := q.Get("code_challenge"); len(ch) != 43 || strings.ContainsAny(ch, "+/=") {
		e.t.Errorf("code_challenge %q: want 43 characters of unpadded base64url (S256)", ch)
	}
	st := q.Get("state")
	if strings.Count(st, ".") != 2 {
		e.t.Fatalf("state %q is not a JWS", st)
	}
	if n, _ := claims(e.t, st)["nonce"].(string); n == "" || strings.Contains(c.Value, n) {
		e.t.Errorf("the state has no nonce, or the install cookie shows it in clear")
	}
	return u
}

// approve plays the admin on the sandbox's authorize page and returns the
// callback URL Zoom redirects the browser to.
func (e *env) approve(b *browser, auth *url.URL, account, decision string) string {
	e.t.Helper()
	if p := b.get(auth.String()); p.status != http.StatusOK {
		e.t.Fatalf("sandbox authorize page: status %d: %s", p.status, p.body)
	}
	q := auth.Query()
	p := b.post(e.zoomURL+"/oauth/authorize", url.Values{
		"client_id": {q.Get("client_id")}, "redirect_uri": {q.Get("redirect_uri")}, "state": {q.Get("state")},
		"code_challenge": {q.Get("code_challenge")}, "account": {account}, "user": {"admin-of-" + account}, "decision": {decision},
	})
	if p.status != http.StatusFound || !strings.HasPrefix(p.location, e.public+install.PathCallback+"?") {
		e.t.Fatalf("sandbox authorize: status %d, Location %q; want 302 to the callback", p.status, p.location)
	}
	return p.location
}

// install runs the whole flow and returns the callback's page.
func (e *env) install(b *browser, region, account string) *page {
	e.t.Helper()
	return b.get(e.approve(b, e.start(b, region), account, "allow"))
}

// marketplace starts an install from the sandbox's Marketplace and returns
// the callback's page.
func (e *env) marketplace(b *browser, account string) *page {
	e.t.Helper()
	p := b.get(e.zoomURL + "/marketplace/install?account=" + url.QueryEscape(account))
	if p.status != http.StatusFound || !strings.HasPrefix(p.location, e.public+install.PathCallback+"?code=") {
		e.t.Fatalf("marketplace install: status %d, Location %q", p.status, p.location)
	}
	if u, _ := url.Parse(p.location); u.Query().Has("state") {
		e.t.Fatalf("a Marketplace install carries a state: %s", p.location)
	}
	return b.get(p.location)
}

var nonceField = regexp.MustCompile(`<input type="hidden" name="nonce" value="([^"]+)">`)

// choice checks the Marketplace region choice page and returns its nonce.
func (e *env) choice(p *page) string {
	e.t.Helper()
	e.checkPage(p, http.StatusOK, "One last step: choose your region", `action="/oauth/region"`,
		`value="eu"`, "European Union", `value="us"`, "United States", "nothing is recorded until you choose")
	m := nonceField.FindStringSubmatch(p.body)
	if m == nil {
		e.t.Fatalf("the region choice has no hidden nonce:\n%s", p.body)
	}
	c := setCookie(p, pendingCookie)
	if c == nil {
		e.t.Fatalf("the region choice set no %s cookie", pendingCookie)
	}
	checkCookie(e.t, c, strings.HasPrefix(e.public, "https://"))
	return m[1]
}

// checkInstalled checks that account was handed to region with working
// tokens (call number n, from 1) and is recorded there.
func (e *env) checkInstalled(account, region string, n int) proto.TokenHandover {
	e.t.Helper()
	calls := e.handoffs.all()
	if len(calls) != n {
		e.t.Fatalf("%d handoffs, want %d", len(calls), n)
	}
	c := calls[n-1]
	if c.region != region || c.h.AccountID != account {
		e.t.Errorf("handoff to region %q of account %q; want %q, %q", c.region, c.h.AccountID, region, account)
	}
	if !strings.HasPrefix(c.h.AccessToken, "sandbox-user.") || !strings.HasPrefix(c.h.RefreshToken, "sandbox-refresh.") {
		e.t.Errorf("handoff tokens %q / %q are not the sandbox's user tokens", c.h.AccessToken, c.h.RefreshToken)
	}
	if c.h.APIURL != e.zoomURL {
		e.t.Errorf("handoff api_url %q, want %q", c.h.APIURL, e.zoomURL)
	}
	if c.h.UserID != "admin-of-"+account && c.h.UserID != "sandbox-admin" {
		e.t.Errorf("handoff user id %q", c.h.UserID)
	}
	if d := time.Until(c.h.ExpiresAt); d < 50*time.Minute || d > 61*time.Minute {
		e.t.Errorf("handoff token expires in %s, want about 1h", d)
	}
	// The tokens are Zoom's real ones: Zoom says whose they are.
	me, err := e.zc.UsersMe(context.Background(), c.h.APIURL, c.h.AccessToken)
	if err != nil || me.AccountID != account {
		e.t.Errorf("users/me with the handed access token: %+v, %v; want account %s", me, err, account)
	}
	rec, found := e.record(account)
	if !found || rec.Region != region || rec.APIURL != e.zoomURL {
		e.t.Errorf("directory: %s → %+v (found %v); want region %s, api_url %s", account, rec, found, region, e.zoomURL)
	}
	return c.h
}

// ---- tests ----

func TestInstallPage(t *testing.T) {
	e := newEnv(t, envOpts{})
	p := newBrowser(t).get(e.url + install.PathInstall)
	e.checkPage(p, http.StatusOK, "Install "+botName, "by "+vendor, `action="/install"`, `method="post"`,
		`value="eu"`, "European Union", `value="us"`, "United States", "Continue to Zoom")
	if strings.Contains(p.body, `name="nonce"`) {
		t.Error("the install page carries a nonce field")
	}
	if strings.Index(p.body, "European Union") > strings.Index(p.body, "United States") {
		t.Error("regions are not offered in the configured order")
	}
	if len(p.cookies) != 0 {
		t.Errorf("GET /install set cookies: %v", p.cookies)
	}
}

func TestInstall(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBrowser(t)
	auth := e.start(b, "eu")
	st := claims(t, auth.Query().Get("state"))
	if st["rgn"] != "eu" || st["iss"] != "geomux" || st["nonce"] == "" || st["jti"] == "" {
		t.Errorf("state claims %v", st)
	}
	if aud, _ := st.GetAudience(); len(aud) != 1 || aud[0] != "geomux-install" {
		t.Errorf("state audience %v", aud)
	}
	iat, _ := st.GetIssuedAt()
	exp, _ := st.GetExpirationTime()
	if iat == nil || exp == nil || exp.Sub(iat.Time) != 10*time.Minute {
		t.Errorf("state issued %v, expires %v; want a 10-minute life", iat, exp)
	}

	cb := e.approve(b, auth, "acct-eu-1", "allow")
	if len(e.handoffs.all()) != 0 || len(e.tokenRequests()) != 0 {
		t.Fatal("something happened before the callback")
	}
	p := b.get(cb)
	e.checkPage(p, http.StatusOK, botName+" is installed", `<span class="region">European Union</span> (eu)`)
	e.checkInstalled("acct-eu-1", "eu", 1)

	// The sandbox got the PKCE verifier of the challenge, the code and the
	// redirect URI.
	forms := e.tokenRequests()
	if len(forms) != 1 {
		t.Fatalf("%d token requests, want 1", len(forms))
	}
	f := forms[0]
	cbq, _ := url.Parse(cb)
	if f.Get("grant_type") != "authorization_code" || f.Get("code") != cbq.Query().Get("code") || f.Get("redirect_uri") != e.public+install.PathCallback {
		t.Errorf("token request %v", f)
	}
	if v := f.Get("code_verifier"); len(v) < 43 || len(v) > 128 || pkce(v) != auth.Query().Get("code_challenge") {
		t.Errorf("code_verifier %q does not match the challenge %q", v, auth.Query().Get("code_challenge"))
	}

	// The install cookie is spent: deleted by the callback.
	if c := setCookie(p, installCookie); c == nil || c.MaxAge >= 0 {
		t.Errorf("the callback did not delete the install cookie (Set-Cookie %v)", c)
	}
	if _, ok := b.cookie(e, installCookie); ok {
		t.Error("the browser still holds the install cookie")
	}
	// The state's id is recorded as used.
	if _, err := e.nonces.Get(context.Background(), st["jti"].(string)); err != nil {
		t.Errorf("the nonce store does not hold the state's id: %v", err)
	}
}

func TestInstallCookiesSecureOverHTTPS(t *testing.T) {
	e := newEnv(t, envOpts{publicURL: "https://geomux.example.com"})
	b := newBrowser(t)
	auth := e.start(b, "us") // checks Secure on the install cookie, and the redirect_uri
	if got := auth.Query().Get("redirect_uri"); got != "https://geomux.example.com/oauth/callback" {
		t.Errorf("redirect_uri %q", got)
	}
	// The http variant of the same check runs in every other test's start.
	p := b.post(e.url+install.PathInstall, url.Values{"region": {"mars"}})
	e.checkPage(p, http.StatusBadRequest)

	// The pending cookie of a Marketplace install too. (The test reaches
	// geomux over http at its own address; the public URL says https.)
	p = b.get(e.zoomURL + "/marketplace/install?account=acct-https")
	if !strings.HasPrefix(p.location, "https://geomux.example.com/oauth/callback?code=") {
		t.Fatalf("marketplace install redirects to %q", p.location)
	}
	loc, _ := url.Parse(p.location)
	e.choice(b.get(e.url + loc.RequestURI())) // checks the pending cookie's attributes, Secure included
}

func TestStateAltered(t *testing.T) {
	e := newEnv(t, envOpts{})
	otherKey := []byte("another-key-another-key-another-key!!")
	resign := func(m jwt.SigningMethod, key any, edit func(jwt.MapClaims)) func(*testing.T, string) string {
		return func(t *testing.T, state string) string {
			c := claims(t, state)
			if edit != nil {
				edit(c)
			}
			s, err := jwt.NewWithClaims(m, c).SignedString(key)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	for _, tc := range []struct {
		name  string
		alter func(*testing.T, string) string
	}{
		{"signature altered", func(_ *testing.T, s string) string { return flip(s, strings.LastIndex(s, ".")+10) }},
		{"payload altered", func(t *testing.T, s string) string {
			parts := strings.Split(s, ".")
			c := claims(t, s)
			c["rgn"] = "us"
			b, _ := json.Marshal(c)
			parts[1] = base64.RawURLEncoding.EncodeToString(b)
			return strings.Join(parts, ".")
		}},
		{"signed with another key", resign(jwt.SigningMethodHS256, otherKey, nil)},
		{"signed with another key, region changed", resign(jwt.SigningMethodHS256, otherKey, func(c jwt.MapClaims) { c["rgn"] = "us" })},
		{"alg none", resign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil)},
		{"HS512 with the right key", resign(jwt.SigningMethodHS512, []byte(stateKey), nil)},
		{"right key, region not configured", resign(jwt.SigningMethodHS256, []byte(stateKey), func(c jwt.MapClaims) { c["rgn"] = "mars" })},
		{"right key, other audience", resign(jwt.SigningMethodHS256, []byte(stateKey), func(c jwt.MapClaims) { c["aud"] = []string{"someone-else"} })},
		{"right key, no expiry", resign(jwt.SigningMethodHS256, []byte(stateKey), func(c jwt.MapClaims) { delete(c, "exp") })},
		{"right key, no id", resign(jwt.SigningMethodHS256, []byte(stateKey), func(c jwt.MapClaims) { delete(c, "jti") })},
		{"not a JWT", func(*testing.T, string) string { return "not-a-state" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.handoffs.mu.Lock()
			e.handoffs.calls = nil
			e.handoffs.mu.Unlock()
			b := newBrowser(t)
			account := "acct-" + strings.NewReplacer(" ", "-", ",", "").Replace(tc.name)
			cb := e.approve(b, e.start(b, "eu"), account, "allow")
			state, _ := url.Parse(cb)
			bad := tc.alter(t, state.Query().Get("state"))
			if bad == state.Query().Get("state") {
				t.Fatal("the alteration changed nothing")
			}
			before := len(e.tokenRequests())
			p := b.get(withQuery(t, cb, map[string]string{"state": bad}))
			e.checkPage(p, http.StatusBadRequest, "This installation link is not valid",
				"It was not issued by this service, or was altered. Please start again.", `href="/install"`)
			if len(e.tokenRequests()) != before {
				t.Error("the code was exchanged with an altered state")
			}
			e.nothingRecorded(account)
			// The genuine state still works: the forgery burnt nothing.
			e.checkPage(b.get(cb), http.StatusOK, "European Union")
			e.checkInstalled(account, "eu", 1)
		})
	}
}

func TestStateExpires(t *testing.T) {
	e := newEnv(t, envOpts{})

	// Nine minutes later, the state is still good.
	b := newBrowser(t)
	cb := e.approve(b, e.start(b, "eu"), "acct-late-ok", "allow")
	e.clock.set(9 * time.Minute)
	e.checkPage(b.get(cb), http.StatusOK, "European Union")
	e.checkInstalled("acct-late-ok", "eu", 1)

	// Eleven minutes later, it has expired.
	e.clock.set(0)
	b = newBrowser(t)
	cb = e.approve(b, e.start(b, "eu"), "acct-late", "allow")
	e.clock.set(11 * time.Minute)
	before := len(e.tokenRequests())
	p := b.get(cb)
	e.checkPage(p, http.StatusBadRequest, "This installation link is not valid", "It has expired. Please start again.", `href="/install"`)
	if len(e.tokenRequests()) != before {
		t.Error("an expired state's code was exchanged")
	}
	if _, found := e.record("acct-late"); found || len(e.handoffs.all()) != 1 {
		t.Error("an expired state installed the account")
	}
}

func TestStateReplayed(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBrowser(t)
	cb := e.approve(b, e.start(b, "eu"), "acct-replay", "allow")
	cookie, ok := b.cookie(e, installCookie)
	if !ok {
		t.Fatal("no install cookie in the jar")
	}
	e.checkPage(b.get(cb), http.StatusOK, "European Union")
	e.checkInstalled("acct-replay", "eu", 1)

	// The same callback again: the install cookie is gone.
	p := b.get(cb)
	e.checkPage(p, http.StatusBadRequest, "This installation link is not valid", "another browser")

	// With the install cookie put back, the cookie check passes: the
	// server-side record of used states refuses it.
	b.setCookie(e, installCookie, cookie)
	p = b.get(cb)
	e.checkPage(p, http.StatusBadRequest, "This installation link was already used", "Each link works once.")
	if n := len(e.tokenRequests()); n != 1 {
		t.Errorf("%d token requests, want the first only", n)
	}
	if n := len(e.handoffs.all()); n != 1 {
		t.Errorf("%d handoffs after the replay, want 1", n)
	}

	// Proof that it is the nonce store: without its entry, the replay goes
	// on to the code exchange (which Zoom refuses: its code is spent).
	u, _ := url.Parse(cb)
	jti := claims(t, u.Query().Get("state"))["jti"].(string)
	if err := e.nonces.Purge(context.Background(), jti); err != nil {
		t.Fatal(err)
	}
	b.setCookie(e, installCookie, cookie)
	p = b.get(cb)
	e.checkPage(p, http.StatusBadRequest, "Zoom refused the authorization")
	if n := len(e.tokenRequests()); n != 2 {
		t.Errorf("%d token requests, want 2 (the nonce store, not something else, stopped the replay)", n)
	}
	if n := len(e.handoffs.all()); n != 1 {
		t.Errorf("%d handoffs, want 1", n)
	}
}

func TestStateFromAnotherBrowser(t *testing.T) {
	e := newEnv(t, envOpts{})
	a, b := newBrowser(t), newBrowser(t)
	cbA := e.approve(a, e.start(a, "eu"), "acct-browser-a", "allow")
	cbB := e.approve(b, e.start(b, "us"), "acct-browser-b", "allow")

	// A's callback in B (with B's install cookie), and in a browser without any.
	e.checkPage(b.get(cbA), http.StatusBadRequest, "This installation link is not valid", "started in another browser")
	e.checkPage(newBrowser(t).get(cbA), http.StatusBadRequest, "started in another browser")
	// A's cookie with B's state.
	cookieA, _ := a.cookie(e, installCookie)
	cookieB, _ := b.cookie(e, installCookie)
	if cookieA == cookieB {
		t.Fatal("two browsers got the same install cookie")
	}
	c := newBrowser(t)
	c.setCookie(e, installCookie, cookieA)
	e.checkPage(c.get(cbB), http.StatusBadRequest, "started in another browser")
	if len(e.tokenRequests()) != 0 {
		t.Error("a code was exchanged for a mismatched browser")
	}
	e.nothingRecorded("acct-browser-a")

	// Neither install was burnt by the attempts.
	e.checkPage(a.get(cbA), http.StatusOK, "European Union")
	e.checkInstalled("acct-browser-a", "eu", 1)
	e.checkPage(b.get(cbB), http.StatusOK, "United States")
	e.checkInstalled("acct-browser-b", "us", 2)
}

func TestInstallCookieTampered(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBrowser(t)
	cb := e.approve(b, e.start(b, "eu"), "acct-tamper", "allow")
	good, _ := b.cookie(e, installCookie)
	for i := range 3 {
		b.setCookie(e, installCookie, flip(good, len(good)/2+i*7))
		e.checkPage(b.get(cb), http.StatusBadRequest, "started in another browser, or has expired")
	}
	b.setCookie(e, installCookie, "")
	e.checkPage(b.get(cb), http.StatusBadRequest, "started in another browser")
	if len(e.tokenRequests()) != 0 {
		t.Error("a code was exchanged with an altered install cookie")
	}
	e.nothingRecorded("acct-tamper")
	b.setCookie(e, installCookie, good)
	e.checkPage(b.get(cb), http.StatusOK, "European Union")
	e.checkInstalled("acct-tamper", "eu", 1)
}

func TestWrongVerifierRefusedByZoom(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBrowser(t)
	cb := e.approve(b, e.start(b, "eu"), "acct-verifier", "allow")
	u, _ := url.Parse(cb)
	nonce := claims(t, u.Query().Get("state"))["nonce"].(string)
	wrong := strings.Repeat("w", 43)
	sealed, err := install.SealInstallCookie(e.h, nonce, wrong, time.Now().Add(5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	b.setCookie(e, installCookie, sealed)
	p := b.get(cb)
	e.checkPage(p, http.StatusBadRequest, "Zoom refused the authorization", "The authorization code was refused")
	forms := e.tokenRequests()
	if len(forms) != 1 || forms[0].Get("code_verifier") != wrong {
		t.Fatalf("token requests %v; want one with the cookie's verifier", forms)
	}
	e.nothingRecorded("acct-verifier")
}

func TestCallbackWithoutCode(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBrowser(t)
	cb := e.approve(b, e.start(b, "eu"), "acct-nocode", "allow")
	for _, u := range []string{
		withQuery(t, cb, map[string]string{"code": ""}),
		e.url + install.PathCallback,
		e.url + install.PathCallback + "?code=",
	} {
		e.checkPage(b.get(u), http.StatusBadRequest, "Not installed", "with an authorization code")
	}
	if len(e.tokenRequests()) != 0 {
		t.Error("a token request without a code")
	}
	e.nothingRecorded("acct-nocode")
}

func TestCallbackZoomError(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBrowser(t)
	cb := e.approve(b, e.start(b, "eu"), "acct-denied", "deny")
	if u, _ := url.Parse(cb); u.Query().Get("error") != "access_denied" || u.Query().Has("code") {
		t.Fatalf("the sandbox's refusal is %s", cb)
	}
	e.checkPage(b.get(cb), http.StatusBadRequest, "Not installed", "The app was not approved in Zoom, so nothing was installed.", `href="/install"`)
	e.checkPage(b.get(withQuery(t, cb, map[string]string{"error": "server_error"})), http.StatusBadRequest, "Zoom did not authorize the app.")
	if len(e.tokenRequests()) != 0 {
		t.Error("a token request after Zoom's refusal")
	}
	e.nothingRecorded("acct-denied")
}

func TestCodeRefusedByZoom(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBrowser(t)
	cb := e.approve(b, e.start(b, "eu"), "acct-badcode", "allow")
	p := b.get(withQuery(t, cb, map[string]string{"code": "a-code-zoom-never-issued"}))
	e.checkPage(p, http.StatusBadRequest, "Zoom refused the authorization", "The authorization code was refused", `href="/install"`)
	if forms := e.tokenRequests(); len(forms) != 1 || forms[0].Get("code") != "a-code-zoom-never-issued" {
		t.Errorf("token requests %v", forms)
	}
	e.nothingRecorded("acct-badcode")
}

func TestZoomUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	e := newEnv(t, envOpts{zoomURL: closed})
	b := newBrowser(t)
	auth := e.start(b, "eu")
	cb := e.public + install.PathCallback + "?" + url.Values{"code": {"some-code"}, "state": {auth.Query().Get("state")}}.Encode()
	t0 := time.Now()
	p := b.get(cb)
	e.checkPage(p, http.StatusBadGateway, "Zoom could not be reached", "Please start again.")
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("the callback took %s against a closed port", d)
	}
	if len(e.handoffs.all()) != 0 {
		t.Error("handoff without tokens")
	}
}

func TestUsersMeRefused(t *testing.T) {
	e := newEnv(t, envOpts{tokenLifetime: time.Nanosecond}) // tokens dead on arrival
	b := newBrowser(t)
	p := e.install(b, "eu", "acct-me")
	e.checkPage(p, http.StatusBadGateway, "Zoom could not be reached", "did not say which account installed the app")
	e.nothingRecorded("acct-me")
}

func TestAccountIDUnusable(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBrowser(t)
	p := e.install(b, "eu", "not an/account id")
	e.checkPage(p, http.StatusBadGateway, "Unexpected answer from Zoom", "account id could not be read")
	if calls := e.handoffs.all(); len(calls) != 0 {
		t.Errorf("handoff of an unusable account: %v", calls)
	}
}

func TestRegionNotConfigured(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBrowser(t)
	for _, form := range []url.Values{{"region": {"mars"}}, {"region": {""}}, {}, {"region": {"EU"}}} {
		p := b.post(e.url+install.PathInstall, form)
		e.checkPage(p, http.StatusBadRequest, "Choose a region", "Please choose where your data should stay.")
		if p.location != "" || len(p.cookies) != 0 {
			t.Errorf("region %q: Location %q, cookies %v", form.Get("region"), p.location, p.cookies)
		}
	}
}

func TestReinstallIntoAnotherRegion(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.checkPage(e.install(newBrowser(t), "eu", "acct-move"), http.StatusOK, "European Union")
	e.checkInstalled("acct-move", "eu", 1)
	before, _ := e.record("acct-move")

	p := e.install(newBrowser(t), "us", "acct-move")
	e.checkPage(p, http.StatusConflict, "Your organisation is already installed in European Union",
		"Its data stays in European Union (eu). Reinstalling cannot move it to another region")
	if strings.Contains(p.body, `href="/install"`) {
		t.Error("the conflict page offers to start again")
	}
	after, _ := e.record("acct-move")
	if after.Region != before.Region || after.APIURL != before.APIURL || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Errorf("directory changed: %+v → %+v", before, after)
	}
	if n := len(e.handoffs.all()); n != 1 {
		t.Errorf("%d handoffs, want 1: tokens went to the other region", n)
	}
}

func TestReinstallIntoSameRegion(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.checkPage(e.install(newBrowser(t), "us", "acct-again"), http.StatusOK, "United States")
	first := e.checkInstalled("acct-again", "us", 1)
	rec1, _ := e.record("acct-again")
	e.checkPage(e.install(newBrowser(t), "us", "acct-again"), http.StatusOK, "United States")
	second := e.checkInstalled("acct-again", "us", 2)
	if first.AccessToken == second.AccessToken || first.RefreshToken == second.RefreshToken {
		t.Error("the reinstall handed the old tokens")
	}
	if rec2, _ := e.record("acct-again"); !rec2.UpdatedAt.After(rec1.UpdatedAt) {
		t.Errorf("directory record not rewritten: %v then %v", rec1.UpdatedAt, rec2.UpdatedAt)
	}
}

func TestHandoffFails(t *testing.T) {
	e := newEnv(t, envOpts{handoffErr: vault.ErrNoVault})
	p := e.install(newBrowser(t), "eu", "acct-nohand")
	e.checkPage(p, http.StatusServiceUnavailable, "Please try again", "The European Union region could not take your installation right now.")
	if calls := e.handoffs.all(); len(calls) != 1 || calls[0].region != "eu" {
		t.Errorf("handoffs %v, want one attempt to eu", calls)
	}
	if rec, found := e.record("acct-nohand"); found {
		t.Errorf("the directory records %+v though the region has no tokens", rec)
	}
	if strings.Contains(p.body, vault.ErrNoVault.Error()) {
		t.Error("the page shows the handoff's error")
	}
}

func TestMarketplaceInstall(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBrowser(t)
	p := e.marketplace(b, "acct-mkt")
	nonce := e.choice(p)
	e.nothingRecorded("acct-mkt")
	forms := e.tokenRequests()
	if len(forms) != 1 || forms[0].Has("code_verifier") || forms[0].Get("redirect_uri") != e.public+install.PathCallback {
		t.Errorf("token requests %v; want one, without a verifier", forms)
	}
	var pendingValues []string
	for _, c := range p.cookies {
		pendingValues = append(pendingValues, c.Value)
	}
	choicePage := p.body

	p = b.post(e.url+install.PathRegion, url.Values{"region": {"eu"}, "nonce": {nonce}})
	e.checkPage(p, http.StatusOK, botName+" is installed", `<span class="region">European Union</span> (eu)`)
	h := e.checkInstalled("acct-mkt", "eu", 1)
	if h.UserID != "sandbox-admin" {
		t.Errorf("user id %q", h.UserID)
	}

	// The tokens were in the browser only sealed.
	for _, v := range pendingValues {
		raw, _ := base64.RawURLEncoding.DecodeString(v)
		for _, tok := range []string{h.AccessToken, h.RefreshToken, strings.TrimPrefix(h.AccessToken, "sandbox-user."), strings.TrimPrefix(h.RefreshToken, "sandbox-refresh.")} {
			if strings.Contains(v, tok) || bytes.Contains(raw, []byte(tok)) {
				t.Errorf("a pending cookie shows a token")
			}
		}
	}
	if strings.Contains(choicePage, h.AccessToken) || strings.Contains(choicePage, h.RefreshToken) {
		t.Error("the region choice page shows a token")
	}
	if c := setCookie(p, pendingCookie); c == nil || c.MaxAge >= 0 {
		t.Errorf("the pending cookie was not deleted (Set-Cookie %v)", c)
	}
	if _, ok := b.cookie(e, pendingCookie); ok {
		t.Error("the browser still holds the pending cookie")
	}

	// The choice cannot be sent twice.
	p = b.post(e.url+install.PathRegion, url.Values{"region": {"us"}, "nonce": {nonce}})
	e.checkPage(p, http.StatusBadRequest, "This installation has expired")
	if rec, _ := e.record("acct-mkt"); rec.Region != "eu" || len(e.handoffs.all()) != 1 {
		t.Errorf("second choice changed things: %+v", rec)
	}
}

func TestMarketplaceChoiceRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, tc := range []struct {
		name string
		// spoil spoils the choice and returns the form to post, and a
		// function undoing the spoiling (nil: not undoable).
		spoil  func(t *testing.T, b *browser, nonce string) (url.Values, func())
		status int
		want   string
	}{
		{"wrong nonce", func(_ *testing.T, b *browser, nonce string) (url.Values, func()) {
			return url.Values{"region": {"eu"}, "nonce": {flip(nonce, 5)}}, func() {}
		}, http.StatusBadRequest, "This installation has expired"},
		{"no nonce", func(_ *testing.T, b *browser, nonce string) (url.Values, func()) {
			return url.Values{"region": {"eu"}}, func() {}
		}, http.StatusBadRequest, "This installation has expired"},
		{"tampered pending cookie", func(_ *testing.T, b *browser, nonce string) (url.Values, func()) {
			good, _ := b.cookie(e, pendingCookie)
			b.setCookie(e, pendingCookie, flip(good, len(good)/2))
			return url.Values{"region": {"eu"}, "nonce": {nonce}}, func() { b.setCookie(e, pendingCookie, good) }
		}, http.StatusBadRequest, "This installation has expired"},
		{"pending cookie missing (another browser)", func(_ *testing.T, b *browser, nonce string) (url.Values, func()) {
			good, _ := b.cookie(e, pendingCookie)
			b.setCookie(e, pendingCookie, "")
			return url.Values{"region": {"eu"}, "nonce": {nonce}}, func() { b.setCookie(e, pendingCookie, good) }
		}, http.StatusBadRequest, "happened in another browser"},
		{"an install cookie passed off as a pending one", func(t *testing.T, b *browser, nonce string) (url.Values, func()) {
			good, _ := b.cookie(e, pendingCookie)
			// Both hold a nonce under the same JSON name: only the cookie
			// name sealed in stops the swap.
			other := newBrowser(t)
			auth := e.start(other, "eu")
			ic, _ := other.cookie(e, installCookie)
			b.setCookie(e, pendingCookie, ic)
			in, _ := claims(t, auth.Query().Get("state"))["nonce"].(string)
			return url.Values{"region": {"eu"}, "nonce": {in}}, func() { b.setCookie(e, pendingCookie, good) }
		}, http.StatusBadRequest, "This installation has expired"},
		{"expired", func(_ *testing.T, b *browser, nonce string) (url.Values, func()) {
			e.clock.set(11 * time.Minute)
			return url.Values{"region": {"eu"}, "nonce": {nonce}}, func() { e.clock.set(0) }
		}, http.StatusBadRequest, "Choosing the region took too long"},
		{"region not configured", func(_ *testing.T, b *browser, nonce string) (url.Values, func()) {
			return url.Values{"region": {"mars"}, "nonce": {nonce}}, func() {}
		}, http.StatusBadRequest, "Please go back and choose where your data should stay."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.handoffs.mu.Lock()
			e.handoffs.calls = nil
			e.handoffs.mu.Unlock()
			account := "acct-" + strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(tc.name)
			b := newBrowser(t)
			nonce := e.choice(e.marketplace(b, account))
			form, undo := tc.spoil(t, b, nonce)
			p := b.post(e.url+install.PathRegion, form)
			e.checkPage(p, tc.status, tc.want)
			e.nothingRecorded(account)
			// Undone, the same choice goes through: only the spoiling failed it.
			undo()
			p = b.post(e.url+install.PathRegion, url.Values{"region": {"eu"}, "nonce": {nonce}})
			e.checkPage(p, http.StatusOK, "European Union")
			e.checkInstalled(account, "eu", 1)
		})
	}
}

func TestMarketplaceReinstall(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.checkPage(e.install(newBrowser(t), "us", "acct-mkt-again"), http.StatusOK, "United States")
	e.checkInstalled("acct-mkt-again", "us", 1)

	b := newBrowser(t)
	p := e.marketplace(b, "acct-mkt-again")
	e.checkPage(p, http.StatusOK, botName+" is installed", `<span class="region">United States</span> (us)`)
	e.checkInstalled("acct-mkt-again", "us", 2)
	if c := setCookie(p, pendingCookie); c != nil {
		t.Errorf("a reinstall kept tokens in a cookie: %v", c)
	}
}

// A sealed value stored in several cookies, then a shorter one in fewer:
// the second must read back whole, whatever the first left behind.
func TestSealedCookieShrinks(t *testing.T) {
	e := newEnv(t, envOpts{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth/set", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		v := strings.Repeat("x", n)
		if err := install.SetSealed(e.h, w, "geomux_pending", v, 10*time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("GET /oauth/get", func(w http.ResponseWriter, r *http.Request) {
		var v string
		if err := install.ReadSealed(e.h, r, "geomux_pending", &v); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, v)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	b := newBrowser(t)

	p := b.get(srv.URL + "/oauth/set?n=5000") // 5000 characters: two cookies
	if p.status != http.StatusOK || setCookie(p, "geomux_pending.1") == nil {
		t.Fatalf("a 5000-character value: status %d, cookies %v; want two cookies", p.status, p.cookies)
	}
	for _, c := range p.cookies {
		checkCookie(t, c, false)
		if len(c.String()) > 4000 {
			t.Errorf("cookie %s is %d bytes", c.Name, len(c.String()))
		}
	}
	if p = b.get(srv.URL + "/oauth/get"); p.status != http.StatusOK || len(p.body) != 5000 {
		t.Fatalf("read back: status %d, %d characters", p.status, len(p.body))
	}
	p = b.get(srv.URL + "/oauth/set?n=1000") // 1000 characters: one cookie
	if p.status != http.StatusOK {
		t.Fatalf("status %d", p.status)
	}
	p = b.get(srv.URL + "/oauth/get")
	if p.status != http.StatusOK || len(p.body) != 1000 {
		if p.status == http.StatusBadRequest && strings.Contains(p.body, "altered") {
			t.Fatal("ingress/install/cookies.go setSealed writes name.0..name.k-1 but leaves a longer earlier value's name.k.. " +
				"in the browser, and readSealed concatenates every chunk present, so the new value does not open " +
				"(a Marketplace install abandoned at the region choice, then redone with shorter tokens, fails for 10 minutes)")
		}
		t.Fatalf("the shorter value read back: status %d, %d characters: %.200s", p.status, len(p.body), p.body)
	}
}

// Two admins of one organisation install at the same moment, one choosing
// eu, the other us: one of them must be told the organisation is already
// installed elsewhere, and the directory must say where the winner's
// tokens went.
func TestConcurrentInstallsIntoTwoRegions(t *testing.T) {
	e := newEnv(t, envOpts{})
	a, b := newBrowser(t), newBrowser(t)
	cbA := e.approve(a, e.start(a, "eu"), "acct-race", "allow")
	cbB := e.approve(b, e.start(b, "us"), "acct-race", "allow")

	// Hold each handoff until both installs are in one (or, if the handler
	// lets only one in at a time, until it is clear the other waits).
	arrived, release := make(chan struct{}, 2), make(chan struct{})
	e.handoffs.mu.Lock()
	e.handoffs.gate = func() { arrived <- struct{}{}; <-release }
	e.handoffs.mu.Unlock()
	pages := make(chan *page, 2)
	for _, hop := range []struct {
		b  *browser
		cb string
	}{{a, cbA}, {b, cbB}} {
		go func() {
			req, _ := http.NewRequest(http.MethodGet, hop.cb, nil)
			resp, err := hop.b.c.Do(req)
			if err != nil {
				pages <- &page{status: -1, body: err.Error()}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			pages <- &page{url: req.URL, status: resp.StatusCode, body: string(body), header: resp.Header}
		}()
	}
	<-arrived
	select {
	case <-arrived:
	case <-time.After(3 * time.Second): // serialized: the second waits for the first
	}
	close(release)
	p1, p2 := <-pages, <-pages
	if p1.status == http.StatusOK && p2.status == http.StatusOK {
		rec, _ := e.record("acct-race")
		t.Fatalf("ingress/install/install.go finish (Get, handoff, then an unconditional dir.Put) lets two concurrent "+
			"installs of one account into eu and us both succeed: both regions got its tokens, the directory says %s "+
			"(the last writer); %d handoffs", rec.Region, len(e.handoffs.all()))
	}
	ok, conflict := p1, p2
	if ok.status != http.StatusOK {
		ok, conflict = p2, p1
	}
	e.checkPage(ok, http.StatusOK, "is installed")
	e.checkPage(conflict, http.StatusConflict, "Your organisation is already installed in")
	rec, found := e.record("acct-race")
	if !found || !strings.Contains(ok.body, "("+rec.Region+")") {
		t.Errorf("directory says %+v, but the installed page is:\n%s", rec, text(ok.body))
	}
}

// A form post sent by another site's page is refused: an attacker cannot
// start an install, or choose the region of a pending one, in an admin's
// browser. The flow's own pages (same origin, or a client that sends no
// browser headers) go on.
func TestCrossSitePostsRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBrowser(t)
	for _, path := range []string{install.PathInstall, install.PathRegion} {
		for _, h := range []map[string]string{
			{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
			{"Sec-Fetch-Site": "same-site"},
			{"Origin": "https://evil.example"},
		} {
			req, err := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(url.Values{"region": {"eu"}, "nonce": {"n"}}.Encode()))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for k, v := range h {
				req.Header.Set(k, v)
			}
			p := b.do(req)
			e.checkPage(p, http.StatusForbidden, "Not installed", "this site&#39;s own install page")
			if p.location != "" || setCookie(p, installCookie) != nil {
				t.Errorf("POST %s with %v: redirected to %q or set a cookie", path, h, p.location)
			}
		}
	}
	req, _ := http.NewRequest(http.MethodPost, e.url+install.PathInstall, strings.NewReader(url.Values{"region": {"eu"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if p := b.do(req); p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, e.zoomURL+"/oauth/authorize?") {
		t.Errorf("the install page's own post: status %d to %q, want 303 to Zoom", p.status, p.location)
	}
	if len(e.tokenRequests()) != 0 {
		t.Error("a refused post reached Zoom")
	}
}

// A flood of callbacks with junk codes costs Zoom a bounded number of
// token requests: past the limit they are answered 429 with Retry-After.
func TestCallbackFloodIsLimited(t *testing.T) {
	e := newEnv(t, envOpts{limited: true})
	b := newBrowser(t)
	var limited int
	for i := range 200 {
		p := b.get(e.url + install.PathCallback + "?code=junk-" + strconv.Itoa(i))
		switch p.status {
		case http.StatusTooManyRequests:
			limited++
			if p.header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
			e.checkPage(p, http.StatusTooManyRequests, "Too many installation attempts")
		case http.StatusBadRequest:
		default:
			t.Fatalf("callback %d: status %d", i, p.status)
		}
	}
	// One address: its burst, and about one a second after it.
	if n := len(e.tokenRequests()); n > 15 {
		t.Errorf("200 junk callbacks made %d token requests to Zoom, want the limit's few", n)
	}
	if limited < 180 {
		t.Errorf("%d of 200 junk callbacks refused 429, want nearly all past the limit", limited)
	}
}
