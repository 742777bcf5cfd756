package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/geomux/geomux/proto"
)

// The sections of a config, each checked on its own (check).

// log checks the logging section.
func (k *check) log() {
	c := k.c
	k.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	k.oneOf("log.format", c.Log.Format, "json", "console")
}

// nats checks the hub's NATS and the embedded server.
func (k *check) nats() {
	c := k.c
	if c.NATS.URL == "" {
		if c.NATS.StoreDir == "" {
			k.add("nats.store_dir", "required when nats.url is empty (the embedded server stores JetStream data there)")
		}
		if c.NATS.Listen != "" {
			k.loopback("nats.listen", c.NATS.Listen)
		}
		if c.NATS.MonitorListen != "" {
			// What it serves names accounts' streams and connections:
			// for this machine only, as nats.listen.
			k.loopback("nats.monitor_listen", c.NATS.MonitorListen)
		}
	} else {
		k.natsURL("nats.url", c.NATS.URL)
	}
	k.oneOf("nats.transit_storage", c.NATS.TransitStorage, "file", "memory")
	if c.NATS.TransitPartitions < 1 || c.NATS.TransitPartitions > 16 {
		k.add("nats.transit_partitions", "must be between 1 and 16 (3 on a three-server hub: one transit stream led by each server)")
	}
	if c.NATS.Replicas < 0 || c.NATS.Replicas > 5 {
		k.add("nats.replicas", "must be between 1 and 5 (0 means 1)")
	}
	k.auth("nats.auth", c.NATS.Auth)
	hub := k.has(RoleIngress) || k.has(RoleRouter) // a worker of a separate region needs no hub
	if hub && c.Separated() && c.NATS.TransitStorage != "memory" {
		k.add("nats.transit_storage", "must be memory when regions have NATS systems of their own: the transit stream holds every region's events, and no region's data may touch the hub's disk")
	}
	if hub && c.NATS.URL == "" && c.Separated() {
		k.add("nats.url", "required when regions have NATS systems of their own (the embedded server is for one machine)")
	}
	if c.NATS.MaxStore != 0 && c.NATS.MaxStore < 1<<20 {
		k.add("nats.max_store", "must be at least 1MiB (or 0 for nats-server's default)")
	}
	if c.NATS.DedupWindow.D() < 90*time.Minute {
		k.add("nats.dedup_window", "must be at least 90m: Zoom re-delivers an event up to about 85 minutes after the first try")
	}
	k.atLeast("nats.connect_timeout", c.NATS.ConnectTimeout, 100*time.Millisecond)
}

// ingress checks the webhook listener and each app's secret tokens.
func (k *check) ingress() {
	c := k.c
	if k.has(RoleIngress) {
		k.hostPort("ingress.listen", c.Ingress.Listen)
		k.atLeast("ingress.publish_timeout", c.Ingress.PublishTimeout, 10*time.Millisecond)
		if c.Ingress.PublishTimeout.D() >= 3*time.Second {
			k.add("ingress.publish_timeout", "must be under 3s: Zoom gives up waiting after 3 s, so a slower answer is lost")
		}
		k.atLeast("ingress.max_clock_skew", c.Ingress.MaxClockSkew, time.Second)
		if c.Ingress.MaxConnections < 16 {
			k.add("ingress.max_connections", "must be at least 16 (4096 by default)")
		}
		if c.Ingress.ShutdownDelay < 0 || c.Ingress.ShutdownDelay >= c.ShutdownTimeout {
			k.add("ingress.shutdown_delay", fmt.Sprintf("must be between 0 and shutdown_timeout (%s)", c.ShutdownTimeout))
		}
		k.ingressTLS(c.Ingress.TLS)
		for _, a := range c.Zoom.AllApps() {
			key := c.appKey(a)
			if len(a.WebhookSecretTokens) == 0 {
				k.add(key+"webhook_secret_tokens", "required: the app's webhook Secret Token (Zoom Marketplace → Features → Access); list the previous one too while rotating")
			}
			for i, t := range a.WebhookSecretTokens {
				if strings.TrimSpace(t) == "" {
					k.add(fmt.Sprintf("%swebhook_secret_tokens[%d]", key, i), "is empty")
				}
			}
		}
	}
}

