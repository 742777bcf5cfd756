package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/geomux/geomux/proto"
)

// Role is a part of geomux a process runs; a config is validated for the
// roles that will use it.
type Role string

// Roles.
const (
	RoleIngress Role = "ingress"
	RoleRouter  Role = "router"
	RoleWorker  Role = "worker"
	// RoleTool is a command that only talks to NATS (setup, audit, dlq):
	// it needs none of the settings of the roles above.
	RoleTool Role = "tool"
)

// AllRoles is every role, as run by --target all.
var AllRoles = []Role{RoleIngress, RoleRouter, RoleWorker}

// Validate reports every problem of c for the given roles (all when none),
// one per line, in an *Error.
func (c *Config) Validate(roles ...Role) error {
	if p := c.problems(roles); len(p) > 0 {
		return &Error{Source: "config", Problems: p}
	}
	return nil
}

func (c *Config) problems(roles []Role) []string {
	if len(roles) == 0 {
		roles = AllRoles
	}
	has := func(r Role) bool { return slices.Contains(roles, r) }
	var p problems

	p.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	p.oneOf("log.format", c.Log.Format, "json", "console")

	if c.NATS.URL == "" {
		if c.NATS.StoreDir == "" {
			p.add("nats.store_dir", "required when nats.url is empty (the embedded server stores JetStream data there)")
		}
		if c.NATS.Listen != "" {
			p.loopback("nats.listen", c.NATS.Listen)
		}
		if c.NATS.MonitorListen != "" {
			// What it serves names accounts' streams and connections:
			// for this machine only, as nats.listen.
			p.loopback("nats.monitor_listen", c.NATS.MonitorListen)
		}
	} else {
		p.natsURL("nats.url", c.NATS.URL)
	}
	p.oneOf("nats.transit_storage", c.NATS.TransitStorage, "file", "memory")
	if c.NATS.Replicas < 0 || c.NATS.Replicas > 5 {
		p.add("nats.replicas", "must be between 1 and 5 (0 means 1)")
	}
	p.auth("nats.auth", c.NATS.Auth)
	hub := has(RoleIngress) || has(RoleRouter) // a worker of a separate region needs no hub
	if hub && c.Separated() && c.NATS.TransitStorage != "memory" {
		p.add("nats.transit_storage", "must be memory when regions have NATS systems of their own: the transit stream holds every region's events, and no region's data may touch the hub's disk")
	}
	if hub && c.NATS.URL == "" && c.Separated() {
		p.add("nats.url", "required when regions have NATS systems of their own (the embedded server is for one machine)")
	}
	if c.NATS.MaxStore != 0 && c.NATS.MaxStore < 1<<20 {
		p.add("nats.max_store", "must be at least 1MiB (or 0 for nats-server's default)")
	}
	if c.NATS.DedupWindow.D() < 90*time.Minute {
		p.add("nats.dedup_window", "must be at least 90m: Zoom re-delivers an event up to about 85 minutes after the first try")
	}
	p.atLeast("nats.connect_timeout", c.NATS.ConnectTimeout, 100*time.Millisecond)

	if has(RoleIngress) {
		p.hostPort("ingress.listen", c.Ingress.Listen)
		p.atLeast("ingress.publish_timeout", c.Ingress.PublishTimeout, 10*time.Millisecond)
		if c.Ingress.PublishTimeout.D() >= 3*time.Second {
			p.add("ingress.publish_timeout", "must be under 3s: Zoom gives up waiting after 3 s, so a slower answer is lost")
		}
		p.atLeast("ingress.max_clock_skew", c.Ingress.MaxClockSkew, time.Second)
		if c.Ingress.MaxConnections < 16 {
			p.add("ingress.max_connections", "must be at least 16 (4096 by default)")
		}
		if c.Ingress.ShutdownDelay < 0 || c.Ingress.ShutdownDelay >= c.ShutdownTimeout {
			p.add("ingress.shutdown_delay", fmt.Sprintf("must be between 0 and shutdown_timeout (%s)", c.ShutdownTimeout))
		}
		p.ingressTLS(c.Ingress.TLS)
		for _, a := range c.Zoom.AllApps() {
			key := c.appKey(a)
			if len(a.WebhookSecretTokens) == 0 {
				p.add(key+"webhook_secret_tokens", "required: the app's webhook Secret Token (Zoom Marketplace → Features → Access); list the previous one too while rotating")
			}
			for i, t := range a.WebhookSecretTokens {
				if strings.TrimSpace(t) == "" {
					p.add(fmt.Sprintf("%swebhook_secret_tokens[%d]", key, i), "is empty")
				}
			}
		}
	}
	p.apps(c)

	runs := has(RoleIngress) || has(RoleRouter) || has(RoleWorker)
	if runs && c.Admin.Listen != "" {
		p.hostPort("admin.listen", c.Admin.Listen)
		if len(c.Admin.Token) < 16 {
			p.add("admin.token", "required, at least 16 characters, when admin.listen is set (set it with GEOMUX_ADMIN_TOKEN)")
		}
	}

	if has(RoleWorker) {
		for _, a := range c.Zoom.AllApps() {
			key := c.appKey(a)
			p.required(key+"client_id", a.ClientID)
			p.required(key+"client_secret", a.ClientSecret)
			if !strings.Contains(a.BotJID, "@") {
				p.add(key+"bot_jid", "required: the chatbot's JID, e.g. v1abc@xmpp.zoom.us (Marketplace → Features → Chat Subscription)")
			}
		}
		p.httpURL("zoom.api_base_url", c.Zoom.APIBaseURL)
		p.httpURL("zoom.oauth_base_url", c.Zoom.OAuthBaseURL)
		if c.Retry.MaxAttempts < 1 {
			p.add("retry.max_attempts", "must be at least 1")
		}
		if len(c.Retry.Backoff) == 0 {
			p.add("retry.backoff", "needs at least one duration, e.g. [\"1s\", \"5s\", \"30s\"]")
		}
		for i, d := range c.Retry.Backoff {
			p.atLeast(fmt.Sprintf("retry.backoff[%d]", i), d, 10*time.Millisecond)
		}
		if c.Retry.HTTPRetries < 0 || c.Retry.HTTPRetries > 10 {
			p.add("retry.http_retries", "must be between 0 and 10")
		}
		p.worker(c.Worker)
		if c.ShutdownTimeout.D() >= time.Second && c.ShutdownTimeout.D() < c.Worker.HandlerTimeout.D()+3*time.Second {
			p.add("shutdown_timeout", fmt.Sprintf("must be at least worker.handler_timeout + 3s (%s): a stop lets the events in hand finish", c.Worker.HandlerTimeout.D()+3*time.Second))
		}
	}

	if has(RoleRouter) {
		p.atLeast("router.park_ttl", c.Router.ParkTTL, time.Minute)
		if b := c.Router.ParkMaxBytes; b != 0 && b < 1<<20 {
			p.add("router.park_max_bytes", "must be 0 (no cap) or at least 1MiB")
		}
	}

	if len(c.Regions) == 0 {
		p.add("regions", "at least one region is required, e.g. - {name: eu, handler: echo}")
	}
	seen := map[string]bool{}
	for i, r := range c.Regions {
		key := fmt.Sprintf("regions[%d]", i)
		if !proto.ValidRegionName(r.Name) {
			p.add(key+".name", fmt.Sprintf("%q is not a region name (lowercase letters, digits and '-', starting with a letter, e.g. eu)", r.Name))
		} else {
			key = fmt.Sprintf("regions[%s]", r.Name)
		}
		if seen[r.Name] {
			p.add(key+".name", "is listed twice")
		}
		seen[r.Name] = true
		if has(RoleWorker) {
			switch r.Handler {
			case HandlerEcho:
			case HandlerHTTP:
				p.httpURL(key+".backend_url", r.BackendURL)
			default:
				p.add(key+".handler", fmt.Sprintf("%q is not a handler (use echo or http)", r.Handler))
			}
			p.atLeast(key+".timeout", r.Timeout, 10*time.Millisecond)
		}
		if r.NATS.URL != "" {
			p.natsURL(key+".nats.url", r.NATS.URL)
		}
		p.auth(key+".nats.auth", r.NATS.Auth)
		if r.NATS.Replicas < 0 || r.NATS.Replicas > 5 {
			p.add(key+".nats.replicas", "must be between 1 and 5 (0 means 1)")
		}
		if r.VaultKey != "" && !validVaultKey(r.VaultKey) {
			p.add(key+".vault_key", "must be 32 random bytes, base64-encoded (openssl rand -base64 32)")
		}
		if has(RoleWorker) && c.Install.Enabled() && r.VaultKey == "" {
			p.add(key+".vault_key", "required when install.public_url is set: the region keeps its accounts' tokens encrypted with it (openssl rand -base64 32)")
		}
		if r.UserToken && r.VaultKey == "" {
			p.add(key+".user_token", "needs a vault_key: the tokens come from the region's vault")
		}
		if u, err := url.Parse(r.BackendURL); err == nil && r.UserToken && r.Handler == HandlerHTTP && u.Scheme == "http" && !isLoopbackHost(u.Hostname()) && !r.PlaintextTokens {
			p.add(key+".backend_url", fmt.Sprintf("%q is http: with user_token every event would carry a user's Zoom token in clear; use https (or, in a lab only, set plaintext_tokens: true)", RedactURL(r.BackendURL)))
		}
		if has(RoleWorker) && r.Handler == HandlerHTTP && r.Timeout >= c.Worker.HandlerTimeout {
			p.add(key+".timeout", fmt.Sprintf("must be shorter than worker.handler_timeout (%s)", c.Worker.HandlerTimeout))
		}
	}

	p.tokenLinks(c, has)
	p.demoSecretsInPublic(c)
	if c.Install.Enabled() {
		if u, err := url.Parse(c.Install.PublicURL); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) || (u.Path != "" && u.Path != "/") {
			p.add("install.public_url", fmt.Sprintf("%q is not an https URL without a path (http only for localhost), e.g. https://bot.example.com", RedactURL(c.Install.PublicURL)))
		}
		if has(RoleIngress) {
			if len(c.Install.StateKey) < 32 {
				p.add("install.state_key", "required, at least 32 characters, when install.public_url is set (openssl rand -base64 32; set it with GEOMUX_INSTALL_STATE_KEY)")
			}
			d := c.Zoom.DefaultApp()
			p.required(c.appKey(d)+"client_id", d.ClientID)
			p.required(c.appKey(d)+"client_secret", d.ClientSecret)
		}
	}
	if c.Sandbox.Listen != "" {
		p.hostPort("sandbox.listen", c.Sandbox.Listen)
		if r := c.Sandbox.RateLimit.PerSecond; r < 1 && r != -1 {
			p.add("sandbox.rate_limit.per_second", "must be at least 1, or -1 for no limit")
		}
		if c.Sandbox.RateLimit.PerDay < 0 {
			p.add("sandbox.rate_limit.per_day", "must be at least 0 (0: no limit)")
		}
	}
	p.atLeast("shutdown_timeout", c.ShutdownTimeout, time.Second)
	if c.MemoryLimit != 0 && c.MemoryLimit < MinMemoryLimit {
		p.add("memory_limit", "must be at least 64MiB, or 0 for 90% of the container's limit")
	}
	// A rule two roles share is said once.
	said := map[string]bool{}
	uniq := p[:0]
	for _, x := range p {
		if !said[x] {
			said[x] = true
			uniq = append(uniq, x)
		}
	}
	return uniq
}

