// Package natstest runs a real nats-server with JetStream inside a test
// process: the embedded server geomux itself uses, storing under a directory
// of the test's.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx"
)

// Server is a running test server and a connection to it.
type Server struct {
	NS       *server.Server
	Conn     *nats.Conn
	JS       jetstream.JetStream
	StoreDir string
}

// Start runs a server storing in storeDir (t.TempDir() when empty), connects
// to it in-process, and stops both when the test ends.
func Start(t testing.TB, storeDir string) *Server {
	t.Helper()
	c := config.Default().NATS
	c.StoreDir, c.Listen = storeDir, ""
	return StartWith(t, c)
}

// StartWith is Start with a NATS config section (StoreDir t.TempDir() when
// empty), e.g. to try nats.sync_always.
func StartWith(t testing.TB, c config.NATS) *Server {
	t.Helper()
	if c.StoreDir == "" {
		c.StoreDir = t.TempDir()
	}
	storeDir := c.StoreDir
	ns, err := natsx.StartEmbedded(c, zap.NewNop())
	if err != nil {
		t.Fatalf("natstest: start server: %v", err)
	}
	nc, err := natsx.Connect(natsx.WithLocalAuth(c, natsx.RoleProcess), ns, "test", zap.NewNop())
	if err != nil {
		ns.Shutdown()
		t.Fatalf("natstest: connect: %v", err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	s := &Server{NS: ns, Conn: nc, JS: js, StoreDir: storeDir}
	t.Cleanup(s.Stop)
	return s
}

// Auth is the option that authenticates a connection of the test's own to
// the server (with geomux's processes' key), e.g. over its listener.
func (s *Server) Auth(t testing.TB) nats.Option {
	t.Helper()
	o, err := nats.NkeyOptionFromSeed(natsx.SeedFile(s.StoreDir, natsx.RoleProcess))
	if err != nil {
		t.Fatalf("natstest: credentials: %v", err)
	}
	return o
}

// Stop closes the connection and shuts the server down (idempotent).
func (s *Server) Stop() {
	s.Conn.Close()
	s.NS.Shutdown()
	s.NS.WaitForShutdown()
}

// Config is a NATS config section using this server's store directory, for
// code that starts its own embedded server (nats.url empty, no listener).
func (s *Server) Config() config.NATS {
	c := config.Default().NATS
	c.StoreDir, c.Listen = s.StoreDir, ""
	return c
}

// Eventually polls cond every 10 ms until it holds, failing the test with
// msg if it does not within timeout.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
