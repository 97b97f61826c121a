package blackbox

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// smtpConn is a line-based SMTP or LMTP client for these tests.
type smtpConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialSMTP(t *testing.T, addr string, tc *tls.Config) *smtpConn {
	t.Helper()
	var conn net.Conn
	var err error
	if tc != nil {
		conn, err = tls.Dial("tcp", addr, tc)
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &smtpConn{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("220")
	return c
}

// expect reads one reply and checks that its last line starts with want.
func (c *smtpConn) expect(want string) string {
	c.t.Helper()
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading reply: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) >= 4 && line[3] == '-' {
			continue
		}
		if !strings.HasPrefix(line, want) {
			c.t.Fatalf("reply %q; want %s", line, want)
		}
		return line
	}
}

func (c *smtpConn) cmd(line, want string) string {
	c.t.Helper()
	fmt.Fprintf(c.conn, "%s\r\n", line)
	return c.expect(want)
}

func (c *smtpConn) startTLS(tc *tls.Config) {
	c.t.Helper()
	c.cmd("STARTTLS", "220")
	tlsConn := tls.Client(c.conn, tc)
	c.conn, c.r = tlsConn, bufio.NewReader(tlsConn)
}

var queuedAs = regexp.MustCompile(`(?:queued|delivered) as ([0-9A-F]+)$`)

// linesWithID returns the decoded lines whose "id" is id.
func linesWithID(lines []testutil.LogLine, id string) []testutil.LogLine {
	var out []testutil.LogLine
	for _, l := range lines {
		if l.Str("id") == id {
			out = append(out, l)
		}
	}
	return out
}

func hasMsg(lines []testutil.LogLine, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l.Str("msg"), prefix) {
			return true
		}
	}
	return false
}

