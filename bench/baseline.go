package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/geomux/geomux/pkg/zoom"
)

// The baselines, each run as a child process of the benchmark (like geomux
// itself), serving the same requests on the same path.
const (
	baselineHTTPCmd  = "baseline-http"
	baselineChainCmd = "baseline-chain"
)

// baselineArgs are a baseline's flags.
type baselineArgs struct {
	listen, store string
	sync          bool
}

// httpBaseline is baseline (a): a minimal net/http server that reads each
// request and answers 200.
func httpBaseline(baselineArgs) (http.Handler, func(), error) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /zoom/webhook", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	})
	return mux, func() {}, nil
}

// chainBaseline is baseline (b): the least an ingress that never answers
// 200 before the event is stored can do. It verifies the signature, publishes
// the body to a JetStream file stream on an embedded nats-server (as
// geomux's one-machine default), waits for the acknowledgement, answers 200.
// No parsing, no headers, no deduplication, no logging, no metrics.
func chainBaseline(a baselineArgs) (http.Handler, func(), error) {
	ns, err := server.NewServer(&server.Options{
		ServerName: "chain", JetStream: true, StoreDir: a.store, SyncAlways: a.sync,
		MaxPayload: 2 << 20, NoSigs: true, DontListen: true,
	})
	if err != nil {
		return nil, nil, err
	}
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		return nil, nil, errors.New("nats-server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CHAIN", Subjects: []string{"chain.in"}, Storage: jetstream.FileStorage}); err != nil {
		return nil, nil, err
	}
	v := zoom.NewVerifier([]string{benchSecret}, 5*time.Minute)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /zoom/webhook", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if _, err := v.Verify(r.Header.Get(zoom.HeaderSignature), r.Header.Get(zoom.HeaderTimestamp), body); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := js.Publish(ctx, "chain.in", body); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	return mux, func() { nc.Close(); ns.Shutdown(); ns.WaitForShutdown() }, nil
}

// serveBaseline runs a baseline until SIGTERM. GET /ready answers 200 once
// it serves.
func serveBaseline(args []string, build func(baselineArgs) (http.Handler, func(), error)) int {
	fs := flag.NewFlagSet("baseline", flag.ContinueOnError)
	var a baselineArgs
	fs.StringVar(&a.listen, "listen", "127.0.0.1:0", "host:port to serve on")
	fs.StringVar(&a.store, "store", "", "JetStream store directory (chain)")
	fs.BoolVar(&a.sync, "sync", false, "fsync every write before acknowledging it (chain)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	h, stop, err := build(a)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		return 1
	}
	defer stop()
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	// Profiles, to compare with geomux's (--profile).
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	l, err := net.Listen("tcp", a.listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		return 1
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	return 0
}
