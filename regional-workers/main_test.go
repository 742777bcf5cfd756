package workers_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: a worker
// that keeps handling, a consumer, a NATS connection or server, an HTTP
// connection.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
