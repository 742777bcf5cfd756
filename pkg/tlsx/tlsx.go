// Package tlsx is the ingress's HTTPS: a certificate read from files, and
// read again when they change, or one an ACME CA issues and renews
// (golang.org/x/crypto/acme/autocert). TLS 1.2 at least, as Zoom requires.
package tlsx

import (
	"context"
	"crypto/tls"

	"go.uber.org/zap"

	"github.com/geomux/geomux/pkg/config"
)

// Server is the TLS side of a listener: Config for http.Server, Start
// before the listener starts (it reads files, or sets up ACME), Listening
// once it has started, Stop once it has stopped.
type Server interface {
	Config() *tls.Config
	Start(ctx context.Context) error
	Listening()
	Stop(ctx context.Context) error
}

// New returns the listener's TLS as c says; nil when c does not enable it.
func New(c config.IngressTLS, log *zap.Logger) Server {
	switch {
	case c.ACME.Enabled():
		return newACME(c.ACME, log)
	case c.CertFile != "":
		return NewFileCertificate(c.CertFile, c.KeyFile, log)
	}
	return nil
}

// baseConfig is what every geomux TLS listener has.
func baseConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12}
}
