package natsx

import (
	"fmt"
	neturl "net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
)

// Connect connects to NATS: in-process to ns when it is not nil (the embedded
// default), else to c.URL. The connection reconnects forever; while it is
// down, publishes fail fast enough for ingress to answer 503.
func Connect(c config.NATS, ns *server.Server, name string, log *zap.Logger) (*nats.Conn, error) {
	opts, err := options(c, name, log)
	if err != nil {
		return nil, err
	}
	url := c.URL
	if ns != nil {
		opts = append(opts, nats.InProcessServer(ns))
		url = ""
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		if ns != nil {
			return nil, fmt.Errorf("connect to the embedded nats-server: %w", err)
		}
		return nil, fmt.Errorf("cannot reach NATS at %s: %w", redact(c.URL), err)
	}
	return nc, nil
}

// redact hides passwords in a comma-separated list of NATS URLs.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// options are a connection's options: reconnecting forever, logging its
// troubles, authenticated as c says.
func options(c config.NATS, name string, log *zap.Logger) ([]nats.Option, error) {
	log = log.Named("nats")
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(c.ConnectTimeout.D()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// Notice a dead connection within a minute, not the default four.
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: we closed it
				log.Warn("NATS disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", zap.String("url", nc.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			var subject string
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("NATS asynchronous error", zap.String("subject", subject), zap.Error(err))
		}),
	}
	switch a := c.Auth; {
	case a.CredsFile != "":
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	case a.NkeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(a.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats auth: %w", err)
		}
		opts = append(opts, o)
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if p := c.Auth.InboxPrefix; p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	if c.Auth.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.Auth.CAFile))
	}
	if c.Auth.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.Auth.CertFile, c.Auth.KeyFile))
	}
	return opts, nil
}
