package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// Cert is a self-signed certificate, its own CA, for loopback TLS in
// tests: trust Pool on the client side, serve Config on the server side.
type Cert struct {
	// DER is the certificate, Leaf the same parsed.
	DER  []byte
	Leaf *x509.Certificate
	// Key is its private key (ECDSA P-256).
	Key *ecdsa.PrivateKey
}

// NewCert makes a certificate for names, valid from an hour ago for a
// day. Each name is a DNS name or an IP address; the first is also the
// subject's common name. It fails the test on error.
func NewCert(t testing.TB, names ...string) Cert {
	t.Helper()
	return NewCertValidFor(t, 24*time.Hour, names...)
}

// NewCertValidFor is NewCert with a certificate valid for d (from an
// hour ago): long enough, say, that a check warning of near expiry has
// nothing to say.
func NewCertValidFor(t testing.TB, d time.Duration, names ...string) Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(d),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if len(names) > 0 {
		tmpl.Subject = pkix.Name{CommonName: names[0]}
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return Cert{DER: der, Leaf: leaf, Key: key}
}

// Config returns a server configuration that presents the certificate.
func (c Cert) Config() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{c.DER}, PrivateKey: c.Key, Leaf: c.Leaf}}}
}

// Pool returns a pool that trusts the certificate.
func (c Cert) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return pool
}

// PEM returns the certificate and its PKCS #8 key in PEM form, as
// cert.pem and key.pem files hold them.
func (c Cert) PEM(t testing.TB) (certPEM, keyPEM []byte) {
	t.Helper()
	pk, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
}
