package blackbox

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/pop3"
)

// blockServer runs "postino serve" with POP3, POP3S, submission and
// submissions on loopback, user alice, max_failures = 3 and the extra
// [smtp] and [users] settings given. It returns the server and the submission and
// submissions addresses.
func blockServer(t *testing.T, smtpConf, usersConf string) (s *server, sub, subs string) {
	t.Helper()
	data := t.TempDir()
	addUser(t, data, "alice@example.test", "alice-pw")
	conf := filepath.Join(data, "postino.toml")
	err := os.WriteFile(conf, []byte("[smtp]\n"+smtpConf+"\n[users]\nmax_failures = 3\nfailure_delay = \"50ms\"\nmax_failure_delay = \"50ms\"\n"+usersConf), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	free := testutil.FreeAddrs(t, 2)
	sub, subs = free[0], free[1]
	s = startServer(t, serverOpts{data: data, extraArgs: []string{"--config", conf, "--submission", sub, "--submissions", subs}})
	for _, a := range free {
		if !s.Poll(10*time.Second, 20*time.Millisecond, func() bool {
			c, err := net.Dial("tcp", a)
			if err == nil {
				c.Close()
			}
			return err == nil
		}) {
			t.Fatalf("submission listener %s not up:\n%s", a, s.Stderr)
		}
	}
	return s, sub, subs
}

// smtpAuth connects to a submission listener (plain, STARTTLS or implicit
// TLS), sends AUTH PLAIN and returns the reply line.
func smtpAuth(t *testing.T, s *server, addr, mode, user, pw string) string {
	t.Helper()
	var conn net.Conn
	var err error
	if mode == "tls" {
		conn, err = tls.Dial("tcp", addr, s.tlsConfig())
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	reply := func() string {
		var last string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading SMTP reply: %v (so far %q)", err, last)
			}
			last = strings.TrimRight(line, "\r\n")
			if len(last) < 4 || last[3] != '-' {
				return last
			}
		}
	}
	cmd := func(line string) string {
		fmt.Fprintf(conn, "%s\r\n", line)
		return reply()
	}
	reply() // greeting
	cmd("EHLO client.example")
	if mode == "starttls" {
		if rep := cmd("STARTTLS"); !strings.HasPrefix(rep, "220") {
			t.Fatalf("STARTTLS: %s", rep)
		}
		tc := tls.Client(conn, s.tlsConfig())
		conn, r = tc, bufio.NewReader(tc)
		cmd("EHLO client.example")
	}
	return cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pw)))
}

