package tlsx

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// FileCertificate serves the certificate of a cert and a key file. A
// handshake looks at the files' size and time at most once a second; when
// they changed (a renewal), it reads them again. A pair that does not load
// (half-written) is logged, and the previous certificate served meanwhile.
type FileCertificate struct {
	certFile, keyFile string
	log               *zap.Logger
	// every is how often the files are looked at.
	every time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
}

// NewFileCertificate returns the certificate of certFile and keyFile; Start
// reads them.
func NewFileCertificate(certFile, keyFile string, log *zap.Logger) *FileCertificate {
	return &FileCertificate{certFile: certFile, keyFile: keyFile, log: log, every: time.Second}
}

// Config serves the files' certificate.
func (f *FileCertificate) Config() *tls.Config {
	c := baseConfig()
	c.GetCertificate = f.GetCertificate
	return c
}

// Start reads the files: the start fails if they do not hold a certificate
// and its key.
func (f *FileCertificate) Start(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reload(time.Now())
}

// Listening does nothing: the certificate is read already.
func (f *FileCertificate) Listening() {}

// Stop does nothing.
func (f *FileCertificate) Stop(context.Context) error { return nil }

// GetCertificate is tls.Config's.
func (f *FileCertificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); now.Sub(f.checked) >= f.every {
		if err := f.reload(now); err != nil {
			f.log.Warn("Cannot read the renewed TLS certificate; serving the previous one", zap.String("cert_file", f.certFile), zap.Error(err))
		}
	}
	if f.cert == nil {
		return nil, fmt.Errorf("no TLS certificate loaded from %s", f.certFile)
	}
	return f.cert, nil
}

// reload reads the files if they changed since they were last read.
func (f *FileCertificate) reload(now time.Time) error {
	f.checked = now
	stamp, err := stampOf(f.certFile, f.keyFile)
	if err != nil {
		return err
	}
	if stamp == f.stamp && f.cert != nil {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("ingress.tls: %w", err)
	}
	if f.cert != nil {
		f.log.Info("TLS certificate reloaded", zap.String("cert_file", f.certFile))
	}
	f.cert, f.stamp = &cert, stamp
	return nil
}

// stampOf is what says the files changed: their sizes and times.
func stampOf(files ...string) (string, error) {
	s := ""
	for _, name := range files {
		fi, err := os.Stat(name)
		if err != nil {
			return "", fmt.Errorf("ingress.tls: %w", err)
		}
		s += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}
