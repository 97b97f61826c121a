// Package cluster tests postino's cluster mode from the outside: several
// "postino serve" processes of the real binary sharing one PostgreSQL
// database (storage.backend = "postgres"), mail received by one and
// downloaded through another by real clients, the maildrop lock held
// across them, nodes killed, PostgreSQL stopped and started again under
// traffic, a synchronous standby promoted while mail flows, and HAProxy
// with the PROXY protocol in front.
//
// The harness: a cluster is a database and the files every node shares
// (the user database); startNodes runs node1..nodeN, each with its own
// data folder and free ports, and every node's configuration can be
// extended (cluster.extra, .smtp, .user); a node is stopped (SIGTERM),
// killed (SIGKILL) or logged in to; traffic sends SMTP mail from several
// clients that retry refusals as an MTA does and checks at the end that
// every acknowledged message is present once, byte for byte. PostgreSQL
// is the shared server of internal/testutil/pgtest (pgtest.Halt and
// pgtest.Restart), or instances of a test's own (pgtest.NewInstance,
// Instance.NewStandby, Stop, Start, Promote).
package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
	"github.com/postino-mail/postino/pop3"
)

var binPath string

func TestMain(m *testing.M) {
	code := testutil.Main(m, "cluster", &binPath, nil)
	pgtest.Stop()
	os.Exit(code)
}

const (
	alice   = "alice@example.test"
	carol   = "carol@example.test"
	alicePW = "alice password"
	lockTTL = 3 * time.Second
)

var run = testutil.Runner{Timeout: time.Minute, Split: true}.Run

func postino(t testing.TB, stdin []byte, args ...string) testutil.Result {
	t.Helper()
	return run(t, nil, stdin, binPath, args...)
}

// cluster is a database and the files the nodes share.
type cluster struct {
	dir   string
	dsn   string
	users string // the users file of a single-node data folder
	extra string // TOML appended to every node's configuration
	smtp  string // TOML added to every node's [smtp] section
	user  string // TOML added to every node's [users] section

	imported bool // the users are in the database (importUsers)
	// tweak, when set, edits every node's configuration.
	tweak func(cfg string) string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{dir: t.TempDir(), dsn: pgtest.NewDB(t)}
	shared := filepath.Join(c.dir, "shared")
	if r := postino(t, nil, "init", "--data", shared); r.Code != 0 {
		t.Fatalf("init: %s", r)
	}
	for _, u := range []string{alice, carol} {
		if r := postino(t, []byte(alicePW+"\n"), "user", "add", u, "--password-stdin", "--data", shared); r.Code != 0 {
			t.Fatalf("user add: %s", r)
		}
	}
	c.users = filepath.Join(shared, "users.passwd")
	return c
}

// node is one running "postino serve".
type node struct {
	*testutil.Serve
	name              string
	config            string
	pop3, pop3s, smtp string
	submissions       string
	killed, done      bool
}

// config writes node name's configuration with the given DSN.
func (c *cluster) config(t *testing.T, name, dsn, pop3Addr, smtpAddr string) string {
	return c.configTLS(t, name, dsn, pop3Addr, "", smtpAddr)
}

// configTLS is config with POP3 over implicit TLS on pop3sAddr too.
func (c *cluster) configTLS(t *testing.T, name, dsn, pop3Addr, pop3sAddr, smtpAddr string) string {
	t.Helper()
	return c.configAll(t, name, dsn, pop3Addr, pop3sAddr, smtpAddr, "")
}

