package sandbox

import (
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"time"

	"github.com/geomux/geomux/pkg/httpx"
)

// The user OAuth part of the sandbox: Zoom's authorize page (here a form
// where you say which account is installing), the authorization_code and
// refresh_token grants (PKCE S256 checked, refresh tokens rotated as Zoom
// does), and GET /v2/users/me.

type grant struct {
	account, user, challenge, redirect string
	exp                                time.Time
}

type oauthState struct {
	codes    map[string]grant // authorization code → grant
	access   map[string]grant // user access token → grant
	refresh  map[string]grant // refresh token → grant (used once)
	refreshN int
}

func newOAuthState() oauthState {
	return oauthState{codes: map[string]grant{}, access: map[string]grant{}, refresh: map[string]grant{}}
}

// RefreshCount is how many refresh_token grants the sandbox has answered.
func (s *Sandbox) RefreshCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oauth.refreshN
}

var authorizeTemplate = template.Must(template.New("authorize").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Zoom sandbox: authorize the app</title>
<style>body{font:1rem/1.5 system-ui,sans-serif;background:#f4f6fa;color:#14213d;margin:0}main{max-width:32rem;margin:3rem auto;background:#fff;border:1px solid #d5dbe5;border-radius:.75rem;padding:2rem}
label{display:block;font-weight:600;margin:1rem 0 .25rem}input[type=text]{width:100%;padding:.6rem;font:inherit;border:1px solid #9aa5b8;border-radius:.4rem}
button{margin-top:1.25rem;margin-right:.5rem;padding:.7rem 1.2rem;font:inherit;font-weight:600;border:0;border-radius:.4rem;background:#0b5cad;color:#fff;cursor:pointer}button.deny{background:#6b7280}</style>
</head><body><main>
<h1>Zoom sandbox</h1>
<p>An app asks to be installed on your Zoom account. This is geomux's stand-in for Zoom's authorization page.</p>
<form method="post" action="/oauth/authorize">
<input type="hidden" name="client_id" value="{{.ClientID}}"><input type="hidden" name="redirect_uri" value="{{.RedirectURI}}">
<input type="hidden" name="state" value="{{.State}}"><input type="hidden" name="code_challenge" value="{{.Challenge}}">
<label for="account">Zoom account id</label><input type="text" id="account" name="account" value="sandbox-account-1" required pattern="[A-Za-z0-9_=-]+">
<label for="user">User id</label><input type="text" id="user" name="user" value="sandbox-admin" required>
<button type="submit" name="decision" value="allow">Allow</button><button class="deny" type="submit" name="decision" value="deny">Decline</button>
</form></main></body></html>`))

func (s *Sandbox) authorizePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != s.cfg.ClientID || q.Get("response_type") != "code" || q.Get("redirect_uri") == "" {
		http.Error(w, "Invalid client_id, response_type or redirect_uri", http.StatusBadRequest)
		return
	}
	if m := q.Get("code_challenge_method"); q.Get("code_challenge") != "" && m != "S256" {
		http.Error(w, "Unsupported code_challenge_method", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = authorizeTemplate.Execute(w, map[string]string{
		"ClientID": q.Get("client_id"), "RedirectURI": q.Get("redirect_uri"), "State": q.Get("state"), "Challenge": q.Get("code_challenge"),
	})
}

// authorize is the admin's answer: a code (or an error) sent back to the app.
func (s *Sandbox) authorize(w http.ResponseWriter, r *http.Request) {
	redirect, err := url.Parse(r.PostFormValue("redirect_uri"))
	if err != nil || redirect.Host == "" || r.PostFormValue("client_id") != s.cfg.ClientID {
		http.Error(w, "Invalid client_id or redirect_uri", http.StatusBadRequest)
		return
	}
	q := redirect.Query()
	if st := r.PostFormValue("state"); st != "" {
		q.Set("state", st)
	}
	if r.PostFormValue("decision") != "allow" {
		q.Set("error", "access_denied")
	} else {
		q.Set("code", s.issueCode(r.PostFormValue("account"), r.PostFormValue("user"), r.PostFormValue("code_challenge"), redirect.String()))
	}
	redirect.RawQuery = q.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// marketplaceInstall plays an install started in Zoom's Marketplace: the
// browser arrives at the app's redirect URI with a code and no state.
func (s *Sandbox) marketplaceInstall(w http.ResponseWriter, r *http.Request) {
	if s.cfg.RedirectURI == "" {
		http.Error(w, "The sandbox has no redirect URI for this app", http.StatusNotFound)
		return
	}
	account := r.URL.Query().Get("account")
	if account == "" {
		account = "sandbox-account-1"
	}
	code := s.issueCode(account, "sandbox-admin", "", s.cfg.RedirectURI)
	http.Redirect(w, r, s.cfg.RedirectURI+"?code="+url.QueryEscape(code), http.StatusFound)
}

func (s *Sandbox) issueCode(account, user, challenge, redirect string) string {
	code := randomID()
	s.mu.Lock()
	s.oauth.codes[code] = grant{account: account, user: user, challenge: challenge, redirect: redirect, exp: s.cfg.Now().Add(5 * time.Minute)}
	s.mu.Unlock()
	return code
}

type oauthError struct {
	Reason string `json:"reason"`
	Error  string `json:"error"`
}

// userToken answers the authorization_code and refresh_token grants; the
// caller has checked the app's Basic credentials.
func (s *Sandbox) userToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var g grant
	switch r.Form.Get("grant_type") {
	case "authorization_code":
		c, ok := s.oauth.codes[r.Form.Get("code")]
		delete(s.oauth.codes, r.Form.Get("code")) // a code works once
		switch {
		case !ok || s.cfg.Now().After(c.exp):
			httpx.WriteJSON(w, http.StatusBadRequest, oauthError{"Invalid authorization code", "invalid_grant"})
			return
		case c.redirect != r.Form.Get("redirect_uri"):
			httpx.WriteJSON(w, http.StatusBadRequest, oauthError{"Redirect URI mismatch.", "invalid_request"})
			return
		case c.challenge != "" && pkce(r.Form.Get("code_verifier")) != c.challenge:
			httpx.WriteJSON(w, http.StatusBadRequest, oauthError{"Invalid code verifier", "invalid_grant"})
			return
		}
		g = c
	default: // refresh_token
		c, ok := s.oauth.refresh[r.Form.Get("refresh_token")]
		if !ok {
			httpx.WriteJSON(w, http.StatusBadRequest, oauthError{"Invalid Token!", "invalid_request"})
			return
		}
		delete(s.oauth.refresh, r.Form.Get("refresh_token")) // rotated
		s.oauth.refreshN++
		g = c
	}
	access, refresh := "sandbox-user."+randomID(), "sandbox-refresh."+randomID()
	g.exp = s.cfg.Now().Add(s.cfg.TokenLifetime)
	s.oauth.access[access] = g
	s.oauth.refresh[refresh] = g
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"access_token": access, "token_type": "bearer", "refresh_token": refresh,
		"expires_in": int(s.cfg.TokenLifetime / time.Second), "scope": "imchat:userapp user:read",
		"api_url": "http://" + r.Host,
	})
}

func pkce(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func (s *Sandbox) usersMe(w http.ResponseWriter, r *http.Request) {
	tok := r.Header.Get("Authorization")
	s.mu.Lock()
	g, ok := s.oauth.access[trimBearer(tok)]
	s.mu.Unlock()
	if !ok || s.cfg.Now().After(g.exp) {
		httpx.WriteJSON(w, http.StatusUnauthorized, zoomError{124, "Invalid access token."})
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"id": g.user, "account_id": g.account, "jid": g.user + "@xmpp.zoom.us", "type": 1, "status": "active",
	})
}

func trimBearer(h string) string {
	if len(h) > 7 && h[:7] == "Bearer " {
		return h[7:]
	}
	return ""
}
