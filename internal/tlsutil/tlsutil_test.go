package tlsutil

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// newSelfSigned generates a certificate in a fresh directory.
func newSelfSigned(t *testing.T, hostname string) (dir, certFile, keyFile string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "tls")
	certFile, keyFile, created, err := EnsureSelfSigned(dir, hostname)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("created = false for a new directory")
	}
	return dir, certFile, keyFile
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestEnsureSelfSignedGenerates(t *testing.T) {
	dir, certFile, keyFile := newSelfSigned(t, "mail.example.org")
	if certFile != filepath.Join(dir, "cert.pem") || keyFile != filepath.Join(dir, "key.pem") {
		t.Errorf("files = %q, %q", certFile, keyFile)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("dir mode = %o, want 700", m)
	}
	if m := mode(t, keyFile); m != 0o600 {
		t.Errorf("key mode = %o, want 600", m)
	}
	if m := mode(t, certFile); m != 0o644 {
		t.Errorf("cert mode = %o, want 644", m)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries, want 2 (no temporary files left)", len(entries))
	}

	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(leaf.DNSNames, []string{"mail.example.org", "localhost"}) {
		t.Errorf("DNSNames = %q", leaf.DNSNames)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(ips, []string{"127.0.0.1", "::1"}) {
		t.Errorf("IPAddresses = %q", ips)
	}
	if leaf.Subject.CommonName != "mail.example.org" {
		t.Errorf("CN = %q", leaf.Subject.CommonName)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key = %T, want ECDSA P-256", leaf.PublicKey)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v", leaf.KeyUsage)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %v is not a large positive random number", leaf.SerialNumber)
	}
	now := time.Now()
	if leaf.NotBefore.After(now) || leaf.NotBefore.Before(now.Add(-2*time.Hour)) {
		t.Errorf("NotBefore = %v", leaf.NotBefore)
	}
	if years := leaf.NotAfter.Sub(now).Hours() / 24 / 365; years < 9.99 || years > 10.01 {
		t.Errorf("NotAfter = %v, %.2f years away", leaf.NotAfter, years)
	}

	// The certificate verifies for each SAN when trusted directly.
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	for _, name := range []string{"mail.example.org", "localhost", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			t.Errorf("Verify(%s): %v", name, err)
		}
	}
}

func TestEnsureSelfSignedHostnames(t *testing.T) {
	for _, tt := range []struct {
		hostname string
		dns      []string
		ips      int
	}{
		{"", []string{"localhost"}, 2},
		{"localhost", []string{"localhost"}, 2},
		{"192.0.2.7", []string{"localhost"}, 3},
		{"::1", []string{"localhost"}, 2},
	} {
		_, certFile, _ := newSelfSigned(t, tt.hostname)
		data, _ := os.ReadFile(certFile)
		leaf, err := firstCertificate(data)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(leaf.DNSNames, tt.dns) || len(leaf.IPAddresses) != tt.ips {
			t.Errorf("hostname %q: DNS %q, IPs %v", tt.hostname, leaf.DNSNames, leaf.IPAddresses)
		}
	}
}

func TestEnsureSelfSignedReuses(t *testing.T) {
	dir, certFile, keyFile := newSelfSigned(t, "mail.example.org")
	r1, err := NewReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2, k2, created, err := EnsureSelfSigned(dir, "other.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if created || c2 != certFile || k2 != keyFile {
		t.Fatalf("second call: %q, %q, created=%v", c2, k2, created)
	}
	r2, err := NewReloader(c2, k2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Fingerprint() != r2.Fingerprint() {
		t.Error("fingerprint changed on reuse")
	}
	if fp := r1.Fingerprint(); !fingerprintRE.MatchString(fp) {
		t.Errorf("Fingerprint() = %q, want 32 upper-case hex pairs separated by colons", fp)
	}

	// A missing key (e.g. a crash after only one file) means regeneration.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if _, _, created, err := EnsureSelfSigned(dir, "mail.example.org"); err != nil || !created {
		t.Fatalf("after removing the key: created=%v, err=%v", created, err)
	}
	r3, err := NewReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r3.Fingerprint() == r1.Fingerprint() {
		t.Error("regenerated certificate has the old fingerprint")
	}
}

// regenerate replaces the files in dir with a new certificate.
func regenerate(t *testing.T, dir string) {
	t.Helper()
	os.Remove(filepath.Join(dir, CertFileName))
	os.Remove(filepath.Join(dir, KeyFileName))
	if _, _, created, err := EnsureSelfSigned(dir, "mail.example.org"); err != nil || !created {
		t.Fatalf("regenerate: created=%v, err=%v", created, err)
	}
}

