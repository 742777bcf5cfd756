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
	k := &check{c: c, has: func(r Role) bool { return slices.Contains(roles, r) }}
	for _, section := range []func(*check){
		(*check).log, (*check).nats, (*check).ingress, (*check).apps, (*check).admin, (*check).workers,
		(*check).router, (*check).regions, (*check).links, (*check).install, (*check).sandbox, (*check).process,
	} {
		section(k)
	}
	// A rule two roles share is said once.
	said := map[string]bool{}
	uniq := k.problems[:0]
	for _, x := range k.problems {
		if !said[x] {
			said[x] = true
			uniq = append(uniq, x)
		}
	}
	return uniq
}

// check is one validation of a config for some roles: each section of the
// config is checked by a method of its own, and what is wrong collected.
type check struct {
	c   *Config
	has func(Role) bool
	problems
}

// apps checks the apps of zoom.apps (problems.apps).
func (k *check) apps() { k.problems.apps(k.c) }

// links checks where secrets travel: NATS links that carry tokens, and demo
// secrets on a public listener.
func (k *check) links() {
	k.tokenLinks(k.c, k.has)
	k.demoSecretsInPublic(k.c)
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