// configAll is configTLS with SMTP submission over implicit TLS on
// submissionsAddr too.
func (c *cluster) configAll(t *testing.T, name, dsn, pop3Addr, pop3sAddr, smtpAddr, submissionsAddr string) string {
	t.Helper()
	data := filepath.Join(c.dir, name)
	os.MkdirAll(data, 0o700)
	cfg := fmt.Sprintf(`hostname = %q
data_dir = %q
[pop3]
listen = %q
listen_tls = %q
[smtp]
listen = %q
submission = ""
submissions = %q
lmtp = %q
local_domains = ["example.test"]
%s
[users]
file = %q
%s
[storage]
backend = "postgres"
postgres_dsn = %q
lock_ttl = %q
max_connections = 4
[admin]
listen = ""
`, name+".example.test", data, pop3Addr, pop3sAddr, smtpAddr, submissionsAddr, filepath.Join(data, "lmtp.sock"), c.smtp, c.users, c.user, dsn, lockTTL.String()) + c.extra
	if c.tweak != nil {
		cfg = c.tweak(cfg)
	}
	path := filepath.Join(c.dir, name+".toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// start runs a node on dsn.
func (c *cluster) start(t *testing.T, name, dsn string) *node {
	t.Helper()
	n := &node{}
	n.Serve = testutil.StartServe(t, testutil.ServeConfig{
		Bin: binPath, FreeAddrs: 2, Retry: true,
		Setup: func(free []string) ([]string, map[string]string) {
			n.pop3, n.smtp = free[0], free[1]
			n.config = c.config(t, name, dsn, n.pop3, n.smtp)
			return []string{"serve", "--config", n.config}, map[string]string{"pop3": n.pop3, "smtp": n.smtp}
		},
	})
	t.Cleanup(func() {
		if !n.killed && !n.done {
			n.Stop(t, 15*time.Second, n.Stderr)
		}
	})
	c.importUsers(t, n.config)
	return n
}

// importUsers copies the users of c.users into the database once
// ("postino db import"), as when moving a single server to a cluster.
func (c *cluster) importUsers(t *testing.T, config string) {
	t.Helper()
	if c.imported {
		return
	}
	c.imported = true
	if r := postino(t, nil, "db", "migrate", "--config", config); r.Code != 0 {
		t.Fatalf("db migrate: %s", r)
	}
	if r := postino(t, nil, "db", "import", "--config", config); r.Code != 0 || !strings.Contains(r.Stdout, "users: ") {
		t.Fatalf("db import of the users: %s", r)
	}
}

func (n *node) kill9(t *testing.T) {
	t.Helper()
	n.killed = true
	n.Process.Kill()
	if _, ok := n.Wait(10 * time.Second); !ok {
		t.Fatal("postino serve did not die after SIGKILL")
	}
}

// login opens a POP3 session on the node.
func (n *node) login(t *testing.T) (*pop3.Client, error) {
	t.Helper()
	c := mailtest.DialPOP3(t, n.pop3, 30*time.Second)
	t.Cleanup(func() { c.Close() })
	return c, c.Login(alice, alicePW)
}

// smtpSend runs an SMTP transaction and returns the reply to the end
// of DATA (or the first failing reply).
func smtpSend(t *testing.T, addr, body string, rcpts ...string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(conn)
	reply := func() string {
		var last string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading SMTP reply: %v", err)
			}
			last = strings.TrimRight(line, "\r\n")
			if len(last) < 4 || last[3] != '-' {
				return last
			}
		}
	}
	if l := reply(); !strings.HasPrefix(l, "220") {
		t.Fatalf("greeting %q", l)
	}
	cmds := []string{"EHLO client.example.test", "MAIL FROM:<bob@remote.example>"}
	for _, r := range rcpts {
		cmds = append(cmds, "RCPT TO:<"+r+">")
	}
	for _, cmd := range append(cmds, "DATA") {
		fmt.Fprintf(conn, "%s\r\n", cmd)
		l := reply()
		if !strings.HasPrefix(l, "2") && !strings.HasPrefix(l, "354") {
			return l
		}
	}
	io.WriteString(conn, body+".\r\n")
	l := reply()
	fmt.Fprintf(conn, "QUIT\r\n")
	return l
}

// message is a test message in SMTP form, larger than a blob chunk.
func message(subject string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: bob@remote.example\r\nTo: %s\r\nSubject: %s\r\n\r\n", alice, subject)
	for i := range 12000 {
		fmt.Fprintf(&b, "line %05d of the body, with some text to make it long enough\r\n", i)
	}
	b.WriteString("..a line that starts with a dot\r\n")
	return b.String()
}

