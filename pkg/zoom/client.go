package zoom

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"golang.org/x/sync/singleflight"

	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/proto"
)

// ClientConfig says which Zoom app the client acts as and where Zoom is.
type ClientConfig struct {
	ClientID     string
	ClientSecret string
	// APIBaseURL is e.g. https://api.zoom.us/v2.
	APIBaseURL string
	// OAuthBaseURL is e.g. https://zoom.us.
	OAuthBaseURL string
}

// Client calls Zoom's chatbot API with a chatbot token (client_credentials)
// that it caches and renews a minute before it expires. It is safe for
// concurrent use; concurrent callers share one token request.
type Client struct {
	cfg  ClientConfig
	http *retryablehttp.Client
	now  func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
	fetches singleflight.Group
}

// NewClient returns a Client making its calls with hc.
func NewClient(cfg ClientConfig, hc *retryablehttp.Client) *Client {
	cfg.APIBaseURL = strings.TrimRight(cfg.APIBaseURL, "/")
	cfg.OAuthBaseURL = strings.TrimRight(cfg.OAuthBaseURL, "/")
	return &Client{cfg: cfg, http: hc, now: time.Now}
}

// tokenFetchTimeout bounds one token request.
const tokenFetchTimeout = 10 * time.Second

// tokenRenewBefore is how long before its expiry a token is replaced, as
// Zoom's own SDK does.
const tokenRenewBefore = 60 * time.Second

// Token returns a valid chatbot token, fetching one only when the cached one
// is missing or about to expire.
func (c *Client) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	tok, exp := c.token, c.expires
	c.mu.Unlock()
	if tok != "" && c.now().Before(exp) {
		return tok, nil
	}
	v, err, _ := c.fetches.Do("token", func() (any, error) {
		// Another caller may have renewed it while this one waited.
		c.mu.Lock()
		tok, exp := c.token, c.expires
		c.mu.Unlock()
		if tok != "" && c.now().Before(exp) {
			return tok, nil
		}
		// Not the first caller's context: its deadline would fail every
		// caller that shares this fetch.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenFetchTimeout)
		defer cancel()
		return c.fetchToken(fctx)
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// forgetToken drops a token Zoom refused, so the next call fetches a new one.
func (c *Client) forgetToken(tok string) {
	c.mu.Lock()
	if c.token == tok {
		c.token = ""
	}
	c.mu.Unlock()
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope"`
	APIURL       string `json:"api_url"`
}

func (c *Client) fetchToken(ctx context.Context) (string, error) {
	req, err := c.oauthRequest(ctx, url.Values{"grant_type": {"client_credentials"}}, nil)
	if err != nil {
		return "", err
	}
	body, status, err := c.exchange(req, "zoom-oauth", "zoom oauth", 64<<10)
	if se := (*retry.StatusError)(nil); errors.As(err, &se) {
		// Whatever the status, the event is not at fault: the app's
		// credentials are (being rotated, say). Retry the event rather
		// than dead-letter every event of every region at once.
		se.Retry = true
	}
	if err != nil {
		return "", err
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return "", &retry.StatusError{Service: "zoom-oauth", StatusCode: status, Detail: "answer has no access_token"}
	}
	life := time.Duration(tr.ExpiresIn) * time.Second
	if life > 2*tokenRenewBefore {
		life -= tokenRenewBefore
	} else {
		life /= 2
	}
	c.mu.Lock()
	c.token, c.expires = tr.AccessToken, c.now().Add(life)
	c.mu.Unlock()
	return tr.AccessToken, nil
}

// Message is a chatbot message (POST /im/chat/messages): a backend's reply
// (proto.ChatMessage, its fields at the top level of the body) sent as a
// bot of an account.
type Message struct {
	RobotJID  string `json:"robot_jid"`
	AccountID string `json:"account_id"`
	proto.ChatMessage
}

// Check reports a message Zoom's send-message API would refuse (400,
// code 7001) for a required field missing: account_id, content (a JSON
// object), robot_jid, to_jid, user_jid. The error names the field and
// where its default comes from.
func (m Message) Check() error {
	var missing []string
	for _, f := range []struct{ name, v, why string }{
		{"account_id", m.AccountID, "the event names no account"},
		{"robot_jid", m.RobotJID, "zoom.bot_jid is not set"},
		{"to_jid", m.ToJID, "the event names no channel or user to answer (payload.toJid, payload.userJid, payload.object.channel_id): set to_jid in the answer"},
		{"user_jid", m.UserJID, "the event names no user (payload.userJid, payload.operator_id): set user_jid in the answer"},
	} {
		if f.v == "" {
			missing = append(missing, f.name+" ("+f.why+")")
		}
	}
	if c := bytes.TrimSpace(m.Content); len(c) == 0 || c[0] != '{' || !json.Valid(c) {
		missing = append(missing, "content (a message card, a JSON object: {\"body\": [...]})")
	}
	if len(missing) > 0 {
		return fmt.Errorf("zoom requires %s", strings.Join(missing, ", "))
	}
	return nil
}

// Sent is Zoom's answer to a sent message.
type Sent struct {
	MessageID string `json:"message_id"`
	SentTime  string `json:"sent_time"`
}

// SendMessage sends a chatbot message. A token Zoom refuses (401) is renewed
// once. Failures are *retry.StatusError for Zoom's answers.
func (c *Client) SendMessage(ctx context.Context, m Message) (Sent, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return Sent{}, fmt.Errorf("%w: encode message: %v", retry.ErrPermanent, err)
	}
	rb, err := c.call(ctx, http.MethodPost, "/im/chat/messages", body)
	if err != nil {
		return Sent{}, err
	}
	var sent Sent
	_ = json.Unmarshal(rb, &sent) // the message was sent; an odd answer only loses its id
	return sent, nil
}

// Edit is a change of a message the bot sent (PUT
// /im/chat/messages/{message_id}): Zoom requires robot_jid, account_id and
// content.
type Edit struct {
	MessageID         string          `json:"-"`
	RobotJID          string          `json:"robot_jid"`
	AccountID         string          `json:"account_id"`
	UserJID           string          `json:"user_jid,omitempty"`
	Content           json.RawMessage `json:"content"`
	IsMarkdownSupport *bool           `json:"is_markdown_support,omitempty"`
}

// EditMessage replaces the content of a message the bot sent.
func (c *Client) EditMessage(ctx context.Context, e Edit) error {
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("%w: encode edit: %v", retry.ErrPermanent, err)
	}
	_, err = c.call(ctx, http.MethodPut, "/im/chat/messages/"+url.PathEscape(e.MessageID), body)
	return err
}

