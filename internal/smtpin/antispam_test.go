package smtpin

import (
	"bufio"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/antispam"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/resolver"
	"github.com/postino-mail/postino/internal/testutil"
)

// dialFrom connects to addr from the loopback address src (Linux routes
// all of 127.0.0.0/8 to lo), to play different clients.
func (e *env) dialFrom(src, addr string) *client {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		e.t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	e.t.Cleanup(func() { conn.Close() })
	return &client{t: e.t, conn: conn, r: bufio.NewReader(conn), e: e}
}

// logBuffer collects log lines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPregreet: a client that talks before the greeting is refused with
// 554 and answered 503 until QUIT; one that waits is greeted and
// delivers; a client that passed is greeted at once afterwards; trusted
// networks, the implicit-TLS listener and submission never wait.
func TestPregreet(t *testing.T) {
	logs := &logBuffer{}
	e := newEnv(t, RoleMX, func(ec *envConfig) {
		ec.tls = true
		ec.opts.PregreetWait = 300 * time.Millisecond
		ec.opts.PregreetPassTTL = time.Hour
		ec.opts.TrustedNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}
		ec.opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})

	// A spamware client pipelines its whole dialogue at once.
	c := e.dialFrom("127.0.0.2", e.addr)
	c.write("EHLO spam.example\r\nMAIL FROM:<s@spam.example>\r\n")
	c.expect(554, "5.5.1 Protocol error")
	c.expect(503, "5.5.1")
	c.expect(503, "5.5.1")
	c.cmd(221, "", "QUIT")
	c.closed()
	e.expectNoMessages("alice@example.test")
	if !strings.Contains(logs.String(), "pregreet") || !strings.Contains(logs.String(), "127.0.0.2") {
		t.Errorf("refusal not logged:\n%s", logs)
	}
	// It is not remembered as passed: it is refused again.
	c = e.dialFrom("127.0.0.2", e.addr)
	c.write("EHLO spam.example\r\n")
	c.expect(554, "5.5.1")

	// A hostile client floods lines after the 554: it is cut off.
	c = e.dialFrom("127.0.0.4", e.addr)
	c.write(strings.Repeat("NOOP\r\n", 50))
	c.expect(554, "5.5.1")
	for range pregreetMaxLines {
		c.expect(503, "")
	}
	c.closed()

	// A client that waits is greeted and delivers, over STARTTLS.
	c = e.dialFrom("127.0.0.3", e.addr)
	c.expect(220, "mx.example.test")
	c.ehlo()
	c.startTLS()
	c.ehlo()
	c.send("x@remote.example", []string{"alice@example.test"}, "Subject: hi\r\n\r\nhi\r\n")
	c.cmd(221, "", "QUIT")
	// It passed: its next connection is greeted at once, so talking
	// first is not noticed.
	c = e.dialFrom("127.0.0.3", e.addr)
	c.write("EHLO client.example\r\n")
	c.expect(220, "mx.example.test")
	c.expect(250, "")

	// Trusted networks are greeted at once.
	c = e.dialFrom("127.0.0.9", e.addr)
	c.write("EHLO relay.example\r\n")
	c.expect(220, "mx.example.test")
	c.expect(250, "")

	// On implicit TLS the client speaks first (the handshake).
	c = e.dialTLS()
	c.ehlo()
	if n := len(e.messages("alice@example.test")); n != 1 {
		t.Errorf("%d messages delivered", n)
	}
}

// TestPregreetOnlyMX: the configuration's pregreet wait applies to the
// MX only.
func TestPregreetOnlyMX(t *testing.T) {
	c := config.Default()
	c.Antispam.PregreetWait = config.D(6 * time.Second)
	if o := ConfigOptions(c, RoleMX); o.PregreetWait != 6*time.Second || o.PregreetPassTTL != 24*time.Hour {
		t.Errorf("MX: %v %v", o.PregreetWait, o.PregreetPassTTL)
	}
	for _, r := range []Role{RoleSubmission, RoleLMTP} {
		if o := ConfigOptions(c, r); o.PregreetWait != 0 {
			t.Errorf("%v waits %v", r, o.PregreetWait)
		}
	}
	// A submission server given a wait anyway greets at once.
	e := newEnv(t, RoleSubmission, func(ec *envConfig) { ec.opts.PregreetWait = time.Minute })
	cl := e.dialFrom("127.0.0.2", e.addr)
	cl.write("EHLO client.example\r\n")
	cl.expect(220, "")
	cl.expect(250, "")
}