// TestTwoNodes: mail received over SMTP by one node is downloaded byte
// for byte through another; the maildrop lock holds across nodes; a node
// killed with SIGKILL while holding the lock frees it within the lock
// TTL, and the deletions its session marked are not applied.
func TestTwoNodes(t *testing.T) {
	c := newCluster(t)
	// The schema, made by the CLI.
	cfg := c.config(t, "admin", c.dsn, "127.0.0.1:0", "127.0.0.1:0")
	if r := postino(t, nil, "db", "migrate", "--config", cfg); r.Code != 0 || !strings.Contains(r.Stdout, "applied schema version 1") {
		t.Fatalf("db migrate: %s", r)
	}
	if r := postino(t, nil, "db", "migrate", "--config", cfg); r.Code != 0 || !strings.Contains(r.Stdout, "up to date") {
		t.Fatalf("db migrate again: %s", r)
	}
	if r := postino(t, nil, "db", "version", "--config", cfg); r.Code != 0 || !strings.Contains(r.Stdout, "database up to date") {
		t.Fatalf("db version: %s", r)
	}
	n1 := c.start(t, "node1", c.dsn)
	n2 := c.start(t, "node2", c.dsn)

	msg := message("through node 1")
	if l := smtpSend(t, n1.smtp, msg, alice, carol); !strings.HasPrefix(l, "250") {
		t.Fatalf("SMTP via node 1: %q", l)
	}
	// "postino deliver" stores into the database as well.
	if r := postino(t, []byte("Subject: by deliver\n\nhello\n"), "deliver", "--config", n1.config, "--from", "x@remote.example", alice); r.Code != 0 {
		t.Fatalf("deliver: %s", r)
	}

	p2, err := n2.login(t)
	if err != nil {
		t.Fatalf("login on node 2: %v", err)
	}
	got := mailtest.RetrAll(t, p2, "node 2")
	if len(got) != 2 {
		t.Fatalf("node 2 sees %d messages, want 2", len(got))
	}
	// The stored message is the one sent, after the Received header
	// node 1 added, and with the dot-stuffing undone.
	want := strings.Replace(msg, "\r\n..a line", "\r\n.a line", 1)
	if !strings.HasSuffix(string(got[0]), "\r\n"+want) || !strings.HasPrefix(string(got[0]), "Return-Path:") && !strings.HasPrefix(string(got[0]), "Received:") {
		t.Fatalf("message differs: %d octets, want the %d sent plus trace headers; starts %q", len(got[0]), len(want), got[0][:min(200, len(got[0]))])
	}
	if !strings.HasSuffix(string(got[1]), "\r\n\r\nhello\r\n") {
		t.Fatalf("delivered message reads %q", got[1])
	}
	uidls2 := mailtest.UIDLs(t, p2)
	// The message for alice and carol is stored once: three messages,
	// two contents.
	var messages, blobs int
	db, err := pgx.Connect(context.Background(), c.dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM blobs)`).Scan(&messages, &blobs)
	db.Close(context.Background())
	if messages != 3 || blobs != 2 {
		t.Fatalf("%d messages in %d blobs, want 3 in 2", messages, blobs)
	}

	// The lock holds across nodes (RFC 1939 §4, RFC 2449 [IN-USE]).
	if _, err := n1.login(t); err == nil || !strings.Contains(err.Error(), "IN-USE") {
		t.Fatalf("second session on node 1: %v, want -ERR [IN-USE]", err)
	}
	// Node 2 marks a deletion, then dies without QUIT.
	if _, err := p2.Cmd("DELE 1"); err != nil {
		t.Fatal(err)
	}
	n2.kill9(t)
	start := time.Now()
	var p1 *pop3.Client
	for {
		p1, err = n1.login(t)
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "IN-USE") {
			t.Fatalf("login on node 1 after the kill: %v", err)
		}
		if time.Since(start) > lockTTL+2*time.Second {
			t.Fatalf("lock still held %v after node 2 died (lock_ttl %v)", time.Since(start), lockTTL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("lock freed %v after SIGKILL (lock_ttl %v)", time.Since(start), lockTTL)
	got1 := mailtest.RetrAll(t, p1, "node 1")
	if len(got1) != 2 || string(got1[0]) != string(got[0]) {
		t.Fatalf("node 1 sees %d messages (want 2, the first byte-identical): the dead session's deletion was applied?", len(got1))
	}
	if u := mailtest.UIDLs(t, p1); strings.Join(u, " ") != strings.Join(uidls2, " ") {
		t.Fatalf("UIDLs on node 1 %v, on node 2 %v", u, uidls2)
	}
	// A QUIT by the lock holder applies its deletions.
	if _, err := p1.Cmd("DELE 2"); err != nil {
		t.Fatal(err)
	}
	if _, err := p1.Cmd("QUIT"); err != nil {
		t.Fatal(err)
	}
	p, err := n1.login(t)
	if err != nil {
		t.Fatal(err)
	}
	n, size, _ := p.Stat()
	if n != 1 {
		t.Fatalf("%d messages after QUIT, want 1", n)
	}
	p.Cmd("QUIT")
	// "postino user list" reports the usage kept in the database.
	r := postino(t, nil, "user", "list", "--config", n2.config)
	if want := fmt.Sprintf("%s\t", alice); r.Code != 0 || !strings.Contains(r.Stdout, want) || !strings.Contains(r.Stdout, fmt.Sprintf("\t1\t%d", size)) {
		t.Fatalf("user list: %s, want %s with 1 message of %d octets", r, alice, size)
	}
}

// TestDatabaseDown: a node cut off from PostgreSQL ends its POP3
// session in progress with -ERR [SYS/TEMP] without applying its
// deletions, while another node takes the lock after lock_ttl; it
// answers SMTP with 451 4.3.0 and POP3 logins with -ERR [SYS/TEMP], and
// "postino deliver" exits 75 (EX_TEMPFAIL).
func TestDatabaseDown(t *testing.T) {
	c := newCluster(t)
	addr := pgtest.Addr(t)
	proxy := pgtest.NewProxy(t, addr)
	n := c.start(t, "node1", strings.Replace(c.dsn, addr, proxy.Addr(), 1))
	t.Cleanup(proxy.Close)
	if l := smtpSend(t, n.smtp, message("before"), alice); !strings.HasPrefix(l, "250") {
		t.Fatalf("SMTP before the cut: %q", l)
	}
	// A session in progress on the node that loses the database.
	held, err := n.login(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Cmd("DELE 1"); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	// Another node, still connected, gets the lock once the lease has
	// expired, and finds the marked message still there.
	other := c.start(t, "node2", c.dsn)
	start := time.Now()
	for {
		p, err := other.login(t)
		if err == nil {
			if k, _, _ := p.Stat(); k != 1 {
				t.Fatalf("%d messages on the other node, want 1: the cut session's deletion was applied", k)
			}
			p.Cmd("QUIT")
			break
		}
		if time.Since(start) > lockTTL+3*time.Second {
			t.Fatalf("lock of the cut node not free after %v: %v", time.Since(start), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The cut node ended its session by itself, with [SYS/TEMP].
	if _, err := held.Cmd("NOOP"); err == nil || !strings.Contains(err.Error(), "SYS/TEMP") {
		t.Fatalf("session on the cut node: %v, want it ended with -ERR [SYS/TEMP]", err)
	}
	if l := smtpSend(t, n.smtp, message("during"), alice); !strings.HasPrefix(l, "451 4.3.0") {
		t.Fatalf("SMTP with the database down: %q, want 451 4.3.0", l)
	}
	if _, err := n.login(t); err == nil || !strings.Contains(err.Error(), "SYS/TEMP") {
		t.Fatalf("POP3 login with the database down: %v, want -ERR [SYS/TEMP]", err)
	}
	if r := postino(t, []byte("Subject: x\n\nx\n"), "deliver", "--config", n.config, "--from", "x@remote.example", alice); r.Code != 75 {
		t.Fatalf("deliver with the database down: %s, want exit 75", r)
	}
}

// TestImportMaildir: "postino db import" moves the Maildirs of a server
// that ran with storage.backend = "maildir" into PostgreSQL: the same
// messages, byte for byte, under the same UIDLs, so POP3 clients that
// leave mail on the server download nothing again.
func TestImportMaildir(t *testing.T) {
	c := newCluster(t)
	pgCfg := c.config(t, "node1", c.dsn, "127.0.0.1:0", "127.0.0.1:0")
	b, _ := os.ReadFile(pgCfg)
	mdCfg := filepath.Join(c.dir, "node1-maildir.toml")
	os.WriteFile(mdCfg, []byte(strings.Replace(string(b), `backend = "postgres"`, `backend = "maildir"`, 1)), 0o600)
	for i := range 3 {
		if r := postino(t, []byte(fmt.Sprintf("Subject: %d\n\nbody %d\n", i, i)), "deliver", "--config", mdCfg, "--from", "x@remote.example", alice); r.Code != 0 {
			t.Fatalf("deliver into the Maildir: %s", r)
		}
	}
	src, err := maildir.New(filepath.Join(c.dir, "node1", "mail"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := mailtest.StoreMessages(t, src, alice)
	md, err := src.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	var wantUIDLs []string
	for _, m := range md.Messages() {
		wantUIDLs = append(wantUIDLs, m.UID)
	}
	md.Close()
	src.Close()

	if r := postino(t, nil, "db", "import", "--config", pgCfg); r.Code == 0 {
		t.Fatalf("import before migrate succeeded: %s", r)
	}
	if r := postino(t, nil, "db", "version", "--config", pgCfg); r.Code != 1 || !strings.Contains(r.Stdout, "older than this postino") {
		t.Fatalf("db version before migrate: %s", r)
	}
	if r := postino(t, nil, "db", "migrate", "--config", pgCfg); r.Code != 0 {
		t.Fatalf("db migrate: %s", r)
	}
	r := postino(t, nil, "db", "import", "--config", pgCfg)
	c.imported = true
	if r.Code != 0 || !strings.Contains(r.Stdout, "users: 2 imported") || !strings.Contains(r.Stdout, alice+": 3 messages imported") || !strings.Contains(r.Stdout, carol+": 0 messages imported") {
		t.Fatalf("db import: %s", r)
	}
	if r := postino(t, nil, "db", "import", "--config", pgCfg, alice); r.Code != 0 || !strings.Contains(r.Stdout, alice+": 0 messages imported") || !strings.Contains(r.Stdout, "users: 0 imported, 1 already there") {
		t.Fatalf("db import again: %s", r)
	}
	n := c.start(t, "node1", c.dsn)
	p, err := n.login(t)
	if err != nil {
		t.Fatal(err)
	}
	if got := mailtest.UIDLs(t, p); strings.Join(got, " ") != strings.Join(wantUIDLs, " ") {
		t.Fatalf("UIDLs after import %v, in the Maildir %v", got, wantUIDLs)
	}
	got := mailtest.RetrAll(t, p, "imported")
	for i := range want {
		if string(got[i]) != want[i] {
			t.Fatalf("message %d after import %q, in the Maildir %q", i+1, got[i], want[i])
		}
	}
	p.Cmd("QUIT")
}

// TestTLSTransports: a mailbox in PostgreSQL is served alike in plain,
// with STLS and over implicit TLS, and the lock holds across transports
// and nodes.
func TestTLSTransports(t *testing.T) {
	c := newCluster(t)
	n := &node{}
	var pop3s string
	n.Serve = testutil.StartServe(t, testutil.ServeConfig{
		Bin: binPath, FreeAddrs: 3, Retry: true,
		Setup: func(free []string) ([]string, map[string]string) {
			n.pop3, pop3s, n.smtp = free[0], free[1], free[2]
			n.config = c.configTLS(t, "node1", c.dsn, n.pop3, pop3s, n.smtp)
			return []string{"serve", "--config", n.config}, map[string]string{"pop3": n.pop3, "pop3s": pop3s, "smtp": n.smtp}
		},
	})
	t.Cleanup(func() { n.Stop(t, 15*time.Second, n.Stderr) })
	c.importUsers(t, n.config)
	if l := smtpSend(t, n.smtp, message("tls"), alice); !strings.HasPrefix(l, "250") {
		t.Fatalf("SMTP: %q", l)
	}
	pem, err := os.ReadFile(filepath.Join(c.dir, "node1", "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	other := c.start(t, "node2", c.dsn)

	var want []byte
	for _, mode := range []string{"plain", "stls", "tls"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var p *pop3.Client
		if mode == "tls" {
			p, err = pop3.DialTLS(ctx, pop3s, tc)
		} else {
			p, err = pop3.Dial(ctx, n.pop3)
		}
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		p.Timeout = 30 * time.Second
		if mode == "stls" {
			if err := p.StartTLS(tc); err != nil {
				t.Fatalf("STLS: %v", err)
			}
		}
		if err := p.Login(alice, alicePW); err != nil {
			t.Fatalf("%s login: %v", mode, err)
		}
		if _, err := other.login(t); err == nil || !strings.Contains(err.Error(), "IN-USE") {
			t.Fatalf("%s: other node's login %v, want -ERR [IN-USE]", mode, err)
		}
		got := mailtest.RetrAll(t, p, mode)
		if len(got) != 1 || (want != nil && string(got[0]) != string(want)) {
			t.Fatalf("%s: %d messages, or a different one", mode, len(got))
		}
		want = got[0]
		if _, err := p.Cmd("QUIT"); err != nil {
			t.Fatal(err)
		}
		p.Close()
	}
}

// TestLMTP: LMTP (RFC 2033) delivers into PostgreSQL with one reply per
// recipient, the message stored once for both.
func TestLMTP(t *testing.T) {
	c := newCluster(t)
	n := c.start(t, "node1", c.dsn)
	sock := filepath.Join(c.dir, "node1", "lmtp.sock")
	conn, err := net.DialTimeout("unix", sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	expect := func(prefix string) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("LMTP: %v", err)
			}
			if !strings.HasPrefix(line, prefix) {
				t.Fatalf("LMTP reply %q, want %s", line, prefix)
			}
			if len(line) < 4 || line[3] != '-' {
				return
			}
		}
	}
	expect("220")
	for _, cmd := range []string{"LHLO mx.example.test", "MAIL FROM:<bob@remote.example>", "RCPT TO:<" + alice + ">", "RCPT TO:<" + carol + ">", "DATA"} {
		fmt.Fprintf(conn, "%s\r\n", cmd)
		if cmd == "DATA" {
			expect("354")
		} else {
			expect("250")
		}
	}
	io.WriteString(conn, "Subject: by LMTP\r\n\r\nhello\r\n.\r\n")
	expect("250") // RFC 2033 §4.2: one reply per recipient
	expect("250")
	fmt.Fprintf(conn, "QUIT\r\n")
	var messages, blobs int
	db, err := pgx.Connect(context.Background(), c.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	db.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM blobs)`).Scan(&messages, &blobs)
	if messages != 2 || blobs != 1 {
		t.Fatalf("%d messages in %d blobs, want 2 in 1", messages, blobs)
	}
	p, err := n.login(t)
	if err != nil {
		t.Fatal(err)
	}
	if got := mailtest.RetrAll(t, p, "lmtp"); len(got) != 1 || !strings.HasSuffix(string(got[0]), "Subject: by LMTP\r\n\r\nhello\r\n") {
		t.Fatalf("alice's mailbox: %q", got)
	}
	p.Cmd("QUIT")
}
