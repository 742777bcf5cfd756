package ingress_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/geomux/geomux/ingress"
	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/health"
	"github.com/geomux/geomux/pkg/natsx"
	"github.com/geomux/geomux/pkg/natsx/natstest"
	"github.com/geomux/geomux/pkg/topology"
	"github.com/geomux/geomux/pkg/zoom"
	"github.com/geomux/geomux/pkg/zoom/zoomtest"
)

// BenchmarkWebhook is one accepted webhook, in process: read, verify, parse,
// publish to an embedded JetStream (file store), wait for the ack, answer.
// It runs with the default durability (JetStream flushes to disk
// periodically) and with nats.sync_always (an fsync before every ack), on
// one request at a time and on many at once.
func BenchmarkWebhook(b *testing.B) {
	for _, sync := range []bool{false, true} {
		name := "default"
		if sync {
			name = "sync_always"
		}
		b.Run(name+"/serial", func(b *testing.B) { benchWebhook(b, sync, false) })
		b.Run(name+"/parallel", func(b *testing.B) { benchWebhook(b, sync, true) })
	}
}

func benchWebhook(b *testing.B, syncAlways, parallel bool) {
	c := config.Default().NATS
	c.StoreDir, c.Listen, c.SyncAlways = "", "", syncAlways
	ns := natstest.StartWith(b, c)
	if _, err := natsx.EnsureStream(context.Background(), ns.JS, topology.TransitConfig(topology.OptionsFrom(config.Default()), 0)); err != nil {
		b.Fatal(err)
	}
	h := ingress.NewHandler(ns.JS, ingress.Options{
		Apps:           []ingress.App{{Name: config.DefaultAppName, Verifier: zoom.NewVerifier([]string{secret}, 5*time.Minute)}},
		PublishTimeout: 2 * time.Second,
	}, ingress.NewMetrics(prometheus.NewRegistry()), health.NewRegistry(), zap.NewNop())
	var n atomic.Int64
	now := time.Now()
	one := func() {
		i := n.Add(1)
		req := zoomtest.NewRequest("http://ingress"+ingress.WebhookPath, secret, zoomtest.BotNotification("acct", "hello", i), now)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Errorf("status %d: %s", w.Code, w.Body.String())
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				one()
			}
		})
		return
	}
	for b.Loop() {
		one()
	}
}

// BenchmarkChainBaseline is the least an ingress can do per accepted event,
// for comparison with BenchmarkWebhook: read, verify, publish the bare body
// (no headers, no deduplication), wait for the ack.
func BenchmarkChainBaseline(b *testing.B) {
	c := config.Default().NATS
	c.StoreDir, c.Listen = "", ""
	ns := natstest.StartWith(b, c)
	if _, err := natsx.EnsureStream(context.Background(), ns.JS, topology.TransitConfig(topology.OptionsFrom(config.Default()), 0)); err != nil {
		b.Fatal(err)
	}
	v := zoom.NewVerifier([]string{secret}, 5*time.Minute)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if _, err := v.Verify(r.Header.Get(zoom.HeaderSignature), r.Header.Get(zoom.HeaderTimestamp), body); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := ns.JS.Publish(ctx, "geomux.in", body); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	var n atomic.Int64
	now := time.Now()
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := zoomtest.NewRequest("http://ingress"+ingress.WebhookPath, secret, zoomtest.BotNotification("acct", "hello", n.Add(1)), now)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Errorf("status %d", w.Code)
			}
		}
	})
}
