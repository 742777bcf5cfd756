// Package config is geomux's configuration: a YAML file, every key of which
// an environment variable can override, validated all at once.
package config

import (
	"time"
)

// Config is the whole geomux configuration. The YAML keys are the yaml tags;
// see deploy/local/geomux.yaml for a commented example and docs/configuration.md for the
// reference.
type Config struct {
	Log     Log      `yaml:"log"`
	NATS    NATS     `yaml:"nats"`
	Ingress Ingress  `yaml:"ingress"`
	Admin   Admin    `yaml:"admin"`
	Zoom    Zoom     `yaml:"zoom"`
	Retry   Retry    `yaml:"retry"`
	Router  Router   `yaml:"router"`
	Worker  Worker   `yaml:"worker"`
	Regions []Region `yaml:"regions"`
	Install Install  `yaml:"install"`
	// Warnings are what loading found questionable but not wrong (a file
	// of secrets others may read); the process logs them at start.
	Warnings []string `yaml:"-"`
	Sandbox  Sandbox  `yaml:"sandbox"`
	// ShutdownTimeout bounds a graceful stop: in-flight requests finish,
	// consumers drain, then the process exits.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// MemoryLimit is the process's soft memory limit (Go's GOMEMLIMIT):
	// near it the garbage collector works harder instead of the process
	// growing, and under overload the backlog waits on disk. 0: 90% of the
	// container's memory limit (cgroup) when there is one, else none. A
	// GOMEMLIMIT in the environment wins over both.
	MemoryLimit Size `yaml:"memory_limit"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json (one object per line, for machines) or console (for people).
	Format string `yaml:"format"`
}

// NATS says which NATS geomux uses.
type NATS struct {
	// URL of an external NATS cluster (comma-separated seed URLs). Empty: start
	// an embedded nats-server with JetStream inside the process.
	URL string `yaml:"url"`
	// StoreDir is where the embedded server keeps its JetStream data.
	StoreDir string `yaml:"store_dir"`
	// Listen is the loopback host:port where the embedded server also accepts
	// clients (the CLI, other geomux processes). Empty: in-process only.
	Listen string `yaml:"listen"`
	// ListenWithoutAuth opens nats.listen to any local process, as before
	// geomux required credentials there (a warning is logged at every
	// start). By default the embedded server admits only the keys it
	// generated under nats.store_dir/auth (NATS nkeys: one for geomux's
	// processes, one for the operators' CLI), which geomux and the CLI find
	// from the same config.
	ListenWithoutAuth bool `yaml:"listen_without_auth"`
	// MonitorListen is the loopback host:port where the embedded server
	// serves NATS's monitoring endpoints (/varz, /jsz, ...), for NATS's
	// Prometheus exporter and `nats server` tools. Empty: none.
	MonitorListen string `yaml:"monitor_listen"`
	// DedupWindow is how long a re-delivered Zoom event is recognised and
	// dropped. Zoom retries up to about 85 minutes after the first attempt.
	DedupWindow Duration `yaml:"dedup_window"`
	// SyncAlways makes the embedded server fsync every write before it
	// acknowledges it; by default JetStream flushes to disk periodically.
	SyncAlways bool `yaml:"sync_always"`
	// MaxStore caps the embedded server's JetStream file store; 0 leaves
	// nats-server's default (most of the free disk). When it is full, ingress
	// answers 503 and Zoom retries later.
	MaxStore Size `yaml:"max_store"`
	// ConnectTimeout bounds connecting to NATS at start.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// Auth is how this process authenticates to nats.url.
	Auth NATSAuth `yaml:"auth"`
	// Replicas of the hub's streams and buckets (transit, parked,
	// directory): 3 on a production cluster, 1 on one server.
	Replicas int `yaml:"replicas"`
	// TransitStorage is where the hub keeps events in transit (the transit
	// and parked streams, which hold every region's payloads): file, or
	// memory so that no other region's data ever touches the hub's disk.
	TransitStorage string `yaml:"transit_storage"`
	// TransitPartitions is how many transit streams the hub has. On a
	// cluster their leaders sit on different servers: when one stream's
	// leader is lost, the ingress stores events in another while the first
	// elects a new leader (seconds, longer than Zoom waits).
	TransitPartitions int `yaml:"transit_partitions"`
	// Cluster is the name of the hub's NATS cluster, checked by
	// `geomux audit locality`; empty: not checked.
	Cluster string `yaml:"cluster"`
	// ManageStreams makes each process create and update the streams,
	// consumers and buckets it uses. Set it false where they are created by
	// `geomux setup` with a deployer's credentials, and processes' own
	// credentials may not manage streams (a stream update can move data).
	ManageStreams bool `yaml:"manage_streams"`
	// PlaintextTokens lets install hand tokens over a nats:// link to a host
	// other than this one (no TLS): for a lab only.
	PlaintextTokens bool `yaml:"plaintext_tokens"`
}

// NATSAuth is how a process authenticates to a NATS system. Set at most one
// of a creds file, an nkey seed file, or a user and password.
type NATSAuth struct {
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// CredsFile is a NATS .creds file (user JWT and nkey seed).
	CredsFile string `yaml:"creds_file"`
	// NkeySeedFile is a file holding a user nkey seed (SU...).
	NkeySeedFile string `yaml:"nkey_seed_file"`
	// InboxPrefix replaces _INBOX in this process's reply subjects, so that
	// the servers can allow each role only its own replies (a role allowed
	// _INBOX.> could read what JetStream delivers to another role).
	InboxPrefix string `yaml:"inbox_prefix"`
	// TLS to the servers: CA to trust, and a client certificate if they
	// ask for one. Use tls:// URLs.
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// RegionNATS is a region's own NATS system. With an empty URL the region
// uses the hub's NATS (nats.url, or the embedded server).
type RegionNATS struct {
	URL  string   `yaml:"url"`
	Auth NATSAuth `yaml:"auth"`
	// Replicas of the region's streams and buckets (3 in production).
	Replicas int `yaml:"replicas"`
	// PlacementTags pin the region's streams to servers with all these
	// server_tags, e.g. [region:eu]; a stream that cannot be placed so is
	// refused rather than put elsewhere.
	PlacementTags []string `yaml:"placement_tags,omitempty"`
	// Cluster is the name of the region's NATS cluster, checked by
	// `geomux audit locality`; empty: not checked.
	Cluster string `yaml:"cluster"`
}

// ForRegion is the NATS to connect to for region r: its own system, or the
// hub's.
func (n NATS) ForRegion(r Region) NATS {
	if !r.NATS.Separate() {
		return n
	}
	out := n
	out.URL, out.Auth, out.Listen = r.NATS.URL, r.NATS.Auth, ""
	return out
}

// Separate reports whether the region has a NATS system of its own.
func (n RegionNATS) Separate() bool { return n.URL != "" }

// Ingress is the Bot Endpoint URL's HTTP server.
type Ingress struct {
	// Listen is the host:port of the webhook listener.
	Listen string `yaml:"listen"`
	// PublishTimeout bounds the wait for JetStream's acknowledgement; past it
	// ingress answers 503 so that Zoom retries (Zoom itself waits 3 s).
	PublishTimeout Duration `yaml:"publish_timeout"`
	// MaxClockSkew is how far x-zm-request-timestamp may be from now.
	MaxClockSkew Duration `yaml:"max_clock_skew"`
	// MaxConnections caps the connections the listener holds open at once;
	// past it, new ones wait in the kernel's queue until one closes, so
	// that a flood of slow clients cannot use up the process's file
	// descriptors.
	MaxConnections int `yaml:"max_connections"`
	// ShutdownDelay keeps the listener taking requests for this long after
	// /readyz turned 503 at a stop, so that a load balancer has time to stop
	// sending it any. 0 by default; a few seconds behind a load balancer.
	ShutdownDelay Duration `yaml:"shutdown_delay"`
	// TLS serves the listener over HTTPS (Zoom requires an https Bot
	// Endpoint URL): from certificate files, or from an ACME CA. Unset: plain
	// HTTP, for a TLS-terminating proxy in front.
	TLS IngressTLS `yaml:"tls"`
}

// IngressTLS is where the ingress's certificate comes from: files (read
// again when they change) or ACME, not both.
type IngressTLS struct {
	// CertFile (PEM, the chain) and KeyFile (PEM) are read at start, and
	// again when either changes, so that a renewed certificate is served
	// without a restart.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	ACME     ACME   `yaml:"acme"`
}

// Enabled reports whether the ingress serves HTTPS.
func (t IngressTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.ACME.Enabled() }

// ACME gets and renews the ingress's certificate from an ACME CA (Let's
// Encrypt by default) with the TLS-ALPN-01 challenge: the CA connects to
// the domains on port 443, which must reach ingress.listen.
type ACME struct {
	// Domains the certificate is for (the Bot Endpoint URL's host).
	Domains []string `yaml:"domains,omitempty"`
	// Email is the ACME account's contact for expiry notices.
	Email string `yaml:"email"`
	// CacheDir keeps the account key and the certificates across restarts
	// (the CA limits how often one domain may be issued a certificate).
	CacheDir string `yaml:"cache_dir"`
	// DirectoryURL is the CA's ACME directory; empty: Let's Encrypt's.
	DirectoryURL string `yaml:"directory_url"`
	// CAFile is a PEM bundle to trust for DirectoryURL, for a private ACME
	// CA; empty: the system's roots.
	CAFile string `yaml:"ca_file"`
}

// Enabled reports whether ACME is configured.
func (a ACME) Enabled() bool { return len(a.Domains) > 0 || a.CacheDir != "" || a.DirectoryURL != "" }

// Admin is the operator HTTP API (accounts, metrics).
type Admin struct {
	// Listen is the host:port of the admin listener. Empty disables it.
	Listen string `yaml:"listen"`
	// Token is the bearer token every admin request must carry.
	Token string `yaml:"token"`
}

// Zoom holds the Zoom apps' credentials and Zoom's addresses. The keys at
// its top are the one-app shorthand: the app named DefaultAppName. Apps adds
// others, such as one app per region.
type Zoom struct {
	// WebhookSecretTokens verify x-zm-signature; a request signed with any of
	// them is accepted, so a secret can be rotated without downtime.
	WebhookSecretTokens []string `yaml:"webhook_secret_tokens"`
	ClientID            string   `yaml:"client_id"`
	ClientSecret        string   `yaml:"client_secret"`
	// BotJID is the chatbot's JID, robot_jid in every message sent.
	BotJID       string `yaml:"bot_jid"`
	APIBaseURL   string `yaml:"api_base_url"`
	OAuthBaseURL string `yaml:"oauth_base_url"`
	// Apps are further Zoom apps served by the same deployment, each at
	// POST /zoom/webhook/<name>.
	Apps []App `yaml:"apps,omitempty"`
}

// App is one Zoom Marketplace chatbot app.
type App struct {
	// Name names the app in its webhook path (/zoom/webhook/<name>), in
	// metrics and in GEOMUX_ZOOM_APPS_<NAME>_* variables: lowercase
	// letters, digits and '-', starting with a letter.
	Name                string   `yaml:"name"`
	WebhookSecretTokens []string `yaml:"webhook_secret_tokens"`
	ClientID            string   `yaml:"client_id"`
	ClientSecret        string   `yaml:"client_secret"`
	BotJID              string   `yaml:"bot_jid"`
	// Region, if set, pins the app to a region: its events go there
	// without a directory lookup (an app per region, as a vendor that
	// runs one Marketplace app per region does).
	Region string `yaml:"region"`
}

// DefaultAppName names the app of the one-app keys (zoom.client_id, ...).
const DefaultAppName = "default"

// shorthand reports whether the one-app keys are set.
func (z Zoom) shorthand() bool {
	return len(z.WebhookSecretTokens) > 0 || z.ClientID != "" || z.ClientSecret != "" || z.BotJID != ""
}

// AllApps lists every app: the one-app keys' app (DefaultAppName) when
// they are set, then zoom.apps. The first is the default app, the one
// served at /zoom/webhook.
func (z Zoom) AllApps() []App {
	var out []App
	if z.shorthand() || len(z.Apps) == 0 {
		out = append(out, App{Name: DefaultAppName, WebhookSecretTokens: z.WebhookSecretTokens,
			ClientID: z.ClientID, ClientSecret: z.ClientSecret, BotJID: z.BotJID})
	}
	return append(out, z.Apps...)
}

// AppNames are the names of AllApps, in order.
func (z Zoom) AppNames() []string {
	var names []string
	for _, a := range z.AllApps() {
		names = append(names, a.Name)
	}
	return names
}

// DefaultApp is the app served at /zoom/webhook, whose credentials the
// install flow uses.
func (z Zoom) DefaultApp() App { return z.AllApps()[0] }

// App returns the app named name.
func (z Zoom) App(name string) (App, bool) {
	for _, a := range z.AllApps() {
		if a.Name == name {
			return a, true
		}
	}
	return App{}, false
}

// Pins maps each app pinned to a region to that region.
func (z Zoom) Pins() map[string]string {
	pins := map[string]string{}
	for _, a := range z.AllApps() {
		if a.Region != "" {
			pins[a.Name] = a.Region
		}
	}
	return pins
}

// Retry says how a regional worker retries an event whose backend or Zoom
// call failed transiently (5xx, timeout, 429).
type Retry struct {
	// MaxAttempts is how many times an event is tried in all.
	MaxAttempts int `yaml:"max_attempts"`
	// Backoff is the wait before each retry; the last value repeats.
	Backoff []Duration `yaml:"backoff"`
	// HTTPRetries is how many quick retries (under a second apart) one HTTP
	// call gets before the event is handed back to JetStream for Backoff.
	HTTPRetries int `yaml:"http_retries"`
}

// Router configures the region router.
type Router struct {
	// ParkTTL is how long an event of an account without a region is kept
	// waiting for one. After it, JetStream discards the event.
	ParkTTL Duration `yaml:"park_ttl"`
	// ParkMaxBytes caps the parked stream. When it is full, new events of
	// accounts without a region wait in transit (the router keeps them)
	// and, once transit is full too, the ingress answers 503: nothing
	// answered 200 is dropped. 0: no cap but the store's.
	ParkMaxBytes Size `yaml:"park_max_bytes"`
}

// Worker configures the regional workers. Each region's worker holds the
// events it takes from JetStream in memory, bounded by MemoryBudget and
// Concurrency, and schedules them: round robin across accounts (at most
// AccountConcurrency of one account at once), one event at a time per
// conversation, at most BackendConcurrency backend calls at once, and each
// account's Zoom sends paced (ZoomPace).
type Worker struct {
	// Concurrency is how many events one region's worker holds at once
	// (running or waiting their turn); MemoryBudget bounds them too.
	Concurrency int `yaml:"concurrency"`
	// MemoryBudget bounds the bytes of the events one region's worker holds
	// (their bodies and headers plus a fixed cost each). Past it, the worker
	// takes no more: the backlog waits in JetStream, on disk.
	MemoryBudget Size `yaml:"memory_budget"`
	// Partitions is how many partitions a region's events stream has, each
	// with its consumer; an account's events are all in one. Each consumer
	// costs the servers a state write up to ten times a second, so a few
	// do: four served 500 events/s per region with a 2 s backend on two
	// cores, where sixteen fell short. Set it before
	// the first start: changing it later keeps the order of conversations,
	// but events already stored stay in their old partition's subjects.
	Partitions int `yaml:"partitions"`
	// AccountConcurrency is how many events of one account a region's worker
	// handles at once: a noisy account cannot take every slot.
	AccountConcurrency int `yaml:"account_concurrency"`
	// BackendConcurrency caps the concurrent calls to a region's backend. A
	// backend answering 429 or 503 with Retry-After halves it and pauses
	// the region's calls for that long; it grows back by one per success.
	BackendConcurrency int `yaml:"backend_concurrency"`
	// ZoomPace is how fast one account's messages go to Zoom.
	ZoomPace ZoomPace `yaml:"zoom_pace"`
	// HandlerTimeout bounds one backend call and one Zoom call of an
	// attempt; past it the attempt counts as a transient failure.
	HandlerTimeout Duration `yaml:"handler_timeout"`
	// DeadLetterMaxAge is how long a region keeps an event it gave up on.
	DeadLetterMaxAge Duration `yaml:"dead_letter_max_age"`
	// DeadLetterMaxBytes caps a region's dead-letter stream. When it is
	// full, an event to dead-letter stays in the events stream (retried
	// later) until an operator purges or replays dead letters: none is
	// dropped. 0: no cap but the store's.
	DeadLetterMaxBytes Size `yaml:"dead_letter_max_bytes"`
}

// ZoomPace paces each account's sends to Zoom, which limits chat messages
// per account and per second by the account's plan (2/s Free, 20/s Pro,
// 60/s Business and up). The pace is learnt from Zoom's answers: it starts
// at InitialRate, grows by one message per second each second the account
// has more to send, and halves on a per-second 429, within [1, MaxRate].
type ZoomPace struct {
	// InitialRate is the messages per second an account starts at.
	InitialRate float64 `yaml:"initial_rate"`
	// MaxRate is the most messages per second an account is paced to.
	MaxRate float64 `yaml:"max_rate"`
}

// Region is one data region and how its events are handled.
type Region struct {
	// Name is the region's id, e.g. "eu": lowercase letters, digits and '-'.
	Name string `yaml:"name"`
	// Handler is "echo" (reply with the user's text) or "http" (ask BackendURL).
	Handler string `yaml:"handler"`
	// BackendURL is the vendor's regional backend, for handler http.
	BackendURL string `yaml:"backend_url"`
	// Timeout bounds one call to the backend.
	Timeout Duration `yaml:"timeout"`
	// DisplayName is how the install page names the region, e.g.
	// "European Union"; the name when empty.
	DisplayName string `yaml:"display_name"`
	// VaultKey encrypts the region's OAuth tokens at rest: 32 random bytes,
	// base64 (openssl rand -base64 32). Set it with
	// GEOMUX_REGIONS_<NAME>_VAULT_KEY, in the region only.
	VaultKey string `yaml:"vault_key"`
	// UserToken makes the worker add the installing user's access token to
	// the envelope sent to the backend (handler http), as "user_token".
	UserToken bool `yaml:"user_token"`
	// PlaintextTokens lets the region's tokens travel in clear to another
	// host: user_token to an http:// backend, and install handovers over a
	// nats:// link to the region's NATS. For a lab only.
	PlaintextTokens bool `yaml:"plaintext_tokens"`
	// NATS is the region's own NATS system, if it has one.
	NATS RegionNATS `yaml:"nats"`
}

// Install configures the install flow (GET /install on the ingress).
type Install struct {
	// PublicURL is where Zoom and browsers reach the ingress, e.g.
	// https://bot.example.com; the OAuth redirect URI is PublicURL +
	// /oauth/callback. Empty disables the install flow.
	PublicURL string `yaml:"public_url"`
	// StateKey signs the OAuth state and encrypts the install cookies: at
	// least 32 random characters (openssl rand -base64 32).
	StateKey string `yaml:"state_key"`
	// BotName is the bot's name on the install page.
	BotName string `yaml:"bot_name"`
	// Vendor is who offers the bot, on the install page.
	Vendor string `yaml:"vendor"`
}

// Enabled reports whether the install flow is served.
func (i Install) Enabled() bool { return i.PublicURL != "" }

// Title is how the install page names a region.
func (r Region) Title() string {
	if r.DisplayName != "" {
		return r.DisplayName
	}
	return r.Name
}

// Sandbox is a built-in stand-in for Zoom's OAuth and chat API, for trying
// geomux without a Zoom account. It prints every message it would deliver.
type Sandbox struct {
	// Listen is the host:port to serve the sandbox on; empty disables it. Point
	// zoom.api_base_url at http://<listen>/v2 and zoom.oauth_base_url at
	// http://<listen>.
	Listen string `yaml:"listen"`
	// RateLimit is the per-account limits on chat messages the sandbox
	// enforces, answering over them with Zoom's 429s.
	RateLimit SandboxRateLimit `yaml:"rate_limit"`
}

// SandboxRateLimit limits each account's chat messages, as Zoom does (shared
// by all the apps on the account). The defaults are a Zoom Pro account's.
type SandboxRateLimit struct {
	// PerSecond is how many messages an account may send in any one second;
	// -1 for no limit. Zoom's: 2 (Free), 20 (Pro), 60 (Business and up).
	PerSecond int `yaml:"per_second"`
	// PerDay is how many messages an account may send in one UTC day; 0 for
	// no limit. Zoom Free's is 2000.
	PerDay int `yaml:"per_day"`
}

// Handlers a region can use.
const (
	HandlerEcho = "echo"
	HandlerHTTP = "http"
)

// Default returns the configuration every file is read on top of.
func Default() Config {
	return Config{
		Log: Log{Level: "info", Format: "json"},
		NATS: NATS{
			StoreDir:          "./data/nats",
			Listen:            "127.0.0.1:4222",
			DedupWindow:       Duration(2 * time.Hour),
			ConnectTimeout:    Duration(10 * time.Second),
			Replicas:          1,
			TransitStorage:    "file",
			TransitPartitions: 3,
			ManageStreams:     true,
		},
		Ingress: Ingress{
			Listen:         "127.0.0.1:8080",
			PublishTimeout: Duration(2 * time.Second),
			MaxClockSkew:   Duration(5 * time.Minute),
			MaxConnections: 4096,
		},
		Admin:   Admin{Listen: "127.0.0.1:8081"},
		Sandbox: Sandbox{RateLimit: SandboxRateLimit{PerSecond: 20}},
		Zoom: Zoom{
			APIBaseURL:   "https://api.zoom.us/v2",
			OAuthBaseURL: "https://zoom.us",
		},
		Retry: Retry{
			MaxAttempts: 6,
			Backoff: []Duration{
				Duration(time.Second), Duration(5 * time.Second), Duration(30 * time.Second),
				Duration(2 * time.Minute), Duration(10 * time.Minute),
			},
			HTTPRetries: 2,
		},
		Router: Router{ParkTTL: Duration(24 * time.Hour), ParkMaxBytes: 1 << 30},
		Worker: Worker{
			Concurrency:        8192,
			MemoryBudget:       64 << 20,
			Partitions:         4,
			AccountConcurrency: 32,
			BackendConcurrency: 1024,
			ZoomPace:           ZoomPace{InitialRate: 10, MaxRate: 100},
			HandlerTimeout:     Duration(20 * time.Second),
			DeadLetterMaxAge:   Duration(30 * 24 * time.Hour),
			DeadLetterMaxBytes: 1 << 30,
		},
		ShutdownTimeout: Duration(30 * time.Second),
	}
}

// regionDefaults fills what a region entry left out.
func (r *Region) setDefaults() {
	if r.Timeout == 0 {
		r.Timeout = Duration(10 * time.Second)
	}
	if r.NATS.Replicas == 0 {
		r.NATS.Replicas = 1
	}
}

// Separated reports whether any region has a NATS system of its own: then
// the hub must keep no region's data on disk.
func (c *Config) Separated() bool {
	for _, r := range c.Regions {
		if r.NATS.Separate() {
			return true
		}
	}
	return false
}

// Region returns the region named name.
func (c *Config) Region(name string) (Region, bool) {
	for _, r := range c.Regions {
		if r.Name == name {
			return r, true
		}
	}
	return Region{}, false
}

// RegionNames lists the configured regions in file order.
func (c *Config) RegionNames() []string {
	names := make([]string, len(c.Regions))
	for i, r := range c.Regions {
		names[i] = r.Name
	}
	return names
}

// BackoffFor is the wait before retrying after the given attempt (1-based).
func (r Retry) BackoffFor(attempt int) time.Duration {
	if len(r.Backoff) == 0 {
		return time.Second
	}
	i := min(max(attempt-1, 0), len(r.Backoff)-1)
	return r.Backoff[i].D()
}
