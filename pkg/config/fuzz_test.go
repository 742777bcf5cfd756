package config_test

import (
	"bytes"
	"errors"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/geomux/geomux/pkg/config"
)

// localExample is deploy/local/geomux.yaml, the commented example config.
func localExample(f *testing.F) []byte {
	f.Helper()
	b, err := os.ReadFile("../../deploy/local/geomux.yaml")
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// checkRead checks what config.Read returned: a config that passes Validate
// (and reads back the same from its own YAML), or an *config.Error listing
// at least one problem, with the zero Config.
func checkRead(t *testing.T, what string, c config.Config, err error) {
	t.Helper()
	if err != nil {
		var ce *config.Error
		if !errors.As(err, &ce) || len(ce.Problems) == 0 {
			t.Fatalf("Read(%s) error %v (%T) is not a *config.Error with problems", what, err, err)
		}
		if !strings.Contains(err.Error(), "fuzz.yaml") {
			t.Fatalf("Read(%s) error %q does not name the file", what, err)
		}
		if !reflect.DeepEqual(c, config.Config{}) {
			t.Fatalf("Read(%s) returned a config with its error: %+v", what, c)
		}
		return
	}
	if verr := c.Validate(); verr != nil {
		t.Fatalf("Read(%s) returned a config that fails Validate: %v\n%+v", what, verr, c)
	}
	out, merr := yaml.Marshal(c)
	if merr != nil {
		t.Fatalf("yaml.Marshal of the config read from %s: %v", what, merr)
	}
	back, berr := config.Read("fuzz.yaml", bytes.NewReader(out), nil)
	if berr != nil {
		t.Fatalf("the config read from %s, marshalled, does not read back: %v\n%s", what, berr, out)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("the config read from %s changes in a YAML round trip:\n got %+v\nwant %+v\n%s", what, back, c, out)
	}
}

// FuzzRead checks that config.Read never panics on any file and returns a
// config that passes Validate (and survives a YAML round trip) or an
// *config.Error.
func FuzzRead(f *testing.F) {
	local := localExample(f)
	f.Add(local)
	for _, s := range []string{
		minimal,
		"",
		"\n# only a comment\n",
		"---\n",
		"log: {level: debug}\n",
		"log: [unclosed\n",
		"regions:\n  - {name: eu, handler: http, backend_url: \"https://eu.example.com/zoom\", timeout: 2s}\n",
		"regions: []\n",
		"regions: !!binary aGVsbG8=\n",
		"retry: {max_attempts: 0, backoff: []}\n",
		"retry:\n  backoff: [\"1s\", 5]\n",
		"ingress: {publish_timeout: 5}\n",
		"worker: {concurrency: 1e3}\n",
		"a: &a [*a, *a]\nregions: *a\n",
		"zoom:\n  webhook_secret_tokens: [\"\", \" \"]\n",
		"nats: {url: \"nats://a:4222, tls://b\", listen: \"0.0.0.0:4222\"}\n",
		"shutdown_timeout: 9223372036854775807ns\n",
		"regions:\n  - {name: eu}\n  - {name: eu}\n  - {name: EU-1}\n",
		"log: {level: info}\n---\nlog: {level: debug}\n",
		"nats: {max_store: 10GiB}\n",
		"nats: {max_store: 1KB}\n",
		"nats: {max_store: \" 4611686018427387904 b\"}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Read("fuzz.yaml", bytes.NewReader(data), nil)
		checkRead(t, strconv.Quote(string(data)), c, err)
	})
}

