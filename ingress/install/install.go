// Package install is the install flow served by the ingress: the page where
// an admin picks the region their organisation's data stays in, the Zoom
// OAuth authorization (PKCE, a signed single-use state), and the callback
// that records the account's region in the directory and hands its tokens to
// that region's vault. It also serves the other entry point: an admin who
// installed straight from Zoom's Marketplace arrives at the callback without
// a state, and chooses the region there.
package install

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/directory"
	"github.com/geomux/geomux/pkg/logfields"
	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
)

// Paths the flow serves.
const (
	PathInstall  = "/install"
	PathCallback = "/oauth/callback"
	PathRegion   = "/oauth/region"
)

// Options configure the flow.
type Options struct {
	// PublicURL is where browsers and Zoom reach the ingress.
	PublicURL string
	// StateKey signs states and seals cookies.
	StateKey []byte
	BotName  string
	Vendor   string
	// Regions are the regions offered, in this order.
	Regions []config.Region
	// OAuthOrigin is Zoom OAuth's origin, which the install form posts
	// toward (for the page's Content-Security-Policy).
	OAuthOrigin string
}

func (o Options) redirectURI() string { return strings.TrimRight(o.PublicURL, "/") + PathCallback }
func (o Options) secure() bool        { return strings.HasPrefix(o.PublicURL, "https://") }

// Zoom is what the flow needs of Zoom's OAuth and API; *zoom.Client is one.
type Zoom interface {
	AuthorizeURL(redirectURI, state, codeChallenge string) string
	ExchangeCode(ctx context.Context, code, redirectURI, codeVerifier string) (proto.Tokens, error)
	UsersMe(ctx context.Context, apiURL, accessToken string) (zoom.Me, error)
}

// Nonces records used states: Use reports whether id is used for the first
// time.
type Nonces interface {
	Use(ctx context.Context, id string) (first bool, err error)
}

// Handler serves the flow.
type Handler struct {
	opts   Options
	dir    directory.Installer
	zoom   Zoom
	nonces Nonces
	seal   sealer
	log    *zap.Logger
	// sampled logs what strangers can cause (refused states, codes, posts).
	sampled *zap.Logger
	limit   *limiter
	now     func() time.Time
}

// New returns the flow's handler.
func New(opts Options, dir directory.Installer, z Zoom, nonces Nonces, log *zap.Logger) (*Handler, error) {
	s, err := newSealer(opts.StateKey)
	if err != nil {
		return nil, err
	}
	return &Handler{opts: opts, dir: dir, zoom: z, nonces: nonces, seal: s, log: log, sampled: sampledLogger(log), limit: newLimiter(), now: time.Now}, nil
}

// Mount adds the flow's routes to mux.
func (h *Handler) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathInstall, h.page)
	mux.Handle("POST "+PathInstall, h.sameSite(h.start))
	mux.HandleFunc("GET "+PathCallback, h.limited(h.callback))
	mux.Handle("POST "+PathRegion, h.sameSite(h.chosen))
}

// stateTTL is how long an install may take from the region choice to Zoom's
// redirect back (Zoom's codes live five minutes).
const stateTTL = 10 * time.Minute

// Cookie names. The install cookie carries the state's nonce and the PKCE
// verifier; the pending cookie, the tokens of a Marketplace install while the
// admin chooses the region.
const (
	installCookie = "geomux_install"
	pendingCookie = "geomux_pending"
)

func (h *Handler) page(w http.ResponseWriter, _ *http.Request) {
	h.render(w, http.StatusOK, "choose", view{
		Title: "Install", Heading: "Install " + h.opts.BotName, Action: PathInstall,
		Button: "Continue to Zoom", Regions: h.opts.Regions,
	})
}

// stateClaims are the claims of the OAuth state: the chosen region and a
// nonce that must match the browser's install cookie.
type stateClaims struct {
	Region string `json:"rgn"`
	Nonce  string `json:"nonce"`
	jwt.RegisteredClaims
}

const stateAudience = "geomux-install"

// start turns the region choice into Zoom's authorization request.
func (h *Handler) start(w http.ResponseWriter, r *http.Request) {
	region, ok := h.region(r.PostFormValue("region"))
	if !ok {
		h.problem(w, http.StatusBadRequest, "Choose a region", "Please choose where your data should stay.", true)
		return
	}
	nonce, verifier, jti := random(), random(), random()
	now := h.now()
	state, err := jwt.NewWithClaims(jwt.SigningMethodHS256, stateClaims{
		Region: region.Name, Nonce: nonce,
		RegisteredClaims: jwt.RegisteredClaims{
			ID: jti, Issuer: "geomux", Audience: jwt.ClaimStrings{stateAudience},
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(stateTTL)),
		},
	}).SignedString(h.opts.StateKey)
	if err != nil {
		h.problem(w, http.StatusInternalServerError, "Something went wrong", "The installation could not start.", true)
		return
	}
	if err := h.setSealed(w, installCookie, installSecret{Nonce: nonce, Verifier: verifier}, stateTTL); err != nil {
		h.problem(w, http.StatusInternalServerError, "Something went wrong", "The installation could not start.", true)
		return
	}
	sum := sha256.Sum256([]byte(verifier))
	http.Redirect(w, r, h.zoom.AuthorizeURL(h.opts.redirectURI(), state, base64.RawURLEncoding.EncodeToString(sum[:])), http.StatusSeeOther)
}

