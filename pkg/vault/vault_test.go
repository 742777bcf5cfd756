package vault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/httpx"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/vault"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/sandbox"
	"github.com/geomux/geomux/proto"
)

// ---- helpers ----

func randomKey(t *testing.T) vault.Key {
	t.Helper()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	k, err := vault.ParseKey(base64.StdEncoding.EncodeToString(b))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type store struct {
	ns *natstest.Server
	kv jetstream.KeyValue
}

func newStore(t *testing.T) store {
	t.Helper()
	ns := natstest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := natsx.EnsureKeyValue(ctx, ns.JS, topology.RegionVaultConfig("eu", topology.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	return store{ns: ns, kv: kv}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return c
}

// zoomEnv is the real Zoom sandbox, and a client of it.
type zoomEnv struct {
	sb *sandbox.Sandbox
	zc *zoom.Client
}

const redirectURI = "https://geomux.test/oauth/callback"

// install gets real user tokens of account from the sandbox: its authorize
// form, then the authorization_code grant.
func (z zoomEnv) install(t *testing.T, srvURL, account string) proto.Tokens {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(srvURL+"/oauth/authorize", url.Values{
		"client_id": {"cid"}, "redirect_uri": {redirectURI}, "account": {account}, "user": {"u-" + account}, "decision": {"allow"},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("authorize: status %d, no redirect", resp.StatusCode)
	}
	tok, err := z.zc.ExchangeCode(ctx(t), loc.Query().Get("code"), redirectURI, "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newZoomWithURL(t *testing.T) (zoomEnv, string) {
	t.Helper()
	sb := sandbox.New(sandbox.Config{ClientID: "cid", ClientSecret: "csecret", BotJID: "bot@xmpp.zoom.us"}, nil)
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	zc := zoom.NewClient(zoom.ClientConfig{ClientID: "cid", ClientSecret: "csecret", APIBaseURL: srv.URL + "/v2", OAuthBaseURL: srv.URL},
		httpx.NewClient(httpx.Options{Retries: 0, WaitMin: 10 * time.Millisecond, WaitMax: 100 * time.Millisecond}, zap.NewNop()))
	return zoomEnv{sb: sb, zc: zc}, srv.URL
}

func sameToken(t *testing.T, what string, got, want proto.Tokens) {
	t.Helper()
	if got.AccessToken != want.AccessToken || got.RefreshToken != want.RefreshToken || !got.ExpiresAt.Equal(want.ExpiresAt) ||
		got.Scope != want.Scope || got.APIURL != want.APIURL {
		t.Errorf("%s: %+v, want %+v", what, got, want)
	}
}

// refresherFunc is a Refresher.
type refresherFunc func(ctx context.Context, refreshToken string) (proto.Tokens, error)

func (f refresherFunc) RefreshUserToken(ctx context.Context, rt string) (proto.Tokens, error) {
	return f(ctx, rt)
}

// noRefresh fails the test if called.
func noRefresh(t *testing.T) vault.Refresher {
	return refresherFunc(func(context.Context, string) (proto.Tokens, error) {
		t.Error("refresher called")
		return proto.Tokens{}, errors.New("no refresh expected")
	})
}

// ---- keys ----

func TestParseKey(t *testing.T) {
	// Bytes whose standard and URL encodings differ ('+/' versus '-_').
	raw := bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)[:32]
	if s := base64.StdEncoding.EncodeToString(raw); !strings.ContainsAny(s, "+/") {
		t.Fatalf("test key %s has no alphabet-specific character", s)
	}
	var keys []vault.Key
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		s := enc.EncodeToString(raw)
		k, err := vault.ParseKey(s)
		if err != nil {
			t.Fatalf("ParseKey(%q): %v", s, err)
		}
		keys = append(keys, k)
	}
	// Every spelling is the same key.
	sealed := keys[0].Seal("acct", []byte("secret"))
	for i, k := range keys {
		if plain, err := k.Open("acct", sealed); err != nil || string(plain) != "secret" {
			t.Errorf("spelling %d: Open = %q, %v", i, plain, err)
		}
	}
	// What `openssl rand -base64 32 > file` leaves, newline included.
	if _, err := vault.ParseKey(base64.StdEncoding.EncodeToString(raw) + "\n"); err != nil {
		t.Errorf("key with a trailing newline: %v", err)
	}

	for name, s := range map[string]string{
		"empty":               "",
		"31 bytes":            base64.StdEncoding.EncodeToString(raw[:31]),
		"33 bytes":            base64.StdEncoding.EncodeToString(append(raw, 1)),
		"16 bytes":            base64.StdEncoding.EncodeToString(raw[:16]),
		"64 bytes":            base64.StdEncoding.EncodeToString(append(raw, raw...)),
		"hex of 32 bytes":     hex.EncodeToString(raw),
		"garbage":             "this is not a key!",
		"the command":         "openssl rand -base64 32",
		"mixed alphabets bad": "+/-_" + base64.RawStdEncoding.EncodeToString(raw)[4:],
		"raw bytes":           string(raw),
	} {
		k, err := vault.ParseKey(s)
		if !errors.Is(err, vault.ErrBadKey) {
			t.Errorf("%s: ParseKey(%q) = %v, want ErrBadKey", name, s, err)
		}
		if err == nil {
			_ = k.Seal("x", nil)
		}
	}
}

func TestSealOpen(t *testing.T) {
	k := randomKey(t)
	plain := []byte(`{"access_token":"at-123","refresh_token":"rt-456"}`)
	a := k.Seal("acct-1", plain)
	b := k.Seal("acct-1", plain)
	if bytes.Equal(a, b) {
		t.Error("two seals of the same record are identical (nonce reused)")
	}
	if bytes.Contains(a, []byte("at-123")) || bytes.Contains(a, []byte("rt-456")) {
		t.Error("sealed record shows its tokens")
	}
	for _, s := range [][]byte{a, b} {
		got, err := k.Open("acct-1", s)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("Open = %q, %v", got, err)
		}
	}
	if got, err := k.Open("acct-1", k.Seal("acct-1", nil)); err != nil || len(got) != 0 {
		t.Errorf("empty record: %q, %v", got, err)
	}

	if _, err := randomKey(t).Open("acct-1", a); err == nil {
		t.Error("opened with another key")
	}
	if _, err := k.Open("acct-2", a); err == nil {
		t.Error("opened as another account")
	}
	flipped := bytes.Clone(a)
	flipped[len(flipped)/2] ^= 1
	if _, err := k.Open("acct-1", flipped); err == nil {
		t.Error("opened an altered record")
	}
	for _, short := range [][]byte{nil, a[:5], a[:12], a[:20]} {
		if _, err := k.Open("acct-1", short); err == nil {
			t.Errorf("opened %d bytes", len(short))
		}
	}
}

// ---- the vault on NATS ----

func record(tok proto.Tokens, user string) vault.Record {
	return vault.Record{Tokens: tok, UserID: user}
}

func TestPutGet(t *testing.T) {
	s := newStore(t)
	k := randomKey(t)
	v := vault.New(s.kv, k, noRefresh(t))
	c := ctx(t)
	tok := proto.Tokens{
		AccessToken: "access-" + strings.Repeat("A", 40), RefreshToken: "refresh-" + strings.Repeat("R", 40),
		ExpiresAt: time.Now().Add(time.Hour).UTC().Truncate(time.Second), Scope: "imchat:userapp", APIURL: "https://api-eu.zoom.us",
	}
	before := time.Now().UTC()
	if err := v.Put(c, "acct-1", record(tok, "user-1")); err != nil {
		t.Fatal(err)
	}
	r, rev, err := v.Get(c, "acct-1")
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "Get", r.Tokens, tok)
	if r.UserID != "user-1" || rev == 0 || r.UpdatedAt.Before(before.Add(-time.Second)) || r.UpdatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("record %+v, revision %d", r, rev)
	}

	// What NATS holds is sealed.
	e, err := s.kv.Get(c, "acct-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{tok.AccessToken, tok.RefreshToken, "AAAAAAAAAA", "RRRRRRRRRR", "user-1", "access_token"} {
		if bytes.Contains(e.Value(), []byte(secret)) {
			t.Errorf("the stored bytes contain %q", secret)
		}
	}
	if json.Valid(e.Value()) {
		t.Error("the stored bytes are plain JSON")
	}

	// Another region's key cannot read it.
	if _, _, err := vault.New(s.kv, randomKey(t), noRefresh(t)).Get(c, "acct-1"); err == nil || errors.Is(err, vault.ErrNoToken) {
		t.Errorf("Get with another key: %v", err)
	}
	// Copied under another account, it does not open.
	if _, err := s.kv.Put(c, "acct-2", e.Value()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Get(c, "acct-2"); err == nil || errors.Is(err, vault.ErrNoToken) {
		t.Errorf("acct-1's record read as acct-2's: %v", err)
	}
	if _, _, err := v.Get(c, "acct-unknown"); !errors.Is(err, vault.ErrNoToken) {
		t.Errorf("unknown account: %v, want ErrNoToken", err)
	}
	if _, err := v.AccessToken(c, "acct-unknown"); !errors.Is(err, vault.ErrNoToken) {
		t.Errorf("AccessToken of an unknown account: %v, want ErrNoToken", err)
	}

	// Put replaces.
	tok2 := tok
	tok2.AccessToken = "access-2"
	if err := v.Put(c, "acct-1", record(tok2, "user-1")); err != nil {
		t.Fatal(err)
	}
	if r, rev2, _ := v.Get(c, "acct-1"); r.AccessToken != "access-2" || rev2 <= rev {
		t.Errorf("after a second Put: %q at revision %d (first %d)", r.AccessToken, rev2, rev)
	}
}

func TestDeleteErases(t *testing.T) {
	s := newStore(t)
	v := vault.New(s.kv, randomKey(t), noRefresh(t))
	c := ctx(t)
	tok := proto.Tokens{AccessToken: "at-erase", RefreshToken: "rt-erase", ExpiresAt: time.Now().Add(time.Hour)}
	var revs []uint64
	for range 3 {
		if err := v.Put(c, "acct-gone", record(tok, "u")); err != nil {
			t.Fatal(err)
		}
		_, rev, _ := v.Get(c, "acct-gone")
		revs = append(revs, rev)
	}
	if err := v.Put(c, "acct-stays", record(tok, "u")); err != nil {
		t.Fatal(err)
	}

	existed, err := v.Delete(c, "acct-gone")
	if err != nil || !existed {
		t.Fatalf("Delete = %v, %v; want true, nil", existed, err)
	}
	if _, _, err := v.Get(c, "acct-gone"); !errors.Is(err, vault.ErrNoToken) {
		t.Errorf("Get after Delete: %v, want ErrNoToken", err)
	}
	if _, err := v.AccessToken(c, "acct-gone"); !errors.Is(err, vault.ErrNoToken) {
		t.Errorf("AccessToken after Delete: %v, want ErrNoToken", err)
	}
	// No revision of the record is left: the history holds at most the
	// purge marker, and none of the stored messages remain in the stream.
	hist, err := s.kv.History(c, "acct-gone")
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatal(err)
	}
	for _, e := range hist {
		if e.Operation() == jetstream.KeyValuePut || len(e.Value()) > 0 {
			t.Errorf("history keeps revision %d (%v, %d bytes)", e.Revision(), e.Operation(), len(e.Value()))
		}
	}
	stream, err := s.ns.JS.Stream(c, "KV_"+proto.RegionVaultBucket("eu"))
	if err != nil {
		t.Fatal(err)
	}
	for _, rev := range revs {
		if m, err := stream.GetMsg(c, rev); err == nil {
			t.Errorf("the stream still holds revision %d (%d bytes)", rev, len(m.Data))
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("revision %d: %v", rev, err)
		}
	}
	// Others are untouched; erasing again reports nothing was there.
	if r, _, err := v.Get(c, "acct-stays"); err != nil || r.AccessToken != "at-erase" {
		t.Errorf("another account's record: %+v, %v", r, err)
	}
	if existed, err := v.Delete(c, "acct-gone"); err != nil || existed {
		t.Errorf("second Delete = %v, %v; want false, nil", existed, err)
	}
	if existed, err := v.Delete(c, "acct-never"); err != nil || existed {
		t.Errorf("Delete of an unknown account = %v, %v; want false, nil", existed, err)
	}
}

