package blackbox

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/pop3"
)

// reloadConfig is the configuration file of TestReload: the listeners and
// the keys each step changes.
type reloadConfig struct {
	pop3, pop3s, mx, sub, subs string
	route                      string
	maxRcpt                    int
	logLevel                   string
	aliases                    string
	plaintext                  string
	extra                      string
}

func (c reloadConfig) write(t *testing.T, path string) {
	t.Helper()
	s := fmt.Sprintf(`log_level = %q
[pop3]
listen = %q
listen_tls = %q
plaintext_auth = %q
[smtp]
listen = %q
submission = %q
submissions = %q
lmtp = ""
max_recipients = %d
aliases_file = %q
local_domains = ["example.test"]
[queue]
routes = ["routed.test=%s"]
min_backoff = "1s"
%s`, c.logLevel, c.pop3, c.pop3s, c.plaintext, c.mx, c.sub, c.subs, c.maxRcpt, c.aliases, c.route, c.extra)
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReload changes the configuration file of a running "postino serve"
// and sends SIGHUP: a new queue.routes target, max_recipients, log_level,
// the aliases file and the POP3 plaintext policy apply to new sessions; a
// new smtp.listen is logged as needing a restart and the old port keeps
// serving; an invalid file is refused with a log line naming the error and
// the configuration in force stays.
func TestReload(t *testing.T) {
	data := t.TempDir()
	addUser(t, data, "alice@example.test", "alice-pw")
	if err := os.WriteFile(filepath.Join(data, "aliases-2"), []byte("team@example.test: alice@example.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	oldSink, newSink := testutil.NewSMTPSink(t), testutil.NewSMTPSink(t)
	conf := filepath.Join(data, "postino.toml")
	var cfg reloadConfig
	var newListen string
	srv := testutil.StartServe(t, testutil.ServeConfig{
		Bin: binPath, FreeAddrs: 6, Retry: true,
		Setup: func(free []string) ([]string, map[string]string) {
			cfg = reloadConfig{pop3: free[0], pop3s: free[1], mx: free[2], sub: free[3], subs: free[4],
				route: oldSink.Addr, maxRcpt: 100, logLevel: "info", aliases: "aliases", plaintext: "loopback"}
			newListen = free[5]
			cfg.write(t, conf)
			return []string{"serve", "--config", conf, "--data", data},
				map[string]string{"pop3": cfg.pop3, "pop3s": cfg.pop3s, "smtp": cfg.mx, "submission": cfg.sub, "submissions": cfg.subs}
		},
	})
	t.Cleanup(func() { srv.Stop(t, 10*time.Second, srv.Stderr) })
	s := &server{t: t, data: data, pop3Addr: cfg.pop3, pop3sAddr: cfg.pop3s}
	tc := s.tlsConfig()

	// Before: the alias is unknown, mail for routed.test goes to the old
	// route, three recipients are fine, no debug lines.
	c := dialSMTP(t, cfg.mx, nil)
	c.cmd("EHLO client.example", "250")
	c.cmd("MAIL FROM:<x@far.example>", "250")
	c.cmd("RCPT TO:<team@example.test>", "550")
	c.cmd("QUIT", "221")
	submit(t, cfg.sub, "bob@routed.test")
	testutil.WaitFor(t, 15*time.Second, "delivery to the old route", func() bool { return len(oldSink.Recipients()) == 1 })
	if strings.Contains(srv.Stderr.String(), "level=DEBUG") {
		t.Fatal("debug lines at log_level = info")
	}

	// The reload.
	next := cfg
	next.route, next.maxRcpt, next.logLevel, next.aliases, next.plaintext = newSink.Addr, 2, "debug", "aliases-2", "never"
	next.mx = newListen
	next.write(t, conf)
	hup := func(wantLine string) {
		t.Helper()
		n := strings.Count(srv.Stderr.String(), wantLine)
		if err := srv.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if !srv.Poll(10*time.Second, 20*time.Millisecond, func() bool { return strings.Count(srv.Stderr.String(), wantLine) > n }) {
			t.Fatalf("no %s after SIGHUP:\n%s", wantLine, srv.Stderr)
		}
	}
	hup(`msg="reload: applied"`)
	logs := srv.Stderr.String()
	for _, want := range []string{
		`msg="reload: applied" keys="[log_level pop3.plaintext_auth smtp.max_recipients smtp.aliases_file queue.routes]" restart_needed=[smtp.listen]`,
		fmt.Sprintf(`msg="reload: key needs a restart, keeping the old value" key=smtp.listen old=%s new=%s`, cfg.mx, newListen),
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}

	// queue.routes: the new route receives the next message.
	submit(t, cfg.sub, "carol@routed.test")
	testutil.WaitFor(t, 15*time.Second, "delivery to the new route", func() bool { return len(newSink.Recipients()) == 1 })
	if got := oldSink.Recipients(); len(got) != 1 {
		t.Errorf("the old route received %v after the reload", got)
	}
	// smtp.listen: still the old port; the new one is not opened.
	if nc, err := net.DialTimeout("tcp", newListen, time.Second); err == nil {
		nc.Close()
		t.Errorf("the new smtp.listen %s accepts connections without a restart", newListen)
	}
	// max_recipients and the aliases on the (old) MX port, and debug
	// lines for the session.
	c = dialSMTP(t, cfg.mx, nil)
	c.cmd("EHLO client.example", "250")
	c.cmd("MAIL FROM:<x@far.example>", "250")
	c.cmd("RCPT TO:<team@example.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("RCPT TO:<alice+x@example.test>", "452 4.5.3")
	c.cmd("QUIT", "221")
	testutil.WaitFor(t, 5*time.Second, "a debug line", func() bool {
		return strings.Contains(srv.Stderr.String(), `level=DEBUG msg="smtp: session"`)
	})
	// pop3.plaintext_auth = never: refused in the clear, even from
	// loopback; allowed after STLS and over implicit TLS.
	checkPOP3Policy(t, s, tc)

	// An invalid file: refused, with the error named; the configuration
	// in force stays (two recipients, the new route).
	bad := next
	bad.maxRcpt = 1
	bad.extra = "no_such_key = 1\n"
	bad.write(t, conf)
	hup(`msg="reload: configuration refused, keeping the old one"`)
	if logs := srv.Stderr.String(); !strings.Contains(logs, "unknown key") || !strings.Contains(logs, "no_such_key") {
		t.Errorf("the refusal does not name the error:\n%s", logs)
	}
	c = dialSMTP(t, cfg.mx, nil)
	c.cmd("EHLO client.example", "250")
	c.cmd("MAIL FROM:<x@far.example>", "250")
	c.cmd("RCPT TO:<team@example.test>", "250")
	c.cmd("RCPT TO:<alice@example.test>", "250")
	c.cmd("QUIT", "221")
	// A file that parses but does not validate is refused too.
	bad.extra = ""
	bad.maxRcpt = -3
	bad.write(t, conf)
	hup(`msg="reload: configuration refused, keeping the old one"`)
	if logs := srv.Stderr.String(); !strings.Contains(logs, "smtp.max_recipients") {
		t.Errorf("the refusal does not name smtp.max_recipients:\n%s", logs)
	}
	submit(t, cfg.sub, "dave@routed.test")
	testutil.WaitFor(t, 15*time.Second, "delivery to the new route after refusals", func() bool { return len(newSink.Recipients()) == 2 })
}

// submit sends a message from alice to rcpt through submission (AUTH in
// the clear is allowed from loopback by default).
func submit(t *testing.T, addr, rcpt string) {
	t.Helper()
	c := dialSMTP(t, addr, nil)
	c.cmd("EHLO client.example", "250")
	c.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice-pw")), "235")
	c.cmd("MAIL FROM:<alice@example.test>", "250")
	c.cmd("RCPT TO:<"+rcpt+">", "250")
	c.cmd("DATA", "354")
	c.cmd("Subject: routed\r\n\r\nhello\r\n.", "250")
	c.cmd("QUIT", "221")
}

// checkPOP3Policy checks pop3.plaintext_auth = never over plain POP3,
// STLS and implicit TLS.
func checkPOP3Policy(t *testing.T, s *server, tc *tls.Config) {
	t.Helper()
	c := s.dial()
	if err := c.Login("alice@example.test", "alice-pw"); err == nil || !isCode(err, "AUTH") {
		t.Errorf("cleartext login after plaintext_auth = never: %v, want -ERR [AUTH]", err)
	}
	c = s.dial()
	if err := c.StartTLS(tc); err != nil {
		t.Fatal(err)
	}
	if err := c.Login("alice@example.test", "alice-pw"); err != nil {
		t.Errorf("login after STLS: %v", err)
	}
	c.Quit()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ct, err := pop3.DialTLS(ctx, s.pop3sAddr, tc)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	if err := ct.Login("alice@example.test", "alice-pw"); err != nil {
		t.Errorf("login over implicit TLS: %v", err)
	}
	ct.Quit()
}
