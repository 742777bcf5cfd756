package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/natsx/natstest"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// freePort returns a loopback address nothing listens on right now, for a
// listener that starts later (often in another process). It is taken below
// the kernel's ephemeral range (32768 and up on Linux), where every
// "127.0.0.1:0" of the tests and their processes binds: a port handed out
// here and bound a moment later cannot have been given to one of those
// meanwhile. It never hands out the same port twice in one test binary.
func freePort(t *testing.T) string {
	t.Helper()
	freePorts.Lock()
	defer freePorts.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if freePorts.given[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // in use
		}
		addr := l.Addr().String()
		l.Close()
		freePorts.given[port] = true
		return addr
	}
	t.Fatal("no free port between 20000 and 32000")
	return ""
}

// freePorts are the ports freePort handed out.
var freePorts = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "geomux.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func localConfig(t *testing.T, ingress, admin, sandbox string) string {
	return writeConfig(t, fmt.Sprintf(`
log: {level: error, format: json}
nats: {url: "", store_dir: %q, listen: ""}
ingress: {listen: %q}
admin: {listen: %q, token: cli-test-admin-token}
sandbox: {listen: %q}
zoom:
  webhook_secret_tokens: [cli-secret]
  client_id: cli-id
  client_secret: cli-secret-2
  bot_jid: cli-bot@xmpp.zoom.us
  api_base_url: http://%s/v2
  oauth_base_url: http://%s
regions:
  - {name: eu, handler: echo}
`, t.TempDir(), ingress, admin, sandbox, sandbox, sandbox))
}

func TestCLIErrorsAreOneClearLine(t *testing.T) {
	good := localConfig(t, "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")
	bad := writeConfig(t, `
ingress: {listen: "nowhere", publish_timeout: 5s}
zoom: {webhook_secret_tokens: [], bot_jid: nobody}
regions:
  - {name: EU, handler: magic}
  - {name: us, handler: http}
`)
	t.Setenv("GEOMUX_CONFIG", "")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown command", []string{"launch"}, 2, `unknown command "launch"`},
		{"unknown flag", []string{"run", "--tagret", "all"}, 2, "unknown flag: --tagret"},
		{"no config", []string{"run"}, 2, "--config is required"},
		{"missing file", []string{"run", "--config", "/nonexistent/geomux.yaml"}, 2, "config file /nonexistent/geomux.yaml: no such file or directory"},
		{"bad target", []string{"run", "--config", good, "--target", "everything"}, 2, `--target "everything" is not one of all, ingress, router, worker`},
		{"unknown region", []string{"run", "--config", good, "--target", "worker", "--region", "mars"}, 2, `--region "mars" is not configured`},
		{"region for router", []string{"run", "--config", good, "--target", "router", "--region", "eu"}, 2, "--region applies to --target worker"},
		{"extra argument", []string{"run", "--config", good, "now"}, 2, `unknown command "now"`},
		{"send without account", []string{"send", "--config", good, "--text", "hi"}, 2, "--account is required"},
		{"send bad account", []string{"send", "--config", good, "--account", "a b", "--text", "hi"}, 2, "is not a Zoom account id"},
		{"inventory without account", []string{"accounts", "inventory", "--config", good}, 2, "give one Zoom account id"},
		{"inventory bad account", []string{"accounts", "inventory", "a b", "--config", good}, 2, "is not a Zoom account id"},
		{"inventory, nothing listening", []string{"accounts", "inventory", "a1", "--config", good, "--admin", "http://" + freePort(t)}, 1, "cannot reach the admin API"},
		{"send, nothing listening", []string{"send", "--config", good, "--account", "a1", "--text", "hi", "--url", "http://" + freePort(t) + "/zoom/webhook"}, 1, "cannot reach the ingress"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			first := strings.SplitN(stderr, "\n", 2)[0]
			if !strings.HasPrefix(first, "geomux: ") || !strings.Contains(first, tc.want) {
				t.Errorf("first line %q, want geomux: ...%s...", first, tc.want)
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
				t.Errorf("stack trace on stderr: %s", stderr)
			}
		})
	}

	t.Run("invalid config lists every problem", func(t *testing.T) {
		code, _, stderr := runCLI(t, "run", "--config", bad)
		if code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
		for _, want := range []string{
			`ingress.listen: "nowhere" is not host:port`,
			"ingress.publish_timeout: must be under 3s",
			"zoom.webhook_secret_tokens: required",
			"zoom.client_id: required",
			"zoom.bot_jid: required",
			`regions[0].name: "EU" is not a region name`,
			`regions[0].handler: "magic" is not a handler`,
			`regions[us].backend_url: "" is not an http(s) URL`,
		} {
			if !strings.Contains(stderr, "\n  "+want) {
				t.Errorf("stderr lacks a line %q:\n%s", want, stderr)
			}
		}
	})
}

func TestCLIHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"send", "--help"}} {
		code, out, _ := runCLI(t, args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: exit %d, output %q", args, code, out)
		}
	}
	_, out, _ := runCLI(t, "run", "--help")
	for _, flag := range []string{"--config", "--target", "--region"} {
		if !strings.Contains(out, flag) {
			t.Errorf("run --help does not explain %s", flag)
		}
	}
}

// geomux run, then geomux send, then a graceful stop: the README's tour.
func TestCLIRunSendStop(t *testing.T) {
	ingress, admin, sandbox := freePort(t), freePort(t), freePort(t)
	cfg := localConfig(t, ingress, admin, sandbox)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"run", "--config", cfg}, &bytes.Buffer{}, &stderr) }()
	ready := func() bool {
		select {
		case code := <-done:
			t.Fatalf("geomux run exited %d early: %s", code, stderr.String())
		default:
		}
		resp, err := http.Get("http://" + ingress + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	natstest.Eventually(t, 20*time.Second, ready, "geomux to be ready")

	req, _ := http.NewRequest(http.MethodPut, "http://"+admin+"/admin/v1/accounts/cli-acct", strings.NewReader(`{"region":"eu"}`))
	req.Header.Set("Authorization", "Bearer cli-test-admin-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("set region: %v %v", resp, err)
	}
	resp.Body.Close()

	code, out, errOut := runCLI(t, "send", "--config", cfg, "--account", "cli-acct", "--text", "hi")
	if code != 0 || !strings.Contains(out, "200 OK") {
		t.Fatalf("send: exit %d, %s %s", code, out, errOut)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return strings.Contains(b.String(), `geomux_worker_replied_total{app="default",region="eu"} 1`)
	}, "the reply to be sent")

	// What the regions hold of the account, from the same config.
	code, out, errOut = runCLI(t, "accounts", "inventory", "cli-acct", "--config", cfg, "--json")
	var inv struct {
		AccountID string `json:"account_id"`
		Regions   map[string]struct {
			Tokens       bool `json:"tokens"`
			DeadLetters  int  `json:"dead_letters"`
			ReplyRecords int  `json:"reply_records"`
			ParkedEvents int  `json:"parked_events"`
			AuditEntries int  `json:"audit_entries"`
		} `json:"regions"`
	}
	if err := json.Unmarshal([]byte(out), &inv); code != 0 || err != nil {
		t.Fatalf("accounts inventory: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	if eu, ok := inv.Regions["eu"]; inv.AccountID != "cli-acct" || !ok || eu.ReplyRecords != 1 || eu.DeadLetters != 0 || eu.Tokens {
		t.Errorf("accounts inventory: %s", out)
	}
	code, out, _ = runCLI(t, "accounts", "inventory", "cli-acct", "--config", cfg)
	if code != 0 || !strings.Contains(out, "REGION") || !strings.Contains(out, "geomux holds data of account cli-acct") {
		t.Errorf("accounts inventory as a table: exit %d\n%s", code, out)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("run exited %d after stop: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("geomux run did not stop")
	}
}

func TestCLIRunPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := localConfig(t, l.Addr().String(), freePort(t), freePort(t))
	code, _, stderr := runCLI(t, "run", "--config", cfg)
	if code != 1 || !strings.Contains(stderr, "ingress cannot listen on "+l.Addr().String()) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
