package config_test

import (
	"errors"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/geomux/geomux/pkg/config"
)

// minimal is the smallest config valid for every role.
const minimal = `
admin:
  token: 0123456789abcdef
zoom:
  webhook_secret_tokens: [wh-secret]
  client_id: cid
  client_secret: csecret
  bot_jid: bot@xmpp.zoom.us
regions:
  - {name: eu, handler: echo}
`

func read(t *testing.T, yml string, environ []string, roles ...config.Role) (config.Config, error) {
	t.Helper()
	return config.Read("test.yaml", strings.NewReader(yml), environ, roles...)
}

func mustRead(t *testing.T, yml string, environ []string, roles ...config.Role) config.Config {
	t.Helper()
	c, err := read(t, yml, environ, roles...)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return c
}

// problems returns the problems of a *config.Error, failing if err is not one.
func problems(t *testing.T, err error) []string {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *config.Error", err, err)
	}
	return ce.Problems
}

// hasProblem reports whether one problem starts with prefix and contains
// every one of parts.
func hasProblem(ps []string, prefix string, parts ...string) bool {
	for _, p := range ps {
		if !strings.HasPrefix(p, prefix) {
			continue
		}
		ok := true
		for _, s := range parts {
			ok = ok && strings.Contains(p, s)
		}
		if ok {
			return true
		}
	}
	return false
}

func d(v time.Duration) config.Duration { return config.Duration(v) }

