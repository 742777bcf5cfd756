package sandbox_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/geomux/geomux/pkg/zoom/sandbox"
)

// Each app's chatbot token sends as that app's bot only.
func TestSandboxTokensArePerApp(t *testing.T) {
	sb := sandbox.New(sandbox.Config{ClientID: "main-id", ClientSecret: "main-secret", BotJID: "main@xmpp.zoom.us",
		Apps: []sandbox.App{{ClientID: "eu-id", ClientSecret: "eu-secret", BotJID: "eu@xmpp.zoom.us"}}}, nil)
	srv := httptest.NewServer(sb)
	defer srv.Close()
	token := func(id, secret string) (string, int) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/oauth/token?grant_type=client_credentials", nil)
		req.SetBasicAuth(id, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		return tok.AccessToken, resp.StatusCode
	}
	send := func(tok, robot string) int {
		b, _ := json.Marshal(map[string]any{"robot_jid": robot, "to_jid": "u@xmpp.zoom.us", "user_jid": "u@xmpp.zoom.us", "account_id": "a",
			"content": map[string]any{"body": []map[string]string{{"type": "message", "text": "hi"}}}})
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v2/im/chat/messages", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if _, code := token("eu-id", "main-secret"); code != http.StatusUnauthorized {
		t.Errorf("eu-id with main's secret: %d", code)
	}
	eu, code := token("eu-id", "eu-secret")
	if code != http.StatusOK {
		t.Fatalf("eu token: %d", code)
	}
	main, _ := token("main-id", "main-secret")
	if send(eu, "main@xmpp.zoom.us") != http.StatusNotFound || send(main, "eu@xmpp.zoom.us") != http.StatusNotFound {
		t.Error("a token sent as another app's bot")
	}
	if send(eu, "eu@xmpp.zoom.us") != http.StatusCreated || send(main, "main@xmpp.zoom.us") != http.StatusCreated {
		t.Fatal("a token could not send as its own bot")
	}
	ds := sb.Delivered()
	if len(ds) != 2 || ds[0].ClientID != "eu-id" || ds[1].ClientID != "main-id" {
		t.Errorf("delivered %+v", ds)
	}
}
