package governor

import (
	"math"
	"runtime/metrics"
	"time"
)

// schedLatency reads how long this process's goroutines wait, runnable,
// for a CPU (the Go runtime's /sched/latencies:seconds): when processing
// takes the CPUs, the ingress's goroutines wait too, before its handler
// even starts (accepting, reading the request) and again for JetStream's
// acknowledgement, which the handler's own timing does not all see.
type schedLatency struct {
	sample []metrics.Sample
	last   []uint64
}

const schedMetric = "/sched/latencies:seconds"

func newSchedLatency() *schedLatency {
	s := &schedLatency{sample: []metrics.Sample{{Name: schedMetric}}}
	s.quantile(0.99) // the baseline: the waits since the start do not count
	return s
}

// quantile is the q quantile of the waits since the last call (0 with
// none), rounded up to its bucket's upper bound.
func (s *schedLatency) quantile(q float64) time.Duration {
	metrics.Read(s.sample)
	if s.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0 // not in this Go release
	}
	h := s.sample[0].Value.Float64Histogram()
	delta := make([]uint64, len(h.Counts))
	var n uint64
	for i, c := range h.Counts {
		if i < len(s.last) {
			delta[i] = c - s.last[i]
		} else {
			delta[i] = c
		}
		n += delta[i]
	}
	s.last = append(s.last[:0], h.Counts...)
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for i, c := range delta {
		seen += c
		if seen >= rank {
			up := h.Buckets[i+1]
			if math.IsInf(up, 1) {
				up = h.Buckets[i]
			}
			return time.Duration(up * float64(time.Second))
		}
	}
	return 0
}