func TestReloaderReload(t *testing.T) {
	dir, certFile, keyFile := newSelfSigned(t, "mail.example.org")
	r, err := NewReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	fp1 := r.Fingerprint()
	c1, _ := r.GetCertificate(nil)

	regenerate(t, dir)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	fp2 := r.Fingerprint()
	if fp2 == fp1 {
		t.Fatal("fingerprint unchanged after Reload")
	}
	if c2, _ := r.GetCertificate(nil); c2 == c1 || c2.Leaf == nil {
		t.Error("GetCertificate did not return the new certificate with its leaf")
	}

	// A broken certificate file: the old certificate stays.
	if err := os.WriteFile(certFile, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = r.Reload()
	if err == nil || !strings.Contains(err.Error(), certFile) {
		t.Fatalf("Reload(bad cert) = %v, want an error naming %s", err, certFile)
	}
	if r.Fingerprint() != fp2 {
		t.Error("failed Reload replaced the certificate")
	}
	if c, err := r.GetCertificate(nil); err != nil || c == nil {
		t.Errorf("GetCertificate after failed reload = %v, %v", c, err)
	}

	// A missing key file.
	os.Remove(keyFile)
	if err := r.Reload(); err == nil || !strings.Contains(err.Error(), keyFile) {
		t.Fatalf("Reload(missing key) = %v, want an error naming %s", err, keyFile)
	}
	if r.Fingerprint() != fp2 {
		t.Error("failed Reload replaced the certificate")
	}
}

func TestNewReloaderErrors(t *testing.T) {
	dir1, cert1, key1 := newSelfSigned(t, "a.example.org")
	_, cert2, key2 := newSelfSigned(t, "b.example.org")

	_, err := NewReloader(cert1, key2, nil)
	want := "tls: certificate " + cert1 + " and key " + key2 + " do not match"
	if err == nil || err.Error() != want {
		t.Errorf("mismatched pair: err = %v, want %q", err, want)
	}

	garbage := filepath.Join(dir1, "garbage.pem")
	os.WriteFile(garbage, []byte("not pem"), 0o600)
	if _, err := NewReloader(garbage, key1, nil); err == nil || !strings.Contains(err.Error(), "certificate "+garbage+": no PEM CERTIFICATE") {
		t.Errorf("garbage cert: err = %v", err)
	}
	if _, err := NewReloader(cert1, garbage, nil); err == nil || !strings.Contains(err.Error(), "key "+garbage+": no PEM private key") {
		t.Errorf("garbage key: err = %v", err)
	}
	// Certificate and key swapped.
	if _, err := NewReloader(key1, cert1, nil); err == nil || !strings.Contains(err.Error(), key1) {
		t.Errorf("swapped files: err = %v", err)
	}
	missing := filepath.Join(dir1, "missing.pem")
	if _, err := NewReloader(missing, key1, nil); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing cert: err = %v", err)
	}
	_ = cert2
}

func TestReloaderWatch(t *testing.T) {
	dir, certFile, keyFile := newSelfSigned(t, "mail.example.org")
	var logs testutil.SyncBuffer
	r, err := NewReloader(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		r.Watch(ctx, 10*time.Millisecond)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()

	fp1 := r.Fingerprint()
	regenerate(t, dir)
	testutil.WaitFor(t, 5*time.Second, "reload after regeneration", func() bool { return r.Fingerprint() != fp1 })
	testutil.WaitFor(t, 5*time.Second, "success log", func() bool { return strings.Contains(logs.String(), "certificate reloaded") })
	fp2 := r.Fingerprint()

	// A broken file is logged and the certificate kept.
	if err := os.WriteFile(certFile, []byte("broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "failure log", func() bool { return strings.Contains(logs.String(), "reloading certificate failed") })
	if r.Fingerprint() != fp2 {
		t.Error("broken file replaced the certificate")
	}
	// The failure is logged once, not on every poll.
	time.Sleep(100 * time.Millisecond)
	if n := strings.Count(logs.String(), "reloading certificate failed"); n != 1 {
		t.Errorf("failure logged %d times, want 1", n)
	}

	// Fixing the file recovers.
	regenerate(t, dir)
	testutil.WaitFor(t, 5*time.Second, "reload after fix", func() bool { return r.Fingerprint() != fp2 })

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

// serve runs a TLS server on a loopback listener that writes "hello" to
// each client, and returns its address.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, "hello")
			}()
		}
	}()
	return ln.Addr().String()
}

func clientConfig(t *testing.T, certFile string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in", certFile)
	}
	return &tls.Config{RootCAs: roots, ServerName: "localhost"}
}

