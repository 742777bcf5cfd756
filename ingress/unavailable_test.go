package ingress_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/geomux/geomux/ingress"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/natsfx"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
	"github.com/geomux/geomux/proto"
)

// zoomPatience is how long Zoom waits for an answer before counting the
// delivery as failed: every answer, 503 included, must come before it.
const zoomPatience = 3 * time.Second

func postTimed(t *testing.T, url string, body []byte) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := http.DefaultClient.Do(zoomtest.NewRequest(url, secret, body, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

func startServer(t *testing.T, c config.NATS) *server.Server {
	t.Helper()
	ns, err := natsx.StartEmbedded(c, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// geomux's ingress on an external NATS (nats.url): when NATS goes away it
// answers 503 before Zoom gives up, and when NATS comes back it accepts
// events again by itself.
func TestExternalNATSDownAndBack(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	sc := config.Default().NATS
	sc.StoreDir, sc.Listen = t.TempDir(), addr
	ns := startServer(t, sc)

	cc := config.Default().NATS
	cc.URL = "nats://" + addr
	cc.Auth.NkeySeedFile = natsx.SeedFile(sc.StoreDir, natsx.RoleProcess)
	nc, err := natsx.Connect(cc, nil, "ingress-test", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := newJetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsx.EnsureStream(context.Background(), js, topology.TransitConfig(topology.OptionsFrom(config.Default()), 0)); err != nil {
		t.Fatal(err)
	}
	h := ingress.NewHandler(js, ingress.Options{
		Apps:           []ingress.App{{Name: config.DefaultAppName, Verifier: zoom.NewVerifier([]string{secret}, 5*time.Minute)}},
		PublishTimeout: 2 * time.Second,
	}, ingress.NewMetrics(prometheus.NewRegistry()), health.NewRegistry(), zap.NewNop())
	srv := httptest.NewServer(h)
	defer srv.Close()
	url := srv.URL + ingress.WebhookPath

	if status, _ := postTimed(t, url, zoomtest.BotNotification("a", "before", 1)); status != http.StatusOK {
		t.Fatalf("with NATS up: %d", status)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	natstest.Eventually(t, 5*time.Second, func() bool { return !nc.IsConnected() }, "the client to notice NATS is gone")
	for i := range 3 {
		status, took := postTimed(t, url, zoomtest.BotNotification("a", "during", int64(10+i)))
		if status != http.StatusServiceUnavailable {
			t.Fatalf("with NATS down: %d, want 503", status)
		}
		if took >= zoomPatience {
			t.Errorf("503 took %s: Zoom has given up by then", took)
		}
	}

	startServer(t, sc) // same address, same store
	natstest.Eventually(t, 15*time.Second, func() bool {
		status, _ := postTimed(t, url, zoomtest.BotNotification("a", "after", 20))
		return status == http.StatusOK
	}, "ingress to accept events again once NATS is back")
	s, err := js.Stream(context.Background(), proto.IngressStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("stream holds %d events, want the 2 answered 200", info.State.Msgs)
	}
}

// With the embedded store full, ingress answers 503 at once (Zoom retries
// later), never 200 for an event it could not store; once there is room
// again it accepts events.
func TestStoreFull(t *testing.T) {
	c := config.Default().NATS
	c.StoreDir, c.Listen = t.TempDir(), ""
	c.MaxStore = 2 << 20
	ns := startServer(t, c)
	nc, err := natsx.Connect(natsx.WithLocalAuth(c, natsx.RoleProcess), ns, "ingress-test", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := newJetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := natsx.EnsureStream(context.Background(), js, topology.TransitConfig(topology.OptionsFrom(config.Default()), 0))
	if err != nil {
		t.Fatal(err)
	}
	reg := health.NewRegistry()
	h := ingress.NewHandler(js, ingress.Options{
		Apps:           []ingress.App{{Name: config.DefaultAppName, Verifier: zoom.NewVerifier([]string{secret}, 5*time.Minute)}},
		PublishTimeout: 2 * time.Second,
	}, ingress.NewMetrics(prometheus.NewRegistry()), reg, zap.NewNop())
	srv := httptest.NewServer(h)
	defer srv.Close()
	url := srv.URL + ingress.WebhookPath

	pad := strings.Repeat("x", 200<<10)
	accepted := 0
	full := false
	for i := 0; i < 40 && !full; i++ {
		body := bytes.Replace(zoomtest.BotNotification("a", pad, int64(i)), []byte(`"Test"`), []byte(`"T"`), 1)
		status, took := postTimed(t, url, body)
		switch status {
		case http.StatusOK:
			accepted++
		case http.StatusServiceUnavailable:
			full = true
			if took >= zoomPatience {
				t.Errorf("503 took %s", took)
			}
		default:
			t.Fatalf("status %d", status)
		}
	}
	if !full {
		t.Fatal("a 2 MiB store took 8 MiB of events")
	}
	// Readiness says the store refuses writes, once a few in a row failed.
	if _, failures := reg.Report(); failures["store"] != "" {
		t.Errorf("not ready after one refused event: %q", failures["store"])
	}
	for i := range 2 {
		if status, _ := postTimed(t, url, zoomtest.BotNotification("a", pad, int64(50+i))); status != http.StatusServiceUnavailable {
			t.Fatalf("a full store answered %d", status)
		}
	}
	if _, failures := reg.Report(); !strings.Contains(failures["store"], "could not be stored") {
		t.Errorf("readiness with a full store: %q", failures)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if int(info.State.Msgs) != accepted {
		t.Errorf("%d events answered 200 but %d stored", accepted, info.State.Msgs)
	}
	// Room again (the router would have taken them): accepted again.
	if err := stream.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	if status, _ := postTimed(t, url, zoomtest.BotNotification("a", "small", 100)); status != http.StatusOK {
		t.Errorf("after room was made: %d", status)
	}
	if _, failures := reg.Report(); failures["store"] != "" {
		t.Errorf("readiness once events are stored again: %q", failures["store"])
	}
}

func newJetStream(nc *nats.Conn) (jetstream.JetStream, error) { return natsfx.NewJetStream(nc) }

// inProcessJetStream starts an embedded server and connects to it in
// process, without authentication.
func inProcessJetStream(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	sc := config.Default().NATS
	sc.StoreDir, sc.ListenWithoutAuth = t.TempDir(), true
	ns := startServer(t, sc)
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := newJetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// A publish the stream does not answer (its leader lost, an election under
// way) is tried again within the publish timeout, not answered 503 at the
// first silence: here the transit stream appears after two unanswered tries.
func TestPublishIsTriedAgainWithinItsTimeout(t *testing.T) {
	nc, js := inProcessJetStream(t)
	// Until the stream exists, this subscriber receives each try and, as a
	// stream without a leader, answers none.
	tries := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(proto.IngressSubject, tries)
	if err != nil {
		t.Fatal(err)
	}
	h := ingress.NewHandler(js, ingress.Options{
		Apps:           []ingress.App{{Name: config.DefaultAppName, Verifier: zoom.NewVerifier([]string{secret}, 5*time.Minute)}},
		PublishTimeout: 2 * time.Second,
	}, ingress.NewMetrics(prometheus.NewRegistry()), health.NewRegistry(), zap.NewNop())
	srv := httptest.NewServer(h)
	defer srv.Close()

	type answer struct {
		status int
		took   time.Duration
	}
	answered := make(chan answer, 1)
	go func() {
		status, took := postTimed(t, srv.URL+ingress.WebhookPath, zoomtest.BotNotification("a", "during an election", 1))
		answered <- answer{status, took}
	}()
	for range 2 {
		select {
		case <-tries:
		case a := <-answered:
			t.Fatalf("answered %d after %s, before a second try", a.status, a.took)
		case <-time.After(zoomPatience):
			t.Fatal("no try of the publish")
		}
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if _, err := natsx.EnsureStream(context.Background(), js, topology.TransitConfig(topology.OptionsFrom(config.Default()), 0)); err != nil {
		t.Fatal(err)
	}
	a := <-answered
	if a.status != http.StatusOK || a.took >= zoomPatience {
		t.Fatalf("answered %d after %s, want 200 within Zoom's 3 s", a.status, a.took)
	}
	s, err := js.Stream(context.Background(), proto.IngressStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(context.Background()); err != nil || info.State.Msgs != 1 {
		t.Fatalf("stored %v (%v), want the event once", info.State.Msgs, err)
	}
}

// A transit stream without a leader (lost with its server, an election
// taking longer than Zoom waits: nobody answers for it) holds up no event:
// each is stored in the next transit stream, well within Zoom's 3 s.
func TestEventGoesToAnotherTransitStreamWhenOneHasNoLeader(t *testing.T) {
	_, js := inProcessJetStream(t)
	// Transit stream 0 has no leader: it is not there, and nobody answers
	// on its subject. Stream 1 answers.
	so := topology.OptionsFrom(config.Default())
	so.TransitPartitions = 2
	other, err := natsx.EnsureStream(context.Background(), js, topology.TransitConfig(so, 1))
	if err != nil {
		t.Fatal(err)
	}
	h := ingress.NewHandler(js, ingress.Options{
		Apps:              []ingress.App{{Name: config.DefaultAppName, Verifier: zoom.NewVerifier([]string{secret}, 5*time.Minute)}},
		PublishTimeout:    2 * time.Second,
		TransitPartitions: 2,
	}, ingress.NewMetrics(prometheus.NewRegistry()), health.NewRegistry(), zap.NewNop())
	srv := httptest.NewServer(h)
	defer srv.Close()

	sent := 0
	for i := 0; sent < 4; i++ {
		account := fmt.Sprintf("acct-%d", i)
		if proto.TransitOf(account, 2) != 0 {
			continue // an account of stream 1 proves nothing here
		}
		status, took := postTimed(t, srv.URL+ingress.WebhookPath, zoomtest.BotNotification(account, "hi", int64(i)))
		if status != http.StatusOK || took >= zoomPatience/2 {
			t.Fatalf("%s: answered %d after %s, want 200 well within Zoom's 3 s", account, status, took)
		}
		sent++
	}
	if info, err := other.Info(context.Background()); err != nil || info.State.Msgs != uint64(sent) {
		t.Fatalf("stream 1 holds %v events (%v), want all %d", info.State.Msgs, err, sent)
	}
}