func TestAccessTokenFresh(t *testing.T) {
	s := newStore(t)
	z, zurl := newZoomWithURL(t)
	c := ctx(t)
	tok := z.install(t, zurl, "acct-fresh")
	v := vault.New(s.kv, randomKey(t), z.zc)
	if err := v.Put(c, "acct-fresh", record(tok, "u-acct-fresh")); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		got, err := v.AccessToken(c, "acct-fresh")
		if err != nil {
			t.Fatal(err)
		}
		sameToken(t, "AccessToken", got, tok)
	}
	// Six minutes from expiry is still fresh.
	tok.ExpiresAt = time.Now().Add(6 * time.Minute)
	if err := v.Put(c, "acct-fresh", record(tok, "u-acct-fresh")); err != nil {
		t.Fatal(err)
	}
	if got, err := v.AccessToken(c, "acct-fresh"); err != nil || got.AccessToken != tok.AccessToken {
		t.Errorf("six minutes from expiry: %+v, %v", got, err)
	}
	if n := z.sb.RefreshCount(); n != 0 {
		t.Errorf("%d refreshes of a fresh token", n)
	}
}

func TestAccessTokenRefreshes(t *testing.T) {
	s := newStore(t)
	z, zurl := newZoomWithURL(t)
	c := ctx(t)
	old := z.install(t, zurl, "acct-stale")
	old.ExpiresAt = time.Now().Add(4 * time.Minute) // within five minutes of expiry
	v := vault.New(s.kv, randomKey(t), z.zc)
	if err := v.Put(c, "acct-stale", record(old, "u-acct-stale")); err != nil {
		t.Fatal(err)
	}
	got, err := v.AccessToken(c, "acct-stale")
	if err != nil {
		t.Fatal(err)
	}
	if n := z.sb.RefreshCount(); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
	if got.AccessToken == old.AccessToken || got.RefreshToken == old.RefreshToken || got.RefreshToken == "" {
		t.Errorf("refreshed token %+v is not new", got)
	}
	if d := time.Until(got.ExpiresAt); d < 55*time.Minute {
		t.Errorf("refreshed token expires in %s", d)
	}
	// The rotated refresh token is what is stored, with the rest kept.
	r, _, err := v.Get(c, "acct-stale")
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "stored after the refresh", r.Tokens, got)
	if r.UserID != "u-acct-stale" || r.APIURL != old.APIURL {
		t.Errorf("stored record lost its user id or API URL: %+v", r)
	}
	// Zoom rotated it: the old refresh token is dead, the stored one works
	// (proved below by the vault itself).
	if _, err := z.zc.RefreshUserToken(c, old.RefreshToken); err == nil {
		t.Error("the old refresh token still works at the sandbox")
	}
	// The new access token is Zoom's.
	if me, err := z.zc.UsersMe(c, got.APIURL, got.AccessToken); err != nil || me.AccountID != "acct-stale" {
		t.Errorf("users/me with the refreshed token: %+v, %v", me, err)
	}
	// Fresh now: no second refresh.
	if again, err := v.AccessToken(c, "acct-stale"); err != nil || again.AccessToken != got.AccessToken {
		t.Errorf("second AccessToken: %+v, %v", again, err)
	}
	if n := z.sb.RefreshCount(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	// Expire it again: the stored (rotated) refresh token is the one used.
	r.ExpiresAt = time.Now().Add(time.Minute)
	if err := v.Put(c, "acct-stale", r); err != nil {
		t.Fatal(err)
	}
	third, err := v.AccessToken(c, "acct-stale")
	if err != nil || third.AccessToken == got.AccessToken || z.sb.RefreshCount() != 2 {
		t.Errorf("refresh with the rotated token: %+v, %v, %d refreshes", third, err, z.sb.RefreshCount())
	}
}