// FuzzReadEnv applies one GEOMUX_<suffix>=<value> variable to the local
// example config and checks that Read never panics and returns a config that
// passes Validate or an *config.Error; and, beside that, that the variable
// is handled as documented ("GEOMUX_ + the key path in capitals", a list
// entry addressed by its name; GEOMUX_CONFIG and the variables Kubernetes
// sets for a Service named geomux ignored):
//   - a name that is no key path is reported as "no such setting";
//   - a name that is one is never reported so, and on success it changed
//     that setting only (and string settings to exactly the value).
//
// The key paths are derived from the YAML the config marshals to, not from
// the package's own list.
func FuzzReadEnv(f *testing.F) {
	local := localExample(f)
	base, err := config.Read("fuzz.yaml", bytes.NewReader(local), nil)
	if err != nil {
		f.Fatalf("the local example does not read: %v", err)
	}
	names := envNames(f, base)
	baseLeaves := leaves(f, base)
	for _, s := range [][2]string{
		{"LOG_LEVEL", "debug"},
		{"LOG_LEVEL", "verbose"},
		{"ZOOM_CLIENT_SECRET", "a=b=c"},
		{"ZOOM_WEBHOOK_SECRET_TOKENS", " new , old "},
		{"ZOOM_WEBHOOK_SECRET_TOKENS", ""},
		{"ZOOM_WEBHOOK_SECRET_TOKENS", "a,,b"},
		{"RETRY_BACKOFF", "1s,2s"},
		{"RETRY_BACKOFF", "1s,later"},
		{"RETRY_MAX_ATTEMPTS", "99999999999999999999"},
		{"RETRY_HTTP_RETRIES", "-1"},
		{"WORKER_CONCURRENCY", "0x10"},
		{"NATS_SYNC_ALWAYS", "T"},
		{"NATS_URL", "nats://a:4222,nats://b:4222"},
		{"NATS_LISTEN", "[::1]:0"},
		{"REGIONS_EU_BACKEND_URL", "https://eu.example.com/zoom"},
		{"REGIONS_EU_HANDLER", "echo"},
		{"REGIONS_EU_NAME", "eu-2"},
		{"REGIONS_UK_NAME", "us"},
		{"REGIONS_US_TIMEOUT", "0s"},
		{"REGIONS_US_TIMEOUT", "-1h"},
		{"REGIONS_MARS_HANDLER", "echo"},
		{"REGIONS", "eu"},
		{"ZOOM", "x"},
		{"log_level", "debug"},
		{"CONFIG", "/etc/other.yaml"},
		{"PORT", "tcp://10.0.0.1:8080"},
		{"PORT_8080_TCP_ADDR", "10.0.0.1"},
		{"SERVICE_HOST", "10.0.0.1"},
		{"SERVICE_PORT_HTTP", "8080"},
		{"PORTS", "1"},
		{"SERVICE", "x"},
		{"ADMIN_TOKEN=", "x"},
		{"", ""},
		{"SHUTDOWN_TIMEOUT", "2562047h47m16.854775807s"},
		{"NATS_MAX_STORE", "512MB"},
		{"NATS_MAX_STORE", " 2 tib "},
		{"NATS_MAX_STORE", "-1"},
		{"NATS_MAX_STORE", "4611686018427387905"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, suffix, value string) {
		kv := config.EnvPrefix + suffix + "=" + value
		c, err := config.Read("fuzz.yaml", bytes.NewReader(local), []string{kv})
		checkRead(t, "local example with "+strconv.Quote(kv), c, err)

		name, val, _ := strings.Cut(kv, "=")
		var ps []string
		var ce *config.Error
		if errors.As(err, &ce) {
			ps = ce.Problems
		}
		unknown := false
		for _, p := range ps {
			if strings.HasPrefix(p, name+": no such setting") {
				unknown = true
			}
		}
		path, known := names[name]
		switch {
		case ignoredEnv(name):
			if err != nil || !reflect.DeepEqual(c, base) {
				t.Fatalf("%s is not a setting but changed the config: %v\n%+v", kv, err, c)
			}
		case !known:
			if !unknown {
				t.Fatalf("%s names no key path, but was not reported as no such setting: %v", kv, err)
			}
		case unknown:
			t.Fatalf("%s names key path %s, but was reported as no such setting: %v", kv, path, err)
		case err == nil:
			got := leaves(t, c)
			for p, v := range baseLeaves {
				if p != path && got[p] != v {
					t.Fatalf("%s changed %s too: %q → %q", kv, p, v, got[p])
				}
			}
			if field, ok := stringSettings[strings.TrimPrefix(name, config.EnvPrefix)]; ok && field(c) != val {
				t.Fatalf("%s set %s to %q", kv, path, field(c))
			}
		}
	})
}

