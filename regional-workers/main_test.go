package workers_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: a worker
// that keeps handling, a consumer, a NATS connection or server, an HTTP
// connection. Run by a test as a worker process of its own
// (GEOMUXTEST_WORKER_NATS set), the test binary is that worker instead.
func TestMain(m *testing.M) {
	if os.Getenv(envWorkerNATS) != "" {
		os.Exit(runWorkerProcess())
	}
	goleak.VerifyTestMain(m)
}
