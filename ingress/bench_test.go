package ingress_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// BenchmarkWebhook is one accepted webhook, in process: read, verify, parse,
// publish to an embedded JetStream (file store), wait for the ack, answer.
func BenchmarkWebhook(b *testing.B) {
	f := newFixtureTB(b)
	b.ReportAllocs()
	n := int64(0)
	now := time.Now()
	for b.Loop() {
		n++
		req := zoomtest.NewRequest(f.url, secret, zoomtest.BotNotification("acct", "hello", n), now)
		w := httptest.NewRecorder()
		f.handler.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d", w.Code)
		}
	}
}
