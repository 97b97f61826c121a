package tlsutil

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// writePair writes a test certificate for names and returns its files.
func writeSNIPair(t testing.TB, names ...string) (Pair, testutil.Cert) {
	t.Helper()
	c := testutil.NewCert(t, names...)
	certPEM, keyPEM := c.PEM(t)
	dir := t.TempDir()
	p := Pair{filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")}
	if err := os.WriteFile(p.Cert, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, c
}

// fakeIssuer stands for ACME: it handles the names in its map.
type fakeIssuer struct {
	certs map[string]*tls.Certificate
	asked []string
}

func (f *fakeIssuer) Handles(name string) bool { return f.certs[name] != nil }

func (f *fakeIssuer) GetCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.asked = append(f.asked, h.ServerName)
	if c := f.certs[h.ServerName]; c != nil {
		return c, nil
	}
	return nil, errors.New("fake issuer: no certificate")
}

// leafName returns the common name of the certificate got for hello.
func leafName(t *testing.T, s *CertSet, hello *tls.ClientHelloInfo) string {
	t.Helper()
	c, err := s.GetCertificate(hello)
	if err != nil {
		t.Fatalf("GetCertificate(%q): %v", hello.ServerName, err)
	}
	return c.Leaf.Subject.CommonName
}

func TestCertSetChoosesBySNI(t *testing.T) {
	a, _ := writeSNIPair(t, "mail.example.org")
	b, _ := writeSNIPair(t, "mail.example.net", "*.example.net")
	s, err := NewCertSet("mail.example.net", []Pair{a, b}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ sni, want string }{
		{"mail.example.org", "mail.example.org"},
		{"MAIL.Example.ORG.", "mail.example.org"},   // case and trailing dot do not matter
		{"pop.example.net", "mail.example.net"},     // wildcard
		{"mail.example.net", "mail.example.net"},    // primary
		{"", "mail.example.net"},                    // no SNI: the primary host name's
		{"unknown.example.com", "mail.example.net"}, // unknown: the primary's
	} {
		if got := leafName(t, s, &tls.ClientHelloInfo{ServerName: tc.sni}); got != tc.want {
			t.Errorf("SNI %q: got certificate %q, want %q", tc.sni, got, tc.want)
		}
	}
}

func TestCertSetPrimaryIsFirstWhenNoneNamesTheHost(t *testing.T) {
	a, _ := writeSNIPair(t, "one.example.org")
	b, _ := writeSNIPair(t, "two.example.org")
	s, err := NewCertSet("localhost", []Pair{a, b}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := leafName(t, s, &tls.ClientHelloInfo{}); got != "one.example.org" {
		t.Errorf("no SNI: got %q, want the first pair", got)
	}
}

func TestCertSetIssuer(t *testing.T) {
	file, _ := writeSNIPair(t, "files.example.org")
	acmeCert, _ := writeSNIPair(t, "mail.example.org")
	ac, err := loadKeyPair(acmeCert.Cert, acmeCert.Key)
	if err != nil {
		t.Fatal(err)
	}
	fi := &fakeIssuer{certs: map[string]*tls.Certificate{"mail.example.org": ac}}
	s, err := NewCertSet("mail.example.org", []Pair{file}, fi, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := leafName(t, s, &tls.ClientHelloInfo{ServerName: "files.example.org"}); got != "files.example.org" {
		t.Errorf("file name: got %q", got)
	}
	if got := leafName(t, s, &tls.ClientHelloInfo{ServerName: "mail.example.org"}); got != "mail.example.org" {
		t.Errorf("issuer name: got %q", got)
	}
	if got := leafName(t, s, &tls.ClientHelloInfo{}); got != "mail.example.org" {
		t.Errorf("no SNI: got %q, want the issuer's primary", got)
	}
	// A TLS-ALPN-01 validation goes to the issuer even for a file name.
	fi.asked = nil
	s.GetCertificate(&tls.ClientHelloInfo{ServerName: "files.example.org", SupportedProtos: []string{"acme-tls/1"}})
	if len(fi.asked) != 1 || fi.asked[0] != "files.example.org" {
		t.Errorf("acme-tls/1 handshake: issuer asked %q", fi.asked)
	}
}

func TestCertSetIssuerOnlyFailsWithoutCertificate(t *testing.T) {
	fi := &fakeIssuer{certs: map[string]*tls.Certificate{}}
	s, err := NewCertSet("mail.example.org", nil, fi, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing obtained yet: the handshake fails rather than getting some
	// other certificate.
	if c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: "mail.example.org"}); err == nil {
		t.Fatalf("got certificate %v before the issuer has one", c.Leaf.Subject)
	}
	if _, err := NewCertSet("x", nil, nil, nil); err == nil {
		t.Error("NewCertSet without pairs or issuer succeeded")
	}
}

func TestCertSetSetPairsKeepsOldOnError(t *testing.T) {
	a, _ := writeSNIPair(t, "a.example.org")
	b, _ := writeSNIPair(t, "b.example.org")
	s, err := NewCertSet("a.example.org", []Pair{a}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetPairs([]Pair{a, {Cert: "/nonexistent/c", Key: "/nonexistent/k"}}); err == nil {
		t.Fatal("SetPairs with a missing file succeeded")
	}
	if got := leafName(t, s, &tls.ClientHelloInfo{ServerName: "b.example.org"}); got != "a.example.org" {
		t.Errorf("after a failed SetPairs: %q", got)
	}
	if err := s.SetPairs([]Pair{a, b}); err != nil {
		t.Fatal(err)
	}
	if got := leafName(t, s, &tls.ClientHelloInfo{ServerName: "b.example.org"}); got != "b.example.org" {
		t.Errorf("after SetPairs: %q", got)
	}
}

func TestCovers(t *testing.T) {
	names := []string{"mail.example.org", "*.example.net", "Pop.Example.COM."}
	for name, want := range map[string]bool{
		"mail.example.org": true, "x.mail.example.org": false, "example.org": false,
		"pop.example.net": true, "a.pop.example.net": false, "example.net": false,
		"pop.example.com": true, "": false, "*.example.net": true,
	} {
		if got := covers(names, name); got != want {
			t.Errorf("covers(%q) = %v, want %v", name, got, want)
		}
	}
	// A wildcard over a single label ("*.org") matches nothing.
	if covers([]string{"*.org"}, "example.org") {
		t.Error("*.org covers example.org")
	}
}

// TestCertSetHandshake runs real handshakes with and without SNI.
func TestCertSetHandshake(t *testing.T) {
	a, ca := writeSNIPair(t, "mail.example.org")
	b, cb := writeSNIPair(t, "mail.example.net")
	s, err := NewCertSet("mail.example.org", []Pair{a, b}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", ServerConfig(s, "1.2"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	for _, tc := range []struct {
		sni  string
		want testutil.Cert
	}{{"mail.example.net", cb}, {"mail.example.org", ca}, {"", ca}} {
		cfg := &tls.Config{ServerName: tc.sni, RootCAs: tc.want.Pool()}
		if tc.sni == "" {
			// crypto/tls sends no SNI without a server name: verify by hand.
			cfg.InsecureSkipVerify = true
		}
		c, err := tls.Dial("tcp", l.Addr().String(), cfg)
		if err != nil {
			t.Fatalf("SNI %q: %v", tc.sni, err)
		}
		got := c.ConnectionState().PeerCertificates[0]
		c.Close()
		if !got.Equal(tc.want.Leaf) {
			t.Errorf("SNI %q: got %v", tc.sni, got.DNSNames)
		}
	}
}

// BenchmarkCertSetGetCertificate measures the choice among 20 certificate
// files for a name covered by the last one (the worst case).
func BenchmarkCertSetGetCertificate(b *testing.B) {
	var pairs []Pair
	for i := range 20 {
		p, _ := writeSNIPair(b, fmt.Sprintf("mail%d.example.org", i))
		pairs = append(pairs, p)
	}
	s, err := NewCertSet("mail0.example.org", pairs, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	hello := &tls.ClientHelloInfo{ServerName: "mail19.example.org"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetCertificate(hello); err != nil {
			b.Fatal(err)
		}
	}
}
