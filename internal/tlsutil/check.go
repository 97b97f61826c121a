package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"
)

// ExpiryWarning is how long before its end a certificate is reported as
// expiring soon by CheckPair.
const ExpiryWarning = 14 * 24 * time.Hour

// The files of a certificate/key pair, as PairError.Which names them.
const (
	PairCert = "cert"
	PairKey  = "key"
)

// PairError is one problem of one file of a certificate/key pair.
type PairError struct {
	Which string // PairCert or PairKey
	Err   error
}

// Error returns "tls cert: ..." or "tls key: ...".
func (e *PairError) Error() string { return "tls " + e.Which + ": " + e.Err.Error() }

// Unwrap returns the underlying error (fs.ErrNotExist for a missing file).
func (e *PairError) Unwrap() error { return e.Err }

// PairCheck is what CheckPair found. Errors stop the pair from being used;
// Warnings leave it usable but deserve attention.
type PairCheck struct {
	Errors   []*PairError
	Warnings []*PairError
}

// CheckPair checks a PEM certificate chain file and its private key file as
// an operator would before starting the server: each file must be readable
// and hold PEM, the key must match the first certificate, and the
// certificate should be valid at now for at least ExpiryWarning and name
// hostname (warnings). It reports every problem, not only the first.
func CheckPair(certFile, keyFile, hostname string, now time.Time) PairCheck {
	var pc PairCheck
	fail := func(which string, err error) {
		pc.Errors = append(pc.Errors, &PairError{Which: which, Err: err})
	}
	warn := func(format string, args ...any) {
		pc.Warnings = append(pc.Warnings, &PairError{Which: PairCert, Err: fmt.Errorf(format, args...)})
	}
	certPEM, certErr := os.ReadFile(certFile)
	if certErr != nil {
		fail(PairCert, certErr)
	}
	keyPEM, keyErr := os.ReadFile(keyFile)
	if keyErr != nil {
		fail(PairKey, keyErr)
	}
	var leaf *x509.Certificate
	if certErr == nil {
		var chain []*x509.Certificate
		parseFailed := false
		rest := certPEM
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				fail(PairCert, fmt.Errorf("%s: certificate %d: %w", certFile, len(chain)+1, err))
				parseFailed = true
				break
			}
			chain = append(chain, c)
		}
		if len(chain) > 0 {
			leaf = chain[0]
		} else if !parseFailed {
			fail(PairCert, fmt.Errorf("%s: no PEM CERTIFICATE block", certFile))
		}
	}
	keyOK := false
	if keyErr == nil {
		if _, err := ParsePrivateKey(keyPEM); err != nil {
			fail(PairKey, fmt.Errorf("%s: %w", keyFile, err))
		} else {
			keyOK = true
		}
	}
	if leaf != nil && keyOK {
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			fail(PairKey, fmt.Errorf("%s does not match the certificate in %s: %w", keyFile, certFile, err))
		}
	}
	if leaf == nil {
		return pc
	}
	switch {
	case now.After(leaf.NotAfter):
		warn("%s expired on %s", certFile, leaf.NotAfter.UTC().Format(time.DateOnly))
	case leaf.NotAfter.Sub(now) < ExpiryWarning:
		warn("%s expires on %s, in less than %d days", certFile, leaf.NotAfter.UTC().Format(time.DateOnly), int(ExpiryWarning/(24*time.Hour)))
	case now.Before(leaf.NotBefore):
		warn("%s is not valid before %s", certFile, leaf.NotBefore.UTC().Format(time.DateTime))
	}
	if hostname != "" {
		if err := leaf.VerifyHostname(hostname); err != nil {
			warn("%s does not cover hostname %q (it names %s)", certFile, hostname, certNames(leaf))
		}
	}
	return pc
}

// certNames lists the names a certificate is valid for, for messages.
func certNames(c *x509.Certificate) string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no DNS name"
	}
	return strings.Join(names, ", ")
}