func TestRefreshKeepsWhatZoomOmits(t *testing.T) {
	s := newStore(t)
	c := ctx(t)
	var calls atomic.Int32
	v := vault.New(s.kv, randomKey(t), refresherFunc(func(_ context.Context, rt string) (proto.Tokens, error) {
		calls.Add(1)
		if rt != "rt-kept" {
			t.Errorf("refreshed with %q", rt)
		}
		return proto.Tokens{AccessToken: "at-new", ExpiresAt: time.Now().Add(time.Hour)}, nil
	}))
	old := proto.Tokens{AccessToken: "at-old", RefreshToken: "rt-kept", ExpiresAt: time.Now().Add(time.Minute), APIURL: "https://api-eu.zoom.us"}
	if err := v.Put(c, "acct-omit", record(old, "u")); err != nil {
		t.Fatal(err)
	}
	if got, err := v.AccessToken(c, "acct-omit"); err != nil || got.AccessToken != "at-new" {
		t.Fatalf("AccessToken: %+v, %v", got, err)
	}
	r, _, _ := v.Get(c, "acct-omit")
	if r.AccessToken != "at-new" || r.RefreshToken != "rt-kept" || r.APIURL != "https://api-eu.zoom.us" || r.UserID != "u" || calls.Load() != 1 {
		t.Errorf("stored %+v after %d refreshes", r, calls.Load())
	}
}