// DeleteMessage deletes a message the bot sent (DELETE
// /im/chat/messages/{message_id}?account_id&robot_jid[&user_jid]).
func (c *Client) DeleteMessage(ctx context.Context, messageID, accountID, robotJID, userJID string) error {
	q := url.Values{"account_id": {accountID}, "robot_jid": {robotJID}}
	if userJID != "" {
		q.Set("user_jid", userJID)
	}
	_, err := c.call(ctx, http.MethodDelete, "/im/chat/messages/"+url.PathEscape(messageID)+"?"+q.Encode(), nil)
	return err
}

// Unfurl answers a shared link with its preview (POST
// /im/chat/users/{userId}/unfurls/{triggerId}); body is Zoom's request
// body, {"content": ...}.
func (c *Client) Unfurl(ctx context.Context, userID, triggerID string, body json.RawMessage) error {
	_, err := c.call(ctx, http.MethodPost, "/im/chat/users/"+url.PathEscape(userID)+"/unfurls/"+url.PathEscape(triggerID), body)
	return err
}

// call makes a chatbot API request with the chatbot token, renewing a
// token Zoom refuses (401) once, and returns the answer's body.
func (c *Client) call(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	for try := 0; ; try++ {
		tok, err := c.Token(ctx)
		if err != nil {
			return nil, err
		}
		rb, err := c.do(ctx, tok, method, path, body)
		var se *retry.StatusError
		if try == 0 && errors.As(err, &se) && se.StatusCode == http.StatusUnauthorized {
			c.forgetToken(tok)
			continue
		}
		return rb, err
	}
}

func (c *Client) do(ctx context.Context, tok, method, path string, body []byte) ([]byte, error) {
	var rbody any
	if body != nil {
		rbody = body
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, c.cfg.APIBaseURL+path, rbody)
	if err != nil {
		return nil, fmt.Errorf("%w: zoom api url: %v", retry.ErrPermanent, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rb, _, err := c.exchange(req, "zoom", "zoom: "+strings.ToLower(method)+" "+strings.SplitN(path, "?", 2)[0], 64<<10)
	return rb, err
}

// exchange sends req and reads the answer, at most limit bytes: its body
// when the status is 2xx, else a *retry.StatusError (statusError). what
// names the call in errors.
func (c *Client) exchange(req *retryablehttp.Request, service, what string, limit int64) (body []byte, status int, err error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("%s: read answer: %w", what, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, resp.StatusCode, statusError(service, resp, body)
	}
	return body, resp.StatusCode, nil
}

// oauthRequest is a POST to Zoom's /oauth/token with the app's credentials:
// query in the URL, form (if any) as the body.
func (c *Client) oauthRequest(ctx context.Context, query, form url.Values) (*retryablehttp.Request, error) {
	target := c.cfg.OAuthBaseURL + "/oauth/token"
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var body any
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, target, body)
	if err != nil {
		return nil, fmt.Errorf("%w: zoom oauth url: %v", retry.ErrPermanent, err)
	}
	req.SetBasicAuth(c.cfg.ClientID, c.cfg.ClientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req, nil
}

// statusError describes a failed Zoom answer by its status, Retry-After,
// X-RateLimit-Type (on a 429) and Zoom's {"code","message"} error body.
func statusError(service string, resp *http.Response, body []byte) *retry.StatusError {
	se := &retry.StatusError{Service: service, StatusCode: resp.StatusCode}
	se.RetryAfter, _ = retry.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if resp.StatusCode == http.StatusTooManyRequests {
		// Bounded: it goes into Error(), which must stay short.
		se.RateLimit = strings.TrimSpace(resp.Header.Get("X-RateLimit-Type"))
		if len(se.RateLimit) > 32 {
			se.RateLimit = se.RateLimit[:32]
		}
	}
	var ze struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Reason  string `json:"reason"`
	}
	if json.Unmarshal(body, &ze) == nil {
		msg := ze.Message
		if msg == "" {
			msg = ze.Reason
		}
		if len(msg) > 160 {
			msg = msg[:160]
		}
		if ze.Code != 0 {
			se.Detail = fmt.Sprintf("code %d: %s", ze.Code, msg)
		} else {
			se.Detail = msg
		}
	}
	return se
}
