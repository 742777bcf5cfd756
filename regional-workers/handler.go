// Package workers runs a region's bot logic: it consumes only its region's
// events stream, asks the region's handler (built-in echo, or the vendor's
// backend over HTTP) what to reply, and sends the replies through Zoom's chat
// API. Transient failures are retried with the configured backoff; what fails
// for good is kept in the region's dead-letter stream.
package workers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/geomux/geomux/pkg/retry"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
)

// Event is an event as a handler sees it.
type Event struct {
	ID        string
	Region    string
	AccountID string
	Type      string
	// App is the Zoom app the event came through (its name in the config).
	App        string
	ReceivedAt time.Time
	// Body is the Zoom event body exactly as received.
	Body []byte
	// UserToken is the installing user's token, when the region is
	// configured to pass it (user_token) and the vault holds one.
	UserToken *proto.Tokens
	// Erasure marks the copy of an uninstall that the router sends to the
	// regions other than the account's (proto.HeaderErasure): the worker
	// erases what the region holds of the account, and asks no handler.
	Erasure bool
}

// Handler decides what to answer an event with: replies, and edits,
// deletes and unfurls. An error is retried if retry.Retryable says so, and
// dead-lettered otherwise.
type Handler interface {
	Answer(ctx context.Context, ev Event) (proto.BackendResponse, error)
}

// HandlerFunc adapts a function that answers with replies only to Handler.
type HandlerFunc func(ctx context.Context, ev Event) ([]proto.ChatMessage, error)

// Answer calls f.
func (f HandlerFunc) Answer(ctx context.Context, ev Event) (proto.BackendResponse, error) {
	msgs, err := f(ctx, ev)
	return proto.BackendResponse{Messages: msgs}, err
}

// Echo replies to a bot_notification with the text the user sent, and to
// anything else with nothing.
var Echo = HandlerFunc(func(_ context.Context, ev Event) ([]proto.ChatMessage, error) {
	if ev.Type != zoom.EventBotNotification {
		return nil, nil
	}
	chat, err := zoom.ParseChat(ev.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", retry.ErrPermanent, err)
	}
	if chat.Text == "" {
		return nil, nil
	}
	content, err := json.Marshal(map[string]any{
		"body": []map[string]string{{"type": "message", "text": chat.Text}},
	})
	if err != nil {
		return nil, err
	}
	return []proto.ChatMessage{{Content: content}}, nil
})

// payloadSlot is where envelope puts Zoom's bytes: the encoding of an
// empty payload. In JSON text every '"' inside a string is escaped, so the
// first occurrence of this is the field itself, whatever the strings hold.
var payloadSlot = []byte(`,"payload":null`)

// envelope is req as JSON with payload, Zoom's body, in it byte for byte:
// encoding/json would compact a json.RawMessage (Zoom's whitespace lost)
// and HTML-escape it.
func envelope(req proto.BackendRequest, payload []byte) ([]byte, error) {
	if !json.Valid(payload) {
		return nil, errors.New("the event body is not JSON")
	}
	req.Payload = nil
	head, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	i := bytes.Index(head, payloadSlot)
	if i < 0 {
		return nil, errors.New("no payload field in the envelope")
	}
	out := make([]byte, 0, len(head)+len(payload))
	out = append(out, head[:i+len(payloadSlot)-len("null")]...)
	out = append(out, payload...)
	return append(out, head[i+len(payloadSlot):]...), nil
}

// maxBackendAnswer bounds what is read of a backend's answer.
const maxBackendAnswer = 1 << 20

// HTTPBackend asks the vendor's regional backend: it POSTs a
// proto.BackendRequest and reads a proto.BackendResponse (200) or nothing
// (204).
type HTTPBackend struct {
	URL     string
	Region  string
	Timeout time.Duration
	Client  *retryablehttp.Client
}

