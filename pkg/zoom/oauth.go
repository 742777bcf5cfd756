package zoom

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/proto"
)

// AuthorizeURL is where an install sends the admin's browser:
// {oauth}/oauth/authorize with the app's client id, the redirect URI, the
// state and a PKCE S256 challenge.
func (c *Client) AuthorizeURL(redirectURI, state, codeChallenge string) string {
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {c.cfg.ClientID},
		"redirect_uri":          {redirectURI},
		"state":                 {state},
		"code_challenge":        {codeChallenge},
		"code_challenge_method": {"S256"},
	}
	return c.cfg.OAuthBaseURL + "/oauth/authorize?" + q.Encode()
}

// ExchangeCode trades an authorization code for the user's tokens. The code
// verifier is empty when the install did not start with PKCE (an admin who
// installed from Zoom's Marketplace).
func (c *Client) ExchangeCode(ctx context.Context, code, redirectURI, codeVerifier string) (proto.Tokens, error) {
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}}
	if codeVerifier != "" {
		form.Set("code_verifier", codeVerifier)
	}
	return c.userToken(ctx, form)
}

// RefreshUserToken trades a refresh token for new tokens. Zoom rotates
// refresh tokens: the returned one replaces the old, which stops working.
func (c *Client) RefreshUserToken(ctx context.Context, refreshToken string) (proto.Tokens, error) {
	return c.userToken(ctx, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}})
}

func (c *Client) userToken(ctx context.Context, form url.Values) (proto.Tokens, error) {
	req, err := c.oauthRequest(ctx, nil, form)
	if err != nil {
		return proto.Tokens{}, err
	}
	body, status, err := c.exchange(req, "zoom-oauth", "zoom oauth", 64<<10)
	if err != nil {
		return proto.Tokens{}, err
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return proto.Tokens{}, &retry.StatusError{Service: "zoom-oauth", StatusCode: status, Detail: "answer has no access_token"}
	}
	return proto.Tokens{
		AccessToken: tr.AccessToken, RefreshToken: tr.RefreshToken, Scope: tr.Scope, APIURL: tr.APIURL,
		ExpiresAt: c.now().Add(time.Duration(tr.ExpiresIn) * time.Second).UTC(),
	}, nil
}

// Me is who a user token belongs to (GET /v2/users/me).
type Me struct {
	ID        string `json:"id"`
	AccountID string `json:"account_id"`
	JID       string `json:"jid,omitempty"`
}

// UsersMe asks Zoom whose token this is. apiURL is the token's api_url (no
// /v2); empty means the configured API base.
func (c *Client) UsersMe(ctx context.Context, apiURL, accessToken string) (Me, error) {
	base := c.cfg.APIBaseURL
	if apiURL != "" {
		base = strings.TrimRight(apiURL, "/") + "/v2"
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, base+"/users/me", nil)
	if err != nil {
		return Me{}, fmt.Errorf("%w: zoom api url: %v", retry.ErrPermanent, err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	body, status, err := c.exchange(req, "zoom", "zoom: users/me", 256<<10)
	if err != nil {
		return Me{}, err
	}
	var me Me
	if err := json.Unmarshal(body, &me); err != nil || me.AccountID == "" {
		return Me{}, &retry.StatusError{Service: "zoom", StatusCode: status, Detail: "users/me answer has no account_id"}
	}
	return me, nil
}
