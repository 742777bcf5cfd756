package tlsx

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// writePair writes a self-signed certificate for name and its key.
func writePair(t *testing.T, certFile, keyFile, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// served is the name on the certificate a TLS listener with c presents.
func served(t *testing.T, c *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			_ = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test reads the name only
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if v := conn.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Errorf("TLS version %x, want 1.2 at least", v)
	}
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func TestFileCertificateIsReadAgainWhenRenewed(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePair(t, certFile, keyFile, "first.example.com")
	core, logs := observer.New(zap.InfoLevel)
	f := NewFileCertificate(certFile, keyFile, zap.New(core))
	f.every = 0 // look at the files at every handshake
	if err := f.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	c := f.Config()
	if got := served(t, c); got != "first.example.com" {
		t.Fatalf("served %q", got)
	}

	// A renewal: new files, new times.
	writePair(t, certFile, keyFile, "renewed.example.com")
	if got := served(t, c); got != "renewed.example.com" {
		t.Errorf("after the renewal served %q, want renewed.example.com", got)
	}

	// A half-written renewal: the previous certificate is served meanwhile.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\ntrunc"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := served(t, c); got != "renewed.example.com" {
		t.Errorf("with a broken file served %q, want the previous certificate", got)
	}
	if logs.FilterMessage("Cannot read the renewed TLS certificate; serving the previous one").Len() == 0 {
		t.Error("the broken file was not logged")
	}
}

func TestFileCertificateStartFails(t *testing.T) {
	dir := t.TempDir()
	f := NewFileCertificate(filepath.Join(dir, "missing.crt"), filepath.Join(dir, "missing.key"), zap.NewNop())
	if err := f.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Errorf("start with missing files: %v, want an error naming the file", err)
	}
}
