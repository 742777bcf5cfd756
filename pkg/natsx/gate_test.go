package natsx_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx"
)

// A connection made at construction dials nothing until its gate opens:
// the embedded server starts later, and the connection, authenticated with
// the gate's in-memory key, connects then.
func TestGatedConnectionConnectsAtStart(t *testing.T) {
	c := config.Default().NATS
	c.StoreDir, c.Listen = t.TempDir(), ""
	g := &natsx.Gate{}
	nc, err := natsx.ConnectAtStart(c, true, g, "gated", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.Status() != nats.RECONNECTING {
		t.Fatalf("before the start: %s, want reconnecting (nothing dialled)", nc.Status())
	}
	ns, err := natsx.StartEmbedded(c, zap.NewNop(), g.User())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	g.Open(ns)
	if err := natsx.AwaitConnected(context.Background(), nc, g, "the embedded nats-server"); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request("$JS.API.INFO", nil, 5*time.Second); err != nil {
		t.Fatalf("JetStream through the gated connection: %v", err)
	}
}

// Nothing listening: the start fails within nats.connect_timeout, saying
// which NATS it could not reach and why.
func TestGatedConnectionSaysWhyItCannotConnect(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := config.Default().NATS
	c.URL, c.ConnectTimeout = "nats://"+addr, config.Duration(time.Second)
	g := &natsx.Gate{}
	nc, err := natsx.ConnectAtStart(c, false, g, "gated", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	g.Open(nil)
	start := time.Now()
	err = natsx.AwaitConnected(context.Background(), nc, g, natsx.Describe(c, false))
	if err == nil || !strings.Contains(err.Error(), "cannot reach NATS at nats://"+addr) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v, want it to name the URL and the refusal", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s, want about nats.connect_timeout (1 s)", took)
	}
}
