// Package httpserver runs an http.Handler on a listener bound at start, so
// that a busy port fails the start instead of being logged later.
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/logfields"
)

// Server is a started HTTP server.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Start binds addr and serves h in the background. name says which listener
// it is in errors and logs ("ingress", "admin").
func Start(name, addr string, h http.Handler, log *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s cannot listen on %s: %w", name, addr, err)
	}
	s := &Server{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      15 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          zap.NewStdLog(log.Named("http")),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", zap.String("listener", name), zap.Error(err))
		}
	}()
	log.Info("Listening", zap.String("listener", name), logfields.Addr(ln.Addr().String()))
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stop stops accepting connections and waits, bounded by ctx, for in-flight
// requests to finish.
func (s *Server) Stop(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}