// appKey is the key prefix of an app's settings: zoom. for the one-app
// keys, zoom.apps[name]. for the others.
func (c *Config) appKey(a App) string {
	if a.Name == DefaultAppName && (c.Zoom.shorthand() || len(c.Zoom.Apps) == 0) {
		return "zoom."
	}
	return "zoom.apps[" + a.Name + "]."
}

// apps checks what every role shares of the apps: names and pins.
func (p *problems) apps(c *Config) {
	seen := map[string]bool{}
	if c.Zoom.shorthand() {
		seen[DefaultAppName] = true
	}
	for i, a := range c.Zoom.Apps {
		key := fmt.Sprintf("zoom.apps[%d]", i)
		if !proto.ValidAppName(a.Name) {
			p.add(key+".name", fmt.Sprintf("%q is not an app name (lowercase letters, digits and '-', starting with a letter, e.g. eu-bot)", a.Name))
			continue
		}
		key = "zoom.apps[" + a.Name + "]"
		switch {
		case seen[a.Name] && a.Name == DefaultAppName:
			p.add(key+".name", "is the name of the app of the one-app keys (zoom.client_id, ...): choose another")
		case seen[a.Name]:
			p.add(key+".name", "is listed twice")
		}
		seen[a.Name] = true
		if a.Region != "" {
			if _, ok := c.Region(a.Region); !ok {
				p.add(key+".region", fmt.Sprintf("%q is not a configured region (regions: %s)", a.Region, strings.Join(c.RegionNames(), ", ")))
			}
		}
	}
}

