package smtpin

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/aliases"
	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
)

// fixedNow is the clock of every test server.
var fixedNow = time.Date(2025, 3, 4, 5, 6, 7, 0, time.FixedZone("", 0))

// testUsers are the users of every test environment, with their passwords.
var testUsers = map[string]string{
	"alice@example.test": "alice-pw",
	"bob@example.test":   "bob-pw",
	"jörg@example.test":  "jörg-pw",
	"carol@other.test":   "carol-pw",
}

const testAliases = `sales@example.test: alice@example.test, bob@example.test
fwd@example.test: alice@example.test, friend@remote.example
ghost@example.test: nobody@example.test
@other.test: carol@other.test
`

// dbUsers adapts auth.DB to delivery.Users.
type dbUsers struct{ db *auth.DB }

func (u dbUsers) LookupAddress(a string) (string, bool) {
	usr, ok := u.db.Lookup(a)
	return usr.Address, ok
}

// failingStore fails deliveries to one mailbox.
type failingStore struct {
	store.Store
	fail string
}

func (f failingStore) Deliver(ctx context.Context, mailbox string, msg io.Reader) (string, error) {
	if mailbox == f.fail {
		return "", errors.New("disk on fire")
	}
	return f.Store.Deliver(ctx, mailbox, msg)
}

type relayCall struct {
	from   string
	rcpts  []string
	params envelope.DSNParams
	msg    string
}

type fakeRelay struct {
	mu    sync.Mutex
	calls []relayCall
	err   error
}

func (r *fakeRelay) Enqueue(ctx context.Context, from string, rcpts []string, params envelope.DSNParams, msg io.Reader) (string, error) {
	b, err := io.ReadAll(msg)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return "", r.err
	}
	r.calls = append(r.calls, relayCall{from, rcpts, params, string(b)})
	return fmt.Sprintf("Q%d", len(r.calls)), nil
}

func (r *fakeRelay) get() []relayCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]relayCall(nil), r.calls...)
}

// env is a running server with its users, store and listeners.
type env struct {
	t       testing.TB
	store   *maildir.Store
	db      *auth.DB
	srv     *Server
	addr    string // Serve listener
	tlsAddr string // ServeTLS listener, when TLS is configured
	pool    *x509.CertPool
	certPEM []byte
	done    chan error
}

type envConfig struct {
	opts    Options
	tls     bool
	aliases string
	store   func(store.Store) store.Store
	quotas  delivery.Quotas
}

// defaultOptions are the options of the default configuration in role,
// with the host name mx.example.test, no connection limits and no trusted
// networks.
func defaultOptions(role Role) Options {
	c := config.Default()
	c.Hostname = "mx.example.test"
	c.SMTP.TrustedNetworks = nil
	c.SMTP.MaxConnections, c.SMTP.MaxConnectionsPerIP = 0, 0
	return ConfigOptions(c, role)
}

func newEnv(t testing.TB, role Role, mod func(*envConfig)) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := maildir.New(filepath.Join(dir, "mail"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	db := auth.OpenDB(filepath.Join(dir, "users.passwd"))
	db.Argon2 = auth.Argon2Parameters{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32} // the tests are about SMTP, not Argon2
	for u, pw := range testUsers {
		h, err := db.HashPassword(pw)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Add(context.Background(), u, h); err != nil {
			t.Fatal(err)
		}
	}
	cfg := envConfig{
		opts:    defaultOptions(role),
		aliases: testAliases,
	}
	cfg.opts.Users = db
	cfg.opts.MaxErrors = 100
	cfg.opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if mod != nil {
		mod(&cfg)
	}
	var s store.Store = st
	if cfg.store != nil {
		s = cfg.store(st)
	}
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	cfg.opts.Deliverer = &delivery.Deliverer{Store: s, Users: dbUsers{db}, SpoolDir: spool, Quotas: cfg.quotas}
	tab, err := aliases.Parse([]byte(cfg.aliases))
	if err != nil {
		t.Fatal(err)
	}
	cfg.opts.Aliases = tab
	e := &env{t: t, store: st, db: db, done: make(chan error, 2)}
	if cfg.tls {
		var tc *tls.Config
		tc, e.pool = testTLS(t)
		e.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tc.Certificates[0].Certificate[0]})
		cfg.opts.TLS = tc
	}
	srv, err := New(cfg.opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.now = func() time.Time { return fixedNow }
	e.srv = srv
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	go func() { e.done <- srv.Serve(l) }()
	if cfg.tls {
		l2, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		e.tlsAddr = l2.Addr().String()
		go func() { e.done <- srv.ServeTLS(l2) }()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return e
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// testTLS returns a server config with a fresh self-signed certificate for
// localhost and 127.0.0.1, and a pool trusting it.
func testTLS(t testing.TB) (*tls.Config, *x509.CertPool) {
	c := testutil.NewCert(t, "localhost", "127.0.0.1")
	return c.Config(), c.Pool()
}

// client is a raw SMTP client for transcript tests.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	e    *env
}

func (e *env) dial() *client {
	e.t.Helper()
	c := e.dialNoGreet(e.addr)
	c.expect(220, "mx.example.test")
	return c
}

func (e *env) dialNoGreet(addr string) *client {
	e.t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		e.t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	e.t.Cleanup(func() { conn.Close() })
	return &client{t: e.t, conn: conn, r: bufio.NewReader(conn), e: e}
}

// dialTLS connects to the implicit-TLS listener.
func (e *env) dialTLS() *client {
	e.t.Helper()
	c := e.dialNoGreet(e.tlsAddr)
	c.conn = tls.Client(c.conn, &tls.Config{RootCAs: e.pool, ServerName: "localhost"})
	c.r = bufio.NewReader(c.conn)
	c.expect(220, "mx.example.test")
	return c
}

func (c *client) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// reply reads one reply; code 0 means the connection ended.
func (c *client) reply() (int, []string) {
	c.t.Helper()
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			if len(lines) == 0 && line == "" {
				return 0, nil
			}
			c.t.Fatalf("reading reply: %v (after %q)", err, lines)
		}
		line = strings.TrimSuffix(line, "\r\n")
		if len(line) < 4 {
			c.t.Fatalf("short reply line %q", line)
		}
		lines = append(lines, line[4:])
		if line[3] == ' ' {
			var code int
			fmt.Sscanf(line[:3], "%d", &code)
			return code, lines
		}
	}
}