func TestRefreshFailure(t *testing.T) {
	s := newStore(t)
	z, _ := newZoomWithURL(t)
	c := ctx(t)
	v := vault.New(s.kv, randomKey(t), z.zc)
	old := proto.Tokens{AccessToken: "at-revoked", RefreshToken: "rt-zoom-does-not-know", ExpiresAt: time.Now().Add(time.Minute)}
	if err := v.Put(c, "acct-revoked", record(old, "u")); err != nil {
		t.Fatal(err)
	}
	_, err := v.AccessToken(c, "acct-revoked")
	if err == nil {
		t.Fatal("AccessToken succeeded with a refresh token Zoom does not know")
	}
	if strings.Contains(err.Error(), old.RefreshToken) || strings.Contains(err.Error(), old.AccessToken) {
		t.Errorf("the error shows a token: %v", err)
	}
	if r, _, _ := v.Get(c, "acct-revoked"); r.RefreshToken != old.RefreshToken {
		t.Errorf("a failed refresh changed the record: %+v", r)
	}
}

// gatedRefresher calls next once release is closed, after telling entered.
type gatedRefresher struct {
	next    vault.Refresher
	entered chan string
	release chan struct{}
	calls   atomic.Int32
}

func gated(next vault.Refresher) *gatedRefresher {
	return &gatedRefresher{next: next, entered: make(chan string, 4), release: make(chan struct{})}
}