type problems []string

// worker checks the worker section.
func (p *problems) worker(w Worker) {
	p.between("worker.concurrency", w.Concurrency, 1, 1<<16)
	if w.MemoryBudget < 1<<20 {
		p.add("worker.memory_budget", "must be at least 1MiB")
	}
	p.between("worker.partitions", w.Partitions, 1, 256)
	p.between("worker.account_concurrency", w.AccountConcurrency, 1, 1<<16)
	p.between("worker.backend_concurrency", w.BackendConcurrency, 1, 1<<16)
	if w.ZoomPace.InitialRate < 1 || w.ZoomPace.InitialRate > 10000 {
		p.add("worker.zoom_pace.initial_rate", "must be between 1 and 10000 messages per second")
	}
	if w.ZoomPace.MaxRate < w.ZoomPace.InitialRate || w.ZoomPace.MaxRate > 10000 {
		p.add("worker.zoom_pace.max_rate", "must be at least worker.zoom_pace.initial_rate and at most 10000")
	}
	p.atLeast("worker.handler_timeout", w.HandlerTimeout, 100*time.Millisecond)
	p.atLeast("worker.dead_letter_max_age", w.DeadLetterMaxAge, time.Hour)
	if b := w.DeadLetterMaxBytes; b != 0 && b < 1<<20 {
		p.add("worker.dead_letter_max_bytes", "must be 0 (no cap) or at least 1MiB")
	}
}

