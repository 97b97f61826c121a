package pop3

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

const (
	msgPlain  = "From: a@example.test\r\nSubject: one\r\n\r\nHello.\r\n"
	msgDots   = "Subject: dots\r\n\r\n.leading dot\r\n.\r\n..two\r\nend\r\n"
	msgNoBody = "Subject: header only\r\nX-A: b\r\n"
)

func seed(ts *testServer) {
	ts.be.add("alice@example.test", "uid-1", msgPlain)
	ts.be.add("alice@example.test", "uid-2", msgDots)
	ts.be.add("alice@example.test", "uid-3", msgNoBody)
}

func TestGreetingAndCapaAuthorization(t *testing.T) {
	ts := startServer(t, nil)
	tr := ts.dial(t)
	body := tr.multi("CAPA")
	for _, want := range []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER",
		"SASL PLAIN LOGIN", "STLS", "EXPIRE NEVER", "LOGIN-DELAY 0", "UTF8 USER", "LANG", "IMPLEMENTATION postino-test"} {
		if !strings.Contains(body, "\r\n"+want+"\r\n") && !strings.HasPrefix(body, want+"\r\n") {
			t.Errorf("CAPA lacks %q:\n%s", want, body)
		}
	}
}

func TestCapaTransactionKeepsAuthCaps(t *testing.T) {
	ts := startServer(t, nil)
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	body := tr.multi("CAPA")
	// RFC 2449 §5: capabilities of the AUTHORIZATION state are announced
	// in both states; STLS is only valid before login.
	if !strings.Contains(body, "\r\nUSER\r\n") || !strings.Contains(body, "SASL PLAIN LOGIN\r\n") {
		t.Errorf("CAPA in TRANSACTION lacks USER/SASL:\n%s", body)
	}
	if strings.Contains(body, "STLS") {
		t.Errorf("CAPA in TRANSACTION offers STLS:\n%s", body)
	}
}

func TestCommandsOutsideTheirState(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	tr := ts.dial(t)
	for _, cmd := range []string{"STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL", "UIDL 1"} {
		tr.do(cmd, `^-ERR Not logged in\.$`)
	}
	tr.do("PASS secret", `^-ERR No user name given`)
	tr = ts.loggedIn(t, "alice@example.test", "secret pass")
	for _, cmd := range []string{"USER alice@example.test", "PASS x", "STLS", "AUTH PLAIN", "UTF8", "APOP a b", "XYZZY"} {
		tr.do(cmd, `^-ERR `)
	}
	tr.do("STAT", `^\+OK 3 `)
}

func TestArgumentErrors(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.MaxBadCommands = 100 })
	seed(ts)
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	cases := []struct{ cmd, want string }{
		{"RETR", `^-ERR Missing argument\.$`},
		{"RETR 1 2", `^-ERR Too many arguments\.$`},
		{"STAT 1", `^-ERR Too many arguments\.$`},
		{"RETR 0", `^-ERR No such message\.$`},
		{"RETR 4", `^-ERR No such message\.$`},
		{"RETR -1", `^-ERR Invalid message number\.$`},
		{"RETR +1", `^-ERR Invalid message number\.$`},
		{"RETR abc", `^-ERR Invalid message number\.$`},
		{"RETR 99999999999999999999", `^-ERR Invalid message number\.$`},
		{"LIST x", `^-ERR Invalid message number\.$`},
		{"UIDL 9", `^-ERR No such message\.$`},
		{"TOP 1", `^-ERR Missing argument\.$`},
		{"TOP 1 -1", `^-ERR Invalid number of lines\.$`},
		{"TOP 1 x", `^-ERR Invalid number of lines\.$`},
		{"DELE", `^-ERR Missing argument\.$`},
		{"LIST " + strings.Repeat("1", 41), `^-ERR Argument too long\.$`},
		{"TOOLONG", `^-ERR Unknown command\.$`},
		{"", `^-ERR Empty command\.$`},
		{"RETR\x001", `^-ERR Control characters`},
		{"RETR \xff", `^-ERR Invalid UTF-8`},
		{"LANG xx", `^-ERR Unsupported language\.$`},
	}
	for _, c := range cases {
		tr.do(c.cmd, c.want)
	}
	tr.do("DELE 2", `^\+OK Message 2 deleted\.$`)
	tr.do("RETR 2", `^-ERR Message 2 already deleted\.$`)
	tr.do("LIST 2", `^-ERR Message 2 already deleted\.$`)
	tr.do("DELE 2", `^-ERR Message 2 already deleted\.$`)
	tr.do("TOP 2 0", `^-ERR Message 2 already deleted\.$`)
	tr.do("UIDL 2", `^-ERR Message 2 already deleted\.$`)
	tr.do("noop", `^\+OK`) // keywords are case-insensitive
}

