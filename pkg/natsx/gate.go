package natsx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
)

// Gate holds the dials of connections made with ConnectAtStart until Open:
// such a connection exists from construction on (reconnecting, nothing
// dialled), so that building a process does no I/O, and connects once the
// process starts and opens the gate. It dials the network (nats.url) or,
// given the embedded server at Open, connects in process.
type Gate struct {
	timeout time.Duration
	// key is the in-process connections' nkey, made in memory (no file):
	// the embedded server admits it (User).
	key nkeys.KeyPair

	mu   sync.Mutex
	open bool
	ns   *server.Server
	last error
}

var errNotStarted = errors.New("not started yet")

// Open lets the connections dial: in process to ns when it is not nil.
func (g *Gate) Open(ns *server.Server) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open, g.ns = true, ns
}

// Dial dials the network once the gate is open (nats.CustomDialer).
func (g *Gate) Dial(network, address string) (net.Conn, error) {
	g.mu.Lock()
	open, timeout := g.open, g.timeout
	g.mu.Unlock()
	if !open {
		return nil, errNotStarted
	}
	c, err := (&net.Dialer{Timeout: timeout}).Dial(network, address)
	g.failed(err)
	return c, err
}

// InProcessConn connects to the embedded server once the gate is open
// (nats.InProcessConnProvider).
func (g *Gate) InProcessConn() (net.Conn, error) {
	g.mu.Lock()
	open, ns := g.open, g.ns
	g.mu.Unlock()
	if !open || ns == nil {
		return nil, errNotStarted
	}
	c, err := ns.InProcessConn()
	g.failed(err)
	return c, err
}

func (g *Gate) failed(err error) {
	if err != nil {
		g.mu.Lock()
		g.last = err
		g.mu.Unlock()
	}
}

// User is the embedded server's user for the gate's in-process
// connections (nil when there are none).
func (g *Gate) User() *server.NkeyUser {
	g.mu.Lock()
	key := g.key
	g.mu.Unlock()
	if key == nil {
		return nil
	}
	pub, _ := key.PublicKey()
	return &server.NkeyUser{Nkey: pub}
}

// ConnectAtStart makes a connection to c.URL (or, inProcess, to the
// embedded server, as the gate's user) whose dials wait for gate (see
// Gate): no I/O here. AwaitConnected connects it.
func ConnectAtStart(c config.NATS, inProcess bool, gate *Gate, name string, log *zap.Logger) (*nats.Conn, error) {
	opts, err := options(c, name, log)
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.RetryOnFailedConnect(true), nats.ConnectHandler(func(*nats.Conn) {}))
	// The gate may be shared (a process's connections to its one NATS),
	// and a connection made before may be dialling through it already.
	gate.mu.Lock()
	gate.timeout = c.ConnectTimeout.D()
	if inProcess && gate.key == nil {
		gate.key, err = nkeys.CreateUser()
	}
	key := gate.key
	gate.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	url := c.URL
	if inProcess {
		pub, _ := key.PublicKey()
		opts = append(opts, nats.InProcessServer(gate), nats.Nkey(pub, key.Sign))
		url = ""
	} else {
		opts = append(opts, nats.SetCustomDialer(gate))
	}
	return nats.Connect(url, opts...)
}

// AwaitConnected has a connection made with ConnectAtStart connect now
// that its gate is open, and waits until it is connected, for at most
// nats.connect_timeout (or until ctx ends); what names the NATS in the
// error.
func AwaitConnected(ctx context.Context, nc *nats.Conn, gate *Gate, what string) error {
	gate.mu.Lock()
	timeout := gate.timeout
	gate.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, max(timeout, time.Second))
	defer cancel()
	_ = nc.ForceReconnect()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			gate.mu.Lock()
			last := gate.last
			gate.mu.Unlock()
			if last == nil {
				last = nc.LastError()
			}
			if last == nil {
				last = ctx.Err()
			}
			return fmt.Errorf("cannot reach %s: %w", what, last)
		case <-t.C:
		}
	}
	return nil
}

// Describe names a NATS for errors: its URLs, passwords hidden, or the
// embedded server.
func Describe(c config.NATS, inProcess bool) string {
	if inProcess {
		return "the embedded nats-server"
	}
	return "NATS at " + redact(c.URL)
}
