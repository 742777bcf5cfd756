package natsx

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/geomux/geomux/pkg/config"
)

// The embedded server's credentials. At its first start the embedded
// nats-server generates a user nkey per role and keeps each seed in its own
// file under <nats.store_dir>/auth (the directory 0700, the files 0600);
// from then on it admits only those keys. geomux's processes and the CLI
// find the seeds from the same config, with no step of their own: anyone
// else on the machine is refused, unless nats.listen_without_auth opens
// the port as before.

// The roles of the embedded server's keys.
const (
	// RoleProcess is geomux's own processes on this machine (the embedded
	// server's host, and `geomux run --target ...` beside it).
	RoleProcess = "geomux"
	// RoleOperator is the operators' CLI (geomux dlq, setup, audit) and
	// the official nats CLI (nats --nkey <seed file>).
	RoleOperator = "operator"
)

var embeddedRoles = []string{RoleProcess, RoleOperator}

// AuthDir is where the embedded server keeps its keys' seeds.
func AuthDir(storeDir string) string { return filepath.Join(storeDir, "auth") }

// SeedFile is the seed file of role's key.
func SeedFile(storeDir, role string) string {
	return filepath.Join(AuthDir(storeDir), role+".nk")
}

// embeddedUsers returns the embedded server's users, one per role, creating
// the keys missing (the first start).
func embeddedUsers(storeDir string) ([]*server.NkeyUser, error) {
	dir := AuthDir(storeDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	if err := private(dir, 0o700); err != nil {
		return nil, err
	}
	users := make([]*server.NkeyUser, 0, len(embeddedRoles))
	for _, role := range embeddedRoles {
		pub, err := ensureSeed(SeedFile(storeDir, role))
		if err != nil {
			return nil, err
		}
		// No permissions: each key may do anything in the account, as the
		// processes of the one-machine default host every role.
		users = append(users, &server.NkeyUser{Nkey: pub})
	}
	return users, nil
}

// ensureSeed reads the user seed at path, or creates it, and returns its
// public key.
func ensureSeed(path string) (string, error) {
	seed, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return "", fmt.Errorf("nats credentials: %w", err)
		}
		if seed, err = kp.Seed(); err != nil {
			return "", fmt.Errorf("nats credentials: %w", err)
		}
		// O_EXCL: two processes starting at once never overwrite each
		// other's key.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", fmt.Errorf("nats credentials: %w", err)
		}
		_, werr := f.Write(append(seed, '\n'))
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			return "", fmt.Errorf("nats credentials: write %s: %w", path, err)
		}
	} else if err != nil {
		return "", fmt.Errorf("nats credentials: %w", err)
	}
	if err := private(path, 0o600); err != nil {
		return "", err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		return "", fmt.Errorf("nats credentials: %s holds no user nkey seed: %w", path, err)
	}
	defer kp.Wipe()
	return kp.PublicKey()
}

// private refuses a file or directory that others than its owner may read.
func private(path string, want fs.FileMode) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("nats credentials: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("nats credentials: %s is open to other users (mode %o); run chmod %o %s", path, st.Mode().Perm(), want, path)
	}
	return nil
}

// WithLocalAuth fills in the embedded server's key for role when c has no
// credentials of its own and connects to this machine's embedded server:
// in-process (no nats.url) or through nats.listen (a loopback URL), its
// seed found under nats.store_dir. Otherwise c is returned as it is.
func WithLocalAuth(c config.NATS, role string) config.NATS {
	a := c.Auth
	if a.CredsFile != "" || a.NkeySeedFile != "" || a.User != "" || c.StoreDir == "" {
		return c
	}
	if c.URL != "" && !loopbackURLs(c.URL) {
		return c
	}
	seed := SeedFile(c.StoreDir, role)
	if _, err := os.Stat(seed); err != nil {
		return c
	}
	c.Auth.NkeySeedFile = seed
	return c
}

// loopbackURLs reports whether every URL of a comma-separated list points
// at this machine.
func loopbackURLs(urls string) bool {
	for _, u := range strings.Split(urls, ",") {
		p, err := neturl.Parse(strings.TrimSpace(u))
		if err != nil {
			return false
		}
		h := p.Hostname()
		if ip := net.ParseIP(h); h != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return false
		}
	}
	return true
}
