package workers

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gate caps a region's concurrent backend calls. A backend that asks the
// region to slow down (429 or 503 with Retry-After) closes the gate for
// that long and halves the cap; each call that succeeds raises it by one,
// back up to the configured cap.
type gate struct {
	mu       sync.Mutex
	limit    float64
	max      int
	inFlight int
	until    time.Time     // no call starts before
	changed  chan struct{} // closed and replaced when a call may start
	gauge    prometheus.Gauge
}

func newGate(max int, gauge prometheus.Gauge) *gate {
	return &gate{limit: float64(max), max: max, changed: make(chan struct{}), gauge: gauge}
}

// acquire waits for room and for the pause to be over.
func (g *gate) acquire(ctx context.Context) error {
	for {
		g.mu.Lock()
		wait := time.Until(g.until)
		if wait <= 0 && g.inFlight < int(g.limit) {
			g.inFlight++
			g.gauge.Inc()
			g.mu.Unlock()
			return nil
		}
		ch := g.changed
		g.mu.Unlock()
		var timer <-chan time.Time
		if wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-timer:
		}
	}
}

// release ends a call: ok if it succeeded, pause if the backend asked for
// one.
func (g *gate) release(ok bool, pause time.Duration) {
	g.mu.Lock()
	g.inFlight--
	g.gauge.Dec()
	switch {
	case pause > 0:
		if until := time.Now().Add(pause); until.After(g.until) {
			g.until = until
		}
		g.limit = max(g.limit/2, 1)
	case ok && g.limit < float64(g.max):
		g.limit = min(g.limit+1, float64(g.max))
	}
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}
