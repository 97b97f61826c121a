package server

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestACMEWithPebble builds a server with tls.acme against pebble, which
// validates over the server's own HTTPS listener (TLS-ALPN-01): POP3S
// then presents a certificate chaining to pebble's root for the host name,
// with SNI and without; the HTTPS listener serves the MTA-STS policy under
// a certificate for mta-sts.DOMAIN, and orders the one of
// autoconfig.DOMAIN on its first handshake. No self-signed certificate is
// made.
func TestACMEWithPebble(t *testing.T) {
	cfg := testConfig(t)
	a := testutil.FreeAddrs(t, 2)
	cfg.HTTPS.Listen, cfg.HTTP.Listen = a[0], a[1]
	p := testutil.StartPebble(t, testutil.PebbleOptions{TLSPort: testutil.Port(t, a[0]), HTTPPort: testutil.Port(t, a[1])})
	cfg.TLS.ACME = true
	cfg.TLS.ACMEEmail = "postmaster@example.test"
	cfg.TLS.ACMEDirectory = p.Directory
	cfg.TLS.ACMECAFile = p.CAFile(t, t.TempDir())
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	srv, err := Build(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer func() {
		srv.Shutdown(logger)
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()
	addr := map[string]string{}
	for _, l := range srv.Listeners() {
		addr[l.Name] = l.Addr
	}
	roots := p.Roots(t)
	testutil.WaitFor(t, 90*time.Second, "the ACME certificate on POP3S", func() bool {
		_, err := tlsLeaf(t, "implicit", addr["pop3s"], &tls.Config{ServerName: "mail.example.test", RootCAs: roots})
		return err == nil
	})
	// Without SNI: the host name's certificate.
	leaf, err := tlsLeaf(t, "implicit", addr["pop3s"], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("mail.example.test"); err != nil {
		t.Errorf("no SNI: %v", err)
	}
	// STLS too.
	if _, err := tlsLeaf(t, "stls", addr["pop3"], &tls.Config{ServerName: "mail.example.test", RootCAs: roots}); err != nil {
		t.Errorf("STLS: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.TLSDir(), "cert.pem")); err == nil {
		t.Error("a self-signed certificate was generated with tls.acme")
	}

	// HTTPS with certificates for the well-known names.
	fetch := func(host, path string) (int, string) {
		t.Helper()
		tr := &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr["https"])
			},
		}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 2 * time.Minute}).Get("https://" + host + path)
		if err != nil {
			t.Fatalf("https://%s%s: %v", host, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	var code int
	var body string
	testutil.WaitFor(t, 60*time.Second, "the mta-sts certificate", func() bool {
		_, err := tlsLeaf(t, "implicit", addr["https"], &tls.Config{ServerName: "mta-sts.example.test", RootCAs: roots})
		return err == nil
	})
	code, body = fetch("mta-sts.example.test", "/.well-known/mta-sts.txt")
	if code != 200 || body != "version: STSv1\r\nmode: testing\r\nmx: mail.example.test\r\nmax_age: 604800\r\n" {
		t.Errorf("policy: %d %q", code, body)
	}
	// Ordered on demand, during the first handshake.
	if code, _ = fetch("autoconfig.example.test", "/mail/config-v1.1.xml"); code != 200 {
		t.Errorf("autoconfig: %d", code)
	}
	// A name that is not ours gets no certificate (and no order).
	if _, err := tlsLeaf(t, "implicit", addr["https"], &tls.Config{ServerName: "autoconfig.elsewhere.example", RootCAs: roots}); err == nil {
		t.Error("a certificate verified for a foreign name")
	}
	// The certificates are kept in the data folder.
	// (stored just after the handshake that ordered it may be served)
	for _, name := range []string{"mail.example.test", "mta-sts.example.test", "autoconfig.example.test"} {
		testutil.WaitFor(t, 10*time.Second, "the stored certificate of "+name, func() bool {
			_, err := os.Stat(filepath.Join(cfg.ACMEDir(), name))
			return err == nil
		})
	}
}

// TestACMEOverHTTP01Only: with only http.listen, pebble's TLS-ALPN-01
// port is closed and the certificate is obtained over HTTP-01 on the HTTP
// listener; POP3S then serves it.
func TestACMEOverHTTP01Only(t *testing.T) {
	cfg := testConfig(t)
	a := testutil.FreeAddrs(t, 2)
	closedTLS := a[0] // nothing listens there
	cfg.HTTP.Listen = a[1]
	p := testutil.StartPebble(t, testutil.PebbleOptions{TLSPort: testutil.Port(t, closedTLS), HTTPPort: testutil.Port(t, a[1])})
	cfg.TLS.ACME = true
	cfg.TLS.ACMEEmail = "postmaster@example.test"
	cfg.TLS.ACMEDirectory = p.Directory
	cfg.TLS.ACMECAFile = p.CAFile(t, t.TempDir())
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	srv, err := Build(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer func() {
		srv.Shutdown(logger)
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	}()
	var pop3s string
	for _, l := range srv.Listeners() {
		if l.Name == "pop3s" {
			pop3s = l.Addr
		}
	}
	roots := p.Roots(t)
	testutil.WaitFor(t, 90*time.Second, "the ACME certificate on POP3S", func() bool {
		_, err := tlsLeaf(t, "implicit", pop3s, &tls.Config{ServerName: "mail.example.test", RootCAs: roots})
		return err == nil
	})
}

// TestACMENothingServedUntilObtained: while the CA cannot validate (its
// validation ports lead nowhere), TLS handshakes on POP3S fail, with SNI
// or without; nothing self-signed is served in the meantime, and the log
// says why.
func TestACMENothingServedUntilObtained(t *testing.T) {
	cfg := testConfig(t)
	a := testutil.FreeAddrs(t, 3)
	cfg.HTTPS.Listen = a[0]
	p := testutil.StartPebble(t, testutil.PebbleOptions{TLSPort: testutil.Port(t, a[1]), HTTPPort: testutil.Port(t, a[2])})
	cfg.TLS.ACME = true
	cfg.TLS.ACMEEmail = "postmaster@example.test"
	cfg.TLS.ACMEDirectory = p.Directory
	cfg.TLS.ACMECAFile = p.CAFile(t, t.TempDir())
	logs := &testutil.SyncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	srv, err := Build(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown(logger)
	var pop3s string
	for _, l := range srv.Listeners() {
		if l.Name == "pop3s" {
			pop3s = l.Addr
		}
	}
	testutil.WaitFor(t, 60*time.Second, "the failed order in the log", func() bool {
		return strings.Contains(logs.String(), "no certificate for this name yet")
	})
	for _, sni := range []string{"mail.example.test", ""} {
		if leaf, err := tlsLeaf(t, "implicit", pop3s, &tls.Config{ServerName: sni, InsecureSkipVerify: true}); err == nil {
			t.Errorf("SNI %q: a certificate was served before one was obtained: %v", sni, leaf.Subject)
		}
	}
	if _, ok := srv.SelfSigned(); ok {
		t.Error("the server reports a self-signed certificate with tls.acme")
	}
}
