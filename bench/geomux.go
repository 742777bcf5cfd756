package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// benchAdminToken guards the admin API of the geomux processes started here.
const benchAdminToken = "bench-admin-token-0123456789"

// geomuxConfig is the config of the geomux processes of one run: the
// benchmark's Zoom and backends, regions us, uk and eu, logs at warn (each
// event is logged at debug only).
type geomuxConfig struct {
	natsURL    string // empty: embedded
	storeDir   string
	syncAlways bool
}

func (f *fakes) writeConfig(dir, name string, c geomuxConfig) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "log: {level: warn, format: json}\n")
	fmt.Fprintf(&b, "nats: {url: %q, store_dir: %q, listen: \"\", sync_always: %t}\n", c.natsURL, c.storeDir, c.syncAlways)
	fmt.Fprintf(&b, "admin: {listen: 127.0.0.1:0, token: %s}\n", benchAdminToken)
	if f.memoryLimit != "" {
		fmt.Fprintf(&b, "memory_limit: %s\n", f.memoryLimit)
	}
	fmt.Fprintf(&b, "zoom:\n  webhook_secret_tokens: [%s]\n  client_id: %s\n  client_secret: %s\n  bot_jid: %s\n  api_base_url: %s/v2\n  oauth_base_url: %s\n",
		benchSecret, benchClientID, benchClientSecret, benchBotJID, f.zoomURL, f.zoomURL)
	fmt.Fprintf(&b, "regions:\n")
	for _, r := range benchRegions {
		fmt.Fprintf(&b, "  - {name: %s, handler: http, backend_url: %q}\n", r, f.backends[r])
	}
	path := filepath.Join(dir, name+".yaml")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// geomuxProc is one geomux process of a run, with its listeners.
type geomuxProc struct {
	*proc
	ingress, admin string // host:port
}

// startGeomux runs `geomux run` with config and args; it listens for
// webhooks (when it runs the ingress) and for the admin API on ports of its
// own.
func startGeomux(o options, logDir, name, config string, args ...string) (*geomuxProc, error) {
	return startGeomuxEnv(o, logDir, name, config, nil, args...)
}

// startGeomuxEnv is startGeomux with env added to the process's.
func startGeomuxEnv(o options, logDir, name, config string, env []string, args ...string) (*geomuxProc, error) {
	in, err := freePort()
	if err != nil {
		return nil, err
	}
	adm, err := freePort()
	if err != nil {
		return nil, err
	}
	p, err := startProc(name, logDir, append([]string{"GEOMUX_INGRESS_LISTEN=" + in, "GEOMUX_ADMIN_LISTEN=" + adm}, env...),
		o.geomux, append([]string{"run", "--config", config}, args...)...)
	if err != nil {
		return nil, err
	}
	g := &geomuxProc{proc: p, ingress: in, admin: adm}
	if err := p.waitReady("http://"+adm+"/readyz", 60*time.Second); err != nil {
		p.stop(5 * time.Second)
		return nil, err
	}
	return g, nil
}

func (g *geomuxProc) webhookURL() string { return "http://" + g.ingress + "/zoom/webhook" }

// assignRegions records each account's region in the directory through the
// admin API of g (a router, or everything in one).
func (g *geomuxProc) assignRegions(accounts []account) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(accounts))
	sem := make(chan struct{}, 16)
	for _, a := range accounts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			req, _ := http.NewRequest(http.MethodPut, "http://"+g.admin+"/admin/v1/accounts/"+a.id, strings.NewReader(`{"region":"`+a.region+`"}`))
			req.Header.Set("Authorization", "Bearer "+benchAdminToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("assign region of %s: %s", a.id, resp.Status)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// metric sums the samples of a metric whose labels contain every one of
// labels, from g's /metrics.
func (g *geomuxProc) metric(name string, labels ...string) (float64, error) {
	resp, err := http.Get("http://" + g.admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum, nil
}

// metricByLabel reads the samples of a metric from g's /metrics, summed by
// the value of one label; found is false when g exports no such metric.
func (g *geomuxProc) metricByLabel(name, label string) (values map[string]float64, found bool, err error) {
	resp, err := http.Get("http://" + g.admin + "/metrics")
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, false, err
	}
	values = map[string]float64{}
	key := label + `="`
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
			continue
		}
		found = true
		var lv string
		if i := strings.Index(line, key); i >= 0 {
			lv, _, _ = strings.Cut(line[i+len(key):], `"`)
		}
		values[lv] += v
	}
	return values, found, nil
}