// admin checks the admin listener.
func (k *check) admin() {
	c := k.c
	runs := k.has(RoleIngress) || k.has(RoleRouter) || k.has(RoleWorker)
	if runs && c.Admin.Listen != "" {
		k.hostPort("admin.listen", c.Admin.Listen)
		if len(c.Admin.Token) < 16 {
			k.add("admin.token", "required, at least 16 characters, when admin.listen is set (set it with GEOMUX_ADMIN_TOKEN)")
		}
	}
}

// workers checks what the regions' workers use: Zoom's credentials and
// addresses, retries, the worker section.
func (k *check) workers() {
	c := k.c
	if k.has(RoleWorker) {
		for _, a := range c.Zoom.AllApps() {
			key := c.appKey(a)
			k.required(key+"client_id", a.ClientID)
			k.required(key+"client_secret", a.ClientSecret)
			if !strings.Contains(a.BotJID, "@") {
				k.add(key+"bot_jid", "required: the chatbot's JID, e.g. v1abc@xmpp.zoom.us (Marketplace → Features → Chat Subscription)")
			}
		}
		k.httpURL("zoom.api_base_url", c.Zoom.APIBaseURL)
		k.httpURL("zoom.oauth_base_url", c.Zoom.OAuthBaseURL)
		if c.Retry.MaxAttempts < 1 {
			k.add("retry.max_attempts", "must be at least 1")
		}
		if len(c.Retry.Backoff) == 0 {
			k.add("retry.backoff", "needs at least one duration, e.g. [\"1s\", \"5s\", \"30s\"]")
		}
		for i, d := range c.Retry.Backoff {
			k.atLeast(fmt.Sprintf("retry.backoff[%d]", i), d, 10*time.Millisecond)
		}
		if c.Retry.HTTPRetries < 0 || c.Retry.HTTPRetries > 10 {
			k.add("retry.http_retries", "must be between 0 and 10")
		}
		k.problems.worker(c.Worker)
		if c.ShutdownTimeout.D() >= time.Second && c.ShutdownTimeout.D() < c.Worker.HandlerTimeout.D()+3*time.Second {
			k.add("shutdown_timeout", fmt.Sprintf("must be at least worker.handler_timeout + 3s (%s): a stop lets the events in hand finish", c.Worker.HandlerTimeout.D()+3*time.Second))
		}
	}
}

// router checks the router section.
func (k *check) router() {
	c := k.c
	if k.has(RoleRouter) {
		k.atLeast("router.park_ttl", c.Router.ParkTTL, time.Minute)
		if b := c.Router.ParkMaxBytes; b != 0 && b < 1<<20 {
			k.add("router.park_max_bytes", "must be 0 (no cap) or at least 1MiB")
		}
	}
}

