package tlsutil

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrBadFingerprint is returned by ParseFingerprint for text that is not a
// SHA-256 certificate fingerprint.
var ErrBadFingerprint = errors.New("not a SHA-256 fingerprint: want 64 hex digits, plain or as colon-separated pairs (AB:CD:...)")

// FormatFingerprint writes a SHA-256 digest the way mpop's tls_fingerprint,
// fetchmail's sslfingerprint and "openssl x509 -fingerprint -sha256" do:
// upper-case hex pairs separated by colons (AB:CD:...).
func FormatFingerprint(sum []byte) string {
	var b strings.Builder
	b.Grow(len(sum) * 3)
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(strings.ToUpper(hex.EncodeToString([]byte{c})))
	}
	return b.String()
}

// CertFingerprint returns the SHA-256 fingerprint of the certificate's DER
// encoding in the form of FormatFingerprint.
func CertFingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return FormatFingerprint(sum[:])
}

// ParseFingerprint accepts a SHA-256 fingerprint in either form postino
// and other tools print: 64 hex digits, or colon-separated hex pairs
// (AB:CD:...), in upper or lower case. It
// returns the 32-byte digest.
func ParseFingerprint(s string) ([]byte, error) {
	t := strings.ReplaceAll(s, ":", "")
	b, err := hex.DecodeString(t)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%q: %w", s, ErrBadFingerprint)
	}
	return b, nil
}