func (g *gatedRefresher) RefreshUserToken(ctx context.Context, rt string) (proto.Tokens, error) {
	g.calls.Add(1)
	g.entered <- rt
	select {
	case <-g.release:
	case <-ctx.Done():
		return proto.Tokens{}, ctx.Err()
	}
	return g.next.RefreshUserToken(ctx, rt)
}

type result struct {
	tok proto.Tokens
	err error
}

func accessAsync(c context.Context, v *vault.Vault, account string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		tok, err := v.AccessToken(c, account)
		ch <- result{tok, err}
	}()
	return ch
}

func wait(t *testing.T, what string, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return ""
	}
}

func waitResult(t *testing.T, what string, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return result{}
	}
}

// Two processes find the token stale at once and both refresh it: the one
// Zoom issued last (the later expiry) ends up stored, whichever writes
// first, and both callers get it.
func TestTwoVaultsRefreshAtOnce(t *testing.T) {
	for _, newerFirst := range []bool{false, true} {
		name := "older writes first"
		if newerFirst {
			name = "newer writes first"
		}
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			c := ctx(t)
			key := randomKey(t)
			base := time.Now()
			issue := func(tok string, exp time.Duration) vault.Refresher {
				return refresherFunc(func(context.Context, string) (proto.Tokens, error) {
					return proto.Tokens{AccessToken: "at-" + tok, RefreshToken: "rt-" + tok, ExpiresAt: base.Add(exp)}, nil
				})
			}
			older, newer := gated(issue("older", 60*time.Minute)), gated(issue("newer", 61*time.Minute))
			vOlder, vNewer := vault.New(s.kv, key, older), vault.New(s.kv, key, newer)
			stale := proto.Tokens{AccessToken: "at-0", RefreshToken: "rt-0", ExpiresAt: base.Add(time.Minute), APIURL: "https://api.zoom.us"}
			if err := vOlder.Put(c, "acct-cas", record(stale, "u")); err != nil {
				t.Fatal(err)
			}
			rOlder, rNewer := accessAsync(c, vOlder, "acct-cas"), accessAsync(c, vNewer, "acct-cas")
			// Both have read the stale record and asked Zoom.
			if rt := wait(t, "the first refresh", older.entered); rt != "rt-0" {
				t.Errorf("refreshed with %q", rt)
			}
			if rt := wait(t, "the second refresh", newer.entered); rt != "rt-0" {
				t.Errorf("refreshed with %q", rt)
			}
			var gotOlder, gotNewer result
			if newerFirst {
				close(newer.release)
				gotNewer = waitResult(t, "the newer refresh", rNewer)
				close(older.release)
				gotOlder = waitResult(t, "the older refresh", rOlder)
			} else {
				close(older.release)
				gotOlder = waitResult(t, "the older refresh", rOlder)
				close(newer.release)
				gotNewer = waitResult(t, "the newer refresh", rNewer)
			}
			if gotOlder.err != nil || gotNewer.err != nil {
				t.Fatalf("errors: %v, %v", gotOlder.err, gotNewer.err)
			}
			r, _, err := vNewer.Get(c, "acct-cas")
			if err != nil {
				t.Fatal(err)
			}
			if r.AccessToken != "at-newer" || r.RefreshToken != "rt-newer" || r.APIURL != "https://api.zoom.us" {
				t.Errorf("stored %q / %q (api %q); want the newer token", r.AccessToken, r.RefreshToken, r.APIURL)
			}
			if gotNewer.tok.AccessToken != "at-newer" {
				t.Errorf("the newer refresh returned %q", gotNewer.tok.AccessToken)
			}
			if newerFirst && gotOlder.tok.AccessToken != "at-newer" {
				// The stale writer lost, and hands out what is stored.
				t.Errorf("the stale writer returned %q, want the stored newer token", gotOlder.tok.AccessToken)
			}
			if older.calls.Load() != 1 || newer.calls.Load() != 1 {
				t.Errorf("refresh calls %d, %d; want 1 each", older.calls.Load(), newer.calls.Load())
			}
		})
	}
}

