package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// process is geomux running as a separate process: the test binary itself
// (see runMainEnv), with `run --config`.
type process struct {
	t      *testing.T
	cfg    string
	cmd    *exec.Cmd
	stderr bytes.Buffer
	exited chan error
}

func startProcess(t *testing.T, cfg, readyURL string) *process {
	t.Helper()
	p := &process{t: t, cfg: cfg, exited: make(chan error, 1)}
	p.cmd = exec.Command(os.Args[0], "run", "--config", cfg)
	p.cmd.Env = append(os.Environ(), runMainEnv+"=1")
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	waitReady(t, 30*time.Second, "geomux", readyURL, p.exited, p.stderr.String)
	return p
}

// waitReady waits until readyURL answers 200, and fails the test with the
// process's output if it exits first.
func waitReady(t *testing.T, timeout time.Duration, name, readyURL string, exited <-chan error, output func() string) {
	t.Helper()
	natstest.Eventually(t, timeout, func() bool {
		select {
		case err := <-exited:
			t.Fatalf("%s exited at start (%v):\n%s", name, err, output())
		default:
		}
		resp, err := http.Get(readyURL)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "%s to be ready", name)
}

// kill sends SIGKILL: no shutdown, no flush, no goodbye.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// processConfig is a config for a geomux process talking to the test's fake
// Zoom, with echo regions us and eu.
func processConfig(t *testing.T, storeDir, ingress, admin, zoomURL, extra string) string {
	return writeConfig(t, fmt.Sprintf(`
log: {level: warn, format: json}
nats: {url: "", store_dir: %q, listen: ""}
ingress: {listen: %q}
admin: {listen: %q, token: %s}
zoom:
  webhook_secret_tokens: [%s]
  client_id: e2e-id
  client_secret: e2e-secret
  bot_jid: %s
  api_base_url: %s/v2
  oauth_base_url: %s
retry: {max_attempts: 5, backoff: ["100ms"]}
shutdown_timeout: 20s
%s`, storeDir, ingress, admin, e2eAdminToken, e2eSecret, e2eBotJID, zoomURL, zoomURL, extra))
}

func adminPut(t *testing.T, admin, account, region string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+admin+"/admin/v1/accounts/"+account, strings.NewReader(`{"region":"`+region+`"}`))
	req.Header.Set("Authorization", "Bearer "+e2eAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("set region of %s: %d", account, resp.StatusCode)
	}
}

// Nothing answered 200 is lost: geomux is killed with SIGKILL at random
// moments under concurrent load, restarted on the same store each time, and
// at the end every event that was answered 200 has had its reply.
func TestKill9UnderLoadLosesNothing(t *testing.T) {
	zoom := newFakeZoom(t)
	ingress, admin := freePort(t), freePort(t)
	cfg := processConfig(t, t.TempDir(), ingress, admin, zoom.srv.URL, `
worker: {handler_timeout: 500ms}
regions:
  - {name: us, handler: echo}
  - {name: eu, handler: echo}
`)
	ready := "http://" + admin + "/readyz"
	webhook := "http://" + ingress + "/zoom/webhook"

	var mu sync.Mutex
	accepted := map[string]bool{} // reply text of every event answered 200
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var n atomic.Int64

	const rounds = 6
	for round := 0; round < rounds; round++ {
		p := startProcess(t, cfg, ready)
		if round == 0 {
			adminPut(t, admin, "acct-us", "us")
			adminPut(t, admin, "acct-eu", "eu")
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var acceptedThisRound atomic.Int64
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					i := n.Add(1)
					account := []string{"acct-us", "acct-eu"}[i%2]
					text := fmt.Sprintf("round %d event %d", round, i)
					status, err := zoomtest.Post(client, webhook, e2eSecret, zoomtest.BotNotification(account, text, i))
					if err == nil && status == http.StatusOK {
						mu.Lock()
						accepted[text] = true
						mu.Unlock()
						acceptedThisRound.Add(1)
					}
				}
			}()
		}
		// Kill at a different point of the load every round.
		target := int64(20 + rand.IntN(200))
		natstest.Eventually(t, 30*time.Second, func() bool { return acceptedThisRound.Load() >= target }, "%d events accepted", target)
		p.kill()
		close(stop)
		wg.Wait()
	}

	p := startProcess(t, cfg, ready)
	delivered := func() (missing []string, dups int) {
		seen := map[string]int{}
		for _, d := range zoom.sb.Delivered() {
			seen[d.Text]++
		}
		mu.Lock()
		defer mu.Unlock()
		for text := range accepted {
			if seen[text] == 0 {
				missing = append(missing, text)
			}
		}
		for _, c := range seen {
			dups += c - 1
		}
		return missing, dups
	}
	natstest.Eventually(t, 90*time.Second, func() bool { m, _ := delivered(); return len(m) == 0 },
		"every accepted event's reply (%d accepted)", len(accepted))
	_, dups := delivered()
	t.Logf("%d events accepted over %d kills; every one replied to; %d duplicate replies", len(accepted), rounds, dups)

	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, p.stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("geomux did not exit after SIGTERM")
	}
}

// SIGTERM: /readyz turns 503 at once, the ingress stops accepting, the event
// in hand is finished, and the process exits cleanly within shutdown_timeout.
func TestSIGTERMDrains(t *testing.T) {
	zoom := newFakeZoom(t)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	backend := newFakeBackend(t, "eu")
	backend.setFail(func(int) int {
		entered <- struct{}{}
		<-release
		return 0
	})
	ingress, admin := freePort(t), freePort(t)
	cfg := processConfig(t, t.TempDir(), ingress, admin, zoom.srv.URL, fmt.Sprintf(`
worker: {handler_timeout: 12s}
regions:
  - {name: eu, handler: http, backend_url: %q, timeout: 10s}
`, backend.srv.URL))
	p := startProcess(t, cfg, "http://"+admin+"/readyz")
	adminPut(t, admin, "acct-eu", "eu")
	if status, err := zoomtest.Post(http.DefaultClient, "http://"+ingress+"/zoom/webhook", e2eSecret, zoomtest.BotNotification("acct-eu", "in flight", 1)); err != nil || status != 200 {
		t.Fatalf("webhook: %d %v", status, err)
	}
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the event never reached the backend")
	}

	stoppedAt := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, "/readyz to turn 503")
	natstest.Eventually(t, 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", ingress, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, "the ingress listener to close")
	if len(zoom.sb.Delivered()) != 0 {
		t.Fatal("replied before the backend answered")
	}
	close(release)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, p.stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("geomux did not exit within shutdown_timeout")
	}
	if took := time.Since(stoppedAt); took > 10*time.Second {
		t.Errorf("stop took %s, over shutdown_timeout", took)
	}
	if got := zoom.sb.Delivered(); len(got) != 1 || got[0].Text != "eu: in flight" {
		t.Errorf("the event in hand was not finished before exit: %d replies", len(got))
	}
}
