package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// The deployment of deploy/supercluster/ (topology A: a hub and an
// independent NATS system per region), run here for real: the repo's own
// nats-server configs, each server a process of its own (the test binary
// acting as nats-server, see runNATSEnv) with its config's variables in its
// environment (nats-server takes $VARS from there), and the repo's own
// geomux configs for separate geomux processes, with their site values given
// as GEOMUX_* variables.
//
// The servers run outside the test process for the same reason a deployment
// runs them apart: a clustered nats-server shut down while it is still
// applying its cluster's assignments can leave a stream store running, which
// would be taken for a leak of geomux's (goleak in TestMain).

// roles of each system's users.
var (
	hubRoles    = []string{"ingress", "router", "operator", "deployer", "auditor", "sys"}
	regionRoles = []string{"router", "worker", "operator", "deployer", "auditor", "sys"}
)

// ncSystem is one NATS system of the deployment.
type ncSystem struct {
	t       *testing.T
	name    string
	conf    string // the repo's config file, as used
	servers []*natsProc
	vars    []map[string]string // per server: its config's variables
	dirs    []string            // per server: its own directory (store, log)
	urls    []string            // client URLs (tls://)
	seeds   map[string]string
	tls     siteTLS // the system's CA and its servers' certificate
}

// port finds a free loopback port.
func port(t *testing.T) int {
	t.Helper()
	return ports(t, 1)[0]
}

// ports finds n free loopback ports, all different, where no listener on
// port 0 can land meanwhile (freePort).
func ports(t *testing.T, n int) []int {
	t.Helper()
	out := make([]int, n)
	for i := range n {
		_, p, _ := net.SplitHostPort(freePort(t))
		out[i], _ = strconv.Atoi(p)
	}
	return out
}

func secret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "k" + hex.EncodeToString(b)
}

var cipherLines = regexp.MustCompile(`(?m)^\s*(cipher|key):.*$`)

// startSystem starts n servers of system name from deploy/supercluster/nats/
// <name>.conf, with fresh nkeys per role (seeds written in keysDir). Without
// encryption, the JetStream store is plaintext, so that a search of the disk
// for canaries finds what leaked.
func startSystem(t *testing.T, name string, n int, keysDir string, encrypted bool) *ncSystem {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "supercluster", "nats", name+".conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(raw)
	if !encrypted {
		conf = cipherLines.ReplaceAllString(conf, "")
	}
	s := &ncSystem{t: t, name: name, conf: filepath.Join(t.TempDir(), name+".conf"), seeds: map[string]string{}}
	s.tls = newSiteTLS(t, keysDir, name)
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	roles := regionRoles
	if name == "hub" {
		roles = hubRoles
	}
	keyVars := map[string]string{}
	for _, role := range roles {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		f := filepath.Join(keysDir, role+"-"+name+".nk")
		if err := os.WriteFile(f, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		s.seeds[role] = f
		keyVars[strings.ToUpper(role)+"_NKEY"] = pub
	}
	clusterPW, jsKey := secret(), secret()
	free := ports(t, 3*n)
	clients, routes, monitors := free[:n], free[n:2*n], free[2*n:]
	for i := range n {
		s.urls = append(s.urls, fmt.Sprintf("tls://127.0.0.1:%d", clients[i]))
	}
	var routeURLs []string
	for i := range n {
		routeURLs = append(routeURLs, fmt.Sprintf("%q", fmt.Sprintf("nats-route://route:%s@127.0.0.1:%d", clusterPW, routes[i])))
	}
	for i := range n {
		dir := t.TempDir()
		cluster := fmt.Sprintf("127.0.0.1:%d", routes[i])
		if n == 1 {
			// nats-server 2.15 does not start JetStream in a one-server
			// cluster routed to itself: run it unclustered.
			cluster = "127.0.0.1:0"
		}
		vars := map[string]string{
			"SERVER_NAME":      fmt.Sprintf("%s-%d", name, i),
			"CLIENT_LISTEN":    fmt.Sprintf("127.0.0.1:%d", clients[i]),
			"MONITOR_LISTEN":   fmt.Sprintf("127.0.0.1:%d", monitors[i]),
			"CLUSTER_LISTEN":   cluster,
			"CLUSTER_ROUTES":   "[" + strings.Join(routeURLs, ", ") + "]",
			"CLUSTER_PASSWORD": clusterPW,
			"STORE_DIR":        filepath.Join(dir, "jetstream"),
			"TLS_CERT":         s.tls.cert,
			"TLS_KEY":          s.tls.key,
		}
		if encrypted {
			vars["JS_KEY"] = jsKey
		}
		for k, v := range keyVars {
			vars[k] = v
		}
		s.vars = append(s.vars, vars)
		s.dirs = append(s.dirs, dir)
		s.servers = append(s.servers, nil)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { s.servers[i] = s.start(i) })
	}
	wg.Wait()
	t.Cleanup(s.stopAll)
	return s
}

