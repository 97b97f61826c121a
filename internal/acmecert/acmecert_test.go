package acmecert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/postino-mail/postino/internal/testutil"
)

// fixture is a Manager with the HTTPS (TLS-ALPN-01) and HTTP (HTTP-01)
// listeners pebble validates against.
type fixture struct {
	mg     *Manager
	https  string // address of the TLS listener
	pebble *testutil.Pebble
	dir    string
	logs   *testutil.SyncBuffer
}

// newFixture starts pebble and the listeners: withTLS and withHTTP choose
// which challenge pebble can validate (the other port is closed).
func newFixture(t *testing.T, withTLS, withHTTP bool, validity time.Duration, names ...string) *fixture {
	t.Helper()
	tlsL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsPort, httpPort := testutil.Port(t, tlsL.Addr().String()), testutil.Port(t, httpL.Addr().String())
	if !withTLS {
		tlsL.Close()
	}
	if !withHTTP {
		httpL.Close()
	}
	p := testutil.StartPebble(t, testutil.PebbleOptions{HTTPPort: httpPort, TLSPort: tlsPort, Validity: validity})
	dir := t.TempDir()
	// Renewals log after the test: into a buffer, shown on failure.
	logs := &testutil.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	caClient, err := HTTPClientWithCA(p.CAFile(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	mg, err := New(Options{
		Email: "postmaster@postino.test", DirectoryURL: p.Directory, HTTPClient: caClient,
		Cache: DirCache(filepath.Join(dir, "acme")), Names: names,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{mg: mg, https: tlsL.Addr().String(), pebble: p, dir: dir, logs: logs}
	if withTLS {
		cfg := &tls.Config{GetCertificate: mg.GetCertificate, NextProtos: []string{"http/1.1", acme.ALPNProto}}
		srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(tls.NewListener(tlsL, cfg))
		t.Cleanup(func() { srv.Close() })
	}
	if withHTTP {
		srv := &http.Server{Handler: mg.HTTPHandler(nil), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(httpL)
		t.Cleanup(func() { srv.Close() })
	}
	return f
}

// served returns the leaf certificate the HTTPS listener serves for sni,
// verified against pebble's root.
func (f *fixture) served(t *testing.T, sni string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", f.https, &tls.Config{ServerName: sni, RootCAs: roots})
	if err != nil {
		t.Fatalf("handshake for %s: %v", sni, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// obtainAll runs Run to completion.
func obtainAll(t *testing.T, mg *Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mg.Run(ctx)
	if ctx.Err() != nil {
		t.Fatal("Run did not obtain every certificate in time")
	}
}

// TestTLSALPN01WithPebble: pebble's HTTP-01 port is closed, so only
// TLS-ALPN-01 on the TLS listener can prove control.
func TestTLSALPN01WithPebble(t *testing.T) {
	f := newFixture(t, true, false, 0, "mail.postino.test", "mta-sts.postino.test")
	obtainAll(t, f.mg)
	roots := f.pebble.Roots(t)
	for _, name := range []string{"mail.postino.test", "mta-sts.postino.test"} {
		leaf := f.served(t, name, roots)
		if err := leaf.VerifyHostname(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Stored in the cache folder, keys private.
	fi, err := os.Stat(filepath.Join(f.dir, "acme", "mail.postino.test"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("cached certificate mode %o", fi.Mode().Perm())
	}
}

// TestHTTP01WithPebble: pebble's TLS-ALPN-01 port is closed, so only
// HTTP-01 on the HTTP listener can prove control.
func TestHTTP01WithPebble(t *testing.T) {
	f := newFixture(t, false, true, 0, "autoconfig.postino.test")
	obtainAll(t, f.mg)
	c, err := f.mg.GetCertificate(ecdsaHello("autoconfig.postino.test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{
		DNSName: "autoconfig.postino.test", Roots: f.pebble.Roots(t), Intermediates: intermediates(t, c),
	}); err != nil {
		t.Errorf("certificate obtained over HTTP-01 does not verify: %v", err)
	}
}

// intermediates returns the pool of c's chain after its leaf.
func intermediates(t *testing.T, c *tls.Certificate) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		pool.AddCert(ic)
	}
	return pool
}

// TestRenewalWithoutRestart has pebble issue 20-second certificates: the
// Manager renews before expiry and the listener serves the new one.
func TestRenewalWithoutRestart(t *testing.T) {
	f := newFixture(t, true, false, 20*time.Second, "mail.postino.test")
	obtainAll(t, f.mg)
	roots := f.pebble.Roots(t)
	first := f.served(t, "mail.postino.test", roots)
	var next *x509.Certificate
	testutil.WaitFor(t, 40*time.Second, "a renewed certificate", func() bool {
		next = f.served(t, "mail.postino.test", roots)
		return next.SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if !next.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed certificate expires %v, the first %v", next.NotAfter, first.NotAfter)
	}
}

// TestHostileNames: a client asking for a name that is not configured
// gets no certificate and makes no order; a failed order is not retried
// by every handshake.
func TestHostileNames(t *testing.T) {
	// Pebble cannot validate: neither port answers.
	f := newFixture(t, false, false, 0, "mail.postino.test")
	for _, sni := range []string{"evil.example.com", "", "localhost", strings.Repeat("a.", 200) + "test"} {
		if _, err := f.mg.GetCertificate(&tls.ClientHelloInfo{ServerName: sni}); err == nil {
			t.Errorf("SNI %q: got a certificate", sni)
		}
	}
	_, err := f.mg.GetCertificate(ecdsaHello("mail.postino.test"))
	if err == nil {
		t.Fatal("certificate obtained without any challenge answered")
	}
	if errors.Is(err, ErrNotObtained) {
		t.Fatalf("first attempt refused without an order: %v", err)
	}
	start := time.Now()
	_, err = f.mg.GetCertificate(ecdsaHello("mail.postino.test"))
	if !errors.Is(err, ErrNotObtained) {
		t.Errorf("second handshake: %v, want ErrNotObtained at once", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second handshake waited %v", d)
	}
	// The log says why there is no certificate.
	if l := f.logs.String(); !strings.Contains(l, "no certificate for this name yet") || !strings.Contains(l, "name=mail.postino.test") {
		t.Errorf("the failure is not logged:\n%s", l)
	}
	if strings.Contains(f.pebble.Log.String(), "evil.example.com") {
		t.Error("an order was placed for a name not configured")
	}
}

func TestNewRefusesBareNames(t *testing.T) {
	if _, err := New(Options{Cache: DirCache(t.TempDir()), DirectoryURL: "https://ca.example/dir", Names: []string{"localhost"}}); err == nil {
		t.Error("New accepted localhost")
	}
	if _, err := New(Options{Names: []string{"mail.example.org"}, DirectoryURL: "https://ca.example/dir"}); err == nil {
		t.Error("New accepted no cache")
	}
	if _, err := New(Options{Names: []string{"mail.example.org"}, Cache: DirCache(t.TempDir())}); err == nil {
		t.Error("New accepted no directory URL")
	}
}

func TestDirCache(t *testing.T) {
	ctx := context.Background()
	d := DirCache(filepath.Join(t.TempDir(), "acme"))
	if _, err := d.Get(ctx, "mail.example.org"); !errors.Is(err, ErrCacheMiss) {
		t.Errorf("Get before the folder exists: %v", err)
	}
	if err := d.Put(ctx, "mail.example.org", []byte("pem")); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Get(ctx, "mail.example.org"); err != nil || string(got) != "pem" {
		t.Errorf("Get = %q, %v", got, err)
	}
	if fi, _ := os.Stat(string(d)); fi.Mode().Perm() != 0o700 {
		t.Errorf("folder mode %o", fi.Mode().Perm())
	}
	if err := d.Delete(ctx, "mail.example.org"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(ctx, "mail.example.org"); !errors.Is(err, ErrCacheMiss) {
		t.Errorf("Get after Delete: %v", err)
	}
	for _, k := range []string{"", "..", "../x", "a/b", ".hidden", "a\x00b", strings.Repeat("a", 400)} {
		if err := d.Put(ctx, k, []byte("x")); !errors.Is(err, ErrBadKey) {
			t.Errorf("Put(%q) = %v, want ErrBadKey", k, err)
		}
		if _, err := d.Get(ctx, k); !errors.Is(err, ErrBadKey) {
			t.Errorf("Get(%q) = %v, want ErrBadKey", k, err)
		}
	}
}