func TestTransaction(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	tr := ts.dial(t)
	tr.do("USER alice@example.test", `^\+OK`)
	size := len(msgPlain) + len(msgDots) + len(msgNoBody)
	tr.do("PASS secret pass", fmt.Sprintf(`^\+OK Logged in, 3 messages \(%d octets\)\.$`, size))
	tr.do("STAT", fmt.Sprintf(`^\+OK 3 %d$`, size))
	if got, want := tr.multi("LIST"), fmt.Sprintf("1 %d\r\n2 %d\r\n3 %d\r\n", len(msgPlain), len(msgDots), len(msgNoBody)); got != want {
		t.Errorf("LIST = %q, want %q", got, want)
	}
	tr.do("LIST 2", fmt.Sprintf(`^\+OK 2 %d$`, len(msgDots)))
	if got := tr.multi("UIDL"); got != "1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n" {
		t.Errorf("UIDL = %q", got)
	}
	tr.do("UIDL 3", `^\+OK 3 uid-3$`)
	// RETR: byte-stuffing of lines starting with '.'.
	if got, want := tr.multi("RETR 2"), "Subject: dots\r\n\r\n..leading dot\r\n..\r\n...two\r\nend\r\n"; got != want {
		t.Errorf("RETR 2 = %q, want %q", got, want)
	}
	if got := tr.multi("RETR 1"); got != msgPlain {
		t.Errorf("RETR 1 = %q", got)
	}
	tr.do("DELE 1", `^\+OK`)
	tr.do("STAT", fmt.Sprintf(`^\+OK 2 %d$`, size-len(msgPlain)))
	if got := tr.multi("LIST"); strings.HasPrefix(got, "1 ") {
		t.Errorf("LIST shows deleted message: %q", got)
	}
	tr.do("RSET", `^\+OK 3 messages`)
	tr.do("STAT", fmt.Sprintf(`^\+OK 3 %d$`, size))
	tr.do("DELE 1", `^\+OK`)
	tr.do("DELE 3", `^\+OK`)
	tr.do("QUIT", `^\+OK Logging out, 1 messages left\.$`)
	tr.closed()
	if n := len(ts.be.boxes["alice@example.test"]); n != 1 || ts.be.boxes["alice@example.test"][0].uid != "uid-2" {
		t.Fatalf("after QUIT the maildrop has %v", ts.be.boxes["alice@example.test"])
	}
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })
}

func TestListSizesMatchRetr(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	c := ts.client(t)
	if err := c.Login("alice@example.test", "secret pass"); err != nil {
		t.Fatal(err)
	}
	list, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, e := range list {
		r, err := c.Retr(e.Number)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != e.Size {
			t.Errorf("message %d: LIST %d, RETR %d octets", e.Number, e.Size, len(b))
		}
		total += e.Size
	}
	if n, size, err := c.Stat(); err != nil || n != 3 || size != total {
		t.Errorf("STAT = %d %d %v, want 3 %d", n, size, err, total)
	}
}

func TestTop(t *testing.T) {
	ts := startServer(t, nil)
	ts.be.add("alice@example.test", "a", "A: 1\r\nB: 2\r\n\r\nl1\r\n.l2\r\nl3\r\n")
	ts.be.add("alice@example.test", "b", "A: 1\r\n")
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	cases := []struct {
		cmd, want string
	}{
		{"TOP 1 0", "A: 1\r\nB: 2\r\n\r\n"},
		{"TOP 1 1", "A: 1\r\nB: 2\r\n\r\nl1\r\n"},
		{"TOP 1 2", "A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n"},
		{"TOP 1 99999999", "A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\nl3\r\n"},
		{"TOP 2 0", "A: 1\r\n"},
		{"TOP 2 5", "A: 1\r\n"},
	}
	for _, c := range cases {
		if got := tr.multi(c.cmd); got != c.want {
			t.Errorf("%s = %q, want %q", c.cmd, got, c.want)
		}
	}
}

func TestAuthFailures(t *testing.T) {
	ts := startServer(t, nil)
	tr := ts.dial(t)
	tr.do("USER alice@example.test", `^\+OK`)
	tr.do("PASS wrong", `^-ERR \[AUTH\] Authentication failed\.$`)
	tr.do("USER nobody@example.test", `^\+OK`)
	tr.do("PASS wrong", `^-ERR \[AUTH\] Authentication failed\.$`)
	tr.do("USER alice@example.test", `^\+OK`)
	tr.do("PASS still wrong", `^-ERR \[AUTH\] Authentication failed\.$`, `^-ERR Too many failed logins`)
	tr.closed()
}

