package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/tlsutil"
)

// testConfig is the default configuration with a temporary data folder
// and every listener on a free loopback port.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Hostname = "mail.example.test"
	cfg.DataDir = t.TempDir()
	cfg.POP3.Listen, cfg.POP3.ListenTLS = "127.0.0.1:0", "127.0.0.1:0"
	cfg.SMTP.Listen, cfg.SMTP.Submission, cfg.SMTP.Submissions, cfg.SMTP.LMTP = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.SMTP.LocalDomains = []string{"example.test"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// conn is a line-oriented client connection.
type conn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (c *conn) line() string {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// cmd sends a command and returns the last line of the reply: SMTP
// multi-line replies ("250-") are read to their end.
func (c *conn) cmd(format string, a ...any) string {
	c.t.Helper()
	fmt.Fprintf(c.c, format+"\r\n", a...)
	for {
		l := c.line()
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

func (c *conn) expect(prefix, got string) {
	c.t.Helper()
	if !strings.HasPrefix(got, prefix) {
		c.t.Fatalf("got %q, want %s...", got, prefix)
	}
}

// startTLS upgrades the connection, accepting only the server's own
// self-signed certificate.
func (c *conn) startTLS(fingerprint string) {
	c.t.Helper()
	tc := tls.Client(c.c, pinned(fingerprint))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.c, c.br = tc, bufio.NewReader(tc)
}

func pinned(fingerprint string) *tls.Config {
	return &tls.Config{
		ServerName:         "mail.example.test",
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if got := tlsutil.CertFingerprint(cs.PeerCertificates[0]); got != fingerprint {
				return fmt.Errorf("certificate %s, want %s", got, fingerprint)
			}
			return nil
		},
	}
}

// clients dials connections and remembers them, to close them before
// Shutdown (which lets sessions finish).
type clients struct {
	t      *testing.T
	opened []*conn
}

func (cl *clients) dial(addr string, implicitTLS bool, fingerprint string) *conn {
	t := cl.t
	t.Helper()
	var nc net.Conn
	var err error
	if implicitTLS {
		nc, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, pinned(fingerprint))
	} else {
		nc, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{t: t, c: nc, br: bufio.NewReader(nc)}
	t.Cleanup(func() { c.c.Close() })
	cl.opened = append(cl.opened, c)
	return c
}

// ehlo dials a plain SMTP listener, reads the greeting and says EHLO.
func (cl *clients) ehlo(addr string) *conn {
	cl.t.Helper()
	c := cl.dial(addr, false, "")
	c.expect("220", c.line())
	c.expect("250", c.cmd("EHLO client.example.test"))
	return c
}

// pop3Login dials a plain POP3 listener and sends USER and PASS; the PASS
// reply must start with want.
func (cl *clients) pop3Login(addr, user, pass, want string) *conn {
	cl.t.Helper()
	c := cl.dial(addr, false, "")
	c.expect("+OK", c.line())
	c.expect("+OK", c.cmd("USER %s", user))
	c.expect(want, c.cmd("PASS %s", pass))
	return c
}

// TestBuildServesEveryListener builds a whole server from a configuration
// in-process and drives each listener: mail delivered over LMTP is
// retrieved over POP3 (plain, STLS and implicit TLS), the MX refuses to
// relay for an unauthenticated client, submission offers STARTTLS and
// implicit TLS, and Shutdown stops it all.
func TestBuildServesEveryListener(t *testing.T) {
	cfg := testConfig(t)
	logger := slog.New(slog.DiscardHandler)
	srv, err := Build(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	addr := map[string]string{}
	for _, l := range srv.Listeners() {
		addr[l.Name] = l.Addr
	}
	for _, n := range []string{"pop3", "pop3s", "smtp", "submission", "submissions", "lmtp"} {
		if addr[n] == "" {
			t.Fatalf("no %s listener in %v", n, srv.Listeners())
		}
	}
	fp, ok := srv.SelfSigned()
	if !ok {
		t.Fatal("no self-signed certificate without tls.cert")
	}
	cl := &clients{t: t}
	db := srv.Users()
	db.Argon2 = auth.Argon2Parameters{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	h, err := db.HashPassword("alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Add(context.Background(), "alice@example.test", h); err != nil {
		t.Fatal(err)
	}

	// LMTP delivery (RFC 2033 §4.2: one reply per recipient after DATA).
	c := cl.dial(addr["lmtp"], false, "")
	c.expect("220", c.line())
	c.expect("250", c.cmd("LHLO client.example.test"))
	c.expect("250", c.cmd("MAIL FROM:<bob@remote.example>"))
	c.expect("250", c.cmd("RCPT TO:<alice@example.test>"))
	c.expect("354", c.cmd("DATA"))
	c.expect("250", c.cmd("Subject: hello\r\n\r\nbody\r\n."))

	// POP3 in the clear (loopback may log in without TLS), after STLS and
	// over implicit TLS.
	for _, mode := range []string{"plain", "STLS", "implicit TLS"} {
		var c *conn
		if mode == "implicit TLS" {
			c = cl.dial(addr["pop3s"], true, fp)
		} else {
			c = cl.dial(addr["pop3"], false, "")
		}
		c.expect("+OK", c.line())
		if mode == "STLS" {
			c.expect("+OK", c.cmd("STLS"))
			c.startTLS(fp)
		}
		c.expect("+OK", c.cmd("USER alice@example.test"))
		c.expect("+OK", c.cmd("PASS alice-pw"))
		if got := c.cmd("STAT"); !strings.HasPrefix(got, "+OK 1 ") {
			t.Fatalf("%s: STAT = %q, want one message", mode, got)
		}
		c.expect("+OK", c.cmd("QUIT"))
	}
	// A forged login is refused.
	cl.pop3Login(addr["pop3"], "alice@example.test", "guessed", "-ERR")

	// The MX is no open relay.
	c = cl.dial(addr["smtp"], false, "")
	c.expect("220", c.line())
	c.expect("250", c.cmd("EHLO attacker.example"))
	c.expect("250", c.cmd("MAIL FROM:<spam@attacker.example>"))
	c.expect("5", c.cmd("RCPT TO:<victim@elsewhere.example>"))

	// Submission: STARTTLS on one port, implicit TLS on the other, AUTH
	// offered once encrypted.
	c = cl.ehlo(addr["submission"])
	c.expect("220", c.cmd("STARTTLS"))
	c.startTLS(fp)
	c.expect("250", c.cmd("EHLO client.example.test"))
	c = cl.dial(addr["submissions"], true, fp)
	c.expect("220", c.line())
	c.expect("250", c.cmd("EHLO client.example.test"))
	c.expect("5", c.cmd("MAIL FROM:<alice@example.test>")) // no AUTH yet

	if _, err := srv.Reload(srv.Config(), logger); err != nil {
		t.Fatalf("Reload of the same configuration: %v", err)
	}
	for _, c := range cl.opened {
		c.c.Close()
	}
	if !srv.Shutdown(logger) {
		t.Fatal("Shutdown did not end in time")
	}
	if nc, err := net.DialTimeout("tcp", addr["pop3"], time.Second); err == nil {
		nc.Close()
		t.Fatal("POP3 still accepts connections after Shutdown")
	}
}

// TestBuildListenFailure: a listener that cannot be opened fails Build
// with an error naming it, and Build leaves the others closed.
func TestBuildListenFailure(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// Learn a free port for POP3, then ask for it and the busy one.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pop3Addr := free.Addr().String()
	free.Close()
	cfg := testConfig(t)
	cfg.POP3.Listen = pop3Addr
	cfg.SMTP.Listen = busy.Addr().String()
	_, err = Build(cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "smtp: cannot listen on "+busy.Addr().String()) {
		t.Fatalf("Build = %v, want the smtp listener's error", err)
	}
	l, err := net.Listen("tcp", pop3Addr)
	if err != nil {
		t.Fatalf("the POP3 address is still held after the failed Build: %v", err)
	}
	l.Close()
}

// TestBuildBadStore: a data folder that cannot be created is an error.
func TestBuildBadStore(t *testing.T) {
	cfg := testConfig(t)
	cfg.DataDir = "/dev/null/postino"
	if _, err := Build(cfg, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatalf("Build with an impossible data folder = %v", err)
	}
}

// TestDSNDomain: bounces are signed as the host name's local domain, else
// as the first local domain.
func TestDSNDomain(t *testing.T) {
	for _, c := range []struct {
		host    string
		domains []string
		want    string
	}{
		{"mail.example.test", nil, ""},
		{"mail.example.test", []string{"example.test"}, ""},
		{"Example.TEST", []string{"other.test", "example.test"}, ""},
		{"mx.provider.test", []string{"example.test", "other.test"}, "example.test"},
		{"notexample.test", []string{"example.test"}, "example.test"},
	} {
		cfg := config.Default()
		cfg.Hostname, cfg.SMTP.LocalDomains = c.host, c.domains
		if got := dsnDomain(cfg); got != c.want {
			t.Errorf("dsnDomain(%q, %q) = %q, want %q", c.host, c.domains, got, c.want)
		}
	}
}
