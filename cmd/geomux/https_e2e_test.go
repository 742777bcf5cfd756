package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"

	"github.com/geomux/geomux/pkg/config"
	"github.com/geomux/geomux/pkg/natsx/natstest"
)

// pebble is Let's Encrypt's test ACME server, in this process. It does not
// connect back to validate the challenge (PEBBLE_VA_ALWAYS_VALID): the
// domain is not in any DNS; everything else (account, order, authorization,
// finalize, issuance, the chain) is the real protocol.
type pebble struct {
	srv *httptest.Server
	ca  *ca.CAImpl
}

func startPebble(t *testing.T) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	// Pebble refuses 5% of nonces by default, to test clients' retries
	// (x/crypto's); here they would only slow the issuance down.
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	logger := log.New(io.Discard, "", 0)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, 80, 443, false, "", store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 1, 1)
	srv := httptest.NewTLSServer(front.Handler())
	t.Cleanup(srv.Close)
	return &pebble{srv: srv, ca: authority}
}

// pemOf is c in PEM.
func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// roots trusts what the CA issues.
func (p *pebble) roots() *x509.CertPool {
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.GetRootCert(0).Cert)
	return roots
}

func TestE2EIngressHTTPSFromACME(t *testing.T) {
	acme := startPebble(t)
	const domain = "bot.geomux.test"
	cacheDir := filepath.Join(t.TempDir(), "acme")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pemOf(acme.srv.Certificate()), 0o644); err != nil {
		t.Fatal(err)
	}
	// Zoom's side: it resolves the domain to the ingress, verifies the
	// chain up to the CA's root, and speaks TLS 1.2 or later.
	var ingressAddr string
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: acme.roots(), ServerName: domain, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, ingressAddr)
		},
	}
	zoom := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	p := newPipelineWith(t, t.TempDir(), pipelineOptions{client: zoom, tls: config.IngressTLS{ACME: config.ACME{
		Domains: []string{domain}, Email: "ops@geomux.test", CacheDir: cacheDir,
		DirectoryURL: acme.srv.URL + "/dir", CAFile: caFile,
	}}})
	ingressAddr = strings.TrimPrefix(strings.TrimSuffix(p.webhook, "/zoom/webhook"), "https://")
	p.webhook = "https://" + domain + "/zoom/webhook"

	// The certificate is asked for at start; the first request may come
	// before it is issued, and waits for it within its handshake.
	p.setRegion("acct-tls", "eu")
	p.send("acct-tls", "over https")
	if got := p.waitDelivered(1); len(got) != 1 {
		t.Fatalf("delivered %d", len(got))
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		entries, _ := os.ReadDir(cacheDir)
		for _, e := range entries {
			if e.Name() == domain {
				return true
			}
		}
		return false
	}, "the certificate in ingress.tls.acme.cache_dir")

	// TLS 1.1 is refused.
	old := &tls.Config{RootCAs: acme.roots(), ServerName: domain, MaxVersion: tls.VersionTLS11}
	if conn, err := tls.Dial("tcp", ingressAddr, old); err == nil {
		conn.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
}