// regions checks each region's entry.
func (k *check) regions() {
	c := k.c
	if len(c.Regions) == 0 {
		k.add("regions", "at least one region is required, e.g. - {name: eu, handler: echo}")
	}
	seen := map[string]bool{}
	for i, r := range c.Regions {
		key := fmt.Sprintf("regions[%d]", i)
		if !proto.ValidRegionName(r.Name) {
			k.add(key+".name", fmt.Sprintf("%q is not a region name (lowercase letters, digits and '-', starting with a letter, e.g. eu)", r.Name))
		} else {
			key = fmt.Sprintf("regions[%s]", r.Name)
		}
		if seen[r.Name] {
			k.add(key+".name", "is listed twice")
		}
		seen[r.Name] = true
		if k.has(RoleWorker) {
			switch r.Handler {
			case HandlerEcho:
			case HandlerHTTP:
				k.httpURL(key+".backend_url", r.BackendURL)
			default:
				k.add(key+".handler", fmt.Sprintf("%q is not a handler (use echo or http)", r.Handler))
			}
			k.atLeast(key+".timeout", r.Timeout, 10*time.Millisecond)
		}
		if r.NATS.URL != "" {
			k.natsURL(key+".nats.url", r.NATS.URL)
		}
		k.auth(key+".nats.auth", r.NATS.Auth)
		if r.NATS.Replicas < 0 || r.NATS.Replicas > 5 {
			k.add(key+".nats.replicas", "must be between 1 and 5 (0 means 1)")
		}
		if r.VaultKey != "" && !validVaultKey(r.VaultKey) {
			k.add(key+".vault_key", "must be 32 random bytes, base64-encoded (openssl rand -base64 32)")
		}
		if k.has(RoleWorker) && c.Install.Enabled() && r.VaultKey == "" {
			k.add(key+".vault_key", "required when install.public_url is set: the region keeps its accounts' tokens encrypted with it (openssl rand -base64 32)")
		}
		if r.UserToken && r.VaultKey == "" {
			k.add(key+".user_token", "needs a vault_key: the tokens come from the region's vault")
		}
		if u, err := url.Parse(r.BackendURL); err == nil && r.UserToken && r.Handler == HandlerHTTP && u.Scheme == "http" && !isLoopbackHost(u.Hostname()) && !r.PlaintextTokens {
			k.add(key+".backend_url", fmt.Sprintf("%q is http: with user_token every event would carry a user's Zoom token in clear; use https (or, in a lab only, set plaintext_tokens: true)", RedactURL(r.BackendURL)))
		}
		if k.has(RoleWorker) && r.Handler == HandlerHTTP && r.Timeout >= c.Worker.HandlerTimeout {
			k.add(key+".timeout", fmt.Sprintf("must be shorter than worker.handler_timeout (%s)", c.Worker.HandlerTimeout))
		}
	}
}

// install checks the install flow.
func (k *check) install() {
	c := k.c
	if c.Install.Enabled() {
		if u, err := url.Parse(c.Install.PublicURL); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) || (u.Path != "" && u.Path != "/") {
			k.add("install.public_url", fmt.Sprintf("%q is not an https URL without a path (http only for localhost), e.g. https://bot.example.com", RedactURL(c.Install.PublicURL)))
		}
		if k.has(RoleIngress) {
			if len(c.Install.StateKey) < 32 {
				k.add("install.state_key", "required, at least 32 characters, when install.public_url is set (openssl rand -base64 32; set it with GEOMUX_INSTALL_STATE_KEY)")
			}
			d := c.Zoom.DefaultApp()
			k.required(c.appKey(d)+"client_id", d.ClientID)
			k.required(c.appKey(d)+"client_secret", d.ClientSecret)
		}
	}
}

// sandbox checks the built-in Zoom stand-in.
func (k *check) sandbox() {
	c := k.c
	if c.Sandbox.Listen != "" {
		k.hostPort("sandbox.listen", c.Sandbox.Listen)
		if r := c.Sandbox.RateLimit.PerSecond; r < 1 && r != -1 {
			k.add("sandbox.rate_limit.per_second", "must be at least 1, or -1 for no limit")
		}
		if c.Sandbox.RateLimit.PerDay < 0 {
			k.add("sandbox.rate_limit.per_day", "must be at least 0 (0: no limit)")
		}
	}
}

// process checks what every process has: its stop and its memory.
func (k *check) process() {
	c := k.c
	k.atLeast("shutdown_timeout", c.ShutdownTimeout, time.Second)
	if c.MemoryLimit != 0 && c.MemoryLimit < MinMemoryLimit {
		k.add("memory_limit", "must be at least 64MiB, or 0 for 90% of the container's limit")
	}
}