// pop3Login logs in over plain POP3, STLS or implicit TLS and returns the
// login error.
func pop3Login(t *testing.T, s *server, mode, user, pw string) error {
	t.Helper()
	var c *pop3.Client
	if mode == "tls" {
		conn, err := tls.Dial("tcp", s.pop3sAddr, s.tlsConfig())
		if err != nil {
			t.Fatal(err)
		}
		if c, err = pop3.NewClient(conn); err != nil {
			t.Fatal(err)
		}
	} else {
		c = s.dial()
		if mode == "stls" {
			if err := c.StartTLS(s.tlsConfig()); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer c.Close()
	err := c.Login(user, pw)
	if err == nil {
		c.Quit()
	}
	return err
}

// blockLine finds the "postino block list" row of name.
func blockLine(t *testing.T, s *server, name string) []string {
	t.Helper()
	r := postino(t, nil, "block", "list", "--data", s.data)
	if r.Code != 0 {
		t.Fatalf("block list: %s", r)
	}
	for _, line := range strings.Split(r.Stdout, "\n") {
		if f := strings.Fields(line); len(f) == 6 && f[1] == name {
			return f
		}
	}
	return nil
}

// TestBlockListAndRemove: failed logins over POP3 and over SMTP
// submission (trusted_networks emptied, so loopback is an address like
// any other) block 127.0.0.1 in every protocol and TLS mode, even with the
// right password; "postino block list" shows the block with its end,
// "postino block remove" lifts it and the right password works at once.
// The start and the end of each block are logged.
func TestBlockListAndRemove(t *testing.T) {
	s, sub, subs := blockServer(t, "trusted_networks = []\n", "")
	const user, pw = "alice@example.test", "alice-pw"
	if r := postino(t, nil, "block", "list", "--data", s.data); r.Code != 0 || !strings.Contains(r.Stdout, "no blocked addresses") {
		t.Fatalf("block list before any failure: %s", r)
	}
	wantRefused := func(round string) {
		t.Helper()
		for _, mode := range []string{"plain", "stls", "tls"} {
			if err := pop3Login(t, s, mode, user, pw); !isCode(err, pop3.CodeLoginDelay) {
				t.Fatalf("%s: POP3 %s login with the right password: %v, want [LOGIN-DELAY]", round, mode, err)
			}
		}
		for _, c := range []struct{ addr, mode string }{{sub, "plain"}, {sub, "starttls"}, {subs, "tls"}} {
			if rep := smtpAuth(t, s, c.addr, c.mode, user, pw); !strings.HasPrefix(rep, "454 4.7.0") {
				t.Fatalf("%s: SMTP %s AUTH with the right password: %q, want 454 4.7.0", round, c.mode, rep)
			}
		}
	}
	wantAllowed := func(round string) {
		t.Helper()
		for _, mode := range []string{"plain", "stls", "tls"} {
			if err := pop3Login(t, s, mode, user, pw); err != nil {
				t.Fatalf("%s: POP3 %s login: %v", round, mode, err)
			}
		}
		for _, c := range []struct{ addr, mode string }{{sub, "plain"}, {sub, "starttls"}, {subs, "tls"}} {
			if rep := smtpAuth(t, s, c.addr, c.mode, user, pw); !strings.HasPrefix(rep, "235") {
				t.Fatalf("%s: SMTP %s AUTH: %q, want 235", round, c.mode, rep)
			}
		}
	}
	checkListed := func(round string) {
		t.Helper()
		f := blockLine(t, s, "127.0.0.1")
		if f == nil || f[0] != "address" || f[2] != "blocked" || f[3] != "3" {
			t.Fatalf("%s: block list row of 127.0.0.1 = %q, want address blocked 3", round, f)
		}
		until, err := time.Parse(time.RFC3339, f[4])
		if err != nil {
			t.Fatalf("%s: expiry %q: %v", round, f[4], err)
		}
		if d := time.Until(until); d < 14*time.Minute || d > 15*time.Minute {
			t.Fatalf("%s: block ends in %v, want about 15m", round, d)
		}
		r := postino(t, nil, "block", "remove", "127.0.0.1", "--data", s.data)
		if r.Code != 0 || !strings.Contains(r.Stdout, "127.0.0.1 unblocked") {
			t.Fatalf("%s: block remove: %s", round, r)
		}
	}

	// POP3: three wrong passwords, one per connection.
	for i := range 3 {
		if err := pop3Login(t, s, "plain", user, fmt.Sprintf("guess%d", i)); !isCode(err, pop3.CodeAuth) {
			t.Fatalf("guess %d: %v, want [AUTH]", i, err)
		}
	}
	wantRefused("after POP3 guesses")
	checkListed("after POP3 guesses")
	wantAllowed("after remove")

	// SMTP submission: the same over AUTH PLAIN.
	for i := range 3 {
		if rep := smtpAuth(t, s, sub, "plain", user, fmt.Sprintf("guess%d", i)); !strings.HasPrefix(rep, "535") {
			t.Fatalf("SMTP guess %d: %q, want 535", i, rep)
		}
	}
	wantRefused("after SMTP guesses")
	checkListed("after SMTP guesses")
	wantAllowed("after the second remove")

	if r := postino(t, nil, "block", "remove", "127.0.0.1", "--data", s.data); r.Code != 67 || !strings.Contains(r.Stderr, "nothing is held against") {
		t.Fatalf("removing what is not blocked: %s", r)
	}
	logs := s.Stderr.String()
	starts := regexp.MustCompile(`level=WARN msg="login block started[^"]*" address=127\.0\.0\.1 failures=3 .*until=\S+`).FindAllString(logs, -1)
	ends := regexp.MustCompile(`level=INFO msg="login block ended" address=127\.0\.0\.1 reason=lifted failures=3 until=\S+`).FindAllString(logs, -1)
	if len(starts) != 2 || len(ends) != 2 {
		t.Fatalf("%d block start and %d end lines, want 2 each:\n%s", len(starts), len(ends), logs)
	}

	// Once the server is stopped, the command says so.
	s.stop()
	r := postino(t, nil, "block", "list", "--data", s.data)
	if r.Code != 69 || !strings.Contains(r.Stderr, "not running") {
		t.Fatalf("block list without a server: %s", r)
	}
	if _, err := os.Lstat(filepath.Join(s.data, "admin.sock")); !os.IsNotExist(err) {
		t.Fatalf("admin socket left behind after a clean stop: %v", err)
	}
}

// TestBlockExpiryLogged: a block that runs out is logged as ended when
// the address comes back, and the right password works again.
func TestBlockExpiryLogged(t *testing.T) {
	s, _, _ := blockServer(t, "trusted_networks = []\n", "block_for = \"1s\"\n")
	const user, pw = "alice@example.test", "alice-pw"
	for i := range 3 {
		pop3Login(t, s, "plain", user, fmt.Sprintf("guess%d", i))
	}
	if err := pop3Login(t, s, "plain", user, pw); !isCode(err, pop3.CodeLoginDelay) {
		t.Fatalf("right password while blocked: %v", err)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := pop3Login(t, s, "plain", user, pw); err != nil {
		t.Fatalf("right password once the block ran out: %v", err)
	}
	if !regexp.MustCompile(`msg="login block ended" address=127\.0\.0\.1 reason=expired failures=\d+ until=\S+`).MatchString(s.Stderr.String()) {
		t.Fatalf("no end line for the expired block:\n%s", s.Stderr)
	}
}

// TestTrustedNeverBlocked: with the default trusted_networks (loopback),
// many failed logins from 127.0.0.1 never block it; "postino block list"
// shows only the account's failures, and "postino block remove ACCOUNT"
// forgets them.
func TestTrustedNeverBlocked(t *testing.T) {
	s, sub, subs := blockServer(t, "", "")
	const user, pw = "alice@example.test", "alice-pw"
	for i := range 4 {
		if err := pop3Login(t, s, "plain", user, fmt.Sprintf("guess%d", i)); !isCode(err, pop3.CodeAuth) {
			t.Fatalf("guess %d: %v, want [AUTH]", i, err)
		}
		if rep := smtpAuth(t, s, sub, "plain", user, fmt.Sprintf("guess%d", i)); !strings.HasPrefix(rep, "535") {
			t.Fatalf("SMTP guess %d: %q, want 535", i, rep)
		}
	}
	if f := blockLine(t, s, "127.0.0.1"); f != nil {
		t.Fatalf("trusted address listed: %q", f)
	}
	f := blockLine(t, s, user)
	if f == nil || f[0] != "account" || f[2] != "delayed" || f[3] != "8" {
		t.Fatalf("account row = %q, want account delayed 8", f)
	}
	if err := pop3Login(t, s, "plain", user, pw); err != nil {
		t.Fatalf("POP3 login from a trusted address after 8 failures: %v", err)
	}
	if rep := smtpAuth(t, s, subs, "tls", user, "another guess"); !strings.HasPrefix(rep, "535") {
		t.Fatalf("SMTP guess: %q", rep)
	}
	if r := postino(t, nil, "block", "remove", user, "--data", s.data); r.Code != 0 || !strings.Contains(r.Stdout, "failed logins forgotten") {
		t.Fatalf("block remove ACCOUNT: %s", r)
	}
	if f := blockLine(t, s, user); f != nil {
		t.Fatalf("account still listed after remove: %q", f)
	}
	if strings.Contains(s.Stderr.String(), "login block started") {
		t.Fatalf("a trusted address was blocked:\n%s", s.Stderr)
	}
}

// TestBlockWithRunAs: with run_as, the admin socket belongs to the run_as
// user with mode 0600 (nobody else can lift a block), and "postino block"
// run as root lists and lifts blocks of that server.
func TestBlockWithRunAs(t *testing.T) {
	needRoot(t)
	runAs := testutil.NewSystemUser(t)
	base, err := os.MkdirTemp("", "postino-runas-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	data := filepath.Join(base, "data")
	addUser(t, data, "alice@example.test", "pw")
	cfg := filepath.Join(base, "postino.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("run_as = %q\n\n[smtp]\ntrusted_networks = []\n\n[users]\nmax_failures = 2\nfailure_delay = \"0s\"\n", runAs.Username)), 0o644)
	s := startServer(t, serverOpts{data: data, extraArgs: []string{"--config", cfg}})

	sock := filepath.Join(data, "admin.sock")
	var fi os.FileInfo
	if !s.Poll(10*time.Second, 20*time.Millisecond, func() bool { fi, err = os.Lstat(sock); return err == nil }) {
		t.Fatalf("no admin socket: %v\n%s", err, s.Stderr)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 || strconv.Itoa(int(st.Uid)) != runAs.Uid {
		t.Fatalf("admin socket %v owned by uid %d, want a socket, 0600, uid %s", fi.Mode(), st.Uid, runAs.Uid)
	}
	for i := range 2 {
		pop3Login(t, s, "plain", "alice@example.test", fmt.Sprintf("guess%d", i))
	}
	if err := pop3Login(t, s, "plain", "alice@example.test", "pw"); !isCode(err, pop3.CodeLoginDelay) {
		t.Fatalf("right password while blocked: %v", err)
	}
	if f := blockLine(t, s, "127.0.0.1"); f == nil || f[2] != "blocked" {
		t.Fatalf("block list as root: row %q", f)
	}
	if r := postino(t, nil, "block", "remove", "127.0.0.1", "--data", data); r.Code != 0 {
		t.Fatalf("block remove as root: %s", r)
	}
	if err := pop3Login(t, s, "plain", "alice@example.test", "pw"); err != nil {
		t.Fatalf("login after remove: %v", err)
	}
}
