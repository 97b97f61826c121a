// Package smtp tests postino's SMTP intake from the outside: it builds
// ./cmd/postino once, runs "postino serve" with its MX, submission,
// submissions, LMTP and POP3 listeners on free loopback ports, sends mail
// with real clients (swaks, Python's smtplib, a real Postfix relaying over
// LMTP) and with raw sockets, and downloads it again over POP3 to compare
// it byte for byte with what was sent.
//
// Tests that need an external program skip when it is missing, except
// under CI=true, where they fail.
package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// binPath is the postino binary built by TestMain.
var binPath string

// extTimeout bounds every external command.
const extTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	code := testutil.Main(m, "smtp", &binPath, makeUsers)
	pgtest.Stop()
	os.Exit(code)
}

// backendEnv names the environment variable that chooses the mail store:
// with POSTINO_TEST_BACKEND=postgres every server keeps its mailboxes in
// PostgreSQL (a database of the test's own, internal/testutil/pgtest)
// instead of Maildirs; the tests read mailboxes over POP3 either way.
const backendEnv = "POSTINO_TEST_BACKEND"

// storageConfig returns the [storage] section for the chosen backend.
func storageConfig(t testing.TB) string {
	t.Helper()
	switch b := os.Getenv(backendEnv); b {
	case "", "maildir":
		return ""
	case "postgres":
		return fmt.Sprintf("\n[storage]\nbackend = \"postgres\"\npostgres_dsn = %q\n", pgtest.NewDB(t))
	default:
		t.Fatalf("%s=%q: want maildir or postgres", backendEnv, b)
		return ""
	}
}

// makeUsers makes the test users once with "postino user add" in dir
// (Argon2id hashing is slow on a loaded machine) and keeps the resulting
// users.passwd in usersFile; every server gets a copy of it.
func makeUsers(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tmpl := filepath.Join(dir, "users")
	if err := os.MkdirAll(tmpl, 0o700); err != nil { // only serve and init create a data folder
		return err
	}
	for _, u := range []string{alice, bob, carol, jorg} {
		cmd := exec.CommandContext(ctx, binPath, "user", "add", u, "--password-stdin", "--data", tmpl)
		cmd.Stdin = strings.NewReader(passwd + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("postino user add %s: %v\n%s", u, err, out)
		}
	}
	var err error
	usersFile, err = os.ReadFile(filepath.Join(tmpl, "users.passwd"))
	return err
}

// usersFile is the users.passwd holding the test users, made by TestMain.
var usersFile []byte

// needPython returns the path of the python3 interpreter itself (not a
// pyenv shim, which costs seconds per start on a loaded machine).
func needPython(t testing.TB) string {
	t.Helper()
	return testutil.NeedPython(t)
}

// needSwaks returns swaks' path, after checking that it can do TLS (it
// needs Net::SSLeay and IO::Socket::SSL, which are separate packages).
func needSwaks(t testing.TB) string {
	t.Helper()
	p := testutil.NeedProgram(t, "swaks")
	perl := testutil.NeedProgram(t, "perl")
	if r := run(t, nil, nil, perl, "-MNet::SSLeay", "-MIO::Socket::SSL", "-e", "1"); r.Code != 0 {
		testutil.SkipOrFatal(t, "swaks cannot do TLS (install libnet-ssleay-perl libio-socket-ssl-perl):\n%s", r)
	}
	return p
}

// The users every server gets, and their passwords.
const (
	alice   = "alice@example.test"
	bob     = "bob@example.test"
	carol   = "carol@catch.test"
	jorg    = "jörg@example.test"
	passwd  = "s3cret-Pa55"
	hostTag = "mx.postino.test"
)

// defaultAliases is the aliases file of every server: an alias with two
// local targets, and the catch-all of catch.test (example.test has none,
// so that its unknown users are refused).
const defaultAliases = "# test aliases\n" +
	"sales@example.test: alice@example.test, bob@example.test\n" +
	"team@example.test:  sales@example.test,\n" +
	"                    carol@catch.test\n" +
	"@catch.test: carol@catch.test\n"

// server is a running "postino serve" with every SMTP listener.
type server struct {
	*testutil.Serve
	t        testing.TB
	data     string
	pop3     string
	smtp     string // MX
	sub      string // submission, STARTTLS
	subs     string // submissions, implicit TLS
	lmtp     string
	certFile string
}