func TestLoadLocalExample(t *testing.T) {
	c, err := config.Load("../../deploy/local/geomux.yaml", nil)
	if err != nil {
		t.Fatalf("Load(deploy/local/geomux.yaml): %v", err)
	}
	if got := c.RegionNames(); !slices.Equal(got, []string{"us", "uk", "eu"}) {
		t.Errorf("regions = %v, want [us uk eu]", got)
	}
	eu, ok := c.Region("eu")
	if !ok || eu.Handler != config.HandlerHTTP || eu.BackendURL != "http://127.0.0.1:8090/example-backend" {
		t.Errorf("region eu = %+v", eu)
	}
	for _, r := range c.Regions {
		if r.Timeout != d(10*time.Second) {
			t.Errorf("region %s timeout = %s, want the 10s default", r.Name, r.Timeout)
		}
	}
	if us, _ := c.Region("us"); us.Handler != config.HandlerEcho {
		t.Errorf("region us handler = %q", us.Handler)
	}
	if c.Log.Format != "console" || c.NATS.Listen != "127.0.0.1:4222" || c.NATS.URL != "" || c.Sandbox.Listen != "127.0.0.1:8090" {
		t.Errorf("log/nats/sandbox = %+v %+v %+v", c.Log, c.NATS, c.Sandbox)
	}
	if !slices.Equal(c.Zoom.WebhookSecretTokens, []string{"local-webhook-secret"}) || c.Zoom.ClientID != "local-client-id" ||
		c.Zoom.APIBaseURL != "http://127.0.0.1:8090/v2" || c.Zoom.BotJID != "geomux-local-bot@xmpp.zoom.us" {
		t.Errorf("zoom = %+v", c.Zoom)
	}
	wantBackoff := []config.Duration{d(time.Second), d(5 * time.Second), d(30 * time.Second), d(2 * time.Minute), d(10 * time.Minute)}
	if !slices.Equal(c.Retry.Backoff, wantBackoff) || c.Retry.MaxAttempts != 6 {
		t.Errorf("retry = %+v", c.Retry)
	}
	// Omitted in the file: defaults.
	def := config.Default()
	if c.Retry.HTTPRetries != def.Retry.HTTPRetries || c.Worker != def.Worker || c.Router != def.Router ||
		c.ShutdownTimeout != def.ShutdownTimeout || c.NATS.DedupWindow != def.NATS.DedupWindow {
		t.Errorf("defaults not applied: %+v %+v %+v", c.Retry, c.Worker, c.Router)
	}
	// The environment still applies on top of the file.
	c, err = config.Load("../../deploy/local/geomux.yaml", []string{"GEOMUX_ZOOM_CLIENT_SECRET=from-env"})
	if err != nil || c.Zoom.ClientSecret != "from-env" {
		t.Errorf("Load with env: %v, client_secret %q", err, c.Zoom.ClientSecret)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load("testdata/does-not-exist.yaml", nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
}

func TestDefaultsForOmittedKeys(t *testing.T) {
	c := mustRead(t, minimal, nil)
	def := config.Default()
	if c.Log != def.Log || c.NATS != def.NATS || !reflect.DeepEqual(c.Ingress, def.Ingress) || c.Router != def.Router ||
		c.Worker != def.Worker || c.Sandbox != def.Sandbox || c.ShutdownTimeout != def.ShutdownTimeout ||
		c.Zoom.APIBaseURL != def.Zoom.APIBaseURL || c.Zoom.OAuthBaseURL != def.Zoom.OAuthBaseURL ||
		c.Admin.Listen != def.Admin.Listen || !reflect.DeepEqual(c.Retry, def.Retry) {
		t.Errorf("omitted keys do not keep their defaults:\n got %+v\nwant %+v", c, def)
	}
	if c.Regions[0].Timeout != d(10*time.Second) {
		t.Errorf("region timeout = %s, want 10s", c.Regions[0].Timeout)
	}

	// A key given replaces only itself; a list given replaces the default list.
	c = mustRead(t, minimal+`
nats:
  dedup_window: 90m
retry:
  backoff: ["2s"]
`, nil)
	if c.NATS.DedupWindow != d(90*time.Minute) || c.NATS.StoreDir != def.NATS.StoreDir || c.NATS.ConnectTimeout != def.NATS.ConnectTimeout {
		t.Errorf("nats = %+v", c.NATS)
	}
	if !slices.Equal(c.Retry.Backoff, []config.Duration{d(2 * time.Second)}) || c.Retry.MaxAttempts != def.Retry.MaxAttempts {
		t.Errorf("retry = %+v", c.Retry)
	}

	// A region's own timeout is kept.
	c = mustRead(t, strings.Replace(minimal, "{name: eu, handler: echo}", "{name: eu, handler: echo, timeout: 3s}", 1), nil)
	if c.Regions[0].Timeout != d(3*time.Second) {
		t.Errorf("region timeout = %s, want 3s", c.Regions[0].Timeout)
	}
}

func TestEmptyFileKeepsDefaults(t *testing.T) {
	// An empty file is Default(): for the router only the two settings
	// without a usable default are missing.
	for _, yml := range []string{"", "\n\n", "# nothing\n"} {
		_, err := read(t, yml, nil, config.RoleRouter)
		ps := problems(t, err)
		if len(ps) != 2 || !hasProblem(ps, "regions:") || !hasProblem(ps, "admin.token:") {
			t.Errorf("empty file %q: problems = %q, want regions and admin.token", yml, ps)
		}
	}
	// Disabling the admin listener from the environment leaves only the
	// regions (which the environment cannot add).
	_, err := read(t, "", []string{"GEOMUX_ADMIN_LISTEN="}, config.RoleRouter)
	if ps := problems(t, err); len(ps) != 1 || !hasProblem(ps, "regions:") {
		t.Errorf("problems = %q, want regions only", ps)
	}
}

func TestEnvOverrides(t *testing.T) {
	base := minimal + `
  - {name: eu-west, handler: echo}
`
	for _, tc := range []struct {
		env   string
		check func(c config.Config) bool
	}{
		{"GEOMUX_ZOOM_CLIENT_SECRET=s3cr3t", func(c config.Config) bool { return c.Zoom.ClientSecret == "s3cr3t" }},
		{"GEOMUX_ZOOM_CLIENT_SECRET=a=b=c", func(c config.Config) bool { return c.Zoom.ClientSecret == "a=b=c" }},
		{"GEOMUX_ZOOM_WEBHOOK_SECRET_TOKENS=a,b", func(c config.Config) bool {
			return slices.Equal(c.Zoom.WebhookSecretTokens, []string{"a", "b"})
		}},
		{"GEOMUX_ZOOM_WEBHOOK_SECRET_TOKENS= new , old ", func(c config.Config) bool {
			return slices.Equal(c.Zoom.WebhookSecretTokens, []string{"new", "old"})
		}},
		{"GEOMUX_RETRY_BACKOFF=1s,2s", func(c config.Config) bool {
			return slices.Equal(c.Retry.Backoff, []config.Duration{d(time.Second), d(2 * time.Second)})
		}},
		{"GEOMUX_REGIONS_EU_BACKEND_URL=http://backend.eu:9000/zoom", func(c config.Config) bool {
			eu, _ := c.Region("eu")
			return eu.BackendURL == "http://backend.eu:9000/zoom" && eu.Handler == "echo"
		}},
		{"GEOMUX_REGIONS_EU_WEST_TIMEOUT=3s", func(c config.Config) bool {
			r, _ := c.Region("eu-west")
			eu, _ := c.Region("eu")
			return r.Timeout == d(3*time.Second) && eu.Timeout == d(10*time.Second)
		}},
		{"GEOMUX_NATS_SYNC_ALWAYS=true", func(c config.Config) bool { return c.NATS.SyncAlways }},
		{"GEOMUX_NATS_SYNC_ALWAYS=1", func(c config.Config) bool { return c.NATS.SyncAlways }},
		{"GEOMUX_WORKER_CONCURRENCY=8", func(c config.Config) bool { return c.Worker.Concurrency == 8 }},
		{"GEOMUX_WORKER_ZOOM_PACE_INITIAL_RATE=2.5", func(c config.Config) bool { return c.Worker.ZoomPace.InitialRate == 2.5 }},
		{"GEOMUX_WORKER_MEMORY_BUDGET=128MiB", func(c config.Config) bool { return c.Worker.MemoryBudget == 128<<20 }},
		{"GEOMUX_WORKER_PARTITIONS=32", func(c config.Config) bool { return c.Worker.Partitions == 32 }},
		{"GEOMUX_NATS_DEDUP_WINDOW=90m", func(c config.Config) bool { return c.NATS.DedupWindow == d(90*time.Minute) }},
		{"GEOMUX_NATS_URL=tls://a:4222,tls://b:4222", func(c config.Config) bool { return c.NATS.URL == "tls://a:4222,tls://b:4222" }},
		{"GEOMUX_LOG_LEVEL=debug", func(c config.Config) bool { return c.Log.Level == "debug" }},
		{"GEOMUX_SHUTDOWN_TIMEOUT=45s", func(c config.Config) bool { return c.ShutdownTimeout == d(45*time.Second) }},
		{"GEOMUX_ADMIN_TOKEN=abcdefghijklmnopqrstuvwxyz", func(c config.Config) bool { return c.Admin.Token == "abcdefghijklmnopqrstuvwxyz" }},
		// Not settings: ignored.
		{"GEOMUX_CONFIG=/etc/geomux/other.yaml", func(c config.Config) bool { return true }},
		{"PATH=/usr/bin", func(c config.Config) bool { return true }},
		{"GEOMUX_NOEQUALS", func(c config.Config) bool { return true }},
	} {
		t.Run(tc.env, func(t *testing.T) {
			c, err := read(t, base, []string{tc.env})
			if err != nil {
				t.Fatalf("Read with %s: %v", tc.env, err)
			}
			if !tc.check(c) {
				t.Errorf("%s not applied: %+v", tc.env, c)
			}
		})
	}

	// The environment wins over the file.
	c := mustRead(t, base, []string{"GEOMUX_ZOOM_CLIENT_ID=env-id"})
	if c.Zoom.ClientID != "env-id" {
		t.Errorf("client_id = %q, want the environment's", c.Zoom.ClientID)
	}
	// And a region can be switched to http with its URL.
	c = mustRead(t, base, []string{"GEOMUX_REGIONS_EU_HANDLER=http", "GEOMUX_REGIONS_EU_BACKEND_URL=https://eu.example.com/zoom"})
	if eu, _ := c.Region("eu"); eu.Handler != "http" || eu.BackendURL != "https://eu.example.com/zoom" {
		t.Errorf("eu = %+v", eu)
	}
}

func TestEnvProblems(t *testing.T) {
	for _, tc := range []struct {
		env          string
		prefix, want string
	}{
		{"GEOMUX_ZOOM_CLIENTSECRET=x", "GEOMUX_ZOOM_CLIENTSECRET:", "no such setting"},
		{"GEOMUX_REGIONS_MARS_HANDLER=echo", "GEOMUX_REGIONS_MARS_HANDLER:", "no such setting"},
		{"GEOMUX_REGIONS=eu", "GEOMUX_REGIONS:", "no such setting"},
		{"GEOMUX_ZOOM=x", "GEOMUX_ZOOM:", "no such setting"},
		{"GEOMUX_INGRESS_MAX_CLOCK_SKEW=5", "GEOMUX_INGRESS_MAX_CLOCK_SKEW (ingress.max_clock_skew):", "not a duration"},
		{"GEOMUX_REGIONS_EU_TIMEOUT=soon", "GEOMUX_REGIONS_EU_TIMEOUT (regions[eu].timeout):", "not a duration"},
		{"GEOMUX_WORKER_CONCURRENCY=many", "GEOMUX_WORKER_CONCURRENCY (worker.concurrency):", "not a whole number"},
		{"GEOMUX_WORKER_CONCURRENCY=8.5", "GEOMUX_WORKER_CONCURRENCY (worker.concurrency):", "not a whole number"},
		{"GEOMUX_WORKER_ZOOM_PACE_MAX_RATE=fast", "GEOMUX_WORKER_ZOOM_PACE_MAX_RATE (worker.zoom_pace.max_rate):", "not a number"},
		{"GEOMUX_WORKER_ZOOM_PACE_MAX_RATE=NaN", "GEOMUX_WORKER_ZOOM_PACE_MAX_RATE (worker.zoom_pace.max_rate):", "not a number"},
		{"GEOMUX_NATS_SYNC_ALWAYS=yes", "GEOMUX_NATS_SYNC_ALWAYS (nats.sync_always):", "not true or false"},
		{"GEOMUX_RETRY_BACKOFF=1s,later", "GEOMUX_RETRY_BACKOFF (retry.backoff):", "not a duration"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			_, err := read(t, minimal, []string{tc.env})
			ps := problems(t, err)
			if len(ps) != 1 || !hasProblem(ps, tc.prefix, tc.want) {
				t.Errorf("problems = %q, want one starting %q containing %q", ps, tc.prefix, tc.want)
			}
		})
	}

	// Several at once, sorted by name.
	_, err := read(t, minimal, []string{"GEOMUX_WORKER_CONCURRENCY=x", "GEOMUX_BOGUS=1", "GEOMUX_NATS_SYNC_ALWAYS=maybe", "GEOMUX_CONFIG=x.yaml"})
	ps := problems(t, err)
	if len(ps) != 3 {
		t.Fatalf("problems = %q, want 3", ps)
	}
	for i, prefix := range []string{"GEOMUX_BOGUS:", "GEOMUX_NATS_SYNC_ALWAYS ", "GEOMUX_WORKER_CONCURRENCY "} {
		if !strings.HasPrefix(ps[i], prefix) {
			t.Errorf("problem %d = %q, want it to start with %q", i, ps[i], prefix)
		}
	}
}

func TestYAMLProblems(t *testing.T) {
	for _, tc := range []struct {
		name, yml string
		want      []string
	}{
		{"unknown key", "log:\n  level: info\nzoom:\n  client_idd: x\n", []string{"line 4", "client_idd"}},
		{"unknown top-level key", "regoins:\n  - {name: eu}\n", []string{"line 1", "regoins"}},
		{"unknown region key", "regions:\n  - name: eu\n    handlr: echo\n", []string{"line 3", "handlr"}},
		{"bad duration", "ingress:\n  publish_timeout: 5\n", []string{"line 2", `"5" is not a duration`}},
		{"int expected", "worker:\n  concurrency: lots\n", []string{"line 2", "lots"}},
		{"not YAML", "log: [unclosed\n", []string{"line"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := read(t, tc.yml, nil)
			ps := problems(t, err)
			if len(ps) == 0 || !hasProblem(ps, "", tc.want...) {
				t.Errorf("problems = %q, want one containing %q", ps, tc.want)
			}
			if !strings.Contains(err.Error(), "test.yaml") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestValidationReportsEverything(t *testing.T) {
	const bad = `
nats:
  listen: 0.0.0.0:4222
ingress:
  publish_timeout: 3s
admin:
  token: short
zoom:
  webhook_secret_tokens: [wh]
  client_id: cid
  client_secret: cs
  bot_jid: bot@xmpp.zoom.us
regions:
  - {name: EU, handler: echo}
  - {name: us, handler: echo}
  - {name: us, handler: echo}
  - {name: web, handler: http}
`
	_, err := read(t, bad, []string{"GEOMUX_WORKER_CONCURRENCY=lots"})
	ps := problems(t, err)
	want := []struct{ prefix, contains string }{
		{"GEOMUX_WORKER_CONCURRENCY (worker.concurrency):", "not a whole number"},
		{"nats.listen:", "must be a loopback address"},
		{"ingress.publish_timeout:", "under 3s"},
		{"admin.token:", "at least 16 characters"},
		{"regions[0].name:", `"EU" is not a region name`},
		{"regions[us].name:", "listed twice"},
		{"regions[web].backend_url:", "not an http(s) URL"},
	}
	if len(ps) != len(want) {
		t.Errorf("got %d problems, want %d:\n  %s", len(ps), len(want), strings.Join(ps, "\n  "))
	}
	for _, w := range want {
		if !hasProblem(ps, w.prefix, w.contains) {
			t.Errorf("no problem %q ... %q in:\n  %s", w.prefix, w.contains, strings.Join(ps, "\n  "))
		}
	}
	// Error() lists them one per line under the source.
	msg := err.Error()
	if !strings.HasPrefix(msg, "invalid config test.yaml:\n") || strings.Count(msg, "\n") != len(ps) {
		t.Errorf("Error() = %q", msg)
	}
}

func TestValidationRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    []string
		prefix string // "" means valid
	}{
		{"loopback localhost", []string{"GEOMUX_NATS_LISTEN=localhost:4222"}, ""},
		{"loopback IPv6", []string{"GEOMUX_NATS_LISTEN=[::1]:4222"}, ""},
		{"no listener", []string{"GEOMUX_NATS_LISTEN="}, ""},
		{"all interfaces", []string{"GEOMUX_NATS_LISTEN=:4222"}, "nats.listen:"},
		{"not host:port", []string{"GEOMUX_NATS_LISTEN=4222"}, "nats.listen:"},
		{"monitor on loopback", []string{"GEOMUX_NATS_MONITOR_LISTEN=127.0.0.1:8222"}, ""},
		{"tls files", []string{"GEOMUX_INGRESS_TLS_CERT_FILE=/etc/tls/tls.crt", "GEOMUX_INGRESS_TLS_KEY_FILE=/etc/tls/tls.key"}, ""},
		{"tls cert without key", []string{"GEOMUX_INGRESS_TLS_CERT_FILE=/etc/tls/tls.crt"}, "ingress.tls:"},
		{"acme", []string{"GEOMUX_INGRESS_TLS_ACME_DOMAINS=bot.example.com", "GEOMUX_INGRESS_TLS_ACME_CACHE_DIR=/var/lib/geomux/acme"}, ""},
		{"acme without cache", []string{"GEOMUX_INGRESS_TLS_ACME_DOMAINS=bot.example.com"}, "ingress.tls.acme.cache_dir:"},
		{"acme bad domain", []string{"GEOMUX_INGRESS_TLS_ACME_DOMAINS=https://bot.example.com", "GEOMUX_INGRESS_TLS_ACME_CACHE_DIR=/x"}, "ingress.tls.acme.domains[0]:"},
		{"acme http directory", []string{"GEOMUX_INGRESS_TLS_ACME_DOMAINS=bot.example.com", "GEOMUX_INGRESS_TLS_ACME_CACHE_DIR=/x", "GEOMUX_INGRESS_TLS_ACME_DIRECTORY_URL=http://ca/dir"}, "ingress.tls.acme.directory_url:"},
		{"acme and files", []string{"GEOMUX_INGRESS_TLS_ACME_DOMAINS=bot.example.com", "GEOMUX_INGRESS_TLS_ACME_CACHE_DIR=/x", "GEOMUX_INGRESS_TLS_CERT_FILE=/a", "GEOMUX_INGRESS_TLS_KEY_FILE=/b"}, "ingress.tls.acme:"},
		{"monitor on all interfaces", []string{"GEOMUX_NATS_MONITOR_LISTEN=0.0.0.0:8222"}, "nats.monitor_listen:"},
		{"listen ignored with url", []string{"GEOMUX_NATS_URL=tls://n1:4222, tls://n2:4222", "GEOMUX_NATS_LISTEN=0.0.0.0:4222"}, ""},
		{"bad nats url", []string{"GEOMUX_NATS_URL=http://n1:4222"}, "nats.url:"},
		{"no store dir", []string{"GEOMUX_NATS_STORE_DIR="}, "nats.store_dir:"},
		{"publish timeout just under 3s", []string{"GEOMUX_INGRESS_PUBLISH_TIMEOUT=2999ms"}, ""},
		{"publish timeout 3s", []string{"GEOMUX_INGRESS_PUBLISH_TIMEOUT=3s"}, "ingress.publish_timeout:"},
		{"admin token 16 chars", []string{"GEOMUX_ADMIN_TOKEN=0123456789abcdef"}, ""},
		{"admin token 15 chars", []string{"GEOMUX_ADMIN_TOKEN=0123456789abcde"}, "admin.token:"},
		{"no admin listener, no token", []string{"GEOMUX_ADMIN_LISTEN=", "GEOMUX_ADMIN_TOKEN="}, ""},
		{"bad log level", []string{"GEOMUX_LOG_LEVEL=verbose"}, "log.level:"},
		{"bad log format", []string{"GEOMUX_LOG_FORMAT=xml"}, "log.format:"},
		{"no webhook secret", []string{"GEOMUX_ZOOM_WEBHOOK_SECRET_TOKENS="}, "zoom.webhook_secret_tokens:"},
		{"empty webhook secret", []string{"GEOMUX_ZOOM_WEBHOOK_SECRET_TOKENS=a,,b"}, "zoom.webhook_secret_tokens[1]:"},
		{"bot jid", []string{"GEOMUX_ZOOM_BOT_JID=bot"}, "zoom.bot_jid:"},
		{"api url", []string{"GEOMUX_ZOOM_API_BASE_URL=api.zoom.us"}, "zoom.api_base_url:"},
		{"concurrency 0", []string{"GEOMUX_WORKER_CONCURRENCY=0"}, "worker.concurrency:"},
		{"memory budget", []string{"GEOMUX_WORKER_MEMORY_BUDGET=1000"}, "worker.memory_budget:"},
		{"memory limit 256MiB", []string{"GEOMUX_MEMORY_LIMIT=256MiB"}, ""},
		{"memory limit from the container", []string{"GEOMUX_MEMORY_LIMIT=0"}, ""},
		{"memory limit too low", []string{"GEOMUX_MEMORY_LIMIT=32MiB"}, "memory_limit:"},
		{"partitions 0", []string{"GEOMUX_WORKER_PARTITIONS=0"}, "worker.partitions:"},
		{"partitions 257", []string{"GEOMUX_WORKER_PARTITIONS=257"}, "worker.partitions:"},
		{"account concurrency 0", []string{"GEOMUX_WORKER_ACCOUNT_CONCURRENCY=0"}, "worker.account_concurrency:"},
		{"backend concurrency 0", []string{"GEOMUX_WORKER_BACKEND_CONCURRENCY=0"}, "worker.backend_concurrency:"},
		{"zoom pace under 1", []string{"GEOMUX_WORKER_ZOOM_PACE_INITIAL_RATE=0.5"}, "worker.zoom_pace.initial_rate:"},
		{"zoom pace max under initial", []string{"GEOMUX_WORKER_ZOOM_PACE_MAX_RATE=5"}, "worker.zoom_pace.max_rate:"},
		{"zoom pace", []string{"GEOMUX_WORKER_ZOOM_PACE_INITIAL_RATE=2", "GEOMUX_WORKER_ZOOM_PACE_MAX_RATE=60"}, ""},
		{"http retries 11", []string{"GEOMUX_RETRY_HTTP_RETRIES=11"}, "retry.http_retries:"},
		{"no backoff", []string{"GEOMUX_RETRY_BACKOFF="}, "retry.backoff:"},
		{"backoff too short", []string{"GEOMUX_RETRY_BACKOFF=1s,1ms"}, "retry.backoff[1]:"},
		{"max attempts 0", []string{"GEOMUX_RETRY_MAX_ATTEMPTS=0"}, "retry.max_attempts:"},
		{"park ttl", []string{"GEOMUX_ROUTER_PARK_TTL=30s"}, "router.park_ttl:"},
		{"region timeout vs handler timeout", []string{"GEOMUX_REGIONS_EU_HANDLER=http", "GEOMUX_REGIONS_EU_BACKEND_URL=http://backend", "GEOMUX_REGIONS_EU_TIMEOUT=20s"}, "regions[eu].timeout:"},
		{"unknown handler", []string{"GEOMUX_REGIONS_EU_HANDLER=grpc"}, "regions[eu].handler:"},
		{"user token to an http backend", []string{"GEOMUX_REGIONS_EU_HANDLER=http", "GEOMUX_REGIONS_EU_USER_TOKEN=true", "GEOMUX_REGIONS_EU_VAULT_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "GEOMUX_REGIONS_EU_BACKEND_URL=http://backend.example.com/bot"}, "regions[eu].backend_url:"},
		{"user token to an https backend", []string{"GEOMUX_REGIONS_EU_HANDLER=http", "GEOMUX_REGIONS_EU_USER_TOKEN=true", "GEOMUX_REGIONS_EU_VAULT_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "GEOMUX_REGIONS_EU_BACKEND_URL=https://backend.example.com/bot"}, ""},
		{"user token to a local http backend", []string{"GEOMUX_REGIONS_EU_HANDLER=http", "GEOMUX_REGIONS_EU_USER_TOKEN=true", "GEOMUX_REGIONS_EU_VAULT_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "GEOMUX_REGIONS_EU_BACKEND_URL=http://127.0.0.1:9000/bot"}, ""},
		{"user token in clear, a lab", []string{"GEOMUX_REGIONS_EU_HANDLER=http", "GEOMUX_REGIONS_EU_USER_TOKEN=true", "GEOMUX_REGIONS_EU_VAULT_KEY=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "GEOMUX_REGIONS_EU_BACKEND_URL=http://backend.example.com/bot", "GEOMUX_REGIONS_EU_PLAINTEXT_TOKENS=true"}, ""},
		{"hub link in clear", []string{"GEOMUX_NATS_URL=tls://n1:4222,nats://n2:4222"}, "nats.url:"},
		{"hub link on loopback", []string{"GEOMUX_NATS_URL=nats://127.0.0.1:4222"}, ""},
		{"hub link with a CA", []string{"GEOMUX_NATS_URL=nats://n1:4222", "GEOMUX_NATS_AUTH_CA_FILE=config.go"}, ""},
		{"hub link in clear, a lab", []string{"GEOMUX_NATS_URL=nats://n1:4222", "GEOMUX_NATS_PLAINTEXT_TOKENS=true"}, ""},
		{"region link in clear", []string{"GEOMUX_NATS_URL=tls://hub:4222", "GEOMUX_NATS_TRANSIT_STORAGE=memory", "GEOMUX_REGIONS_EU_NATS_URL=nats://eu:4222"}, "regions[eu].nats.url:"},
		{"region link over TLS", []string{"GEOMUX_NATS_URL=tls://hub:4222", "GEOMUX_NATS_TRANSIT_STORAGE=memory", "GEOMUX_REGIONS_EU_NATS_URL=tls://eu:4222"}, ""},
		{"region link over websocket", []string{"GEOMUX_NATS_URL=tls://hub:4222", "GEOMUX_NATS_TRANSIT_STORAGE=memory", "GEOMUX_REGIONS_EU_NATS_URL=ws://eu:8080"}, "regions[eu].nats.url:"},
		{"region link in clear, a lab", []string{"GEOMUX_NATS_URL=tls://hub:4222", "GEOMUX_NATS_TRANSIT_STORAGE=memory", "GEOMUX_REGIONS_EU_NATS_URL=nats://eu:4222", "GEOMUX_REGIONS_EU_PLAINTEXT_TOKENS=true"}, ""},
		{"sandbox listen", []string{"GEOMUX_SANDBOX_LISTEN=nope"}, "sandbox.listen:"},
		{"shutdown timeout", []string{"GEOMUX_SHUTDOWN_TIMEOUT=10ms"}, "shutdown_timeout:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := read(t, minimal, tc.env)
			if tc.prefix == "" {
				if err != nil {
					t.Errorf("Read = %v, want valid", err)
				}
				return
			}
			ps := problems(t, err)
			if len(ps) != 1 || !strings.HasPrefix(ps[0], tc.prefix) {
				t.Errorf("problems = %q, want exactly one starting %q", ps, tc.prefix)
			}
		})
	}
}

func TestValidationByRole(t *testing.T) {
	// Enough for ingress: no Zoom API credentials.
	const ingressOnly = `
admin: {token: 0123456789abcdef}
zoom: {webhook_secret_tokens: [wh]}
regions: [{name: eu, handler: echo}]
`
	if _, err := read(t, ingressOnly, nil, config.RoleIngress); err != nil {
		t.Errorf("ingress-only config for RoleIngress: %v", err)
	}
	if _, err := read(t, ingressOnly, nil, config.RoleRouter); err != nil {
		t.Errorf("ingress-only config for RoleRouter: %v", err)
	}
	// Without the install flow an ingress hands over no tokens: a link in
	// clear is its operator's choice. A router forwards every install.
	clear := []string{"GEOMUX_NATS_URL=nats://hub.example.com:4222"}
	if _, err := read(t, ingressOnly, clear, config.RoleIngress); err != nil {
		t.Errorf("ingress without install over nats://: %v", err)
	}
	if ps := problems(t, func() error { _, err := read(t, ingressOnly, clear, config.RoleRouter); return err }()); len(ps) != 1 || !strings.HasPrefix(ps[0], "nats.url:") {
		t.Errorf("router over nats://: problems = %q, want nats.url", ps)
	}
	_, err := read(t, ingressOnly, nil) // all roles
	ps := problems(t, err)
	for _, key := range []string{"zoom.client_id:", "zoom.client_secret:", "zoom.bot_jid:"} {
		if !hasProblem(ps, key) {
			t.Errorf("all roles: no problem for %s in %q", key, ps)
		}
	}
	if len(ps) != 3 {
		t.Errorf("all roles: problems = %q, want 3", ps)
	}
	_, err = read(t, ingressOnly, nil, config.RoleWorker)
	if ps := problems(t, err); len(ps) != 3 {
		t.Errorf("RoleWorker: problems = %q, want the 3 Zoom API ones", ps)
	}

	// A worker needs no webhook secret; ingress's publish timeout is not its
	// business either.
	const workerOnly = `
admin: {token: 0123456789abcdef}
ingress: {publish_timeout: 10s}
zoom: {client_id: c, client_secret: s, bot_jid: b@xmpp.zoom.us}
regions: [{name: eu, handler: echo}]
`
	if _, err := read(t, workerOnly, nil, config.RoleWorker); err != nil {
		t.Errorf("worker-only config for RoleWorker: %v", err)
	}
	_, err = read(t, workerOnly, nil, config.RoleIngress)
	ps = problems(t, err)
	if len(ps) != 2 || !hasProblem(ps, "ingress.publish_timeout:") || !hasProblem(ps, "zoom.webhook_secret_tokens:") {
		t.Errorf("RoleIngress: problems = %q", ps)
	}

	// Validate on a Config value.
	c := mustRead(t, minimal, nil)
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
	c.Zoom.ClientID = ""
	if err := c.Validate(config.RoleIngress); err != nil {
		t.Errorf("Validate(RoleIngress) without client_id = %v", err)
	}
	err = c.Validate(config.RoleIngress, config.RoleWorker)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Source != "config" || len(ce.Problems) != 1 || !strings.HasPrefix(ce.Problems[0], "zoom.client_id:") {
		t.Errorf("Validate(ingress, worker) = %v", err)
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	c := mustRead(t, minimal, []string{"GEOMUX_RETRY_BACKOFF=1500ms,1m30s", "GEOMUX_REGIONS_EU_TIMEOUT=2s"})
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "1m30s") {
		t.Errorf("durations are not written as Go durations:\n%s", out)
	}
	back, err := read(t, string(out), nil)
	if err != nil {
		t.Fatalf("reading the marshalled config back: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip changed the config:\n got %+v\nwant %+v", back, c)
	}
}

func TestBackoffFor(t *testing.T) {
	r := config.Retry{Backoff: []config.Duration{d(time.Second), d(5 * time.Second), d(30 * time.Second)}}
	for attempt, want := range map[int]time.Duration{
		-1: time.Second, 0: time.Second, 1: time.Second, 2: 5 * time.Second, 3: 30 * time.Second,
		4: 30 * time.Second, 1000: 30 * time.Second,
	} {
		if got := r.BackoffFor(attempt); got != want {
			t.Errorf("BackoffFor(%d) = %s, want %s", attempt, got, want)
		}
	}
	if got := (config.Retry{}).BackoffFor(3); got != time.Second {
		t.Errorf("BackoffFor with no backoff = %s, want 1s", got)
	}
	if got := config.Default().Retry.BackoffFor(99); got != 10*time.Minute {
		t.Errorf("default BackoffFor(99) = %s, want 10m", got)
	}
}

func TestTarget(t *testing.T) {
	c := mustRead(t, minimal+"  - {name: us, handler: echo}\n", nil)

	for _, tc := range []struct {
		t         config.Target
		valid     bool
		checkOK   bool
		roles     []config.Role
		workerFor []string
	}{
		{config.Target{Name: "all"}, true, true, config.AllRoles, []string{"eu", "us"}},
		{config.Target{Name: "all", Region: "us"}, true, true, config.AllRoles, []string{"us"}},
		{config.Target{Name: "ingress"}, true, true, []config.Role{config.RoleIngress}, nil},
		{config.Target{Name: "router"}, true, true, []config.Role{config.RoleRouter}, nil},
		{config.Target{Name: "worker"}, true, true, []config.Role{config.RoleWorker}, []string{"eu", "us"}},
		{config.Target{Name: "worker", Region: "eu"}, true, true, []config.Role{config.RoleWorker}, []string{"eu"}},
		{config.Target{Name: "worker", Region: "mars"}, true, false, []config.Role{config.RoleWorker}, nil},
		{config.Target{Name: "ingress", Region: "eu"}, false, false, []config.Role{config.RoleIngress}, nil},
		{config.Target{Name: "router", Region: "eu"}, false, false, []config.Role{config.RoleRouter}, nil},
		{config.Target{Name: "workers"}, false, false, config.AllRoles, nil},
		{config.Target{Name: ""}, false, false, config.AllRoles, nil},
	} {
		name := tc.t.Name + "/" + tc.t.Region
		if err := tc.t.Validate(); (err == nil) != tc.valid {
			t.Errorf("%s: Validate = %v, want valid %v", name, err, tc.valid)
		}
		err := tc.t.Check(c)
		if (err == nil) != tc.checkOK {
			t.Errorf("%s: Check = %v, want ok %v", name, err, tc.checkOK)
		}
		if tc.valid && !tc.checkOK && (err == nil || !strings.Contains(err.Error(), "mars") || !strings.Contains(err.Error(), "[eu us]")) {
			t.Errorf("%s: Check error %v should name the region and the configured ones", name, err)
		}
		if got := tc.t.Roles(); !slices.Equal(got, tc.roles) {
			t.Errorf("%s: Roles = %v, want %v", name, got, tc.roles)
		}
		for _, r := range config.AllRoles {
			if got := tc.t.Has(r); got != slices.Contains(tc.roles, r) {
				t.Errorf("%s: Has(%s) = %v", name, r, got)
			}
		}
		if !tc.checkOK {
			continue
		}
		var regions []string
		for _, r := range tc.t.WorkerRegions(c) {
			regions = append(regions, r.Name)
			if want, _ := c.Region(r.Name); !reflect.DeepEqual(r, want) {
				t.Errorf("%s: WorkerRegions gave %+v, want the configured %+v", name, r, want)
			}
		}
		if !slices.Equal(regions, tc.workerFor) {
			t.Errorf("%s: WorkerRegions = %v, want %v", name, regions, tc.workerFor)
		}
	}
}

func TestRegionLookup(t *testing.T) {
	c := mustRead(t, minimal+"  - {name: us, handler: http, backend_url: 'https://us.example.com'}\n", nil)
	if r, ok := c.Region("us"); !ok || r.BackendURL != "https://us.example.com" {
		t.Errorf("Region(us) = %+v, %v", r, ok)
	}
	if _, ok := c.Region("mars"); ok {
		t.Error("Region(mars) found")
	}
	if got := c.RegionNames(); !slices.Equal(got, []string{"eu", "us"}) {
		t.Errorf("RegionNames = %v", got)
	}
}

// Kubernetes sets GEOMUX_PORT, GEOMUX_SERVICE_HOST, ... in every pod of a
// namespace with a Service named geomux: they are not settings.
func TestKubernetesServiceLinksIgnored(t *testing.T) {
	env := []string{
		"GEOMUX_PORT=tcp://10.0.0.1:8080", "GEOMUX_PORT_8080_TCP=tcp://10.0.0.1:8080",
		"GEOMUX_PORT_8080_TCP_ADDR=10.0.0.1", "GEOMUX_SERVICE_HOST=10.0.0.1", "GEOMUX_SERVICE_PORT=8080",
	}
	if _, err := config.Load("../../deploy/local/geomux.yaml", env); err != nil {
		t.Fatalf("service-link variables refused: %v", err)
	}
}

func TestDedupWindowCoversZoomRetries(t *testing.T) {
	_, err := config.Load("../../deploy/local/geomux.yaml", []string{"GEOMUX_NATS_DEDUP_WINDOW=30m"})
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Error(), "nats.dedup_window: must be at least 90m") {
		t.Fatalf("a 30m dedup window was accepted: %v", err)
	}
}

// An unknown key is one problem among the others, with its key path, the
// key it probably meant, and no Go type names anywhere.
func TestUnknownKeysAreReportedWithTheRest(t *testing.T) {
	const yml = `
ingress:
  listn: 127.0.0.1:8080
  publish_timeout: soon
worker:
  concurrency: lots
admin:
  token: short
regions:
  - {name: eu, handlr: echo}
  - {name: uk, timeout: soon, handler: echo}
zoom:
  webhook_secret_tokens: [wh]
  client_id: cid
  client_secret: cs
  bot_jid: bot@xmpp.zoom.us
  colour: blue
`
	_, err := read(t, yml, nil)
	ps := problems(t, err)
	want := []struct{ prefix, contains string }{
		{"ingress.listn (line 3):", "did you mean ingress.listen?"},
		{"ingress.publish_timeout (line 4):", `"soon" is not a duration`},
		{"worker.concurrency (line 6):", "`lots` is not a whole number"},
		{"regions[eu].handlr (line 10):", "did you mean regions[eu].handler?"},
		{"zoom.colour (line 17):", "no such setting (docs/configuration.md"},
		{"regions[uk] (line 11):", `"soon" is not a duration`},
		{"admin.token:", "at least 16 characters"},
	}
	for _, w := range want {
		if !hasProblem(ps, w.prefix, w.contains) {
			t.Errorf("no problem %q ... %q in:\n  %s", w.prefix, w.contains, strings.Join(ps, "\n  "))
		}
	}
	for _, p := range ps {
		if strings.Contains(p, "config.") || strings.Contains(p, "!!") || strings.Contains(p, "unmarshal") {
			t.Errorf("a problem in Go's or YAML's words: %q", p)
		}
	}
}