func (p *problems) between(key string, v, least, most int) {
	if v < least || v > most {
		p.add(key, fmt.Sprintf("must be between %d and %d", least, most))
	}
}

func (p *problems) add(key, msg string) { *p = append(*p, key+": "+msg) }

func (p *problems) required(key, v string) {
	if strings.TrimSpace(v) == "" {
		p.add(key, "required")
	}
}

func (p *problems) oneOf(key, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		p.add(key, fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", ")))
	}
}

func (p *problems) atLeast(key string, d Duration, least time.Duration) {
	if d.D() < least {
		p.add(key, fmt.Sprintf("must be at least %s", least))
	}
}

func (p *problems) hostPort(key, v string) bool {
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		p.add(key, fmt.Sprintf("%q is not host:port (e.g. 127.0.0.1:8080 or :8080)", v))
		return false
	}
	return true
}

func (p *problems) loopback(key, v string) {
	if !p.hostPort(key, v) {
		return
	}
	host, _, _ := net.SplitHostPort(v)
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		p.add(key, fmt.Sprintf("%q must be a loopback address such as 127.0.0.1:4222: the embedded server serves this machine only", v))
	}
}

func (p *problems) ingressTLS(t IngressTLS) {
	files := t.CertFile != "" || t.KeyFile != ""
	if files && (t.CertFile == "" || t.KeyFile == "") {
		p.add("ingress.tls", "cert_file and key_file go together")
	}
	a := t.ACME
	if !a.Enabled() {
		return
	}
	if files {
		p.add("ingress.tls.acme", "either cert_file and key_file, or acme, not both")
	}
	if len(a.Domains) == 0 {
		p.add("ingress.tls.acme.domains", "required: the Bot Endpoint URL's host, e.g. [bot.example.com]")
	}
	for i, d := range a.Domains {
		if !strings.Contains(strings.Trim(d, "."), ".") || strings.ContainsAny(d, "/:*") {
			p.add(fmt.Sprintf("ingress.tls.acme.domains[%d]", i), fmt.Sprintf("%q is not a domain name (a host like bot.example.com, no port or scheme)", d))
		}
	}
	if a.CacheDir == "" {
		p.add("ingress.tls.acme.cache_dir", "required: where the account key and certificates survive restarts (the CA limits issuance per domain)")
	}
	if a.DirectoryURL != "" {
		if u, err := url.Parse(a.DirectoryURL); err != nil || u.Scheme != "https" || u.Host == "" {
			p.add("ingress.tls.acme.directory_url", fmt.Sprintf("%q is not an https URL", RedactURL(a.DirectoryURL)))
		}
	}
}