// installSecret is what the install cookie keeps.
type installSecret struct {
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
}

// callback is where Zoom sends the admin's browser back with a code.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		msg := "Zoom did not authorize the app."
		if e == "access_denied" {
			msg = "The app was not approved in Zoom, so nothing was installed."
		}
		h.problem(w, http.StatusBadRequest, "Not installed", msg, true)
		return
	}
	code := q.Get("code")
	if code == "" {
		h.problem(w, http.StatusBadRequest, "Not installed", "This page is reached from Zoom, with an authorization code.", true)
		return
	}
	state := q.Get("state")
	if state == "" {
		h.marketplace(w, r, code)
		return
	}
	claims, err := h.verifyState(state)
	if err != nil {
		h.sampled.Info("Install state refused", logfields.Reason(err.Error()))
		h.problem(w, http.StatusBadRequest, "This installation link is not valid", statePage[err]+" Please start again.", true)
		return
	}
	var sec installSecret
	if err := h.readSealed(r, installCookie, &sec); err != nil || subtle.ConstantTimeCompare([]byte(sec.Nonce), []byte(claims.Nonce)) != 1 {
		h.problem(w, http.StatusBadRequest, "This installation link is not valid",
			"It was started in another browser, or has expired. Please start again in this browser.", true)
		return
	}
	h.clearSealed(w, r, installCookie)
	first, err := h.nonces.Use(r.Context(), claims.ID)
	if err != nil {
		h.problem(w, http.StatusServiceUnavailable, "Please try again", "The installation service is busy. Please start again in a minute.", true)
		return
	}
	if !first {
		h.problem(w, http.StatusBadRequest, "This installation link was already used", "Each link works once. Please start again.", true)
		return
	}
	region, _ := h.region(claims.Region)
	tok, me, ok := h.exchange(w, r, code, sec.Verifier)
	if !ok {
		return
	}
	h.finish(w, r, region, me, tok)
}

var (
	errStateExpired = errors.New("install state expired")
	errStateInvalid = errors.New("install state not issued by this service, or altered")
)

// statePage is what the install page says of a refused state.
var statePage = map[error]string{
	errStateExpired: "It has expired.",
	errStateInvalid: "It was not issued by this service, or was altered.",
}

func (h *Handler) verifyState(s string) (*stateClaims, error) {
	var c stateClaims
	_, err := jwt.ParseWithClaims(s, &c, func(*jwt.Token) (any, error) { return h.opts.StateKey, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithAudience(stateAudience), jwt.WithIssuer("geomux"), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(h.now))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, errStateExpired
	case err != nil:
		return nil, errStateInvalid
	}
	if _, ok := h.region(c.Region); !ok || c.Nonce == "" || c.ID == "" {
		return nil, errStateInvalid
	}
	return &c, nil
}

// exchange trades the code for tokens and learns whose they are. On failure
// it has answered.
func (h *Handler) exchange(w http.ResponseWriter, r *http.Request, code, verifier string) (proto.Tokens, zoom.Me, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	tok, err := h.zoom.ExchangeCode(ctx, code, h.opts.redirectURI(), verifier)
	if err != nil {
		h.sampled.Warn("Install: code exchange failed", zap.Error(err))
		if retry.Retryable(err) {
			h.problem(w, http.StatusBadGateway, "Zoom could not be reached", "Zoom did not answer in time. Please start again.", true)
		} else {
			h.problem(w, http.StatusBadRequest, "Zoom refused the authorization",
				"The authorization code was refused; it may have expired (they last five minutes) or been used already. Please start again.", true)
		}
		return proto.Tokens{}, zoom.Me{}, false
	}
	me, err := h.zoom.UsersMe(ctx, tok.APIURL, tok.AccessToken)
	if err != nil {
		h.log.Warn("Install: users/me failed", zap.Error(err))
		h.problem(w, http.StatusBadGateway, "Zoom could not be reached", "Zoom did not say which account installed the app. Please start again.", true)
		return proto.Tokens{}, zoom.Me{}, false
	}
	if !proto.ValidAccountID(me.AccountID) {
		h.problem(w, http.StatusBadGateway, "Unexpected answer from Zoom", "Zoom's account id could not be read. Please contact the vendor.", false)
		return proto.Tokens{}, zoom.Me{}, false
	}
	return tok, me, true
}