// Process A reads the stale token and asks Zoom, but B has meanwhile
// refreshed it: Zoom refuses A's (rotated) refresh token, and A returns
// B's token instead of failing.
func TestRefreshRotatedByAnotherProcess(t *testing.T) {
	s := newStore(t)
	z, zurl := newZoomWithURL(t)
	c := ctx(t)
	key := randomKey(t)
	tok := z.install(t, zurl, "acct-rotated")
	tok.ExpiresAt = time.Now().Add(time.Minute)
	ga := gated(z.zc)
	a, b := vault.New(s.kv, key, ga), vault.New(s.kv, key, z.zc)
	if err := b.Put(c, "acct-rotated", record(tok, "u")); err != nil {
		t.Fatal(err)
	}
	ra := accessAsync(c, a, "acct-rotated")
	if rt := wait(t, "A's refresh", ga.entered); rt != tok.RefreshToken {
		t.Fatalf("A refreshes with %q", rt)
	}
	fromB, err := b.AccessToken(c, "acct-rotated")
	if err != nil {
		t.Fatal(err)
	}
	if fromB.AccessToken == tok.AccessToken || z.sb.RefreshCount() != 1 {
		t.Fatalf("B did not refresh: %+v, %d refreshes", fromB, z.sb.RefreshCount())
	}
	close(ga.release)
	fromA := waitResult(t, "A", ra)
	if fromA.err != nil {
		t.Fatalf("A failed instead of using B's token: %v", fromA.err)
	}
	sameToken(t, "A's token", fromA.tok, fromB)
	r, _, _ := a.Get(c, "acct-rotated")
	sameToken(t, "stored", r.Tokens, fromB)
	if n := z.sb.RefreshCount(); n != 1 {
		t.Errorf("%d successful refreshes at Zoom, want 1", n)
	}
}