// serverOpts tunes startServer.
type serverOpts struct {
	smtpConfig string // extra lines of the [smtp] section
	aliases    string // aliases file; defaultAliases when empty
	lmtpUnix   bool   // LMTP on a unix socket (DATA/lmtp.sock) instead of TCP
	// localDomains replaces the default local domains (example.test,
	// catch.test); extraConfig is appended after the [smtp] section.
	localDomains []string
	extraConfig  string
	// beforeStart runs on the data folder before the server starts.
	beforeStart func(data string)
	// dnsServer answers the server's DNS lookups; empty: a loopback port
	// where no DNS server answers.
	dnsServer string
}

// startServer creates the test users and aliases in a new data folder,
// runs "postino serve" on free loopback ports, waits until its banner
// lists every listener (so they are this process's) and they accept, and
// stops it with SIGTERM at cleanup (it must exit 0). A port taken between
// picking and binding is retried.
func startServer(t testing.TB, o serverOpts) *server {
	t.Helper()
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "users.passwd"), usersFile, 0o600); err != nil {
		t.Fatal(err)
	}
	if o.aliases == "" {
		o.aliases = defaultAliases
	}
	if err := os.WriteFile(filepath.Join(data, "aliases"), []byte(o.aliases), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(data, "postino.toml")
	domains := `["example.test", "catch.test"]`
	if o.localDomains != nil {
		domains = `["` + strings.Join(o.localDomains, `", "`) + `"]`
	}
	// No listener in the file: "serve" gets its addresses as flags, and
	// "config check" of the file must not find the default ports taken
	// by another test's server.
	toml := "hostname = \"" + hostTag + "\"\nlog_level = \"debug\"\n\n" +
		"[pop3]\nlisten = \"\"\nlisten_tls = \"\"\n\n[admin]\nlisten = \"\"\n\n[smtp]\n" +
		"listen = \"\"\nsubmission = \"\"\nsubmissions = \"\"\nlmtp = \"\"\n" +
		"local_domains = " + domains + "\n" + o.smtpConfig + "\n" + o.extraConfig + "\n" + storageConfig(t)
	if o.beforeStart != nil {
		o.beforeStart(data)
	}
	if err := os.WriteFile(conf, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := run(t, nil, nil, binPath, "config", "check", conf); r.Code != 0 {
		t.Fatalf("config check:\n%s\nconfig:\n%s", r, toml)
	}
	if strings.Contains(toml, `backend = "postgres"`) {
		// The users and aliases of the data folder go into the database,
		// as when a single server moves to a cluster.
		for _, args := range [][]string{{"db", "migrate"}, {"db", "import"}} {
			if r := run(t, nil, nil, binPath, append(args, "--config", conf, "--data", data)...); r.Code != 0 {
				t.Fatalf("%s into PostgreSQL:\n%s", args[1], r)
			}
		}
	}
	s := &server{t: t, data: data, certFile: filepath.Join(data, "tls", "cert.pem")}
	if o.dnsServer == "" {
		o.dnsServer = "127.0.0.1:9"
	}
	s.Serve = testutil.StartServe(t, testutil.ServeConfig{
		Bin:       binPath,
		FreeAddrs: 5,
		Retry:     true,
		Setup: func(free []string) ([]string, map[string]string) {
			s.pop3, s.smtp, s.sub, s.subs, s.lmtp = free[0], free[1], free[2], free[3], free[4]
			if o.lmtpUnix {
				s.lmtp = filepath.Join(data, "lmtp.sock")
			}
			args := []string{"serve", "--config", conf, "--data", data, "--pop3", s.pop3, "--pop3s", "",
				"--smtp", s.smtp, "--submission", s.sub, "--submissions", s.subs, "--lmtp", s.lmtp,
				// Outbound MX lookups go to a loopback port where no DNS
				// server answers: nothing leaves the machine.
				"--dns-server", o.dnsServer, "--admin", ""}
			return args, map[string]string{"pop3": s.pop3, "smtp": s.smtp, "submission": s.sub, "submissions": s.subs, "lmtp": s.lmtp}
		},
	})
	t.Cleanup(s.stop)
	return s
}

// stop stops the server with SIGTERM (it must exit 0) and checks that it
// logged no panic.
func (s *server) stop() {
	s.Stop(s.t, 15*time.Second, s.Stderr)
	if strings.Contains(s.Stderr.String(), "panic") {
		s.t.Errorf("postino logged a panic:\n%s", s.Stderr)
	}
}

// run runs an external command with a timeout, the given extra
// environment and stdin, and returns its combined output and exit code.
// It fails the test if the command cannot start or times out.
var run = testutil.Runner{Timeout: extTimeout, WaitDelay: 5 * time.Second, MaxShown: 12000}.Run

// tlsConfig trusts the server's self-signed certificate.
func (s *server) tlsConfig() *tls.Config {
	s.t.Helper()
	pem, err := os.ReadFile(s.certFile)
	if err != nil {
		s.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		s.t.Fatalf("no certificate in %s", s.certFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// mailbox downloads every message of user over POP3 with the repository's
// client (checking that LIST sizes are RETR octet counts) and quits
// without deleting.
func (s *server) mailbox(t testing.TB, user string) [][]byte {
	t.Helper()
	c := mailtest.DialPOP3(t, s.pop3, 30*time.Second)
	defer c.Close()
	if !isASCII(user) {
		if _, err := c.Cmd("UTF8"); err != nil {
			t.Fatalf("POP3 UTF8: %v", err)
		}
	}
	if err := c.Login(user, passwd); err != nil {
		t.Fatalf("POP3 login %s: %v", user, err)
	}
	msgs := mailtest.RetrAll(t, c, user)
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	return msgs
}

// mustCount downloads user's mailbox and fails unless it holds n messages.
func (s *server) mustCount(t testing.TB, user string, n int) [][]byte {
	t.Helper()
	msgs := s.mailbox(t, user)
	if len(msgs) != n {
		t.Fatalf("%s has %d messages, want %d:\n%s", user, len(msgs), n, dumpMsgs(msgs))
	}
	return msgs
}

func dumpMsgs(msgs [][]byte) string {
	var b strings.Builder
	for i, m := range msgs {
		fmt.Fprintf(&b, "--- message %d (%d octets) ---\n%q\n", i+1, len(m), m)
	}
	return b.String()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// checkStored checks that got is exactly what postino must serve for msg
// received from "from" for mailbox address rcpt: "Return-Path: <from>",
// "Delivered-To: rcpt", then nReceived Received fields (each possibly
// folded), then msg with CRLF line ends. It returns the Received fields
// (with their CRLFs), the first being postino's.
func checkStored(t testing.TB, got []byte, from, rcpt string, nReceived int, msg []byte) []string {
	t.Helper()
	received, err := parseStored(got, from, rcpt, nReceived, msg)
	if err != nil {
		t.Fatalf("stored message for %s: %v\ngot:\n%q\nwant after the trace fields:\n%q", rcpt, err, got, testutil.CRLF(string(msg)))
	}
	return received
}

func parseStored(got []byte, from, rcpt string, nReceived int, msg []byte) ([]string, error) {
	prefix := "Return-Path: <" + from + ">\r\nDelivered-To: " + rcpt + "\r\n"
	if !bytes.HasPrefix(got, []byte(prefix)) {
		return nil, fmt.Errorf("does not start with %q", prefix)
	}
	rest := got[len(prefix):]
	var received []string
	for range nReceived {
		if !bytes.HasPrefix(rest, []byte("Received: ")) {
			return nil, fmt.Errorf("expected %d Received fields, found %d", nReceived, len(received))
		}
		end := 0
		for {
			nl := bytes.Index(rest[end:], []byte("\r\n"))
			if nl < 0 {
				return nil, errors.New("unterminated Received field")
			}
			end += nl + 2
			if end >= len(rest) || (rest[end] != ' ' && rest[end] != '\t') {
				break
			}
		}
		f := string(rest[:end])
		if strings.ContainsAny(strings.ReplaceAll(f, "\r\n", ""), "\r\n") {
			return nil, fmt.Errorf("bare CR or LF in Received field %q", f)
		}
		received = append(received, f)
		rest = rest[end:]
	}
	want := testutil.CRLF(string(msg))
	if !bytes.Equal(rest, want) {
		return nil, fmt.Errorf("content after the trace fields differs (first difference at octet %d)", firstDiff(rest, want))
	}
	return received, nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// receivedRE is postino's Received field; groups: HELO, protocol, id, for.
var receivedRE = regexp.MustCompile(`^Received: from (\S+) \(\[127\.0\.0\.1\]\)` +
	`(?:\r\n\t\(using TLSv1\.[23] with cipher TLS_[A-Z0-9_]+\))?` +
	`(?:\r\n\t\(authenticated as [^()\r\n]+\))?` +
	`\r\n\tby ` + regexp.QuoteMeta(hostTag) + ` \(postino\) with ([A-Z0-9]+) id ([0-9A-F]{19})` +
	`(?:\r\n\tfor <([^<>\r\n]+)>)?;` +
	` (?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}\r\n$`)

// traceWant is what postino's Received field must say.
type traceWant struct {
	helo     string // "" for any
	protocol string // ESMTP, ESMTPS, ESMTPSA, UTF8SMTP, LMTP...
	tls      bool
	user     string // authenticated user, or ""
	rcpt     string // the "for" clause
}

// checkReceived checks postino's Received field against w.
func checkReceived(t testing.TB, f string, w traceWant) {
	t.Helper()
	m := receivedRE.FindStringSubmatch(f)
	if m == nil {
		t.Errorf("Received field does not have postino's form:\n%q", f)
		return
	}
	if w.helo != "" && m[1] != w.helo {
		t.Errorf("Received: from %q, want %q\n%q", m[1], w.helo, f)
	}
	if m[2] != w.protocol {
		t.Errorf("Received: with %q, want %q\n%q", m[2], w.protocol, f)
	}
	if hasTLS := strings.Contains(f, "(using TLSv1."); hasTLS != w.tls {
		t.Errorf("Received: TLS comment present %v, want %v\n%q", hasTLS, w.tls, f)
	}
	if w.user != "" && !strings.Contains(f, "\r\n\t(authenticated as "+w.user+")") {
		t.Errorf("Received does not name the authenticated user %s:\n%q", w.user, f)
	}
	if w.user == "" && strings.Contains(f, "authenticated") {
		t.Errorf("Received names an authenticated user, want none:\n%q", f)
	}
	if m[4] != w.rcpt {
		t.Errorf("Received: for <%s>, want <%s>\n%q", m[4], w.rcpt, f)
	}
}

// ---- raw SMTP sessions ----

// rawConn is an SMTP session over a raw socket, for what clients do not
// let one do (pipelining by hand, BDAT, smuggling attempts, hang-ups).
type rawConn struct {
	t  testing.TB
	c  net.Conn
	r  *bufio.Reader
	tr strings.Builder // transcript, for failure messages
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	rc.expect("220")
	return rc
}

// dialRawTLS is dialRaw for a listener with implicit TLS (RFC 8314 §3.3).
func dialRawTLS(t testing.TB, addr string, cfg *tls.Config) *rawConn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dialing %s with TLS: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	rc.expect("220")
	return rc
}

// startTLS upgrades the session (after EHLO) with STARTTLS.
func (rc *rawConn) startTLS(cfg *tls.Config) {
	rc.t.Helper()
	rc.send("STARTTLS\r\n")
	rc.expect("220")
	tc := tls.Client(rc.c, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		rc.t.Fatalf("TLS handshake: %v\n%s", err, rc.tr.String())
	}
	tc.SetDeadline(time.Time{})
	rc.c, rc.r = tc, bufio.NewReader(tc)
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	rc.tr.WriteString(quoteLines("C: ", s))
	rc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatalf("writing: %v\n%s", err, rc.tr.String())
	}
}

// reply reads one (possibly multi-line) reply and returns its lines
// joined with "\n".
func (rc *rawConn) reply() (string, error) {
	rc.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	var lines []string
	for {
		line, err := rc.r.ReadString('\n')
		if line != "" {
			rc.tr.WriteString("S: " + strings.TrimRight(line, "\r\n") + "\n")
		}
		if err != nil {
			return strings.Join(lines, "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n"), nil
		}
	}
}

// expect reads one reply and fails unless it starts with prefix (a code,
// or a code and enhanced code). It returns the reply.
func (rc *rawConn) expect(prefix string) string {
	rc.t.Helper()
	r, err := rc.reply()
	if err != nil {
		rc.t.Fatalf("reading the reply (want %s): %v\n%s", prefix, err, rc.tr.String())
	}
	last := r[strings.LastIndex(r, "\n")+1:]
	if !strings.HasPrefix(last, prefix) {
		rc.t.Fatalf("got reply %q, want %s\ntranscript:\n%s", r, prefix, rc.tr.String())
	}
	return r
}

// expectEOF checks that the server has closed the connection (after any
// replies already read).
func (rc *rawConn) expectEOF() {
	rc.t.Helper()
	r, err := rc.reply()
	if err == nil || r != "" {
		rc.t.Fatalf("want the connection closed, got %q (%v)\n%s", r, err, rc.tr.String())
	}
}

func (rc *rawConn) ehlo(name string) string {
	rc.t.Helper()
	rc.send("EHLO " + name + "\r\n")
	return rc.expect("250")
}

func (rc *rawConn) close() { rc.c.Close() }

func quoteLines(prefix, s string) string {
	if len(s) > 2000 {
		return prefix + fmt.Sprintf("[%d octets] %q...\n", len(s), s[:200])
	}
	return prefix + fmt.Sprintf("%q", s) + "\n"
}

// dialRawTry opens a TCP connection without failing the test.
func dialRawTry(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, time.Second)
}