// antispamZones is a test DNS blocklist and allowlist.
func antispamZones() map[string]string {
	return map[string]string{
		"bl.test": "2.0.0.127 A 127.0.0.2\n2.0.0.127 TXT \"see https://bl.test/lookup\"\n" +
			"3.0.0.127 A 127.255.255.254\n4.0.0.127 A 127.0.0.2\n",
		"wl.test": "4.0.0.127 A 127.0.10.1\n",
	}
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestAntispamMX runs the MX with the antispam checks against a real
// DNS server: a listed client is refused at RCPT with the list named, a
// "query refused" answer blocks nobody, an allowlisted client passes
// despite its listing, greylisting tempfails then accepts after the
// delay, and a client that claims our name is refused.
func TestAntispamMX(t *testing.T) {
	dns := testutil.StartDNS(t, antispamZones())
	r, err := resolver.New(dns.Addr, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	var sites []antispam.Site
	for _, s := range []string{"bl.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].1*-5"} {
		site, err := antispam.ParseSite(s)
		if err != nil {
			t.Fatal(err)
		}
		sites = append(sites, site)
	}
	clock := &testClock{t: time.Unix(1_800_000_000, 0)}
	store, err := antispam.OpenFileStore(filepath.Join(t.TempDir(), "greylist.db"), 0, clock.now, logger)
	if err != nil {
		t.Fatal(err)
	}
	greyNet := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/30"), netip.MustParsePrefix("127.0.0.4/32"), netip.MustParsePrefix("127.0.0.6/32")}
	checks := []inbound.Check{
		&antispam.Helo{Score: 1, ForgeryAction: inbound.Reject, ForgeryScore: 5, Hostname: "mx.example.test"},
		&antispam.DNSBL{Sites: sites, Threshold: 3, Action: inbound.Reject, Timeout: 5 * time.Second, TXT: true, Resolver: r, Logger: logger},
		// Greylisting only for 127.0.0.5 here.
		&antispam.Greylist{Delay: 5 * time.Minute, RetryWindow: 48 * time.Hour, Expire: 35 * 24 * time.Hour,
			Skip: greyNet, Store: store, Now: clock.now, Logger: logger},
	}
	e := newEnv(t, RoleMX, func(ec *envConfig) {
		ec.tls = true
		ec.opts.Checks = checks
		ec.opts.Resolver = r
	})
	msg := "Subject: hi\r\n\r\nhi\r\n"

	for _, starttls := range []bool{false, true} {
		c := e.dialFrom("127.0.0.2", e.addr)
		c.expect(220, "")
		c.ehlo()
		if starttls {
			c.startTLS()
			c.ehlo()
		}
		c.cmd(250, "", "MAIL FROM:<s@spam.example>")
		c.cmd(554, "5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test; see https://bl.test/lookup", "RCPT TO:<alice@example.test>")
		c.cmd(554, "blocked using bl.test", "RCPT TO:<bob@example.test>")
		c.cmd(221, "", "QUIT")
	}
	// Over implicit TLS too.
	c := e.dialFrom("127.0.0.2", e.tlsAddr)
	c.conn = tls.Client(c.conn, &tls.Config{RootCAs: e.pool, ServerName: "localhost"})
	c.r = bufio.NewReader(c.conn)
	c.expect(220, "mx.example.test")
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<s@spam.example>")
	c.cmd(554, "blocked using bl.test", "RCPT TO:<alice@example.test>")
	e.expectNoMessages("alice@example.test")

	// The list refused the query (127.255.255.254): not blocked.
	c = e.dialFrom("127.0.0.3", e.addr)
	c.expect(220, "")
	c.ehlo()
	c.send("a@sender.example", []string{"alice@example.test"}, msg)
	// Listed and allowlisted: passes.
	c = e.dialFrom("127.0.0.4", e.addr)
	c.expect(220, "")
	c.ehlo()
	c.send("a@sender.example", []string{"alice@example.test"}, msg)

	// Greylisting: the first attempt is refused, a retry too early too,
	// a retry after the delay passes.
	c = e.dialFrom("127.0.0.5", e.addr)
	c.expect(220, "")
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<g@sender.example>")
	c.cmd(450, "4.2.0 Greylisted, try again later", "RCPT TO:<alice@example.test>")
	c.cmd(250, "", "RSET")
	clock.add(time.Minute)
	c.cmd(250, "", "MAIL FROM:<g@sender.example>")
	c.cmd(450, "4.2.0 Greylisted", "RCPT TO:<alice@example.test>")
	c.cmd(250, "", "RSET")
	clock.add(5 * time.Minute)
	c.send("g@sender.example", []string{"alice@example.test"}, msg)

	// HELO forgery: refused at RCPT.
	c = e.dialFrom("127.0.0.6", e.addr)
	c.expect(220, "")
	c.cmd(250, "", "EHLO mx.example.test")
	c.cmd(250, "", "MAIL FROM:<f@forger.example>")
	c.cmd(550, "5.7.1 Sender identity refused", "RCPT TO:<alice@example.test>")

	if n := len(e.messages("alice@example.test")); n != 3 {
		t.Errorf("%d messages delivered, want 3", n)
	}
}