// Many callers in one process share one refresh.
func TestConcurrentAccessTokenOneVault(t *testing.T) {
	s := newStore(t)
	z, zurl := newZoomWithURL(t)
	c := ctx(t)
	tok := z.install(t, zurl, "acct-many")
	tok.ExpiresAt = time.Now().Add(time.Minute)
	v := vault.New(s.kv, randomKey(t), z.zc)
	if err := v.Put(c, "acct-many", record(tok, "u")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]result, 16)
	for i := range results {
		wg.Go(func() {
			tk, err := v.AccessToken(c, "acct-many")
			results[i] = result{tk, err}
		})
	}
	wg.Wait()
	r, _, _ := v.Get(c, "acct-many")
	for i, res := range results {
		if res.err != nil || res.tok.AccessToken != r.AccessToken {
			t.Errorf("caller %d: %q, %v; stored %q", i, res.tok.AccessToken, res.err, r.AccessToken)
		}
	}
	if me, err := z.zc.UsersMe(c, r.APIURL, r.AccessToken); err != nil || me.AccountID != "acct-many" {
		t.Errorf("the stored token does not work: %v", err)
	}
	// The stored refresh token is the live one.
	if _, err := z.zc.RefreshUserToken(c, r.RefreshToken); err != nil {
		t.Errorf("the stored refresh token is not Zoom's current one: %v", err)
	}
}

// ---- handing tokens to a region ----

