package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// runMainEnv makes the test binary act as geomux itself, so that tests can
// run geomux as a separate process (and kill it) without building it.
const runMainEnv = "GEOMUXTEST_RUN_MAIN"

// TestMain fails the package if a test leaves goroutines behind: every
// geomux it starts must stop completely.
func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	code := m.Run()
	// The tests' own client keeps connections alive; those are not geomux's.
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
