package queue

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/postino-mail/postino/internal/tlsrpt"
)

// issue makes a certificate for name, signed by parent (self-signed
// when parent is nil), valid from notBefore for a day.
func issue(t *testing.T, name string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, notBefore time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if !isCA {
		tmpl.DNSNames = []string{name}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func tlsaFor(usage, selector, matching uint8, c *x509.Certificate) *dns.TLSA {
	data := c.Raw
	if selector == 1 {
		data = c.RawSubjectPublicKeyInfo
	}
	switch matching {
	case 1:
		s := sha256.Sum256(data)
		data = s[:]
	case 2:
		s := sha512.Sum512(data)
		data = s[:]
	}
	return &dns.TLSA{Usage: usage, Selector: selector, MatchingType: matching, Certificate: hex.EncodeToString(data)}
}

// TestVerifyDANE checks RFC 7672 §3.1: DANE-EE matches the leaf whatever
// its name and dates, in every selector and matching type; DANE-TA needs
// the leaf to chain to the matched certificate and to name the host;
// PKIX usages are not used for SMTP.
func TestVerifyDANE(t *testing.T) {
	now := time.Now()
	ca, caKey := issue(t, "Test CA", true, nil, nil, now.Add(-time.Hour))
	leaf, _ := issue(t, "mx.example.test", false, ca, caKey, now.Add(-time.Hour))
	expired, _ := issue(t, "elsewhere.test", false, ca, caKey, now.Add(-72*time.Hour))
	otherCA, otherKey := issue(t, "Other CA", true, nil, nil, now.Add(-time.Hour))
	chain := []*x509.Certificate{leaf, ca}
	for sel := uint8(0); sel <= 1; sel++ {
		for m := uint8(0); m <= 2; m++ {
			r := tlsaFor(3, sel, m, leaf)
			if !usableTLSA(r) {
				t.Errorf("3 %d %d not usable", sel, m)
			}
			if f := verifyDANE([]*dns.TLSA{r}, chain, "mx.example.test", now); f != nil {
				t.Errorf("DANE-EE 3 %d %d: %+v", sel, m, f)
			}
		}
	}
	// DANE-EE: names and dates do not matter (§3.1.1).
	if f := verifyDANE([]*dns.TLSA{tlsaFor(3, 1, 1, expired)}, []*x509.Certificate{expired}, "mx.example.test", now); f != nil {
		t.Errorf("DANE-EE with an expired certificate for another name: %+v", f)
	}
	// DANE-TA: the CA in the chain.
	if f := verifyDANE([]*dns.TLSA{tlsaFor(2, 0, 1, ca)}, chain, "mx.example.test", now); f != nil {
		t.Errorf("DANE-TA: %+v", f)
	}
	// DANE-TA, but the leaf names another host.
	if f := verifyDANE([]*dns.TLSA{tlsaFor(2, 0, 1, ca)}, chain, "mx2.example.test", now); f == nil || f.ResultType != tlsrpt.ResultValidationFailure {
		t.Errorf("DANE-TA with the wrong name: %+v", f)
	}
	// A hostile server that sends a certificate matching the TA record
	// without the leaf chaining to it.
	forgedLeaf, _ := issue(t, "mx.example.test", false, otherCA, otherKey, now.Add(-time.Hour))
	if f := verifyDANE([]*dns.TLSA{tlsaFor(2, 0, 1, ca)}, []*x509.Certificate{forgedLeaf, ca}, "mx.example.test", now); f == nil {
		t.Error("a leaf that does not chain to the TA was accepted")
	}
	// Records for another certificate.
	if f := verifyDANE([]*dns.TLSA{tlsaFor(3, 1, 1, expired), tlsaFor(2, 1, 2, otherCA)}, chain, "mx.example.test", now); f == nil {
		t.Error("non-matching records accepted")
	}
	if f := verifyDANE([]*dns.TLSA{tlsaFor(3, 1, 1, leaf)}, nil, "mx.example.test", now); f == nil {
		t.Error("no certificate accepted")
	}
	// PKIX-TA(0), PKIX-EE(1) and unknown selectors/matching types are
	// unusable.
	for _, r := range []*dns.TLSA{tlsaFor(0, 0, 1, ca), tlsaFor(1, 1, 1, leaf), {Usage: 3, Selector: 2, MatchingType: 1}, {Usage: 3, Selector: 1, MatchingType: 3}} {
		if usableTLSA(r) {
			t.Errorf("%d %d %d usable", r.Usage, r.Selector, r.MatchingType)
		}
	}
	bad := tlsaFor(3, 1, 1, leaf)
	bad.Certificate = "not hex"
	if tlsaMatches(bad, leaf) {
		t.Error("garbage record data matched")
	}
}

// TestVerifyWebPKI checks the result types of MTA-STS verification
// (RFC 8460 §4.3.1).
func TestVerifyWebPKI(t *testing.T) {
	now := time.Now()
	ca, caKey := issue(t, "Test CA", true, nil, nil, now.Add(-time.Hour))
	leaf, _ := issue(t, "mx.example.test", false, ca, caKey, now.Add(-time.Hour))
	expired, _ := issue(t, "mx.example.test", false, ca, caKey, now.Add(-72*time.Hour))
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if f := verifyWebPKI(roots, []*x509.Certificate{leaf}, "mx.example.test", now); f != nil {
		t.Errorf("valid: %+v", f)
	}
	for name, c := range map[string]struct {
		roots *x509.CertPool
		cert  *x509.Certificate
		host  string
		want  string
	}{
		"other name": {roots, leaf, "mx2.example.test", tlsrpt.ResultCertificateHostMismatch},
		"expired":    {roots, expired, "mx.example.test", tlsrpt.ResultCertificateExpired},
		"untrusted":  {x509.NewCertPool(), leaf, "mx.example.test", tlsrpt.ResultCertificateNotTrusted},
	} {
		if f := verifyWebPKI(c.roots, []*x509.Certificate{c.cert}, c.host, now); f == nil || f.ResultType != c.want {
			t.Errorf("%s: %+v, want %s", name, f, c.want)
		}
	}
}
