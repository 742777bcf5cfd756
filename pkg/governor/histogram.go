package governor

import (
	"math"
	"sync/atomic"
	"time"
)

// histogram counts durations by the millisecond, up to a second (longer
// ones count as a second), without a lock: the ingress adds one per answer.
type histogram struct {
	buckets [nBuckets]atomic.Uint64
}

const nBuckets = 1001

func (h *histogram) add(d time.Duration) {
	h.buckets[min(max(d.Milliseconds(), 0), nBuckets-1)].Add(1)
}

// drain empties the histogram and returns how many durations it held and
// their quantile q, rounded up to the millisecond.
func (h *histogram) drain(q float64) (n uint64, quantile time.Duration) {
	var counts [nBuckets]uint64
	for i := range h.buckets {
		counts[i] = h.buckets[i].Swap(0)
		n += counts[i]
	}
	if n == 0 {
		return 0, 0
	}
	rank := uint64(math.Ceil(q * float64(n))) // nearest rank
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			return n, time.Duration(i+1) * time.Millisecond
		}
	}
	return n, nBuckets * time.Millisecond
}