// Answer calls the backend and returns its whole answer.
func (b *HTTPBackend) Answer(ctx context.Context, ev Event) (proto.BackendResponse, error) {
	none := proto.BackendResponse{}
	req := proto.BackendRequest{
		ID: ev.ID, Region: ev.Region, AccountID: ev.AccountID, Event: ev.Type, App: ev.App,
		ReceivedAt: ev.ReceivedAt,
	}
	if chat, err := zoom.ParseChat(ev.Body); err == nil {
		req.MessageID = chat.MessageID
		if chat.UnfurlUserID != "" {
			req.Unfurl = &proto.UnfurlTarget{UserID: chat.UnfurlUserID, TriggerID: chat.UnfurlTriggerID}
		}
	}
	if t := ev.UserToken; t != nil {
		access := t.UserToken // the access token only: never the refresh token
		req.UserToken = &access
	}
	body, err := envelope(req, ev.Body)
	if err != nil {
		return none, fmt.Errorf("%w: encode backend request: %v", retry.ErrPermanent, err)
	}
	ctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	hreq, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, b.URL, body)
	if err != nil {
		return none, fmt.Errorf("%w: backend_url: %v", retry.ErrPermanent, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("User-Agent", "geomux")
	hreq.Header.Set(proto.HTTPHeaderEventID, ev.ID)
	hreq.Header.Set(proto.HTTPHeaderRegion, ev.Region)
	resp, err := b.Client.Do(hreq)
	if err != nil {
		// The URL may carry a secret in its query (e.g. ?code=): errors end
		// up in logs and dead letters.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = redactQuery(ue.URL)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return none, fmt.Errorf("backend: no answer within %s: %w", b.Timeout, err)
		}
		return none, fmt.Errorf("backend: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode/100 == 2:
		// 204, or another success without a reply.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBackendAnswer))
		return none, nil
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBackendAnswer))
		se := &retry.StatusError{Service: "backend", StatusCode: resp.StatusCode}
		se.RetryAfter, _ = retry.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return none, se
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBackendAnswer))
			return none, fmt.Errorf("%w: backend answered 200 with Content-Type %q, want application/json", retry.ErrPermanent, ct)
		}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBackendAnswer+1))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return none, fmt.Errorf("backend: answer not read within %s: %w", b.Timeout, err)
		}
		return none, fmt.Errorf("backend: read answer: %w", err)
	}
	if len(raw) > maxBackendAnswer {
		return none, fmt.Errorf("%w: backend answer is larger than 1 MiB", retry.ErrPermanent)
	}
	return ParseBackendAnswer(raw)
}

// ParseBackendResponse reads the replies of a backend's 200 answer (see
// ParseBackendAnswer).
func ParseBackendResponse(raw []byte) ([]proto.ChatMessage, error) {
	a, err := ParseBackendAnswer(raw)
	return a.Messages, err
}

// ParseBackendAnswer reads a backend's 200 answer: {"messages":[...]}, each
// message's content a JSON object, and its edits, deletes and unfurls. An
// empty body means no reply. Errors wrap retry.ErrPermanent and describe
// the problem without quoting the body.
func ParseBackendAnswer(raw []byte) (proto.BackendResponse, error) {
	var br proto.BackendResponse
	if len(bytes.TrimSpace(raw)) == 0 {
		return br, nil
	}
	if err := json.Unmarshal(raw, &br); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return proto.BackendResponse{}, fmt.Errorf(`%w: backend answer is not JSON (invalid at byte %d); want {"messages":[...]}`, retry.ErrPermanent, syn.Offset)
		case errors.As(err, &typ):
			return proto.BackendResponse{}, fmt.Errorf(`%w: backend answer: %s is a JSON %s; want {"messages":[{"content":{...}}]}`, retry.ErrPermanent, orTop(typ.Field), typ.Value)
		default:
			return proto.BackendResponse{}, fmt.Errorf(`%w: backend answer is not {"messages":[...]}`, retry.ErrPermanent)
		}
	}
	for i, m := range br.Messages {
		if !isJSONObject(m.Content) {
			return proto.BackendResponse{}, fmt.Errorf("%w: backend answer: messages[%d].content must be a JSON object (a Zoom message card)", retry.ErrPermanent, i)
		}
	}
	for i, e := range br.Edits {
		if !isJSONObject(e.Content) {
			return proto.BackendResponse{}, fmt.Errorf("%w: backend answer: edits[%d].content must be a JSON object (a Zoom message card)", retry.ErrPermanent, i)
		}
	}
	for i, u := range br.Unfurls {
		if !isJSONObject(u.Content) {
			return proto.BackendResponse{}, fmt.Errorf("%w: backend answer: unfurls[%d].content must be a JSON object (Zoom's unfurl content)", retry.ErrPermanent, i)
		}
	}
	return br, nil
}

func orTop(field string) string {
	if field == "" {
		return "the answer"
	}
	return field
}

// redactQuery drops the query of a URL.
func redactQuery(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "backend_url"
	}
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	return u.Redacted()
}

func isJSONObject(b json.RawMessage) bool {
	b = bytes.TrimSpace(b)
	return len(b) >= 2 && b[0] == '{' && json.Valid(b)
}
