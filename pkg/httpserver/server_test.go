package httpserver_test

import (
	"context"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/httpserver"
)

// A server limited to n connections serves at most n requests at once,
// however many clients connect: the rest wait their turn, and all are
// served in the end.
func TestLimitConnections(t *testing.T) {
	const limit, clients = 2, 6
	var active, peak atomic.Int64
	release := make(chan struct{}, clients)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := active.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		active.Add(-1)
		w.WriteHeader(http.StatusNoContent)
	})
	s := httpserver.New("test", "127.0.0.1:0", h, zap.NewNop()).LimitConnections(limit)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })

	var written atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			tr := &http.Transport{DisableKeepAlives: true}
			defer tr.CloseIdleConnections()
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { written.Add(1) },
			})
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr(), nil)
			resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		})
	}
	// Every request is on the wire before any is answered.
	waitFor(t, func() bool { return written.Load() == clients && active.Load() >= limit })
	for range clients {
		release <- struct{}{}
	}
	wg.Wait()
	if p := peak.Load(); p != limit {
		t.Errorf("%d requests were served at once, want at most the limit of %d connections", p, limit)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond) // polling the condition
	}
}
