package ingress

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// Watching the host's clock. Zoom signs each request's timestamp, and the
// ingress refuses one more than ingress.max_clock_skew from its own clock
// (401, which Zoom never retries). With the host's clock off, every event
// would be refused while the ingress looks healthy; so /readyz says so
// once several correctly signed requests in a row came "stale" and none
// fresh. Only correctly signed requests count (the signature is checked
// before the time), so a stranger's junk cannot make the ingress unready;
// a replay of captured requests can only until Zoom's next fresh one.

// clockStaleRun is how many correctly signed requests in a row with a
// stale timestamp make the clock suspect.
const clockStaleRun = 10

// clockWatch follows the timestamps of correctly signed requests. It is on
// every request's path: atomics, and no write while all is well.
type clockWatch struct {
	staleInRow atomic.Int64
	lastSkew   atomic.Int64 // now minus Zoom's timestamp of the last stale one, ns
}

// fresh notes a correctly signed request within the allowed skew.
func (c *clockWatch) fresh() {
	if c.staleInRow.Load() != 0 {
		c.staleInRow.Store(0)
	}
}

// stale notes a correctly signed request whose timestamp header ts was too
// far from now.
func (c *clockWatch) stale(ts string, now time.Time) {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return
	}
	c.lastSkew.Store(int64(now.Sub(time.Unix(sec, 0))))
	c.staleInRow.Add(1)
}

// check is the readiness check: an error while the clock is suspect.
func (c *clockWatch) check() error {
	n := c.staleInRow.Load()
	if n < clockStaleRun {
		return nil
	}
	way, skew := "ahead of", time.Duration(c.lastSkew.Load())
	if skew < 0 {
		way, skew = "behind", -skew
	}
	return fmt.Errorf("the last %d correctly signed Zoom requests were all refused as stale: this host's clock is about %s %s Zoom's; set it right (NTP)",
		n, skew.Round(time.Second), way)
}
