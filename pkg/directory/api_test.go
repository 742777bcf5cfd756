package directory

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/admin"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/natsx/natstest"
)

const adminToken = "test-admin-token-0123456789"

type apiEnv struct {
	srv  *httptest.Server
	nats *natstest.Server
	dir  *Directory
}

func startAPI(t *testing.T) *apiEnv {
	t.Helper()
	ns := natstest.Start(t, "")
	dir := open(t, ns)
	api := NewAPI(dir, []string{"eu", "us"}, zap.NewNop())
	srv := httptest.NewServer(admin.NewHandler(adminToken, api.Routes(), prometheus.NewRegistry(), health.NewRegistry()))
	t.Cleanup(srv.Close)
	return &apiEnv{srv: srv, nats: ns, dir: dir}
}

// call makes an admin request with the given Authorization header ("" for
// none) and returns the status and the decoded JSON body (nil if empty).
func (e *apiEnv) call(t *testing.T, method, path, auth, body string) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, e.srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if len(bytes.TrimSpace(raw)) == 0 {
		return resp.StatusCode, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s %s: answer %d is not a JSON object: %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, m
}

func (e *apiEnv) admin(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	return e.call(t, method, path, "Bearer "+adminToken, body)
}

func TestAPIRequiresToken(t *testing.T) {
	e := startAPI(t)
	for _, auth := range []string{"", "Bearer wrong-token", "Bearer " + adminToken + "x", "Bearer", "bearer " + adminToken, adminToken, "Basic " + adminToken} {
		for _, rq := range []struct{ method, path, body string }{
			{"GET", "/admin/v1/accounts", ""},
			{"GET", "/admin/v1/accounts/acct", ""},
			{"PUT", "/admin/v1/accounts/acct", `{"region":"eu"}`},
			{"DELETE", "/admin/v1/accounts/acct", ""},
		} {
			status, m := e.call(t, rq.method, rq.path, auth, rq.body)
			if status != http.StatusUnauthorized || m["error"] == nil {
				t.Errorf("%s %s with Authorization %q = %d %v, want 401", rq.method, rq.path, auth, status, m)
			}
		}
	}
	// Nothing was written.
	if recs, _ := e.dir.List(t.Context()); len(recs) != 0 {
		t.Errorf("an unauthorised PUT stored %v", recs)
	}
	// Metrics and health need no token.
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200 without a token", path, resp.StatusCode)
		}
	}
}

func TestAPIAccounts(t *testing.T) {
	e := startAPI(t)

	status, m := e.admin(t, "GET", "/admin/v1/accounts", "")
	if status != http.StatusOK || m["count"] != float64(0) {
		t.Fatalf("empty list = %d %v", status, m)
	}
	if accts, ok := m["accounts"].([]any); !ok || len(accts) != 0 {
		t.Errorf("empty list accounts = %#v, want [] (not null)", m["accounts"])
	}

	status, m = e.admin(t, "PUT", "/admin/v1/accounts/gVcjZnWWRLWvv_GtyGuaxg", `{"region":"eu"}`)
	if status != http.StatusOK || m["account_id"] != "gVcjZnWWRLWvv_GtyGuaxg" || m["region"] != "eu" || m["updated_at"] == nil {
		t.Fatalf("PUT = %d %v", status, m)
	}
	status, m = e.admin(t, "GET", "/admin/v1/accounts/gVcjZnWWRLWvv_GtyGuaxg", "")
	if status != http.StatusOK || m["account_id"] != "gVcjZnWWRLWvv_GtyGuaxg" || m["region"] != "eu" {
		t.Fatalf("GET = %d %v", status, m)
	}
	if _, ok := m["api_url"]; ok {
		t.Errorf("api_url present though never set: %v", m)
	}
	// What the API wrote is in the directory.
	if r, err := e.dir.Get(t.Context(), "gVcjZnWWRLWvv_GtyGuaxg"); err != nil || r.Region != "eu" {
		t.Errorf("directory Get = %+v, %v", r, err)
	}

	// With a Zoom API URL.
	status, m = e.admin(t, "PUT", "/admin/v1/accounts/acct-2", `{"region":"us","api_url":"https://api-us.zoom.us"}`)
	if status != http.StatusOK || m["api_url"] != "https://api-us.zoom.us" {
		t.Errorf("PUT with api_url = %d %v", status, m)
	}

	status, m = e.admin(t, "GET", "/admin/v1/accounts", "")
	if status != http.StatusOK || m["count"] != float64(2) {
		t.Fatalf("list = %d %v", status, m)
	}
	accts := m["accounts"].([]any)
	if first := accts[0].(map[string]any); first["account_id"] != "acct-2" || first["region"] != "us" {
		t.Errorf("list[0] = %v, want acct-2 in us (sorted)", first)
	}
	if second := accts[1].(map[string]any); second["account_id"] != "gVcjZnWWRLWvv_GtyGuaxg" || second["region"] != "eu" {
		t.Errorf("list[1] = %v", second)
	}

	status, m = e.admin(t, "GET", "/admin/v1/accounts/unknown-acct", "")
	if status != http.StatusNotFound || !strings.Contains(m["error"].(string), "unknown-acct") {
		t.Errorf("GET unknown = %d %v, want 404 naming the account", status, m)
	}

	if status, m := e.admin(t, "DELETE", "/admin/v1/accounts/acct-2", ""); status != http.StatusNoContent || m != nil {
		t.Errorf("DELETE = %d %v, want 204 and no body", status, m)
	}
	if status, _ := e.admin(t, "GET", "/admin/v1/accounts/acct-2", ""); status != http.StatusNotFound {
		t.Errorf("GET after DELETE = %d, want 404", status)
	}
	if status, m := e.admin(t, "GET", "/admin/v1/accounts", ""); status != http.StatusOK || m["count"] != float64(1) {
		t.Errorf("list after DELETE = %d %v", status, m)
	}
	// Deleting an unknown account is not an error.
	if status, _ := e.admin(t, "DELETE", "/admin/v1/accounts/acct-2", ""); status != http.StatusNoContent {
		t.Errorf("second DELETE = %d, want 204", status)
	}
}

