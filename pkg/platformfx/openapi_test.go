package platformfx_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/geomux/geomux/pkg/admin"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/platformfx"
	"github.com/geomux/geomux/proto"
)

// The admin API serves the OpenAPI document the binary carries, byte for
// byte, to whoever holds the admin token only.
func TestAdminServesTheBackendOpenAPIDocument(t *testing.T) {
	t.Parallel()
	const token = "test-admin-token"
	srv := httptest.NewServer(admin.NewHandler(token, platformfx.OpenAPIRoutes(), prometheus.NewRegistry(), health.NewRegistry()))
	t.Cleanup(srv.Close)

	get := func(auth string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+platformfx.BackendOpenAPIPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}

	resp, body := get("Bearer " + token)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with the token: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/yaml" {
		t.Errorf("Content-Type %q, want application/yaml", ct)
	}
	want := proto.BackendOpenAPI()
	if len(want) == 0 || !bytes.Equal(body, want) {
		t.Errorf("served %d bytes, not the %d bytes of proto/backend.openapi.yaml", len(body), len(want))
	}
	if !bytes.HasPrefix(want, []byte("# The backend contract of geomux")) || !bytes.Contains(want, []byte("\nopenapi: 3.1.0\n")) {
		t.Errorf("proto.BackendOpenAPI is not proto/backend.openapi.yaml")
	}

	for _, auth := range []string{"", "Bearer wrong-token"} {
		if resp, body := get(auth); resp.StatusCode != http.StatusUnauthorized || bytes.Contains(body, []byte("openapi:")) {
			t.Errorf("with Authorization %q: %d, want 401 and no document", auth, resp.StatusCode)
		}
	}
}
