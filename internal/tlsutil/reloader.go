package tlsutil

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultWatchInterval is the polling interval Watch uses when given a
// non-positive one.
const DefaultWatchInterval = time.Minute

// expiryWarning is how close to expiry a loaded certificate must be for a
// warning to be logged.
const expiryWarning = 14 * 24 * time.Hour

// Reloader holds the current certificate for a certificate and key file
// pair and serves it to TLS handshakes through GetCertificate. Reload and
// Watch replace it when the files change; a failed reload keeps the previous
// certificate. A Reloader is safe for concurrent use.
type Reloader struct {
	logger *slog.Logger
	cert   atomic.Pointer[tls.Certificate]

	mu                sync.Mutex // serializes reloads and guards the files and stamps
	certFile, keyFile string
	stamps            [2]fileStamp
}

// fileStamp identifies one version of a file: it changes whenever the file
// is rewritten, replaced, created or removed.
type fileStamp struct {
	info os.FileInfo // nil if the file could not be stat'ed
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{info: fi}
}

func (s fileStamp) equal(t fileStamp) bool {
	if s.info == nil || t.info == nil {
		return s.info == nil && t.info == nil
	}
	return s.info.ModTime().Equal(t.info.ModTime()) &&
		s.info.Size() == t.info.Size() &&
		os.SameFile(s.info, t.info)
}

// NewReloader loads the certificate chain in certFile and the matching
// private key in keyFile. Unreadable, malformed or mismatched files give an
// error naming them. A nil logger discards log messages.
func NewReloader(certFile, keyFile string, logger *slog.Logger) (*Reloader, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, logger: logger}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the certificate and key files again. On success the new
// certificate is used for all later handshakes; on failure the previous one
// is kept and the error returned.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Stamp before reading, so a change made while reading is noticed by
	// the next Watch poll. The stamps are recorded even when loading fails,
	// so Watch retries only after the files change again.
	r.stamps = [2]fileStamp{stampOf(r.certFile), stampOf(r.keyFile)}
	cert, err := loadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cert.Store(cert)
	if left := time.Until(cert.Leaf.NotAfter); left < expiryWarning {
		r.logger.Warn("tls: certificate expires soon or has expired",
			"cert", r.certFile, "not_after", cert.Leaf.NotAfter, "subject", cert.Leaf.Subject.String())
	}
	return nil
}

// loadKeyPair loads and checks a certificate and key file pair, explaining
// failures in terms of the files.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tls: reading certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: reading key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err == nil {
		if cert.Leaf == nil {
			cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				return nil, fmt.Errorf("tls: certificate %s: %w", certFile, err)
			}
		}
		return &cert, nil
	}
	return nil, diagnose(certFile, keyFile, certPEM, keyPEM, err)
}

// diagnose turns a tls.X509KeyPair failure into an error naming the file at
// fault.
func diagnose(certFile, keyFile string, certPEM, keyPEM []byte, err error) error {
	leaf, certErr := firstCertificate(certPEM)
	if certErr != nil {
		return fmt.Errorf("tls: certificate %s: %w", certFile, certErr)
	}
	key, keyErr := ParsePrivateKey(keyPEM)
	if keyErr != nil {
		return fmt.Errorf("tls: key %s: %w", keyFile, keyErr)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if ok && !pub.Equal(leaf.PublicKey) {
		return fmt.Errorf("tls: certificate %s and key %s do not match", certFile, keyFile)
	}
	return fmt.Errorf("tls: certificate %s and key %s: %w", certFile, keyFile, err)
}

// firstCertificate parses the first CERTIFICATE block in data.
func firstCertificate(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("no PEM CERTIFICATE block found")
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing certificate: %w", err)
			}
			return c, nil
		}
	}
}

// ParsePrivateKey parses the first private key block in data, in any of
// the encodings crypto/tls accepts (PKCS #8 "PRIVATE KEY", SEC 1 "EC
// PRIVATE KEY", PKCS #1 "RSA PRIVATE KEY"); other blocks before it are
// skipped. DKIM keys are read with it too.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("no PEM private key block found")
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parsing private key: %w", err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return s, nil
	}
}

// GetCertificate returns the current certificate. It has the signature of
// tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// Fingerprint returns the SHA-256 digest of the current leaf certificate's
// DER encoding, for printing at start-up so that users can verify or pin a
// self-signed certificate. It is written as FormatFingerprint does
// (AB:CD:...), the form mpop's tls_fingerprint and fetchmail's
// sslfingerprint accept as it is.
func (r *Reloader) Fingerprint() string {
	sum := sha256.Sum256(r.cert.Load().Certificate[0])
	return FormatFingerprint(sum[:])
}

// Watch polls the certificate and key files every interval
// (DefaultWatchInterval if interval is not positive) and reloads them when
// either one's modification time, size or identity changes, logging the
// outcome. It returns when ctx is done.
func (r *Reloader) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.poll()
	}
}

// poll reloads the files if they changed, logging the outcome.
func (r *Reloader) poll() {
	if !r.changed() {
		return
	}
	certFile, keyFile := r.Files()
	if err := r.Reload(); err != nil {
		r.logger.Error("tls: reloading certificate failed; keeping the previous one",
			"cert", certFile, "key", keyFile, "err", err)
		return
	}
	r.logger.Info("tls: certificate reloaded",
		"cert", certFile, "key", keyFile, "sha256", r.Fingerprint())
}

// changed reports whether either file differs from when it was last loaded.
func (r *Reloader) changed() bool {
	certFile, keyFile := r.Files()
	now := [2]fileStamp{stampOf(certFile), stampOf(keyFile)}
	r.mu.Lock()
	defer r.mu.Unlock()
	return !now[0].equal(r.stamps[0]) || !now[1].equal(r.stamps[1])
}

// Files returns the certificate and key files in use.
func (r *Reloader) Files() (certFile, keyFile string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.certFile, r.keyFile
}

// SetFiles switches to another certificate and key file pair (a
// configuration reload), loading it now; later reloads and Watch read the
// new files. On failure nothing changes and the error names the files.
func (r *Reloader) SetFiles(certFile, keyFile string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if certFile == r.certFile && keyFile == r.keyFile {
		return nil
	}
	stamps := [2]fileStamp{stampOf(certFile), stampOf(keyFile)}
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	r.certFile, r.keyFile, r.stamps = certFile, keyFile, stamps
	r.cert.Store(cert)
	return nil
}
