package natsx_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/proto"
)

func natsConfig(t *testing.T, listen string) config.NATS {
	c := config.Default().NATS
	c.StoreDir, c.Listen = t.TempDir(), listen
	return c
}

func TestStartEmbeddedPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()

	start := time.Now()
	ns, err := natsx.StartEmbedded(natsConfig(t, addr), zap.NewNop())
	if err == nil {
		ns.Shutdown()
		t.Fatalf("StartEmbedded on the taken %s succeeded", addr)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("failing took %s, want fast", d)
	}
	if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "nats.listen") {
		t.Errorf("error %q does not name nats.listen %s", err, addr)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %v does not wrap EADDRINUSE", err)
	}
}

func TestStartEmbeddedBadListen(t *testing.T) {
	for _, listen := range []string{"4222", "127.0.0.1:http-alt", "127.0.0.1:4222:1"} {
		ns, err := natsx.StartEmbedded(natsConfig(t, listen), zap.NewNop())
		if err == nil {
			ns.Shutdown()
			t.Errorf("StartEmbedded(listen %q) succeeded", listen)
			continue
		}
		if !strings.Contains(err.Error(), "nats.listen") {
			t.Errorf("listen %q: error %q does not name nats.listen", listen, err)
		}
	}
}

func TestStartEmbeddedListens(t *testing.T) {
	// Find a free port, then let the server take it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	c := natsConfig(t, addr)
	ns, err := natsx.StartEmbedded(c, zap.NewNop())
	if err != nil {
		t.Fatalf("StartEmbedded(%s): %v", addr, err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.JetStreamEnabled() {
		t.Error("JetStream is not enabled")
	}
	if got := ns.JetStreamConfig().StoreDir; !strings.HasPrefix(got, c.StoreDir) {
		t.Errorf("store dir = %s, want under %s", got, c.StoreDir)
	}

	// A client (the CLI, another process) reaches it over TCP, with a key.
	key, err := nats.NkeyOptionFromSeed(natsx.SeedFile(c.StoreDir, natsx.RoleOperator))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+addr, nats.Timeout(2*time.Second), key)
	if err != nil {
		t.Fatalf("connect over TCP to %s: %v", addr, err)
	}
	defer nc.Close()
	if got := nc.MaxPayload(); got < 2<<20 {
		t.Errorf("max payload = %d, want at least 2 MiB for a 1 MiB Zoom body", got)
	}
	// And the in-process connection works too.
	inproc, err := natsx.Connect(natsx.WithLocalAuth(c, natsx.RoleProcess), ns, "test", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer inproc.Close()
	sub, err := inproc.SubscribeSync("hello")
	if err != nil {
		t.Fatal(err)
	}
	// The subscription is known to the server once the flush returns.
	if err := inproc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("hello", []byte("world")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(2 * time.Second)
	if err != nil || string(m.Data) != "world" {
		t.Errorf("message across connections = %v, %v", m, err)
	}
}

func TestConnectExternalRedactsPassword(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	c := config.Default().NATS
	c.URL = "nats://geomux:hunter2@" + addr
	c.ConnectTimeout = config.Duration(500 * time.Millisecond)
	nc, err := natsx.Connect(c, nil, "test", zap.NewNop())
	if err == nil {
		nc.Close()
		t.Fatal("Connect to a closed port succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks the password: %q", err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the URL %s", err, addr)
	}
}

func streamOpts() topology.Options {
	return topology.OptionsFrom(config.Default())
}

func TestEnsureStreamIdempotent(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx := t.Context()
	cfg := topology.TransitConfig(streamOpts(), 0)

	s1, err := natsx.EnsureStream(ctx, srv.JS, cfg)
	if err != nil {
		t.Fatalf("first EnsureStream: %v", err)
	}
	if _, err := srv.JS.Publish(ctx, proto.IngressSubject, []byte("event-1"), jetstream.WithMsgID("id-1")); err != nil {
		t.Fatal(err)
	}

	s2, err := natsx.EnsureStream(ctx, srv.JS, cfg)
	if err != nil {
		t.Fatalf("second EnsureStream: %v", err)
	}
	info, err := s2.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages after EnsureStream again, want the 1 kept", info.State.Msgs)
	}
	if info.Config.Name != cfg.Name || info.Config.Retention != jetstream.WorkQueuePolicy || info.Config.Duplicates != topology.MsgIDWindow {
		t.Errorf("stream config = %+v", info.Config)
	}
	if s1.CachedInfo().Created != info.Created {
		t.Error("the second EnsureStream created a new stream")
	}
	// Dedup still works across the two: the same id is dropped.
	ack, err := srv.JS.Publish(ctx, proto.IngressSubject, []byte("event-1"), jetstream.WithMsgID("id-1"))
	if err != nil || !ack.Duplicate {
		t.Errorf("republish of id-1: %+v, %v; want a duplicate", ack, err)
	}

	// A changed setting is applied, and the messages stay.
	cfg.Duplicates = time.Hour
	s3, err := natsx.EnsureStream(ctx, srv.JS, cfg)
	if err != nil {
		t.Fatalf("EnsureStream with a new dedup window: %v", err)
	}
	info, _ = s3.Info(ctx)
	if info.Config.Duplicates != time.Hour || info.State.Msgs != 1 {
		t.Errorf("after update: duplicates %s, %d msgs", info.Config.Duplicates, info.State.Msgs)
	}

	// Many concurrent callers (every role sets up at start) all succeed.
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := natsx.EnsureStream(ctx, srv.JS, topology.RegionEventsConfig("eu", streamOpts()))
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent EnsureStream: %v", err)
		}
	}
}

func TestEnsureStreamConflict(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := natsx.EnsureStream(ctx, srv.JS, topology.TransitConfig(streamOpts(), 0)); err != nil {
		t.Fatal(err)
	}
	// Another stream on the same subject: a permanent error, reported at once.
	other := jetstream.StreamConfig{Name: "OTHER", Subjects: []string{proto.IngressSubject}}
	start := time.Now()
	_, err := natsx.EnsureStream(ctx, srv.JS, other)
	if err == nil {
		t.Fatal("EnsureStream with overlapping subjects succeeded")
	}
	if !strings.Contains(err.Error(), "set up stream OTHER") {
		t.Errorf("error %q does not name the stream", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a permanent error took %s: it was retried", d)
	}
}

func TestEnsureStreamWithoutJetStreamGivesUpWithContext(t *testing.T) {
	ns, err := server.NewServer(&server.Options{DontListen: true, NoSigs: true, JetStream: false})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = natsx.EnsureKeyValue(ctx, js, topology.DirectoryConfig(topology.Options{}))
	if err == nil {
		t.Fatal("EnsureKeyValue without JetStream succeeded")
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("gave up after %s, want when the 300ms context ended (it retries a transient error)", d)
	}
	if !strings.Contains(err.Error(), "set up bucket "+proto.DirectoryBucket) {
		t.Errorf("error %q does not name the bucket", err)
	}
}

func TestEnsureKeyValueIdempotent(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx := t.Context()
	kv, err := natsx.EnsureKeyValue(ctx, srv.JS, topology.DirectoryConfig(topology.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "acct", []byte(`{"region":"eu"}`)); err != nil {
		t.Fatal(err)
	}
	kv2, err := natsx.EnsureKeyValue(ctx, srv.JS, topology.DirectoryConfig(topology.Options{}))
	if err != nil {
		t.Fatalf("second EnsureKeyValue: %v", err)
	}
	e, err := kv2.Get(ctx, "acct")
	if err != nil || string(e.Value()) != `{"region":"eu"}` {
		t.Errorf("value after EnsureKeyValue again = %v, %v", e, err)
	}
	st, err := kv2.Status(ctx)
	if err != nil || st.History() != 5 || st.Bucket() != proto.DirectoryBucket {
		t.Errorf("bucket status = %+v, %v", st, err)
	}
}

func TestStreamConfigs(t *testing.T) {
	c := config.Default()
	c.Router.ParkTTL = config.Duration(time.Hour) // shorter than the dedup window
	o := topology.OptionsFrom(c)
	if o.DedupWindow != 2*time.Hour || o.ParkTTL != time.Hour || o.DeadLetterMaxAge != 30*24*time.Hour {
		t.Errorf("StreamOptionsFrom = %+v", o)
	}
	if p := topology.ParkedStreamConfig(o); p.Duplicates != time.Hour || p.MaxAge != time.Hour {
		t.Errorf("parked: duplicates %s, max age %s; the dedup window cannot exceed the TTL", p.Duplicates, p.MaxAge)
	}
	if dl := topology.RegionDeadLetterConfig("eu-west", o); dl.MaxAge != o.DeadLetterMaxAge || dl.Name != proto.RegionDeadLetterStream("eu-west") {
		t.Errorf("dead letters = %+v", dl)
	}

	// Every stream and bucket of a region is accepted by a real server.
	srv := natstest.Start(t, "")
	ctx := t.Context()
	for _, sc := range []jetstream.StreamConfig{
		topology.TransitConfig(o, 0), topology.ParkedStreamConfig(o),
		topology.RegionEventsConfig("eu-west", o), topology.RegionDeadLetterConfig("eu-west", o),
	} {
		if _, err := natsx.EnsureStream(ctx, srv.JS, sc); err != nil {
			t.Errorf("stream %s: %v", sc.Name, err)
		}
	}
	if _, err := natsx.EnsureKeyValue(ctx, srv.JS, topology.RepliesConfig("eu-west", topology.OptionsFrom(config.Default()))); err != nil {
		t.Errorf("replies bucket: %v", err)
	}
}

// nats.listen with port 0 conventionally asks for any free port; nats-server
// reads Port 0 as its default, 4222.
func TestStartEmbeddedPortZero(t *testing.T) {
	// Port 0 means any free port, even while a local geomux holds 4222.
	host := "127.0.0.1"
	ns, err := natsx.StartEmbedded(natsConfig(t, net.JoinHostPort(host, "0")), zap.NewNop())
	if err != nil {
		t.Fatalf("StartEmbedded(%s:0): %v", host, err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	addr, ok := ns.Addr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("server address %v", ns.Addr())
	}
	if addr.Port == 4222 {
		t.Errorf("nats.listen %s:0 bound the fixed port 4222, not a free one", host)
	}
	if addr.Port == 0 {
		t.Errorf("server address %v has no port", addr)
	}
}

func TestStartEmbeddedMonitor(t *testing.T) {
	c := natsConfig(t, "")
	c.MonitorListen = "127.0.0.1:0"
	ns, err := natsx.StartEmbedded(c, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	addr := ns.MonitorAddr()
	if addr == nil {
		t.Fatal("no monitoring listener")
	}
	resp, err := http.Get("http://" + addr.String() + "/jsz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jsz struct {
		Config struct {
			StoreDir string `json:"store_dir"`
		} `json:"config"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil || resp.StatusCode != 200 || jsz.Config.StoreDir == "" {
		t.Fatalf("/jsz: %d %+v %v", resp.StatusCode, jsz, err)
	}

	// Without nats.monitor_listen there is none.
	quiet, err := natsx.StartEmbedded(natsConfig(t, ""), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Shutdown()
	if a := quiet.MonitorAddr(); a != nil {
		t.Errorf("a monitoring listener on %s without nats.monitor_listen", a)
	}
}