// expect reads a reply and checks its code and that its last line
// contains want.
func (c *client) expect(code int, want string) []string {
	c.t.Helper()
	got, lines := c.reply()
	if got != code || (want != "" && !strings.Contains(strings.Join(lines, "\n"), want)) {
		c.t.Fatalf("reply %d %q; want %d %q", got, lines, code, want)
	}
	return lines
}

// cmd sends a command and checks its reply.
func (c *client) cmd(code int, want, line string) []string {
	c.t.Helper()
	c.write(line + "\r\n")
	return c.expect(code, want)
}

// ehlo returns the capabilities (the lines after the first).
func (c *client) ehlo() []string {
	c.t.Helper()
	lines := c.cmd(250, "", "EHLO client.example")
	return lines[1:]
}

func (c *client) startTLS() {
	c.t.Helper()
	c.cmd(220, "", "STARTTLS")
	tc := tls.Client(c.conn, &tls.Config{RootCAs: c.e.pool, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

func (c *client) authPlain(user, pw string, code int, want string) {
	c.t.Helper()
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pw))
	c.cmd(code, want, "AUTH PLAIN "+ir)
}

// closed checks that the server closed the connection.
func (c *client) closed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := c.r.ReadString('\n'); err == nil {
		c.t.Fatalf("connection still open, read %q", line)
	}
}

// send runs a whole transaction and returns the last reply's text.
func (c *client) send(from string, rcpts []string, msg string) string {
	c.t.Helper()
	c.cmd(250, "", "MAIL FROM:<"+from+">")
	for _, r := range rcpts {
		c.cmd(250, "", "RCPT TO:<"+r+">")
	}
	c.cmd(354, "", "DATA")
	c.write(msg + ".\r\n")
	return c.expect(250, "OK: queued as ")[0]
}

// dataToAlice starts a transaction from x@remote.example to
// alice@example.test and sends DATA, expecting each step to succeed.
func (c *client) dataToAlice() {
	c.t.Helper()
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
	c.cmd(354, "", "DATA")
}

// expectNoMessages fails the test if mailbox holds any message.
func (e *env) expectNoMessages(mailbox string) {
	e.t.Helper()
	if got := e.messages(mailbox); len(got) != 0 {
		e.t.Fatalf("delivered %q", got)
	}
}

// messages returns the messages of a mailbox, in wire form.
func (e *env) messages(mailbox string) []string {
	e.t.Helper()
	return mailtest.StoreMessages(e.t, e.store, mailbox)
}

// waitIdle waits until the server has no connections.
func (e *env) waitIdle() {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.srv.mu.Lock()
		n := len(e.srv.conns)
		e.srv.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d connections still open", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// queueID extracts the id from "OK: queued as ID".
func queueID(reply string) string {
	_, id, _ := strings.Cut(reply, "queued as ")
	return id
}

const dateStr = "Tue, 04 Mar 2025 05:06:07 +0000"
