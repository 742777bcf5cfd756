package natsx_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx"
)

// startListening starts the embedded server on a free loopback port.
func startListening(t *testing.T, c config.NATS, log *zap.Logger) (*server.Server, string) {
	t.Helper()
	c.Listen = "127.0.0.1:0"
	ns, err := natsx.StartEmbedded(c, log)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns, "nats://" + ns.Addr().(*net.TCPAddr).String()
}

// A stranger on the machine is refused by the embedded server; geomux's
// own keys, generated at the first start and kept private, are admitted,
// and found from the config alone.
func TestEmbeddedServerAdmitsOnlyItsKeys(t *testing.T) {
	c := natsConfig(t, "")
	_, url := startListening(t, c, zap.NewNop())

	if nc, err := nats.Connect(url, nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a client without credentials was admitted")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("a client without credentials: %v, want an authorization violation", err)
	}
	// A key of its own making is refused too.
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	stranger := filepath.Join(t.TempDir(), "stranger.nk")
	if err := os.WriteFile(stranger, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := nats.NkeyOptionFromSeed(stranger)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(url, nats.Timeout(2*time.Second), o); err == nil {
		nc.Close()
		t.Error("a key the server did not generate was admitted")
	}

	dir := natsx.AuthDir(c.StoreDir)
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v, mode %v, want 0700", dir, err, st.Mode().Perm())
	}
	for _, role := range []string{natsx.RoleProcess, natsx.RoleOperator} {
		seed := natsx.SeedFile(c.StoreDir, role)
		if st, err := os.Stat(seed); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, want a 0600 file", seed, err)
		}
		// The config alone leads a client to the key (the CLI, a process).
		cc := c
		cc.URL = url
		cc.Auth = config.NATSAuth{}
		nc, err := natsx.Connect(natsx.WithLocalAuth(cc, role), nil, "test", zap.NewNop())
		if err != nil {
			t.Fatalf("%s with its key: %v", role, err)
		}
		nc.Close()
	}
}

// The keys are made once: a restart admits the same seeds.
func TestEmbeddedKeysSurviveARestart(t *testing.T) {
	c := natsConfig(t, "")
	ns, _ := startListening(t, c, zap.NewNop())
	seed, err := os.ReadFile(natsx.SeedFile(c.StoreDir, natsx.RoleOperator))
	if err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	_, url := startListening(t, c, zap.NewNop())
	again, err := os.ReadFile(natsx.SeedFile(c.StoreDir, natsx.RoleOperator))
	if err != nil || string(again) != string(seed) {
		t.Fatalf("the operator's seed changed across a restart (%v)", err)
	}
	o, err := nats.NkeyOptionFromSeed(natsx.SeedFile(c.StoreDir, natsx.RoleOperator))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second), o)
	if err != nil {
		t.Fatalf("the same key after a restart: %v", err)
	}
	nc.Close()
}

// A seed others may read is refused at start, with what to do about it.
func TestEmbeddedKeysMustBePrivate(t *testing.T) {
	c := natsConfig(t, "")
	ns, _ := startListening(t, c, zap.NewNop())
	ns.Shutdown()
	ns.WaitForShutdown()
	seed := natsx.SeedFile(c.StoreDir, natsx.RoleProcess)
	if err := os.Chmod(seed, 0o644); err != nil {
		t.Fatal(err)
	}
	c.Listen = "127.0.0.1:0"
	ns, err := natsx.StartEmbedded(c, zap.NewNop())
	if err == nil {
		ns.Shutdown()
		t.Fatal("the server started with a seed readable by others")
	}
	if !strings.Contains(err.Error(), "chmod 600 "+seed) {
		t.Errorf("error %q does not say how to fix it", err)
	}
}

// nats.listen_without_auth opens the port as before, and says so at every
// start.
func TestListenWithoutAuthWarns(t *testing.T) {
	c := natsConfig(t, "")
	c.ListenWithoutAuth = true
	core, logs := observer.New(zap.WarnLevel)
	_, url := startListening(t, c, zap.New(core))
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("listen_without_auth: a client without credentials: %v", err)
	}
	nc.Close()
	if logs.FilterMessageSnippet("listen_without_auth").Len() != 1 {
		t.Errorf("no warning about the open port: %v", logs.All())
	}
}
