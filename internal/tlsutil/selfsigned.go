// Package tlsutil provides postino's TLS plumbing: a self-signed certificate
// generated on first start when none is configured, a Reloader that serves
// the current certificate and picks up renewed files without a restart, and
// the server tls.Config shared by every TLS listener.
package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/postino-mail/postino/internal/fsutil"
)

// File names used by EnsureSelfSigned inside its directory.
const (
	CertFileName = "cert.pem"
	KeyFileName  = "key.pem"
)

// selfSignedValidity is how long a generated certificate is valid.
const selfSignedValidity = 10 * 365 * 24 * time.Hour

// EnsureSelfSigned returns the paths of DIR/cert.pem and DIR/key.pem. If
// both files already exist they are returned as they are (created is false);
// otherwise a new self-signed certificate is generated and written there
// (created is true), creating dir with mode 0700 if needed.
//
// The certificate uses an ECDSA P-256 key, for the widest client
// compatibility, is valid for 10 years, and names hostname, "localhost",
// 127.0.0.1 and ::1. The key is written with mode 0600 and the certificate
// with 0644, each to a temporary file that is synced and then renamed into
// place, key first, so a crash never leaves a certificate without its key.
func EnsureSelfSigned(dir, hostname string) (certFile, keyFile string, created bool, err error) {
	certFile = filepath.Join(dir, CertFileName)
	keyFile = filepath.Join(dir, KeyFileName)
	certOK, err := exists(certFile)
	if err != nil {
		return "", "", false, err
	}
	keyOK, err := exists(keyFile)
	if err != nil {
		return "", "", false, err
	}
	if certOK && keyOK {
		return certFile, keyFile, false, nil
	}

	certPEM, keyPEM, err := generateSelfSigned(hostname, time.Now())
	if err != nil {
		return "", "", false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", false, fmt.Errorf("tls: creating %s: %w", dir, err)
	}
	// Each file is fsync'd, renamed into place and its directory fsync'd.
	if err := fsutil.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", false, fmt.Errorf("tls: writing %s: %w", keyFile, err)
	}
	if err := fsutil.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", false, fmt.Errorf("tls: writing %s: %w", certFile, err)
	}
	return certFile, keyFile, true, nil
}

// exists reports whether path exists; errors other than "not found" are
// returned.
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("tls: %w", err)
	}
}

// generateSelfSigned returns a PEM certificate and PKCS #8 PEM private key
// for a self-signed server certificate valid from shortly before now.
func generateSelfSigned(hostname string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("tls: generating serial number: %w", err)
	}
	serial.Add(serial, big.NewInt(1)) // serial numbers must be positive

	cn := hostname
	if cn == "" {
		cn = "localhost"
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"postino self-signed"}},
		NotBefore:             now.Add(-time.Hour), // tolerate clients with a slow clock
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback},
	}
	addDNS := func(name string) {
		for _, n := range tmpl.DNSNames {
			if n == name {
				return
			}
		}
		tmpl.DNSNames = append(tmpl.DNSNames, name)
	}
	if ip := net.ParseIP(hostname); ip != nil {
		if !ip.IsLoopback() {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	} else if hostname != "" {
		addDNS(hostname)
	}
	addDNS("localhost")

	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: creating certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: encoding key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}
