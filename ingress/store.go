package ingress

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Watching the writes to JetStream. The ingress answers 503 for an event it
// could not store, and Zoom retries it later; /readyz says so too, so that
// an operator (or a load balancer) sees that the store refuses writes: a
// full disk, nats.max_store reached, a cluster without quorum. It is ready
// again at the next stored event, or storeQuiet after the last refusal, so
// that an ingress taken out of a load balancer gets events to try again.

// storeFailRun is how many events in a row not stored make the store
// suspect; storeQuiet is how long it stays suspect without a new try.
const (
	storeFailRun = 3
	storeQuiet   = 10 * time.Second
)

// storeWatch follows the outcome of the ingress's writes. It is on every
// event's path: atomics, and no write while all is well.
type storeWatch struct {
	failedInRow atomic.Int64
	lastFailure atomic.Int64 // unix ns
	lastError   atomic.Pointer[string]
}

// stored notes an event stored.
func (s *storeWatch) stored() {
	if s.failedInRow.Load() != 0 {
		s.failedInRow.Store(0)
	}
}

// failed notes an event that could not be stored, and why.
func (s *storeWatch) failed(err error, now time.Time) {
	msg := err.Error()
	s.lastError.Store(&msg)
	s.lastFailure.Store(now.UnixNano())
	s.failedInRow.Add(1)
}

// check is the readiness check at now: an error while the store is suspect.
func (s *storeWatch) check(now time.Time) error {
	n := s.failedInRow.Load()
	if n < storeFailRun || now.Sub(time.Unix(0, s.lastFailure.Load())) > storeQuiet {
		return nil
	}
	why := ""
	if e := s.lastError.Load(); e != nil {
		why = *e
	}
	return fmt.Errorf("the last %d events could not be stored in JetStream (%s): Zoom is answered 503 and retries later; free space (a full disk, nats.max_store) or restore the cluster", n, why)
}