func TestInUse(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	first := ts.loggedIn(t, "alice@example.test", "secret pass")
	second := ts.dial(t)
	second.do("USER alice@example.test", `^\+OK`)
	second.do("PASS secret pass", `^-ERR \[IN-USE\] `)
	// The session stays in AUTHORIZATION and may try again.
	second.do("STAT", `^-ERR Not logged in`)
	first.do("QUIT", `^\+OK`)
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })
	second.do("USER alice@example.test", `^\+OK`)
	second.do("PASS secret pass", `^\+OK Logged in`)

	c := ts.client(t)
	err := c.Login("alice@example.test", "secret pass")
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("client error %v is not ErrInUse", err)
	}
}

func TestDroppedConnectionDeletesNothing(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.do("DELE 1", `^\+OK`)
	tr.do("DELE 2", `^\+OK`)
	tr.conn.Close()
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })
	if n := len(ts.be.boxes["alice@example.test"]); n != 3 || ts.be.commits != 0 {
		t.Fatalf("dropped session changed the maildrop: %d messages, %d commits", n, ts.be.commits)
	}
}

func TestQuitWithoutDeletionsCommitsNothing(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.do("DELE 1", `^\+OK`)
	tr.do("RSET", `^\+OK`)
	tr.do("QUIT", `^\+OK Logging out, 3 messages left\.$`)
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })
	if ts.be.commits != 0 {
		t.Fatal("QUIT without deletions called Commit")
	}
}

func TestQuitInAuthorization(t *testing.T) {
	ts := startServer(t, nil)
	tr := ts.dial(t)
	tr.do("QUIT", `^\+OK Bye\.$`)
	tr.closed()
}

func TestSASL(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

	tr := ts.dial(t)
	body := tr.multi("AUTH")
	if body != "PLAIN\r\nLOGIN\r\n" {
		t.Errorf("AUTH list = %q", body)
	}
	tr.do("AUTH CRAM-MD5", `^-ERR Unsupported authentication mechanism\.$`)
	tr.do("AUTH PLAIN !!!", `^-ERR Invalid base64`)
	tr.do("AUTH PLAIN", `^\+ $`)
	tr.do("*", `^-ERR Authentication cancelled\.$`)
	tr.do("AUTH PLAIN", `^\+ $`)
	tr.do("not base64!", `^-ERR Invalid base64`)
	tr.do("AUTH PLAIN =", `^-ERR \[AUTH\] Malformed PLAIN`)
	tr.do("AUTH PLAIN "+b64("other\x00alice@example.test\x00secret pass"), `^-ERR \[AUTH\] Authorization identity`)
	tr.do("AUTH PLAIN "+b64("\x00alice@example.test\x00secret pass"), `^\+OK Logged in, 3 messages`)
	tr.do("QUIT", `^\+OK`)
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })

	tr = ts.dial(t)
	tr.do("AUTH PLAIN", `^\+ $`)
	tr.do(b64("alice@example.test\x00alice@example.test\x00secret pass"), `^\+OK Logged in`)
	tr.do("QUIT", `^\+OK`)
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })

	tr = ts.dial(t)
	tr.do("AUTH LOGIN", `^\+ `+b64("Username:")+`$`)
	tr.do(b64("alice@example.test"), `^\+ `+b64("Password:")+`$`)
	tr.do(b64("secret pass"), `^\+OK Logged in`)
	tr.do("QUIT", `^\+OK`)
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })

	tr = ts.dial(t)
	tr.do("auth login "+b64("alice@example.test"), `^\+ `+b64("Password:")+`$`)
	tr.do(b64("nope"), `^-ERR \[AUTH\] Authentication failed\.$`)
	tr.do("AUTH LOGIN", `^\+ `)
	tr.do("*", `^-ERR Authentication cancelled\.$`)
}

func TestPlaintextPolicyNever(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.Plaintext = PlaintextNever })
	seed(ts)
	tr := ts.dial(t)
	body := tr.multi("CAPA")
	if strings.Contains(body, "\r\nUSER\r\n") || strings.Contains(body, "SASL") {
		t.Errorf("CAPA offers cleartext login without TLS:\n%s", body)
	}
	tr.do("USER alice@example.test", `^-ERR \[AUTH\] Plaintext authentication disallowed`)
	tr.do("AUTH PLAIN =", `^-ERR \[AUTH\] Plaintext authentication disallowed`)
	tr.do("STLS", `^\+OK Begin TLS`)

	// Over TLS the same commands work.
	c := ts.client(t)
	if err := c.StartTLS(ts.tlsClient); err != nil {
		t.Fatal(err)
	}
	caps, err := c.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := caps["STLS"]; ok {
		t.Error("CAPA offers STLS after TLS started")
	}
	if _, ok := caps["USER"]; !ok {
		t.Error("CAPA lacks USER under TLS")
	}
	if err := c.Login("alice@example.test", "secret pass"); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

