package workers_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/httpx"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/proto"
	workers "github.com/geomux/geomux/regional-workers"
)

// A region's worker processes share its events, and a conversation stays in
// order across them: kill -9 one of two processes while they work through
// the events of a few conversations, and every event is still replied to,
// each conversation's replies in the order its events were stored.

const (
	envWorkerNATS    = "GEOMUXTEST_WORKER_NATS"
	envWorkerSeed    = "GEOMUXTEST_WORKER_SEED"
	envWorkerZoom    = "GEOMUXTEST_WORKER_ZOOM"
	envWorkerBackend = "GEOMUXTEST_WORKER_BACKEND"
)

// workerProcessTimeout is the handler timeout of the worker processes: a
// killed process's events come back after workers.AckWait of it.
const workerProcessTimeout = 2 * time.Second

// runWorkerProcess runs a worker of region us until SIGTERM, as a worker
// process of its own.
func runWorkerProcess() int {
	key, err := nats.NkeyOptionFromSeed(os.Getenv(envWorkerSeed))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	nc, err := nats.Connect(os.Getenv(envWorkerNATS), key)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hc := httpx.NewClient(httpx.Options{Retries: 0, WaitMin: time.Millisecond, WaitMax: 10 * time.Millisecond}, zap.NewNop())
	zurl := os.Getenv(envWorkerZoom)
	zc := zoom.NewClient(zoom.ClientConfig{ClientID: clientID, ClientSecret: clientSecret, APIBaseURL: zurl + "/v2", OAuthBaseURL: zurl}, hc)
	h := &workers.HTTPBackend{URL: os.Getenv(envWorkerBackend), Region: "us", Timeout: workerProcessTimeout / 2, Client: hc}
	opts := loadOptions("us")
	opts.HandlerTimeout = workerProcessTimeout
	opts.Retry = config.Retry{MaxAttempts: 20, Backoff: []config.Duration{config.Duration(50 * time.Millisecond)}}
	log := zap.NewNop()
	if os.Getenv("GEOMUXTEST_LOG") != "" {
		log, _ = zap.NewDevelopment()
	}
	w := workers.New(js, h, withBot(opts, zc), workers.NewMetrics(prometheus.NewRegistry()), log)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	ctx, cancel = context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// workerProcess is a worker process started by a test.
type workerProcess struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once it has exited, with err
	err    error
}

func startWorkerProcess(t *testing.T, ns *natstest.Server, zoomURL, backendURL string) *workerProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envWorkerNATS+"="+ns.NS.ClientURL(), envWorkerSeed+"="+natsx.SeedFile(ns.StoreDir, natsx.RoleProcess),
		envWorkerZoom+"="+zoomURL, envWorkerBackend+"="+backendURL)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &workerProcess{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(2 * waitFor):
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("worker process exited before it was ready: %v", p.err)
	case <-time.After(2 * waitFor):
		t.Fatal("worker process not ready")
	}
	return p
}

// orderBackend answers each event with a card naming its conversation and
// number, and records the order it was asked in, per conversation.
type orderBackend struct {
	mu    sync.Mutex
	asked map[string][]int
}

func (b *orderBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req proto.BackendRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	chat, _ := zoom.ParseChat(req.Payload)
	var conv string
	var n int
	_, _ = fmt.Sscanf(chat.Text, "%s %d", &conv, &n)
	b.mu.Lock()
	b.asked[conv] = append(b.asked[conv], n)
	b.mu.Unlock()
	// A little work, more for some events than others, and most for each
	// conversation's first: an event the other process took later could
	// overtake it, were it not for the order.
	d := time.Duration(3-n%4)*10*time.Millisecond + 10*time.Millisecond
	if n == 0 {
		d = workerProcessTimeout / 4
	}
	time.Sleep(d)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(proto.BackendResponse{Messages: []proto.ChatMessage{{Content: card(chat.Text)}}})
}

func TestConversationOrderAcrossProcessesAndKill(t *testing.T) {
	t.Parallel()
	c := config.Default().NATS
	c.Listen, c.StoreDir = "127.0.0.1:0", t.TempDir()
	ns := natstest.StartWith(t, c)
	z := newFakeZoom(t, nil)
	b := &orderBackend{asked: map[string][]int{}}
	backendURL := newServer(t, b)

	const convs, each = 6, 40
	wave := func(from, to int) {
		var events []published
		var owners []string
		for i := from; i < to; i++ {
			for cv := range convs {
				acct := fmt.Sprintf("acct-%d", cv%3)
				events = append(events, newPublished(userEvent(acct, cv, fmt.Sprintf("c%d %d", cv, i), int64(i*convs+cv))))
				owners = append(owners, acct)
			}
		}
		publishAll(t, ns.JS, "us", events, owners)
	}
	// The first process takes the first half of every conversation...
	victim := startWorkerProcess(t, ns, z.URL, backendURL)
	wave(0, each/2)
	natstest.Eventually(t, waitFor, func() bool { return len(z.SB.Delivered()) >= convs*each/8 }, "some replies")
	// ...and is killed with events of each in hand; the second process
	// gets the second half at once, and the first half's rest only once
	// the killed process's ack wait is over.
	startWorkerProcess(t, ns, z.URL, backendURL)
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-victim.exited
	if distinct(z.Texts()) == convs*each/2 {
		t.Fatal("the first process finished before it was killed: nothing was in hand")
	}
	wave(each/2, each)
	natstest.Eventually(t, 3*waitFor, func() bool { return distinct(z.Texts()) == convs*each }, "every event replied to after the kill")

	// Each conversation's replies, first sends in order: 0, 1, 2, ...
	next := map[string]int{}
	seen := map[string]bool{}
	for _, txt := range z.Texts() {
		if seen[txt] {
			continue // a reply the killed process sent, then could not record
		}
		seen[txt] = true
		var conv string
		var n int
		_, _ = fmt.Sscanf(txt, "%s %d", &conv, &n)
		if n != next[conv] {
			t.Errorf("conversation %s: reply %d went out when %d was next", conv, n, next[conv])
		}
		next[conv] = n + 1
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for conv, asked := range b.asked {
		for i := 1; i < len(asked); i++ {
			if asked[i] < asked[i-1] {
				t.Errorf("conversation %s: backend asked about %d after %d (%v)", conv, asked[i], asked[i-1], asked)
				break
			}
		}
	}
	t.Logf("%d replies, %d of them again after the kill", len(z.Texts()), len(z.Texts())-distinct(z.Texts()))
}

func distinct(texts []string) int {
	m := map[string]bool{}
	for _, t := range texts {
		m[strings.TrimSpace(t)] = true
	}
	return len(m)
}