// finish records the account in region and hands its tokens over to the region
// (directory.Installer.Install). An account that already lives in another
// region is not moved.
func (h *Handler) finish(w http.ResponseWriter, r *http.Request, region config.Region, me zoom.Me, tok proto.Tokens) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	fields := []zap.Field{logfields.AccountID(me.AccountID), logfields.Region(region.Name)}
	err := h.dir.Install(ctx, proto.AccountRecord{AccountID: me.AccountID, Region: region.Name, APIURL: tok.APIURL},
		proto.TokenHandover{AccountID: me.AccountID, Tokens: tok, UserID: me.ID})
	var conflict *directory.ConflictError
	switch {
	case errors.As(err, &conflict):
		h.log.Warn("Install into another region refused", append(fields, zap.String("current_region", conflict.Region))...)
		h.alreadyElsewhere(w, conflict.Region)
		return
	case err != nil:
		h.log.Error("Install not recorded", append(fields, zap.Error(err))...)
		h.problem(w, http.StatusServiceUnavailable, "Please try again", "The "+region.Title()+" region could not take your installation right now. Please start again in a minute.", true)
		return
	}
	h.log.Info("Account installed", fields...)
	h.render(w, http.StatusOK, "done", view{Title: "Installed", Heading: h.opts.BotName + " is installed", Region: region})
}

func (h *Handler) alreadyElsewhere(w http.ResponseWriter, current string) {
	now, ok := h.region(current)
	if !ok {
		now = config.Region{Name: current}
	}
	h.problem(w, http.StatusConflict, "Your organisation is already installed in "+now.Title(),
		"Its data stays in "+now.Title()+" ("+now.Name+"). Reinstalling cannot move it to another region; please contact the vendor if it must move.", false)
}

// pending is what a Marketplace install keeps in the admin's browser while
// they choose the region: never on any server outside the region.
type pending struct {
	Nonce string       `json:"n"`
	Me    zoom.Me      `json:"me"`
	Token proto.Tokens `json:"t"`
}

// marketplace handles an install that started in Zoom's Marketplace: no
// state, no PKCE. The account's region is asked for, unless it has one.
func (h *Handler) marketplace(w http.ResponseWriter, r *http.Request, code string) {
	tok, me, ok := h.exchange(w, r, code, "")
	if !ok {
		return
	}
	if cur, err := h.dir.Get(r.Context(), me.AccountID); err == nil {
		if region, ok := h.region(cur.Region); ok {
			h.finish(w, r, region, me, tok) // a reinstall: fresh tokens, same region
			return
		}
	}
	p := pending{Nonce: random(), Me: me, Token: tok}
	if err := h.setSealed(w, pendingCookie, p, stateTTL); err != nil {
		h.problem(w, http.StatusInternalServerError, "Something went wrong", "The installation could not continue.", true)
		return
	}
	h.render(w, http.StatusOK, "choose", view{
		Title: "Choose a region", Heading: "One last step: choose your region", Action: PathRegion,
		Button: "Finish installation", Regions: h.opts.Regions, Nonce: p.Nonce, Marketplace: true,
	})
}

// chosen completes a Marketplace install with the region chosen.
func (h *Handler) chosen(w http.ResponseWriter, r *http.Request) {
	var p pending
	if err := h.readSealed(r, pendingCookie, &p); err != nil ||
		subtle.ConstantTimeCompare([]byte(p.Nonce), []byte(r.PostFormValue("nonce"))) != 1 {
		h.problem(w, http.StatusBadRequest, "This installation has expired",
			"Choosing the region took too long, or happened in another browser. Please install again from Zoom's Marketplace.", false)
		return
	}
	region, ok := h.region(r.PostFormValue("region"))
	if !ok {
		h.problem(w, http.StatusBadRequest, "Choose a region", "Please go back and choose where your data should stay.", false)
		return
	}
	h.clearSealed(w, r, pendingCookie)
	h.finish(w, r, region, p.Me, p.Token)
}

func (h *Handler) region(name string) (config.Region, bool) {
	for _, r := range h.opts.Regions {
		if r.Name == name {
			return r, true
		}
	}
	return config.Region{}, false
}

// random is 32 random bytes, URL-safe base64 (a PKCE verifier is 43-128
// characters of that alphabet).
func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// OriginOf is the scheme://host of a URL, for Content-Security-Policy.
func OriginOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// KVNonces keeps used states in a KV bucket (topology.InstallNoncesConfig):
// a state's id can be created there once. KV is set before the first Use
// (at start).
type KVNonces struct{ KV jetstream.KeyValue }

// Use reports whether id is used for the first time.
func (n *KVNonces) Use(ctx context.Context, id string) (bool, error) {
	_, err := n.KV.Create(ctx, id, []byte{1})
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	return err == nil, err
}
