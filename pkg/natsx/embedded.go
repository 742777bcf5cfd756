// Package natsx holds geomux's NATS building blocks: the embedded nats-server
// of the one-machine default, the client connection, and the streams and
// key-value buckets every role relies on.
package natsx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
)

// maxPayload lets a 1 MiB Zoom body through together with its headers.
const maxPayload = 2 << 20

// StartEmbedded starts a single-node nats-server with JetStream inside this
// process, storing under c.StoreDir and, if c.Listen is set, also accepting
// clients there: only those with its keys (auth.go), unless
// c.ListenWithoutAuth; inProcess are users of this process's own
// in-process connections (natsx.Gate). The caller owns it and must call
// Shutdown.
func StartEmbedded(c config.NATS, log *zap.Logger, inProcess ...*server.NkeyUser) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "geomux",
		JetStream:  true,
		StoreDir:   c.StoreDir,
		SyncAlways: c.SyncAlways,
		// 0 lets nats-server size the store from the free disk.
		JetStreamMaxStore: int64(c.MaxStore),
		MaxPayload:        maxPayload,
		// The host application owns signal handling.
		NoSigs:     true,
		DontListen: c.Listen == "",
	}
	if c.Listen != "" {
		var err error
		if opts.Host, opts.Port, err = serverAddr("nats.listen", c.Listen); err != nil {
			return nil, err
		}
	}
	if c.MonitorListen != "" {
		var err error
		if opts.HTTPHost, opts.HTTPPort, err = serverAddr("nats.monitor_listen", c.MonitorListen); err != nil {
			return nil, err
		}
	}
	if c.ListenWithoutAuth {
		if c.Listen != "" {
			log.Warn("Embedded NATS admits any local process on nats.listen: nats.listen_without_auth is set; anyone on this machine can read and change every region's data",
				zap.String("listen", c.Listen))
		}
	} else {
		users, err := embeddedUsers(c.StoreDir)
		if err != nil {
			return nil, err
		}
		for _, u := range inProcess {
			if u != nil {
				users = append(users, u)
			}
		}
		opts.Nkeys = users
	}
	if c.Listen != "" {
		// nats-server only logs a port it cannot bind; check first so that a
		// busy port fails the start with a message that names it.
		l, err := net.Listen("tcp", c.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats-server cannot listen on nats.listen %s: %w", c.Listen, err)
		}
		l.Close()
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	ns.SetLoggerV2(serverLogger{log.Named("nats-server").WithOptions(zap.AddCallerSkip(1)).Sugar()}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats-server did not become ready within 15s")
	}
	return ns, nil
}

// serverAddr is the host and port nats-server takes for the listen address
// v of config key key.
func serverAddr(key, v string) (string, int, error) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", key, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("%s: bad port %q", key, port)
	}
	if p == 0 {
		// nats-server reads 0 as its default port, not "any".
		p = server.RANDOM_PORT
	}
	return host, p, nil
}

// serverLogger routes nats-server's printf-style logs into zap. nats-server
// notices are chatty (the start banner alone is a dozen lines): they go to
// debug.
type serverLogger struct{ s *zap.SugaredLogger }

func (l serverLogger) Noticef(format string, v ...any) { l.s.Debugf(format, v...) }
func (l serverLogger) Warnf(format string, v ...any)   { l.s.Warnf(format, v...) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.s.Errorf(format, v...) }
func (l serverLogger) Errorf(format string, v ...any)  { l.s.Errorf(format, v...) }
func (l serverLogger) Debugf(format string, v ...any)  { l.s.Debugf(format, v...) }
func (l serverLogger) Tracef(format string, v ...any)  {}

// KeepJetStream turns the embedded server's JetStream back on after
// nats-server turned it off, which it does when a write fails for lack of
// disk space ("JetStream out of resources, will be DISABLED"): without
// this, every event would be answered 503 until a restart, though space
// came back. Every interval until ctx is done, it tries again with the
// configuration JetStream started with (cfg, from ns.JetStreamConfig() at
// start): the streams, consumers and buckets come back from the store.
func KeepJetStream(ctx context.Context, ns *server.Server, cfg server.JetStreamConfig, every time.Duration, log *zap.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	down := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ns.JetStreamEnabled() {
			if down {
				log.Info("Embedded JetStream is back")
				down = false
			}
			continue
		}
		if !down {
			log.Error("Embedded JetStream is off (nats-server turns it off when the disk is full); events are answered 503 until it is back",
				zap.String("store_dir", cfg.StoreDir))
			down = true
		}
		c := cfg
		// EnableJetStream adds "jetstream" to the store directory, which
		// ns.JetStreamConfig() reports with it.
		if filepath.Base(c.StoreDir) == server.JetStreamStoreDir {
			c.StoreDir = filepath.Dir(c.StoreDir)
		}
		if err := ns.EnableJetStream(&c); err != nil {
			log.Debug("Embedded JetStream not back yet", zap.Error(err))
		}
	}
}