func TestSTLSDiscardsPipelinedCleartext(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	tr := ts.dial(t)
	// An attacker in the middle appends a command after STLS.
	tr.send("STLS\r\nUSER alice@example.test")
	tr.expect(`^\+OK Begin TLS`)
	c, err := NewClientAfterTLS(tr.conn, ts.tlsClient)
	if err != nil {
		t.Fatal(err)
	}
	// Had the injected USER been run, PASS would now be accepted.
	if _, err := c.Cmd("PASS secret pass"); err == nil || !strings.Contains(err.Error(), "No user name") {
		t.Fatalf("PASS after STLS: %v", err)
	}
	if _, err := c.Cmd("STLS"); err == nil {
		t.Fatal("second STLS accepted")
	}
}

func TestImplicitTLS(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	c, err := DialTLS(context.Background(), ts.tlsAddr, ts.tlsClient)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	caps, err := c.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := caps["STLS"]; ok {
		t.Error("STLS offered on implicit TLS")
	}
	if err := c.Login("alice@example.test", "secret pass"); err != nil {
		t.Fatal(err)
	}
	r, err := c.Retr(1)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(r); string(b) != msgPlain {
		t.Errorf("RETR over TLS = %q", b)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

func TestPipelining(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	tr := ts.dial(t)
	// Everything in one write; replies must come in order.
	tr.send("CAPA\r\nUSER alice@example.test\r\nPASS secret pass\r\nSTAT\r\nRETR 1\r\nDELE 1\r\nLIST 1\r\nNOOP\r\nQUIT")
	tr.expect(`^\+OK Capability`)
	for {
		if tr.readLine() == "." {
			break
		}
	}
	tr.expect(`^\+OK`, `^\+OK Logged in`, `^\+OK 3 `, `^\+OK \d+ octets$`)
	for {
		if tr.readLine() == "." {
			break
		}
	}
	tr.expect(`^\+OK Message 1 deleted`, `^-ERR Message 1 already deleted`, `^\+OK`, `^\+OK Logging out, 2 messages left`)
	tr.closed()
}

func TestLineLimits(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.MaxBadCommands = 3 })
	tr := ts.dial(t)
	tr.do("NOOP "+strings.Repeat("x", 2000), `^-ERR Line too long\.$`)
	tr.do("CAPA", `^\+OK`) // resynchronised on the next line; a good command resets the count
	for tr.readLine() != "." {
	}
	tr.do("BAD1", `^-ERR`)
	tr.do("BAD2", `^-ERR`)
	tr.do("BAD3", `^-ERR Unknown command`, `^-ERR Too many bad commands`)
	tr.closed()
}

func TestLFOnlyCommands(t *testing.T) {
	ts := startServer(t, nil)
	tr := ts.dial(t)
	io.WriteString(tr.conn, "NOOP\nCAPA\n")
	tr.expect(`^-ERR Not logged in`, `^\+OK Capability`)
}

func TestAutologout(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.Autologout = 200 * time.Millisecond })
	seed(ts)
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.do("DELE 1", `^\+OK`)
	tr.expect(`^-ERR Autologout`)
	tr.closed()
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })
	if len(ts.be.boxes["alice@example.test"]) != 3 {
		t.Fatal("autologout deleted messages")
	}
}

