package tlsx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/geomux/geomux/pkg/config"
)

// acmeCert gets the certificate of the configured domains from an ACME CA
// with the TLS-ALPN-01 challenge, answered on the same listener, and renews
// it before it expires (autocert). The account key and certificates live in
// cache_dir.
type acmeCert struct {
	c   config.ACME
	log *zap.Logger
	m   *autocert.Manager
	// asking is the requests for certificates made at start.
	asking sync.WaitGroup
}

func newACME(c config.ACME, log *zap.Logger) *acmeCert {
	dir := c.DirectoryURL
	if dir == "" {
		dir = acme.LetsEncryptURL
	}
	return &acmeCert{c: c, log: log, m: &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(c.Domains...),
		Cache:      autocert.DirCache(c.CacheDir),
		Email:      c.Email,
		Client:     &acme.Client{DirectoryURL: dir},
	}}
}

// Config answers the CA's challenges and serves its certificates.
func (a *acmeCert) Config() *tls.Config {
	c := a.m.TLSConfig()
	c.MinVersion = tls.VersionTLS12
	return c
}

// Start makes the cache directory and trusts ca_file for the CA's
// directory.
func (a *acmeCert) Start(context.Context) error {
	if err := os.MkdirAll(a.c.CacheDir, 0o700); err != nil {
		return fmt.Errorf("ingress.tls.acme.cache_dir: %w", err)
	}
	if a.c.CAFile != "" {
		pem, err := os.ReadFile(a.c.CAFile)
		if err != nil {
			return fmt.Errorf("ingress.tls.acme.ca_file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("ingress.tls.acme.ca_file %s: no PEM certificate in it", a.c.CAFile)
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		a.m.Client.HTTPClient = &http.Client{Transport: t, Timeout: time.Minute}
	}
	return nil
}

// Listening asks for the certificates in the background, now that the
// listener can answer the CA's challenge, so that Zoom's first request does
// not wait for them.
func (a *acmeCert) Listening() {
	for _, d := range a.c.Domains {
		a.asking.Go(func() {
			if _, err := a.m.GetCertificate(&tls.ClientHelloInfo{ServerName: d}); err != nil {
				a.log.Warn("Cannot get the TLS certificate from the ACME CA yet; asked again at the next handshake", zap.String("domain", d), zap.Error(err))
				return
			}
			a.log.Info("TLS certificate ready", zap.String("domain", d))
		})
	}
}

// Stop waits, bounded by ctx, for the requests made at start.
func (a *acmeCert) Stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() { a.asking.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the ACME CA has not answered: %w", ctx.Err())
	}
}