func TestAPIBadRequests(t *testing.T) {
	e := startAPI(t)
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
		mention                  string
	}{
		{"unconfigured region", "PUT", "/admin/v1/accounts/acct", `{"region":"mars"}`, 400, "mars"},
		{"no region", "PUT", "/admin/v1/accounts/acct", `{}`, 400, "eu, us"},
		{"malformed JSON", "PUT", "/admin/v1/accounts/acct", `{"region":`, 400, "JSON"},
		{"not JSON", "PUT", "/admin/v1/accounts/acct", `region=eu`, 400, "JSON"},
		{"empty body", "PUT", "/admin/v1/accounts/acct", ``, 400, "JSON"},
		{"unknown field", "PUT", "/admin/v1/accounts/acct", `{"region":"eu","regoin":"us"}`, 400, "regoin"},
		{"region not a string", "PUT", "/admin/v1/accounts/acct", `{"region":1}`, 400, "JSON"},
		{"http api_url", "PUT", "/admin/v1/accounts/acct", `{"region":"eu","api_url":"http://api.zoom.us"}`, 400, "https"},
		{"relative api_url", "PUT", "/admin/v1/accounts/acct", `{"region":"eu","api_url":"api.zoom.us"}`, 400, "https"},
		{"bad account id (PUT)", "PUT", "/admin/v1/accounts/a.b", `{"region":"eu"}`, 400, "a.b"},
		{"bad account id (GET)", "GET", "/admin/v1/accounts/a%20b", ``, 400, "not a Zoom account id"},
		{"bad account id (DELETE)", "DELETE", "/admin/v1/accounts/a*b", ``, 400, "not a Zoom account id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := e.admin(t, tc.method, tc.path, tc.body)
			if status != tc.want {
				t.Fatalf("%s %s %s = %d %v, want %d", tc.method, tc.path, tc.body, status, m, tc.want)
			}
			if tc.mention != "" {
				msg, _ := m["error"].(string)
				if !strings.Contains(msg, tc.mention) {
					t.Errorf("error %q does not mention %q", msg, tc.mention)
				}
			}
		})
	}
	// Routing failures (plain-text answers from net/http).
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/admin/v1/accounts/acct", http.StatusMethodNotAllowed},
		{"GET", "/admin/v1/regions", http.StatusNotFound},
	} {
		req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, strings.NewReader(`{"region":"eu"}`))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
	if recs, _ := e.dir.List(t.Context()); len(recs) != 0 {
		t.Errorf("bad requests stored %v", recs)
	}
}

func TestAPIDirectoryUnavailable(t *testing.T) {
	e := startAPI(t)
	e.nats.Stop()
	for _, rq := range []struct{ method, path, body string }{
		{"GET", "/admin/v1/accounts/acct", ""},
		{"PUT", "/admin/v1/accounts/acct", `{"region":"eu"}`},
		{"DELETE", "/admin/v1/accounts/acct", ""},
		{"GET", "/admin/v1/accounts", ""},
	} {
		status, m := e.admin(t, rq.method, rq.path, rq.body)
		if status != http.StatusServiceUnavailable || !strings.Contains(m["error"].(string), "directory unavailable") {
			t.Errorf("%s %s with NATS down = %d %v, want 503", rq.method, rq.path, status, m)
		}
	}
}
