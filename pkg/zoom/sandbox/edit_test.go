package sandbox_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
)

func (e *env) call(t *testing.T, method, path, bearer string, body any) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", bearer)
	}
	return do(t, req)
}

// Editing, deleting and unfurling answer as Zoom's API does: the same
// paths, statuses and {code, message} errors.
func TestEditDeleteUnfurl(t *testing.T) {
	e := start(t, 0)
	bearer := "Bearer " + e.token(t)
	status, sent := e.send(t, bearer, validMessage())
	if status != http.StatusCreated {
		t.Fatalf("send: %d %v", status, sent)
	}
	id := sent["message_id"].(string)
	edit := map[string]any{"robot_jid": botJID, "account_id": "acct-1",
		"content": map[string]any{"body": []map[string]string{{"type": "message", "text": "edited"}}}}

	for _, tc := range []struct {
		name, method, path, bearer string
		body                       any
		status, code               int
	}{
		{"edit without a token", http.MethodPut, "/v2/im/chat/messages/" + id, "", edit, 401, 7010},
		{"edit of no message", http.MethodPut, "/v2/im/chat/messages/nope", bearer, edit, 404, 8001},
		{"edit without content", http.MethodPut, "/v2/im/chat/messages/" + id, bearer, map[string]any{"robot_jid": botJID, "account_id": "acct-1"}, 400, 7001},
		{"edit of another account's", http.MethodPut, "/v2/im/chat/messages/" + id, bearer, map[string]any{"robot_jid": botJID, "account_id": "acct-2", "content": edit["content"]}, 404, 8001},
		{"edit", http.MethodPut, "/v2/im/chat/messages/" + id, bearer, edit, 200, 0},
		{"delete without robot_jid", http.MethodDelete, "/v2/im/chat/messages/" + id + "?account_id=acct-1", bearer, nil, 400, 7001},
		{"delete", http.MethodDelete, "/v2/im/chat/messages/" + id + "?account_id=acct-1&robot_jid=" + url.QueryEscape(botJID), bearer, nil, 200, 0},
		{"delete again", http.MethodDelete, "/v2/im/chat/messages/" + id + "?account_id=acct-1&robot_jid=" + url.QueryEscape(botJID), bearer, nil, 404, 8001},
		{"unfurl without content", http.MethodPost, "/v2/im/chat/users/u1/unfurls/t1", bearer, map[string]any{}, 400, 7001},
		{"unfurl", http.MethodPost, "/v2/im/chat/users/u1/unfurls/t1", bearer, map[string]any{"content": map[string]any{"head": map[string]string{"text": "Preview"}}}, 204, 0},
	} {
		status, m := e.call(t, tc.method, tc.path, tc.bearer, tc.body)
		if status != tc.status || code(m) != tc.code {
			t.Errorf("%s: %d %v, want %d code %d", tc.name, status, m, tc.status, tc.code)
		}
		if tc.name == "edit" {
			if ds := e.sb.Delivered(); len(ds) != 1 || ds[0].Text != "edited" || ds[0].Edits != 1 {
				t.Errorf("after the edit: %+v", ds)
			}
		}
	}
	if ds := e.sb.Delivered(); len(ds) != 1 || !ds[0].Deleted {
		t.Errorf("after the delete: %+v", ds)
	}
	if us := e.sb.Unfurls(); len(us) != 1 || us[0].UserID != "u1" || us[0].TriggerID != "t1" {
		t.Errorf("unfurls: %+v", us)
	}
}
