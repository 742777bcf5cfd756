package config

import (
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// Secrets on the way out: the demo configuration's published secrets are
// refused where the install flow is public, a config file that holds
// secrets and that others may read is warned about, and URLs in messages
// lose their credentials and queries.

// demoSecrets are the secrets of deploy/local/geomux.yaml, published with
// geomux: fine on a laptop, never where the world reaches the ingress.
var demoSecrets = map[string]bool{
	"local-admin-token-change-me":                     true,
	"local-webhook-secret":                            true,
	"local-client-secret":                             true,
	"local-eu-bot-webhook-secret":                     true,
	"local-eu-bot-client-secret":                      true,
	"local-state-key-not-secret-change-me-0123456789": true,
	"qawKGZlFHqhtLqIf9SbgB32LxV5ILSBkr0e6Bw111fM=":    true,
	"jiZBMKWIWTMOnSEhw3xZyHnf3xxXn0xjTnYcSfouQ3M=":    true,
	"aVDT3wGlKOS7CtgNErR9JytlR4aqJI0GdqH1SCdBEvE=":    true,
}

// secrets lists the config's secret values with their keys.
func (c *Config) secrets() map[string]string {
	out := map[string]string{
		"admin.token":       c.Admin.Token,
		"install.state_key": c.Install.StateKey,
	}
	for _, a := range c.Zoom.AllApps() {
		key := c.appKey(a)
		out[key+"client_secret"] = a.ClientSecret
		for j, s := range a.WebhookSecretTokens {
			out[fmt.Sprintf("%swebhook_secret_tokens[%d]", key, j)] = s
		}
	}
	for _, r := range c.Regions {
		out["regions."+r.Name+".vault_key"] = r.VaultKey
	}
	return out
}

// demoSecretsInPublic refuses the published demo secrets when the install
// flow is served over https, that is to the world.
func (p *problems) demoSecretsInPublic(c *Config) {
	if !strings.HasPrefix(c.Install.PublicURL, "https://") {
		return
	}
	secrets := c.secrets()
	for _, key := range slices.Sorted(maps.Keys(secrets)) {
		if demoSecrets[secrets[key]] {
			p.add(key, "is the published demo value of deploy/local/geomux.yaml; set a secret of your own where install.public_url is https (openssl rand -base64 32)")
		}
	}
}

// holdsSecrets reports whether any secret is set, other than the
// published demo values.
func (c *Config) holdsSecrets() bool {
	for _, v := range c.secrets() {
		if v != "" && !demoSecrets[v] {
			return true
		}
	}
	return false
}

// readableByOthers is the warning for a config file others may read that
// holds secrets, or "": c is the file alone, without the environment.
func readableByOthers(name string, mode fs.FileMode, c *Config) string {
	if mode.Perm()&0o004 == 0 || !c.holdsSecrets() {
		return ""
	}
	return fmt.Sprintf("config %s holds secrets and any user of this machine may read it (mode %o): chmod 600 %s, or set the secrets with GEOMUX_* variables", name, mode.Perm(), name)
}

// RedactURL is u without a password or query, for messages and logs; a
// value that does not parse as a URL is not shown.
func RedactURL(u string) string {
	pu, err := url.Parse(strings.TrimSpace(u))
	if err != nil {
		return "(a value that is not a URL, not shown)"
	}
	if pu.RawQuery != "" {
		pu.RawQuery = "..."
	}
	pu.Fragment = ""
	return pu.Redacted()
}