// TestJSONLogs runs "postino serve" with log_format = "json" and
// log_level = "debug" through SMTP, submission (STARTTLS and implicit
// TLS), LMTP, POP3, the queue and "postino deliver", then checks that
// everything serve wrote on standard output and error, and the commands
// on standard error, is JSON with no key twice in a line; that the id of
// "250 ... queued as ID" is the one "postino queue show" takes and the
// log lines about the message carry; and that deliver, queue retry and
// queue delete are logged with who ran them.
func TestJSONLogs(t *testing.T) {
	data := t.TempDir()
	addUser(t, data, "alice@example.test", "alice-pw")
	addr := testutil.FreeAddrs(t, 8)
	pop3Addr, pop3sAddr, mx, sub, subs, lmtp, route, dns := addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7]
	conf := filepath.Join(data, "postino.toml")
	// remote.test is routed to a loopback port nobody listens on: the
	// queue's attempts fail there, and never leave the machine.
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`log_level = "debug"
log_format = "json"
[queue]
routes = ["remote.test=%s"]
dns_server = %q
min_backoff = "1s"
`, route, dns)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	cmd := exec.Command(binPath, "serve", "--config", conf, "--data", data, "--pop3", pop3Addr, "--pop3s", pop3sAddr,
		"--smtp", mx, "--submission", sub, "--submissions", subs, "--lmtp", lmtp)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	p, err := testutil.StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			p.Kill()
		}
	})
	for _, a := range addr[:6] {
		if !p.Poll(15*time.Second, 20*time.Millisecond, func() bool {
			c, err := net.Dial("tcp", a)
			if err == nil {
				c.Close()
			}
			return err == nil
		}) {
			t.Fatalf("listener %s not up:\nstdout:\n%s\nstderr:\n%s", a, stdout, stderr)
		}
	}
	s := &server{t: t, data: data, pop3Addr: pop3Addr, pop3sAddr: pop3sAddr}
	tc := s.tlsConfig()

	// MX: a refusal, then mail for a local user.
	c := dialSMTP(t, mx, nil)
	c.cmd("EHLO client.example", "250")
	c.cmd("MAIL FROM:<x@far.example>", "250")
	c.cmd("RCPT TO:<nobody@example.test>", "550 5.1.1")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	localID := queuedAs.FindStringSubmatch(c.cmd("Subject: local\r\n\r\nx\r\n.", "250"))
	c.cmd("QUIT", "221")

	// Submission with STARTTLS: a wrong password, then mail to a remote
	// domain, which is queued.
	c = dialSMTP(t, sub, nil)
	c.cmd("EHLO client.example", "250")
	c.startTLS(tc)
	c.cmd("EHLO client.example", "250")
	c.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00wrong")), "535")
	c.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice-pw")), "235")
	c.cmd("MAIL FROM:<alice@example.test>", "250")
	c.cmd("RCPT TO:<friend@remote.test>", "250")
	c.cmd("DATA", "354")
	queued := queuedAs.FindStringSubmatch(c.cmd("Subject: out\r\n\r\nx\r\n.", "250"))
	c.cmd("QUIT", "221")
	if localID == nil || queued == nil {
		t.Fatalf("no id in the replies: %v %v", localID, queued)
	}

	// Submission over implicit TLS: an unknown user.
	c = dialSMTP(t, subs, tc)
	c.cmd("EHLO client.example", "250")
	c.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00ghost@example.test\x00alice-pw")), "535")
	c.cmd("QUIT", "221")

	// LMTP.
	c = dialSMTP(t, lmtp, nil)
	c.cmd("LHLO client.example", "250")
	c.cmd("MAIL FROM:<x@far.example>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("DATA", "354")
	lmtpID := queuedAs.FindStringSubmatch(c.cmd("Subject: lmtp\r\n\r\nx\r\n.", "250"))
	c.cmd("QUIT", "221")

	// POP3: a refused login, then a session.
	if _, err := s.tryLogin("alice@example.test", "wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
	if got := s.retrieveAll("alice@example.test", "alice-pw"); len(got) != 2 {
		t.Fatalf("alice has %d messages, want 2", len(got))
	}

	// The queued id is the one queue show takes.
	r := postino(t, nil, "queue", "show", queued[1], "--config", conf, "--data", data)
	if r.Code != 0 || !strings.Contains(r.Stdout, queued[1]) || !strings.Contains(r.Stdout, "friend@remote.test") {
		t.Fatalf("queue show %s: %s", queued[1], r)
	}
	// Wait for a delivery attempt of the queue.
	var lines []testutil.LogLine
	if !p.Poll(20*time.Second, 50*time.Millisecond, func() bool {
		lines, _ = testutil.ParseJSONLog(stderr.String())
		for _, l := range linesWithID(lines, queued[1]) {
			if l.Str("rcpt") == "friend@remote.test" && strings.HasPrefix(l.Str("msg"), "queue: ") && l.Str("msg") != "queue: queued" {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no attempt logged for %s:\n%s", queued[1], stderr)
	}

	// queue retry and delete, and deliver, log with who ran them.
	checkCommandLog := func(r testutil.Result, command, msg, id string) {
		t.Helper()
		cl, err := testutil.ParseJSONLog(r.Stderr)
		if err != nil {
			t.Fatalf("%s: %v", command, err)
		}
		for _, l := range cl {
			if l.Str("msg") == msg && l.Str("command") == command && l.Str("id") == id && l.Has("run_by_uid") && l.Str("run_by") != "" {
				return
			}
		}
		t.Errorf("%s: no %q line for %s with run_by_uid and run_by:\n%s", command, msg, id, r.Stderr)
	}
	r = postino(t, nil, "queue", "retry", queued[1], "--config", conf, "--data", data)
	if r.Code != 0 {
		t.Fatalf("queue retry: %s", r)
	}
	checkCommandLog(r, "queue retry", "queue: retry by administrator", queued[1])
	r = postino(t, nil, "queue", "delete", queued[1], "--config", conf, "--data", data)
	if r.Code != 0 {
		t.Fatalf("queue delete: %s", r)
	}
	checkCommandLog(r, "queue delete", "queue: delete by administrator", queued[1])
	r = postino(t, []byte("Subject: cli\n\nx\n"), "deliver", "--config", conf, "--data", data, "alice@example.test")
	if r.Code != 0 {
		t.Fatalf("deliver: %s", r)
	}
	cl, err := testutil.ParseJSONLog(r.Stderr)
	if err != nil || len(cl) == 0 {
		t.Fatalf("deliver's log: %v\n%s", err, r.Stderr)
	}
	checkCommandLog(r, "deliver", "deliver: done", cl[len(cl)-1].Str("id"))
	if !hasMsg(linesWithID(cl, cl[len(cl)-1].Str("id")), "delivered") {
		t.Errorf("deliver: no delivered line with its id:\n%s", r.Stderr)
	}

	stopped = true
	p.Stop(t, 10*time.Second, stderr)
	if stdout.String() != "" {
		if _, err := testutil.ParseJSONLog(stdout.String()); err != nil {
			t.Errorf("standard output: %v", err)
		}
	}
	lines, err = testutil.ParseJSONLog(stderr.String())
	if err != nil {
		t.Fatalf("standard error: %v", err)
	}
	// The banner is in the log.
	if !hasMsg(lines, "serving") || !hasMsg(lines, "listening") {
		t.Errorf("no banner lines in the JSON log:\n%s", stderr)
	}
	// Every delivery's lines carry the id of its reply.
	for _, id := range []string{localID[1], lmtpID[1]} {
		if got := linesWithID(lines, id); !hasMsg(got, "delivered") {
			t.Errorf("no delivered line with id %s:\n%s", id, stderr)
		}
	}
	if got := linesWithID(lines, queued[1]); !hasMsg(got, "smtp: queued") || !hasMsg(got, "queue: queued") {
		t.Errorf("queue lines of %s: %v", queued[1], got)
	}
	// Refusals and failed logins, with their keys.
	causes := map[string]bool{}
	for _, l := range lines {
		if l.Str("msg") == "smtp: refused" || l.Str("msg") == "pop3: refused" {
			for _, k := range []string{"id", "remote", "code", "reason"} {
				if !l.Has(k) {
					t.Errorf("refusal without %s: %v", k, l)
				}
			}
			causes[l.Str("code")+" "+l.Str("reason")] = true
		}
	}
	for _, want := range []string{"550 5.1.1 unknown user", "535 5.7.8 login failed: wrong password", "535 5.7.8 login failed: unknown user", "-ERR [AUTH] Authentication failed. (wrong password)"} {
		if !causes[want] {
			t.Errorf("no refusal %q in %v", want, causes)
		}
	}
}