// ignoredEnv reports the GEOMUX_ variables that are not settings and are
// ignored: GEOMUX_CONFIG, and the service links Kubernetes sets in every pod
// for a Service named geomux (GEOMUX_PORT, GEOMUX_PORT_8080_TCP_ADDR,
// GEOMUX_SERVICE_HOST, ...).
func ignoredEnv(name string) bool {
	k, _ := strings.CutPrefix(name, config.EnvPrefix)
	return name == config.EnvConfigFile || k == "PORT" || strings.HasPrefix(k, "PORT_") || strings.HasPrefix(k, "SERVICE_")
}

// stringSettings are string settings of the local example, by variable name.
var stringSettings = map[string]func(config.Config) string{
	"LOG_LEVEL":              func(c config.Config) string { return c.Log.Level },
	"LOG_FORMAT":             func(c config.Config) string { return c.Log.Format },
	"NATS_URL":               func(c config.Config) string { return c.NATS.URL },
	"NATS_LISTEN":            func(c config.Config) string { return c.NATS.Listen },
	"ADMIN_TOKEN":            func(c config.Config) string { return c.Admin.Token },
	"ZOOM_CLIENT_ID":         func(c config.Config) string { return c.Zoom.ClientID },
	"ZOOM_CLIENT_SECRET":     func(c config.Config) string { return c.Zoom.ClientSecret },
	"ZOOM_BOT_JID":           func(c config.Config) string { return c.Zoom.BotJID },
	"REGIONS_EU_BACKEND_URL": func(c config.Config) string { r, _ := c.Region("eu"); return r.BackendURL },
	"REGIONS_EU_HANDLER":     func(c config.Config) string { r, _ := c.Region("eu"); return r.Handler },
}

// yamlDoc is the YAML node tree c marshals to.
func yamlDoc(t testing.TB, c config.Config) *yaml.Node {
	t.Helper()
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(out, &doc); err != nil || len(doc.Content) != 1 {
		t.Fatalf("cannot read back the marshalled config: %v\n%s", err, out)
	}
	return doc.Content[0]
}

// envNames maps every variable that sets a leaf of c's YAML to the leaf's
// path (list entries by index): as documented, GEOMUX_ + the key path in
// capitals, list entries with a name addressed by it ('-' written '_'), lists
// of scalars set whole.
func envNames(t testing.TB, c config.Config) map[string]string {
	out := map[string]string{}
	var walk func(n *yaml.Node, path, env string)
	walk = func(n *yaml.Node, path, env string) {
		switch {
		case n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				walk(n.Content[i+1], joinPath(path, k, "."), joinPath(env, strings.ToUpper(k), "_"))
			}
		case n.Kind == yaml.SequenceNode && len(n.Content) > 0 && n.Content[0].Kind == yaml.MappingNode:
			for i, item := range n.Content {
				var entry struct {
					Name string `yaml:"name"`
				}
				if err := item.Decode(&entry); err != nil || entry.Name == "" {
					continue
				}
				tok := strings.ToUpper(strings.ReplaceAll(entry.Name, "-", "_"))
				walk(item, path+"."+strconv.Itoa(i), joinPath(env, tok, "_"))
			}
		default:
			out[config.EnvPrefix+env] = path
		}
	}
	walk(yamlDoc(t, c), "", "")
	return out
}

// leaves maps the path of every leaf of c's YAML (list entries by index) to
// its YAML text.
func leaves(t testing.TB, c config.Config) map[string]string {
	out := map[string]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch {
		case n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], joinPath(path, n.Content[i].Value, "."))
			}
		case n.Kind == yaml.SequenceNode && len(n.Content) > 0 && n.Content[0].Kind == yaml.MappingNode:
			for i, item := range n.Content {
				walk(item, path+"."+strconv.Itoa(i))
			}
		default:
			b, err := yaml.Marshal(n)
			if err != nil {
				t.Fatal(err)
			}
			out[path] = string(b)
		}
	}
	walk(yamlDoc(t, c), "")
	return out
}

func joinPath(a, b, sep string) string {
	if a == "" {
		return b
	}
	return a + sep + b
}