func TestShutdown(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.do("DELE 1", `^\+OK`)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	tr.expect(`^-ERR \[SYS/TEMP\] Server shutting down`)
	tr.closed()
	if len(ts.be.boxes["alice@example.test"]) != 3 || ts.be.isLocked("alice@example.test") {
		t.Fatal("shutdown deleted messages or left the lock")
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}

type shortDrop struct{ Maildrop }

func (d shortDrop) Messages() []MessageInfo {
	m := d.Maildrop.Messages()
	m[0].Size += 10 // storage claims more than it has
	return m
}

type shortBackend struct{ *memBackend }

func (b shortBackend) OpenMaildrop(ctx context.Context, ci *ConnInfo, user string) (Maildrop, error) {
	d, err := b.memBackend.OpenMaildrop(ctx, ci, user)
	if err != nil {
		return nil, err
	}
	return shortDrop{d}, nil
}

func TestSizeMismatchDropsConnection(t *testing.T) {
	ts := startServer(t, nil)
	seed(ts)
	ts.Backend = shortBackend{ts.be}
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.send("RETR 1")
	tr.expect(`^\+OK \d+ octets`)
	for {
		tr.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := tr.r.ReadString('\n')
		if err != nil {
			break
		}
		if line == ".\r\n" {
			t.Fatal("a message of the wrong size was terminated as if complete")
		}
	}
}

func TestBackendErrors(t *testing.T) {
	ts := startServer(t, nil)
	ts.be.failOpen = errors.New("disk on fire")
	tr := ts.dial(t)
	tr.do("USER alice@example.test", `^\+OK`)
	tr.do("PASS secret pass", `^-ERR \[SYS/TEMP\] Temporary server failure`)
	ts.be.failOpen = &Error{Code: CodeSysPerm, Text: "Mailbox is corrupt."}
	tr.do("USER alice@example.test", `^\+OK`)
	tr.do("PASS secret pass", `^-ERR \[SYS/PERM\] Mailbox is corrupt\.$`)
}

func TestUTF8AndLang(t *testing.T) {
	ts := startServer(t, nil)
	ts.be.users["jörg@example.test"] = "pässwört"
	tr := ts.dial(t)
	tr.do("UTF8", `^\+OK UTF8 enabled`)
	if got := tr.multi("LANG"); got != "en English\r\n" {
		t.Errorf("LANG = %q", got)
	}
	tr.do("LANG en", `^\+OK en `)
	tr.do("LANG *", `^\+OK en `)
	tr.do("USER jörg@example.test", `^\+OK`)
	tr.do("PASS pässwört", `^\+OK Logged in`)
	tr.do("LANG", `^\+OK`, `^en English$`, `^\.$`)
}

func TestConnectionLimits(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.MaxConnectionsPerIP = 2 })
	ts.dial(t)
	ts.dial(t)
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 200)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := c.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "-ERR [SYS/TEMP] Too many connections") {
		t.Fatalf("third connection got %q", buf[:n])
	}
}

func TestPassWithSpaces(t *testing.T) {
	ts := startServer(t, nil)
	tr := ts.dial(t)
	tr.do("USER alice@example.test", `^\+OK`)
	tr.do("PASS secret pass", `^\+OK Logged in`)
}

func TestSlowloris(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.LineTimeout = 300 * time.Millisecond })
	tr := ts.dial(t)
	start := time.Now()
	// One byte at a time, slower than the line timeout allows in total.
	for _, b := range []byte("NOOP") {
		if _, err := tr.conn.Write([]byte{b}); err != nil {
			break
		}
		time.Sleep(120 * time.Millisecond)
	}
	tr.expect(`^-ERR Command line timed out`)
	tr.closed()
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("slow client kept for %v", d)
	}
	// An idle client between commands is governed by the autologout
	// timer, not by the line timeout.
	tr = ts.dial(t)
	time.Sleep(500 * time.Millisecond)
	tr.do("CAPA", `^\+OK`)
}

func TestMaxSessionTime(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.MaxSessionTime = 400 * time.Millisecond })
	seed(ts)
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.do("DELE 1", `^\+OK`)
	for i := 0; i < 20; i++ {
		tr.send("NOOP")
		line := tr.readLine()
		if strings.HasPrefix(line, "-ERR Session time limit") {
			tr.closed()
			testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })
			if len(ts.be.boxes["alice@example.test"]) != 3 {
				t.Fatal("session limit applied deletions")
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("session outlived MaxSessionTime")
}

func TestCommandsPerSecond(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.CommandsPerSecond = 20 })
	tr := ts.dial(t)
	start := time.Now()
	var batch strings.Builder
	for i := 0; i < 60; i++ {
		batch.WriteString("LANG en\r\n")
	}
	io.WriteString(tr.conn, batch.String())
	for i := 0; i < 60; i++ {
		tr.expect(`^\+OK en`)
	}
	// 20 at once, then 40 more at 20/s.
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Fatalf("60 commands at 20/s took only %v", d)
	}
}

func TestClientThatStopsReading(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.WriteTimeout = 300 * time.Millisecond })
	ts.be.add("alice@example.test", "big", "Subject: big\r\n\r\n"+strings.Repeat(strings.Repeat("x", 998)+"\r\n", 20000))
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.send("RETR 1")
	// Never read: the server must give up and free the maildrop.
	testutil.WaitFor(t, 5*time.Second, "the stalled session to end", func() bool { return !ts.be.isLocked("alice@example.test") })
}
