package workers

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A question a server took and never answers is asked again after
// lookupTimeout, not waited on for the whole handler timeout.
func TestLookupAsksAgainWhenUnanswered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tries := 0
	start := time.Now()
	err := untilAnswered(ctx, nil, lookupTimeout, func(ctx context.Context) error {
		tries++
		if tries == 1 {
			<-ctx.Done() // taken, never answered
			return ctx.Err()
		}
		return nil
	})
	if err != nil || tries != 2 {
		t.Fatalf("untilAnswered: %v after %d tries, want an answer at the second", err, tries)
	}
	if took := time.Since(start); took >= 5*time.Second {
		t.Errorf("answered after %s: the first try was waited on", took)
	}
}

// An answer that will not change (a message not found) is not asked again.
func TestLookupTakesAFinalAnswer(t *testing.T) {
	tries := 0
	err := untilAnswered(context.Background(), nil, lookupTimeout, func(context.Context) error {
		tries++
		return jetstream.ErrMsgNotFound
	})
	if !errors.Is(err, jetstream.ErrMsgNotFound) || tries != 1 {
		t.Errorf("untilAnswered: %v after %d tries, want not found after one", err, tries)
	}
}
