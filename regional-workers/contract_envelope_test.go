package workers_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/vault"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
)

// envelopeProblems validates each request the worker POSTed to a backend
// against the document's POST /, in strict mode: a property or a header
// the document does not declare is a problem too (but in the Zoom event,
// which is Zoom's).
func envelopeProblems(doc []byte, calls []backendCall) []string {
	c, err := loadContract(doc, true)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, call := range calls {
		// The document's server is backend_url and its path "/" stands for
		// backend_url itself: the request as it reached the backend.
		req, err := http.NewRequest(call.Method, "https://backend.example.com/", bytes.NewReader(call.Body))
		if err != nil {
			return []string{err.Error()}
		}
		req.Header = call.Header.Clone()
		if ok, errs := c.val.ValidateHttpRequestSync(req); !ok {
			for _, e := range errs {
				out = append(out, fmt.Sprintf("%s of %s: %s", call.Req.Event, call.Req.ID, e.Error()))
				for _, f := range e.SchemaValidationErrors {
					out = append(out, "  "+f.Error())
				}
			}
		}
	}
	return out
}

// The envelope the worker really sends, for every example event of Zoom's
// (their bytes as Zoom writes them, whitespace and all), a shared link and
// a region that passes user tokens, validates against the document; and
// every property the document gives the envelope is sent in one of them.
func TestBackendOpenAPIDescribesTheEnvelopeSent(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, "")
	z := newFakeZoom(t, nil)
	backend := newFakeBackend(t, func(int, proto.BackendRequest) backendAnswer {
		return backendAnswer{Status: http.StatusNoContent}
	})
	plain := testOptions("eu")
	startWorker(t, ns.JS, backendHandler(t, backend, "eu", 0), zoomClient(t, z), plain)

	// A region that passes the installing user's token.
	key, err := vault.ParseKey(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	tokens := testOptions("us")
	tokens.Vault, tokens.UserToken = vault.Later(key, nil), true
	if err := tokens.Vault.Open(context.Background(), ns.JS, "us", tokens.Streams); err != nil {
		t.Fatal(err)
	}
	startWorker(t, ns.JS, backendHandler(t, backend, "us", 0), zoomClient(t, z), tokens)
	putUserToken(t, ns, "us", key, "acct-token", proto.Tokens{
		AccessToken: "user-access-token", RefreshToken: "user-refresh-token",
		ExpiresAt: time.Now().Add(time.Hour).UTC(), APIURL: "https://api-eu.zoom.us",
	})

	sent := 0
	for _, name := range zoomtest.Names {
		if name == "endpoint_url_validation" { // answered by the ingress, never stored
			continue
		}
		body := zoomtest.RawEvent(name)
		h, err := zoom.ParseHead(body)
		if err != nil {
			t.Fatalf("example %s: %v", name, err)
		}
		publish(t, ns.JS, "eu", h.Event, h.AccountID, body)
		sent++
	}
	link := []byte(`{"event":"team_chat.link_shared","event_ts":1700000000000,"response_url":"https://api.zoom.us/v2/im/chat/users/u-7/unfurls/trig-3","payload":{"account_id":"acct-link","operator_id":"u-7","object":{"channel_id":"chan1","message":"https://example.com"}}}`)
	publish(t, ns.JS, "eu", "team_chat.link_shared", "acct-link", link)
	publish(t, ns.JS, "us", zoom.EventBotNotification, "acct-token", zoomtest.BotNotification("acct-token", "with a token", 1))
	sent += 2
	natstest.Eventually(t, waitFor, func() bool { return backend.Hits() == sent }, "%d events at the backend", sent)

	calls := backend.Calls()
	if p := envelopeProblems(proto.BackendOpenAPI(), calls); len(p) > 0 {
		t.Fatalf("the envelope geomux sends does not match proto/backend.openapi.yaml:\n%s", strings.Join(p, "\n"))
	}

	// Every property the document declares was sent, so that each was
	// checked against a real envelope.
	c := mustContract(t, false)
	unsent := map[string]bool{}
	for k := range c.schema("BackendRequest").Properties.KeysFromOldest() {
		unsent[k] = true
	}
	for _, call := range calls {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(call.Body, &fields); err != nil {
			t.Fatalf("envelope of %s is not a JSON object: %v", call.Req.Event, err)
		}
		for k := range fields {
			delete(unsent, k)
		}
	}
	if len(unsent) > 0 {
		t.Errorf("no envelope had %v: the test no longer checks them", slices.Sorted(func(yield func(string) bool) {
			for k := range unsent {
				if !yield(k) {
					return
				}
			}
		}))
	}

	// A wrong document fails.
	for name, doc := range map[string][]byte{
		"field renamed":   mutated(t, "        account_id:\n          type: string\n          minLength: 1\n          description: The Zoom account", "        account:\n          type: string\n          minLength: 1\n          description: The Zoom account"),
		"field required":  mutated(t, "required: [id, region, account_id, event, received_at, payload]", "required: [id, region, account_id, event, received_at, payload, tenant]"),
		"header renamed":  mutated(t, "- name: X-Geomux-Region", "- name: X-Geomux-Zone"),
		"wrong format":    mutated(t, "        received_at:\n          type: string\n          format: date-time", "        received_at:\n          type: string\n          format: date"),
		"token not typed": mutated(t, "        access_token:\n          type: string", "        access_token:\n          type: integer"),
		"payload typed":   mutated(t, "        event_ts:\n          type: integer", "        event_ts:\n          type: string"),
	} {
		if len(envelopeProblems(doc, calls)) == 0 {
			t.Errorf("a wrong document (%s) passes", name)
		}
	}
}

// putUserToken stores an account's user token in a region's vault, as an
// install does.
func putUserToken(t *testing.T, ns *natstest.Server, region string, key vault.Key, account string, tok proto.Tokens) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	kv, err := ns.JS.KeyValue(ctx, proto.RegionVaultBucket(region))
	if err != nil {
		t.Fatalf("vault of %s: %v", region, err)
	}
	if err := vault.New(kv, key, nil).Put(ctx, account, vault.Record{Tokens: tok}); err != nil {
		t.Fatal(err)
	}
}
