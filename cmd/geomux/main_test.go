package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
)

// runMainEnv makes the test binary act as geomux itself, so that tests can
// run geomux as a separate process (and kill it) without building it.
const runMainEnv = "GEOMUXTEST_RUN_MAIN"

// runNATSEnv makes the test binary act as one nats-server of a deployment:
// arguments config file, log file, and a file to create once the server
// accepts clients; it shuts down on SIGTERM.
const runNATSEnv = "GEOMUXTEST_RUN_NATS"

// TestMain fails the package if a test leaves goroutines behind: every
// geomux it starts must stop completely.
func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	if os.Getenv(runNATSEnv) == "1" {
		os.Exit(runNATSServer(os.Args[1:]))
	}
	code := m.Run()
	// The tests' own client keeps connections alive; those are not geomux's.
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		// Pebble's validator (https_e2e_test.go) has no stop.
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/letsencrypt/pebble/v2/va.VAImpl.processTasks")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func runNATSServer(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "want: config log-file ready-file")
		return 2
	}
	opts, err := server.ProcessConfigFile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts.NoSigs, opts.LogFile = true, args[1]
	ns, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ns.ConfigureLogger()
	ns.Start()
	if !ns.ReadyForConnections(20 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats-server not ready for connections")
		return 1
	}
	if err := os.WriteFile(args[2], nil, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	<-sigs
	ns.Shutdown()
	ns.WaitForShutdown()
	return 0
}
