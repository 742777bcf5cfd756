package ingress

import (
	"errors"
	"testing"
	"time"
)

// The store is suspect after a few refusals in a row, until an event is
// stored, or storeQuiet after the last refusal (an ingress a load balancer
// took out gets events to try again).
func TestStoreWatch(t *testing.T) {
	var w storeWatch
	now := time.Unix(1_800_000_000, 0)
	for i := range storeFailRun {
		if err := w.check(now); err != nil {
			t.Fatalf("suspect after %d refusals: %v", i, err)
		}
		w.failed(errors.New("nats: insufficient resources"), now)
	}
	if err := w.check(now.Add(storeQuiet)); err == nil {
		t.Error("not suspect after refusals in a row")
	}
	if err := w.check(now.Add(storeQuiet + time.Second)); err != nil {
		t.Errorf("still suspect %s after the last refusal: %v", storeQuiet+time.Second, err)
	}
	w.stored()
	if err := w.check(now); err != nil {
		t.Errorf("suspect after an event was stored: %v", err)
	}
}