func secondConn(t *testing.T, s store) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(s.ns.NS), s.ns.Auth(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestHandToRegion(t *testing.T) {
	s := newStore(t)
	v := vault.New(s.kv, randomKey(t), noRefresh(t))
	svc, err := vault.Serve(s.ns.Conn, "eu", v, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ingress := secondConn(t, s) // the ingress's own connection
	c := ctx(t)
	h := proto.TokenHandover{AccountID: "acct-handed",
		Tokens: proto.Tokens{AccessToken: "at-h", RefreshToken: "rt-h", ExpiresAt: time.Now().Add(time.Hour).UTC().Truncate(time.Second), APIURL: "https://api-eu.zoom.us"},
		UserID: "installer",
	}
	if err := vault.HandOver(c, ingress, "eu", h); err != nil {
		t.Fatalf("HandOver: %v", err)
	}
	r, _, err := v.Get(c, "acct-handed")
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "stored", r.Tokens, h.Tokens)
	if r.UserID != "installer" {
		t.Errorf("user id %q", r.UserID)
	}

	// Malformed handovers are answered with an error, and store nothing.
	for name, bad := range map[string]proto.TokenHandover{
		"no account":      {Tokens: h.Tokens, UserID: h.UserID},
		"no access token": {AccountID: "acct-bad", Tokens: proto.Tokens{RefreshToken: "rt"}},
	} {
		err := vault.HandOver(c, ingress, "eu", bad)
		if err == nil || !strings.Contains(err.Error(), "malformed handover") {
			t.Errorf("%s: HandOver = %v, want the region's malformed-handover answer", name, err)
		}
	}
	m, err := ingress.RequestWithContext(c, proto.RegionVaultSubject("eu"), []byte("not json"))
	if err != nil {
		t.Fatal(err)
	}
	var a struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &a); err != nil || a.OK || !strings.Contains(a.Error, "malformed") {
		t.Errorf("answer to garbage: %s", m.Data)
	}
	if _, _, err := v.Get(c, "acct-bad"); !errors.Is(err, vault.ErrNoToken) {
		t.Errorf("a malformed handover was stored: %v", err)
	}

	// Once the service stops, nobody takes tokens.
	if err := svc.Stop(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		return errors.Is(vault.HandOver(c, ingress, "eu", h), vault.ErrNoVault)
	}, "HandOver after Stop to answer ErrNoVault")
}

func TestHandWithoutService(t *testing.T) {
	s := newStore(t)
	v := vault.New(s.kv, randomKey(t), noRefresh(t))
	svc, err := vault.Serve(s.ns.Conn, "eu", v, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = svc.Stop() }()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := proto.TokenHandover{AccountID: "acct-us", Tokens: proto.Tokens{AccessToken: "at", RefreshToken: "rt"}}
	t0 := time.Now()
	err = vault.HandOver(c, secondConn(t, s), "us", h) // eu serves; us does not
	if !errors.Is(err, vault.ErrNoVault) {
		t.Fatalf("Hand to a region without a vault: %v, want ErrNoVault", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("ErrNoVault after %s; want it at once, not at the deadline", d)
	}
	if _, _, err := v.Get(c, "acct-us"); !errors.Is(err, vault.ErrNoToken) {
		t.Errorf("another region's vault stored the tokens: %v", err)
	}
}

func TestHandStoreFails(t *testing.T) {
	s := newStore(t)
	c := ctx(t)
	kv, err := natsx.EnsureKeyValue(c, s.ns.JS, topology.RegionVaultConfig("uk", topology.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	v := vault.New(kv, randomKey(t), noRefresh(t))
	svc, err := vault.Serve(s.ns.Conn, "uk", v, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = svc.Stop() }()
	if err := s.ns.JS.DeleteKeyValue(c, proto.RegionVaultBucket("uk")); err != nil {
		t.Fatal(err)
	}
	h := proto.TokenHandover{AccountID: "acct-uk", Tokens: proto.Tokens{AccessToken: "at-uk", RefreshToken: "rt-uk"}}
	err = vault.HandOver(c, secondConn(t, s), "uk", h)
	if err == nil {
		t.Fatal("Hand succeeded though the region could not store the tokens")
	}
	if errors.Is(err, vault.ErrNoVault) || !strings.Contains(err.Error(), "region uk") {
		t.Errorf("Hand = %v; want the region's storage failure", err)
	}
	if strings.Contains(err.Error(), "at-uk") || strings.Contains(err.Error(), "rt-uk") {
		t.Errorf("the error shows a token: %v", err)
	}
}