func (p *problems) httpURL(key, v string) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.add(key, fmt.Sprintf("%q is not an http(s) URL", RedactURL(v)))
	}
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func validVaultKey(s string) bool {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err := enc.DecodeString(s); err == nil {
			return len(raw) == 32
		}
	}
	return false
}

// tokenLinks refuses a NATS link without TLS, to another host, where an
// install's tokens travel: ingress → hub → router → region → worker. The
// router forwards every install, so its links always carry them; an
// ingress's when it serves the install flow; a worker's when its region
// keeps tokens.
func (p *problems) tokenLinks(c *Config, has func(Role) bool) {
	keepsTokens := c.Install.Enabled()
	for _, r := range c.Regions {
		keepsTokens = keepsTokens || r.VaultKey != ""
	}
	const fix = "is not TLS, and an install hands a user's Zoom tokens over it: use a tls:// URL (with auth.ca_file for a private CA), or, in a lab only, set %s: true"
	hub := has(RoleRouter) || (has(RoleIngress) && c.Install.Enabled())
	for _, r := range c.Regions {
		hub = hub || (has(RoleWorker) && keepsTokens && !r.NATS.Separate())
	}
	if hub && c.NATS.URL != "" && !c.NATS.PlaintextTokens {
		if u := clearLink(c.NATS.URL, c.NATS.Auth); u != "" {
			p.add("nats.url", fmt.Sprintf("%q "+fix, RedactURL(u), "nats.plaintext_tokens"))
		}
	}
	for _, r := range c.Regions {
		carries := has(RoleRouter) || (has(RoleWorker) && keepsTokens)
		if !carries || !r.NATS.Separate() || r.PlaintextTokens {
			continue
		}
		if u := clearLink(r.NATS.URL, r.NATS.Auth); u != "" {
			key := fmt.Sprintf("regions[%s]", r.Name)
			p.add(key+".nats.url", fmt.Sprintf("%q "+fix, RedactURL(u), key+".plaintext_tokens"))
		}
	}
}

// clearLink is the first of urls that would connect without TLS to
// another host, or "": nats:// and ws:// to a host that is not loopback,
// unless a CA or client certificate is set (nats.go then insists on TLS).
func clearLink(urls string, a NATSAuth) string {
	if a.CAFile != "" || a.CertFile != "" {
		return ""
	}
	for _, u := range strings.Split(urls, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err == nil && (pu.Scheme == "nats" || pu.Scheme == "ws") && !isLoopbackHost(pu.Hostname()) {
			return strings.TrimSpace(u)
		}
	}
	return ""
}

func (p *problems) natsURL(key, v string) {
	for _, u := range strings.Split(v, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, pu.Scheme) {
			p.add(key, fmt.Sprintf("%q is not a NATS URL (write nats://host:4222; separate several with commas)", RedactURL(u)))
		}
	}
}

func (p *problems) auth(key string, a NATSAuth) {
	n := 0
	for _, set := range []bool{a.CredsFile != "", a.NkeySeedFile != "", a.User != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		p.add(key, "set one of creds_file, nkey_seed_file, or user and password")
	}
	if a.Password != "" && a.User == "" {
		p.add(key+".user", "required with a password")
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		p.add(key, "cert_file and key_file go together")
	}
	if a.InboxPrefix != "" && (strings.ContainsAny(a.InboxPrefix, " .*>") || a.InboxPrefix == "") {
		p.add(key+".inbox_prefix", fmt.Sprintf("%q must be one subject token (no '.', '*', '>' or spaces), e.g. _INBOX_router", a.InboxPrefix))
	}
	for _, f := range []struct{ k, v string }{{"creds_file", a.CredsFile}, {"nkey_seed_file", a.NkeySeedFile}, {"ca_file", a.CAFile}, {"cert_file", a.CertFile}, {"key_file", a.KeyFile}} {
		if f.v == "" {
			continue
		}
		if _, err := os.Stat(f.v); err != nil {
			p.add(key+"."+f.k, fmt.Sprintf("%s: %v", f.v, errors.Unwrap(err)))
		}
	}
}