// natsProc is one nats-server process of a system.
type natsProc struct {
	cmd    *exec.Cmd
	exited chan error
}

// start starts server i and waits until it accepts clients.
func (s *ncSystem) start(i int) *natsProc {
	dir := s.dirs[i]
	ready := filepath.Join(dir, "ready")
	_ = os.Remove(ready)
	p := &natsProc{exited: make(chan error, 1)}
	p.cmd = exec.Command(os.Args[0], s.conf, filepath.Join(dir, "nats-server.log"), ready)
	p.cmd.Env = append(os.Environ(), runNATSEnv+"=1")
	for k, v := range s.vars[i] {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	p.cmd.Stdout, p.cmd.Stderr = &out, &out
	if err := p.cmd.Start(); err != nil {
		s.t.Errorf("system %s server %d: %v", s.name, i, err)
		return nil
	}
	go func() { p.exited <- p.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			return p
		}
		select {
		case err := <-p.exited:
			logged, _ := os.ReadFile(filepath.Join(dir, "nats-server.log"))
			s.t.Errorf("system %s server %d exited at start (%v): %s\n%s", s.name, i, err, out.String(), lastLines(logged, 10))
			return nil
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Errorf("system %s server %d not ready", s.name, i)
			_ = p.cmd.Process.Kill()
			<-p.exited
			return nil
		}
	}
}

// stop shuts server i down (as a crash would, for its clients): SIGTERM,
// then SIGKILL if it has not exited within 30 s.
func (s *ncSystem) stop(i int) {
	p := s.servers[i]
	if p == nil {
		return
	}
	s.servers[i] = nil
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		s.t.Errorf("system %s server %d did not stop; killed", s.name, i)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// kill kills server i at once (SIGKILL), as a crashed machine would.
func (s *ncSystem) kill(i int) {
	p := s.servers[i]
	if p == nil {
		return
	}
	s.servers[i] = nil
	_ = p.cmd.Process.Kill()
	<-p.exited
}

func (s *ncSystem) restart(i int) { s.servers[i] = s.start(i) }

func (s *ncSystem) stopAll() {
	for i := range s.servers {
		s.stop(i)
	}
}

func (s *ncSystem) url() string { return strings.Join(s.urls, ",") }

// connect connects as a role of this system.
func (s *ncSystem) connect(role string, opts ...nats.Option) (*nats.Conn, error) {
	o, err := nats.NkeyOptionFromSeed(s.seeds[role])
	if err != nil {
		return nil, err
	}
	return nats.Connect(s.url(), append([]nats.Option{o, nats.RootCAs(s.tls.ca), nats.Timeout(3 * time.Second)}, opts...)...)
}

// grep reports the files under dir that contain any of needles.
func grep(t *testing.T, dir string, needles []string) []string {
	t.Helper()
	var hits []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				hits = append(hits, fmt.Sprintf("%s holds %q", p, n))
			}
		}
		return nil
	})
	return hits
}

// role is a geomux process of the deployment.
type role struct {
	name   string
	cmd    *exec.Cmd
	logf   string
	exited chan error
}

// startRole runs geomux with args and the repo's config file, its site
// values in env, its log in dir, and waits for readyURL.
func startRole(t *testing.T, name, dir string, env []string, readyURL string, args ...string) *role {
	t.Helper()
	r := &role{name: name, logf: filepath.Join(dir, name+".log"), exited: make(chan error, 1)}
	f, err := os.Create(r.logf)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(os.Args[0], args...)
	r.cmd.Env = append(append(os.Environ(), runMainEnv+"=1"), env...)
	r.cmd.Stdout, r.cmd.Stderr = f, f
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- r.cmd.Wait(); f.Close() }()
	t.Cleanup(r.kill)
	waitReady(t, 60*time.Second, name, readyURL, r.exited, func() string {
		b, _ := os.ReadFile(r.logf)
		return string(b)
	})
	return r
}

func (r *role) kill() {
	if r.cmd.ProcessState == nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
}

// runTool runs a geomux command to its end and returns its exit code and
// output.
func runTool(env []string, args ...string) (int, string) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), runMainEnv+"=1"), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return code, string(out)
}

// lastLines is the end of a log: its last n lines.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
