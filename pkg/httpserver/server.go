// Package httpserver runs an http.Handler on a listener bound at start, so
// that a busy port fails the start instead of being logged later.
package httpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/net/netutil"

	"github.com/geomux/geomux/pkg/logfields"
)

// Server is an HTTP server bound at Start. It suits fx.StartStopHook.
type Server struct {
	name, addr string
	log        *zap.Logger
	srv        *http.Server
	ln         atomic.Pointer[net.Listener]
	done       chan struct{}
	maxConns   int
}

// New returns a server for h on addr; name says which listener it is in
// errors and logs ("ingress", "admin").
func New(name, addr string, h http.Handler, log *zap.Logger) *Server {
	return &Server{
		name: name, addr: addr, log: log, done: make(chan struct{}),
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      15 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			// The server logs each failed accept (out of file descriptors,
			// say) and each bad TLS handshake: a flood of those is sampled.
			ErrorLog: zap.NewStdLog(sampled(log.Named("http"))),
		},
	}
}

// LimitConnections caps the connections the server holds open at once:
// past n, new ones wait in the kernel's accept queue until one closes.
// Call it before Start.
func (s *Server) LimitConnections(n int) *Server {
	s.maxConns = n
	return s
}

// TLS serves HTTPS with c (HTTP/2 as well). Call it before Start.
func (s *Server) TLS(c *tls.Config) *Server {
	s.srv.TLSConfig = c
	return s
}

// sampled keeps the first lines of each message a second, then one in a
// hundred.
func sampled(log *zap.Logger) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, 5, 100)
	}))
}

// Start binds the address and serves in the background.
func (s *Server) Start(context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("%s cannot listen on %s: %w", s.name, s.addr, err)
	}
	if s.maxConns > 0 {
		ln = netutil.LimitListener(ln, s.maxConns)
	}
	s.ln.Store(&ln)
	go func() {
		defer close(s.done)
		serve := s.srv.Serve
		if s.srv.TLSConfig != nil {
			serve = func(ln net.Listener) error { return s.srv.ServeTLS(ln, "", "") }
		}
		if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP server stopped", zap.String("listener", s.name), zap.Error(err))
		}
	}()
	s.log.Info("Listening", zap.String("listener", s.name), logfields.Addr(ln.Addr().String()))
	return nil
}

// Listening reports whether Start has bound the address.
func (s *Server) Listening() bool { return s.ln.Load() != nil }

// Addr is the bound address (useful with port 0), or "" before Start.
func (s *Server) Addr() string {
	if ln := s.ln.Load(); ln != nil {
		return (*ln).Addr().String()
	}
	return ""
}

// Stop stops accepting connections and waits, bounded by ctx, for in-flight
// requests to finish.
func (s *Server) Stop(ctx context.Context) error {
	if !s.Listening() {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}

// LocalURL is the http URL a process on the same machine reaches a
// listener at: addr's host, or the loopback address when addr listens on
// every interface ("", 0.0.0.0, ::).
func LocalURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
