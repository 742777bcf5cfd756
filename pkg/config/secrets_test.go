package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geomux/geomux/pkg/config"
)

// The published demo config runs on a laptop, but its secrets are refused
// where the install flow is public (https): each one is named.
func TestDemoSecretsRefusedInPublic(t *testing.T) {
	if _, err := config.Load("../../deploy/local/geomux.yaml", []string{"GEOMUX_INSTALL_PUBLIC_URL=http://127.0.0.1:8080"}); err != nil {
		t.Fatalf("the demo config on localhost: %v", err)
	}
	_, err := config.Load("../../deploy/local/geomux.yaml", []string{"GEOMUX_INSTALL_PUBLIC_URL=https://bot.example.com"})
	ps := problems(t, err)
	for _, key := range []string{"admin.token", "install.state_key", "zoom.client_secret", "zoom.webhook_secret_tokens[0]",
		"zoom.apps[eu-bot].client_secret", "zoom.apps[eu-bot].webhook_secret_tokens[0]",
		"regions.us.vault_key", "regions.uk.vault_key", "regions.eu.vault_key"} {
		if !hasProblem(ps, key+": ", "published demo value") {
			t.Errorf("no problem for %s in %q", key, ps)
		}
	}
	for _, p := range ps {
		if strings.Contains(p, "local-") || strings.Contains(p, "qawKGZ") {
			t.Errorf("a problem shows the secret itself: %q", p)
		}
	}
}

// A config file holding secrets that others may read is warned about.
func TestReadableSecretsWarned(t *testing.T) {
	demo, err := os.ReadFile("../../deploy/local/geomux.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The demo's published secrets are no secret: no warning for them.
	path := filepath.Join(t.TempDir(), "geomux.yaml")
	if err := os.WriteFile(path, demo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := config.Load(path, nil); err != nil || len(c.Warnings) != 0 {
		t.Fatalf("the demo config: warnings %q, %v", c.Warnings, err)
	}
	// Secrets from the environment are not in the file: no warning.
	if c, err := config.Load(path, []string{"GEOMUX_ADMIN_TOKEN=a-real-admin-token-0123456789"}); err != nil || len(c.Warnings) != 0 {
		t.Fatalf("a secret from the environment: warnings %q, %v", c.Warnings, err)
	}
	demo = []byte(strings.Replace(string(demo), "local-admin-token-change-me", "a-real-admin-token-0123456789", 1))
	if err := os.WriteFile(path, demo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	c, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "chmod 600 "+path) {
		t.Errorf("warnings for a world-readable file of secrets: %q", c.Warnings)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = config.Load(path, nil); err != nil || len(c.Warnings) != 0 {
		t.Errorf("a private file: warnings %q, %v", c.Warnings, err)
	}
}

// A URL in a config error loses its password and query.
func TestURLsRedactedInProblems(t *testing.T) {
	_, err := read(t, `
nats: {url: "nats://router:hunter2@nats.example.com:4222 oops"}
regions:
  - {name: eu, handler: http, backend_url: "ftp://svc:s3cret@backend.example.com/chat?api_key=k3y"}
`, nil)
	ps := problems(t, err)
	all := strings.Join(ps, "\n")
	for _, secret := range []string{"hunter2", "s3cret", "k3y"} {
		if strings.Contains(all, secret) {
			t.Errorf("a problem shows %q:\n%s", secret, all)
		}
	}
	if !hasProblem(ps, "regions[eu].backend_url", "backend.example.com") {
		t.Errorf("the backend URL's problem does not name its host:\n%s", all)
	}
}
