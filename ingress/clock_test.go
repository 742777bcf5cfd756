package ingress_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// With this host's clock off, every Zoom event is refused as stale (401,
// never retried): readiness says so, naming the skew, once genuine
// requests keep coming stale; a fresh one clears it. Strangers' requests,
// stale or not, never count.
func TestReadinessSaysWhenTheClockIsOff(t *testing.T) {
	f := newFixture(t)
	reg := f.health
	body := zoomtest.Event("bot_notification")
	clockSays := func() string {
		ok, failures := reg.Report()
		if ok {
			return ""
		}
		return failures["clock"]
	}
	// A stranger's stale junk, many times over: not the clock.
	for range 30 {
		if status, _ := do(t, zoomtest.NewRequest(f.url, "not-the-secret", body, time.Now().Add(-10*time.Minute))); status != http.StatusUnauthorized {
			t.Fatalf("stale junk: status %d", status)
		}
	}
	if got := clockSays(); got != "" {
		t.Fatalf("unsigned stale requests made the clock suspect: %s", got)
	}
	// Zoom's genuine requests, all 7 minutes "old": this host runs ahead.
	for range 10 {
		if status, _ := do(t, zoomtest.NewRequest(f.url, secret, body, time.Now().Add(-7*time.Minute))); status != http.StatusUnauthorized {
			t.Fatalf("a genuine stale request: status %d, want 401", status)
		}
	}
	if got := clockSays(); !strings.Contains(got, "ahead of Zoom's") || !strings.Contains(got, "about 7m") || !strings.Contains(got, "NTP") {
		t.Fatalf("readiness with the clock 7 minutes ahead: %q", got)
	}
	// One fresh genuine request: the clock is right again.
	if status, msg := do(t, zoomtest.NewRequest(f.url, secret, body, time.Now())); status != http.StatusOK {
		t.Fatalf("a fresh request: status %d %s", status, msg)
	}
	if got := clockSays(); got != "" {
		t.Errorf("after a fresh request the clock is still suspect: %s", got)
	}
}