func dial(addr string, cfg *tls.Config) (string, *tls.ConnectionState, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	st := c.ConnectionState()
	return string(b), &st, err
}

func TestServerConfigHandshake(t *testing.T) {
	_, certFile, keyFile := newSelfSigned(t, "mail.example.org")
	r, err := NewReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, ServerConfig(r, "1.2"))

	got, st, err := dial(addr, clientConfig(t, certFile))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if got != "hello" || st.Version != tls.VersionTLS13 {
		t.Errorf("got %q over version %x", got, st.Version)
	}

	// TLS 1.2 negotiates one of the configured AEAD suites.
	c12 := clientConfig(t, certFile)
	c12.MaxVersion = tls.VersionTLS12
	got, st, err = dial(addr, c12)
	if err != nil {
		t.Fatalf("TLS 1.2 handshake: %v", err)
	}
	if got != "hello" || st.Version != tls.VersionTLS12 ||
		!slices.Contains(ServerConfig(r, "1.2").CipherSuites, st.CipherSuite) {
		t.Errorf("TLS 1.2: got %q, version %x, suite %s", got, st.Version, tls.CipherSuiteName(st.CipherSuite))
	}

	// A client that does not trust the certificate fails.
	if _, _, err := dial(addr, &tls.Config{ServerName: "localhost"}); err == nil {
		t.Error("untrusting client connected")
	}

	// A TLS 1.1 client is refused.
	c11 := clientConfig(t, certFile)
	c11.MinVersion = tls.VersionTLS10
	c11.MaxVersion = tls.VersionTLS11
	if _, _, err := dial(addr, c11); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("TLS 1.1 client: err = %v, want a protocol version failure", err)
	} else {
		t.Logf("TLS 1.1 client refused: %v", err)
	}

	// With min_version 1.3, a TLS 1.2 client is refused.
	addr13 := serve(t, ServerConfig(r, "1.3"))
	if _, _, err := dial(addr13, c12); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("TLS 1.2 client to a 1.3-only server: err = %v, want a protocol version failure", err)
	}
	if _, st, err := dial(addr13, clientConfig(t, certFile)); err != nil || st.Version != tls.VersionTLS13 {
		t.Errorf("TLS 1.3 client: %v", err)
	}
}

// Handshakes pick up a reloaded certificate without restarting the
// listener.
func TestServerConfigServesReloadedCertificate(t *testing.T) {
	dir, certFile, keyFile := newSelfSigned(t, "mail.example.org")
	r, err := NewReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, ServerConfig(r, "1.2"))
	oldClient := clientConfig(t, certFile)

	regenerate(t, dir)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dial(addr, clientConfig(t, certFile)); err != nil {
		t.Errorf("client trusting the new certificate: %v", err)
	}
	if _, _, err := dial(addr, oldClient); err == nil {
		t.Error("client trusting only the old certificate connected")
	}
}

func TestReloaderSetFiles(t *testing.T) {
	dir := t.TempDir()
	c1, k1 := writePair(t, dir, "one", "one.example.org", time.Now())
	c2, k2 := writePair(t, dir, "two", "two.example.org", time.Now())
	r, err := NewReloader(c1, k1, nil)
	if err != nil {
		t.Fatal(err)
	}
	fp1 := r.Fingerprint()
	// A pair that does not load: refused, the old files and certificate stay.
	if err := r.SetFiles(c2, k1); err == nil {
		t.Fatal("SetFiles accepted a mismatched pair")
	}
	if c, k := r.Files(); c != c1 || k != k1 || r.Fingerprint() != fp1 {
		t.Fatalf("after a refused SetFiles: files %s %s, fingerprint changed %v", c, k, r.Fingerprint() != fp1)
	}
	if err := r.SetFiles(c2, k2); err != nil {
		t.Fatal(err)
	}
	cert, _ := r.GetCertificate(nil)
	if cert.Leaf.Subject.CommonName != "two.example.org" && !slices.Contains(cert.Leaf.DNSNames, "two.example.org") {
		t.Errorf("serving %v after SetFiles, want two.example.org", cert.Leaf.DNSNames)
	}
	if c, k := r.Files(); c != c2 || k != k2 {
		t.Errorf("Files = %s %s", c, k)
	}
	// Reload reads the new files.
	writePair(t, dir, "two", "three.example.org", time.Now())
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	cert, _ = r.GetCertificate(nil)
	if !slices.Contains(cert.Leaf.DNSNames, "three.example.org") {
		t.Errorf("Reload after SetFiles serves %v", cert.Leaf.DNSNames)
	}
}
