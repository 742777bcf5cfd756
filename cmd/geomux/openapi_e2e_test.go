package main

import (
	"net/http"
	"testing"

	"github.com/geomux/geomux/pkg/platformfx"
	"github.com/geomux/geomux/proto"
)

// geomux run serves the backend contract's OpenAPI document on the admin
// API, as the binary carries it, to the admin token only.
func TestE2EAdminServesTheBackendOpenAPIDocument(t *testing.T) {
	t.Parallel()
	p := newPipeline(t, t.TempDir())
	status, body := p.adminDo(http.MethodGet, platformfx.BackendOpenAPIPath, "")
	if status != http.StatusOK || body != string(proto.BackendOpenAPI()) {
		t.Errorf("GET %s: %d, %d bytes; want 200 and the %d bytes of proto/backend.openapi.yaml", platformfx.BackendOpenAPIPath, status, len(body), len(proto.BackendOpenAPI()))
	}
	resp, err := http.Get(p.admin + platformfx.BackendOpenAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the admin token: %d, want 401", resp.StatusCode)
	}
}
