package blackbox

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestServeACMEWithPebble starts the real binary with tls.acme against
// pebble (validating over postino's HTTPS listener) and checks that a
// POP3S session gets the ACME certificate, verified against pebble's root
// with SNI, and that a session started with STLS does too. Pebble issues
// 20-second certificates: the running server renews its certificate and
// serves the new one without a restart.
func TestServeACMEWithPebble(t *testing.T) {
	a := testutil.FreeAddrs(t, 4)
	pop3, pop3s, https, http := a[0], a[1], a[2], a[3]
	p := testutil.StartPebble(t, testutil.PebbleOptions{TLSPort: testutil.Port(t, https), HTTPPort: testutil.Port(t, http), Validity: 20 * time.Second})
	dir := t.TempDir()
	conf := filepath.Join(dir, "postino.toml")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`
hostname = "pop.example.test"
[tls]
acme = true
acme_email = "postmaster@example.test"
acme_directory = %q
acme_ca_file = %q
[pop3]
listen = %q
listen_tls = %q
[smtp]
listen = ""
submission = ""
submissions = ""
local_domains = ["example.test"]
[https]
listen = %q
[http]
listen = %q
`, p.Directory, p.CAFile(t, dir), pop3, pop3s, https, http)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, serverOpts{noAddrs: true, pop3Addr: pop3, pop3sAddr: pop3s, extraArgs: []string{"--config", conf}})
	roots := p.Roots(t)
	var last error
	var first *x509.Certificate
	ok := s.Poll(90*time.Second, 200*time.Millisecond, func() bool {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", pop3s,
			&tls.Config{ServerName: "pop.example.test", RootCAs: roots})
		if last = err; err != nil {
			return false
		}
		defer c.Close()
		first = c.ConnectionState().PeerCertificates[0]
		c.SetDeadline(time.Now().Add(10 * time.Second))
		greeting, err := bufio.NewReader(c).ReadString('\n')
		last = err
		return err == nil && strings.HasPrefix(greeting, "+OK")
	})
	if !ok {
		t.Fatalf("no POP3S session with the ACME certificate: %v\nstderr:\n%s\npebble:\n%s", last, s.Stderr, p.Log)
	}
	// STLS on the plain listener presents it too.
	c, err := net.DialTimeout("tcp", pop3, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	br.ReadString('\n')
	fmt.Fprintf(c, "STLS\r\n")
	if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("STLS: %q", l)
	}
	tc := tls.Client(c, &tls.Config{ServerName: "pop.example.test", RootCAs: roots})
	if err := tc.Handshake(); err != nil {
		t.Errorf("STLS handshake with the ACME certificate: %v", err)
	}
	// Renewed before expiry, served without a restart.
	if !s.Poll(60*time.Second, 500*time.Millisecond, func() bool {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", pop3s,
			&tls.Config{ServerName: "pop.example.test", RootCAs: roots})
		if last = err; err != nil {
			return false
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(first.SerialNumber) != 0
	}) {
		t.Errorf("no renewed certificate on POP3S (last error %v)\nstderr:\n%s", last, s.Stderr)
	}
	// Logged once stored, which may follow the first handshake by a moment.
	if !s.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		return strings.Contains(s.Stderr.String()+s.Stdout.String(), "acme: certificate obtained")
	}) {
		t.Errorf("the log does not say the certificate was obtained:\n%s", s.Stderr)
	}
}
