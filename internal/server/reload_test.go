package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/pop3"
)

// syncBuffer is a log destination safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startForReload builds and starts a server with alice@example.test, and
// returns it with its listener addresses and certificate fingerprint.
func startForReload(t *testing.T, cfg *config.Config, logger *slog.Logger) (*Server, map[string]string, string) {
	t.Helper()
	srv, err := Build(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(logger) })
	addr := map[string]string{}
	for _, l := range srv.Listeners() {
		addr[l.Name] = l.Addr
	}
	fp, _ := srv.SelfSigned()
	db := srv.Users()
	db.Argon2 = auth.Argon2Parameters{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	h, err := db.HashPassword("alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Add(context.Background(), "alice@example.test", h); err != nil {
		t.Fatal(err)
	}
	return srv, addr, fp
}

// TestReloadAppliesPolicies: after Reload, new POP3 and submission
// sessions follow the new plaintext_auth policies (refused in the clear,
// allowed after STLS/STARTTLS and over implicit TLS), new MX sessions the
// new max_recipients; a session opened before the reload keeps its
// settings.
func TestReloadAppliesPolicies(t *testing.T) {
	cfg := testConfig(t)
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	srv, addr, fp := startForReload(t, cfg, logger)
	cl := &clients{t: t}

	// Opened before the reload: keeps the loopback policy and 100
	// recipients.
	oldPOP := cl.dial(addr["pop3"], false, "")
	oldPOP.expect("+OK", oldPOP.line())
	oldMX := cl.dial(addr["smtp"], false, "")
	oldMX.expect("220", oldMX.line())
	oldMX.expect("250", oldMX.cmd("EHLO client.example.test")) // the SMTP session begins at EHLO

	next := *srv.Config()
	next.POP3.PlaintextAuth = pop3.PlaintextNever
	next.SMTP.PlaintextAuth = pop3.PlaintextNever
	next.SMTP.MaxRecipients = 2
	ch, err := srv.Reload(&next, logger)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"pop3.plaintext_auth", "smtp.max_recipients", "smtp.plaintext_auth"}; !slices.Equal(ch.Applied, want) || len(ch.Restart) != 0 {
		t.Errorf("Reload changes = %+v, want applied %v", ch, want)
	}
	if !strings.Contains(logs.String(), `msg="reload: applied" keys="[pop3.plaintext_auth smtp.max_recipients smtp.plaintext_auth]" restart_needed=[]`) {
		t.Errorf("no summary line in the log:\n%s", logs.String())
	}

	// POP3 in the clear: refused now (an attacker on the path must not
	// see the password), after STLS and over implicit TLS: allowed.
	c := cl.dial(addr["pop3"], false, "")
	c.expect("+OK", c.line())
	c.expect("-ERR", c.cmd("USER alice@example.test"))
	c.expect("+OK", c.cmd("STLS"))
	c.startTLS(fp)
	c.expect("+OK", c.cmd("USER alice@example.test"))
	c.expect("+OK", c.cmd("PASS alice-pw"))
	c.expect("+OK", c.cmd("QUIT"))
	c = cl.dial(addr["pop3s"], true, fp)
	c.expect("+OK", c.line())
	c.expect("+OK", c.cmd("USER alice@example.test"))
	c.expect("+OK", c.cmd("PASS alice-pw"))
	c.expect("+OK", c.cmd("QUIT"))
	// The session opened before the reload keeps the old policy.
	oldPOP.expect("+OK", oldPOP.cmd("USER alice@example.test"))
	oldPOP.expect("+OK", oldPOP.cmd("PASS alice-pw"))

	// Submission: no AUTH in the clear, AUTH after STARTTLS and over
	// implicit TLS.
	c = cl.dial(addr["submission"], false, "")
	c.expect("220", c.line())
	if ehlo := ehloLines(c); strings.Contains(ehlo, "AUTH") {
		t.Errorf("AUTH offered in the clear after plaintext_auth = never:\n%s", ehlo)
	}
	c.expect("220", c.cmd("STARTTLS"))
	c.startTLS(fp)
	if ehlo := ehloLines(c); !strings.Contains(ehlo, "AUTH PLAIN") {
		t.Errorf("no AUTH after STARTTLS:\n%s", ehlo)
	}
	c = cl.dial(addr["submissions"], true, fp)
	c.expect("220", c.line())
	if ehlo := ehloLines(c); !strings.Contains(ehlo, "AUTH PLAIN") {
		t.Errorf("no AUTH over implicit TLS:\n%s", ehlo)
	}

	// MX: a third recipient is refused in a new session.
	c = cl.ehlo(addr["smtp"])
	c.expect("250", c.cmd("MAIL FROM:<bob@remote.example>"))
	c.expect("250", c.cmd("RCPT TO:<alice@example.test>"))
	c.expect("250", c.cmd("RCPT TO:<alice+a@example.test>"))
	c.expect("452", c.cmd("RCPT TO:<alice+b@example.test>"))
	// The old session still takes three.
	oldMX.expect("250", oldMX.cmd("MAIL FROM:<bob@remote.example>"))
	for _, r := range []string{"alice", "alice+a", "alice+b"} {
		oldMX.expect("250", oldMX.cmd("RCPT TO:<%s@example.test>", r))
	}
}

// ehloLines sends EHLO and returns the whole multi-line reply.
func ehloLines(c *conn) string {
	c.t.Helper()
	var b strings.Builder
	fmt.Fprintf(c.c, "EHLO client.example.test\r\n")
	for {
		line := c.line()
		b.WriteString(line + "\n")
		if !strings.HasPrefix(line, "250-") {
			break
		}
	}
	return b.String()
}

// TestReloadRestartKeys: a listener address is not applied: Reload
// reports and logs it, keeps the old value, and applies the rest.
func TestReloadRestartKeys(t *testing.T) {
	cfg := testConfig(t)
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	srv, _, _ := startForReload(t, cfg, logger)
	next := *srv.Config()
	next.SMTP.Listen = "127.0.0.1:1"
	next.Queue.Routes = []string{"example.net=127.0.0.1:2"}
	ch, err := srv.Reload(&next, logger)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Restart, []string{"smtp.listen"}) || !slices.Equal(ch.Applied, []string{"queue.routes"}) {
		t.Errorf("changes = %+v", ch)
	}
	if got := srv.Config(); got.SMTP.Listen != cfg.SMTP.Listen || !slices.Equal(got.Queue.Routes, next.Queue.Routes) {
		t.Errorf("in force: smtp.listen %q (want the old %q), queue.routes %v", got.SMTP.Listen, cfg.SMTP.Listen, got.Queue.Routes)
	}
	for _, want := range []string{
		`msg="reload: key needs a restart, keeping the old value" key=smtp.listen old=127.0.0.1:0 new=127.0.0.1:1`,
		`msg="reload: applied" keys=[queue.routes] restart_needed=[smtp.listen]`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}

// TestReloadRefusesWhole: when a file the new configuration names cannot
// be used (an aliases file that does not parse), nothing of it applies.
func TestReloadRefusesWhole(t *testing.T) {
	cfg := testConfig(t)
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	srv, addr, _ := startForReload(t, cfg, logger)
	bad := filepath.Join(cfg.DataDir, "bad-aliases")
	if err := os.WriteFile(bad, []byte("no colon here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	next := *srv.Config()
	next.SMTP.AliasesFile = bad
	next.SMTP.MaxRecipients = 1
	if _, err := srv.Reload(&next, logger); err == nil {
		t.Fatal("Reload accepted an aliases file that does not parse")
	}
	if !strings.Contains(logs.String(), `msg="reload: configuration refused, keeping the old one"`) || !strings.Contains(logs.String(), "bad-aliases") {
		t.Errorf("no refusal naming the file in the log:\n%s", logs.String())
	}
	if srv.Config().SMTP.MaxRecipients != 100 {
		t.Errorf("max_recipients = %d after a refused reload", srv.Config().SMTP.MaxRecipients)
	}
	cl := &clients{t: t}
	c := cl.ehlo(addr["smtp"])
	c.expect("250", c.cmd("MAIL FROM:<bob@remote.example>"))
	c.expect("250", c.cmd("RCPT TO:<alice@example.test>"))
	c.expect("250", c.cmd("RCPT TO:<alice+a@example.test>"))
}

// TestReloadWhileServing reloads repeatedly while SMTP and POP3 sessions
// and queue deliveries run (run with -race): sessions always see one
// whole set of settings, and nothing is left broken.
func TestReloadWhileServing(t *testing.T) {
	cfg := testConfig(t)
	logger := slog.New(slog.DiscardHandler)
	srv, addr, fp := startForReload(t, cfg, logger)
	done := make(chan struct{})
	var wg sync.WaitGroup
	var sessions atomic.Int64
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &clients{t: t}
			for {
				select {
				case <-done:
					return
				default:
				}
				c := cl.ehlo(addr["smtp"])
				c.expect("250", c.cmd("MAIL FROM:<bob@remote.example>"))
				// Either limit (1 or 100) lets one recipient through.
				c.expect("250", c.cmd("RCPT TO:<alice@example.test>"))
				c.expect("354", c.cmd("DATA"))
				c.expect("250", c.cmd("Subject: x\r\n\r\nx\r\n."))
				c.expect("221", c.cmd("QUIT"))
				p := cl.dial(addr["pop3s"], true, fp)
				p.expect("+OK", p.line())
				p.expect("+OK", p.cmd("QUIT"))
				c.c.Close()
				p.c.Close()
				sessions.Add(1)
			}
		}()
	}
	i := 0
	for ; sessions.Load() < 30 && i < 5000; i++ {
		next := *srv.Config()
		next.SMTP.MaxRecipients = 1 + 99*(i%2)
		next.POP3.MaxConnections = 100 + i
		next.Users.MaxFailures = 5 + i
		next.Queue.Routes = []string{fmt.Sprintf("example.net=127.0.0.1:%d", 2000+i)}
		if _, err := srv.Reload(&next, logger); err != nil {
			t.Error(err)
		}
	}
	close(done)
	wg.Wait()
	if got := srv.Config().POP3.MaxConnections; got != 100+i-1 {
		t.Errorf("pop3.max_connections = %d after the last reload, want %d", got, 100+i-1)
	}
	t.Logf("%d reloads during %d sessions", i, sessions.Load())
}

// TestReloadUsersFile: a new users.file applies to the next logins (POP3
// and SMTP AUTH) and to delivery.
func TestReloadUsersFile(t *testing.T) {
	cfg := testConfig(t)
	logger := slog.New(slog.DiscardHandler)
	srv, addr, _ := startForReload(t, cfg, logger)
	other := auth.OpenDB(filepath.Join(cfg.DataDir, "other.passwd"))
	other.Argon2 = auth.Argon2Parameters{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	h, err := other.HashPassword("bob-pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Add(context.Background(), "bob@example.test", h); err != nil {
		t.Fatal(err)
	}
	next := *srv.Config()
	next.Users.File = "other.passwd"
	if _, err := srv.Reload(&next, logger); err != nil {
		t.Fatal(err)
	}
	cl := &clients{t: t}
	cl.pop3Login(addr["pop3"], "alice@example.test", "alice-pw", "-ERR")
	c := cl.pop3Login(addr["pop3"], "bob@example.test", "bob-pw", "+OK")
	c.expect("+OK", c.cmd("QUIT"))
	c = cl.ehlo(addr["smtp"])
	c.expect("250", c.cmd("MAIL FROM:<x@remote.example>"))
	c.expect("550", c.cmd("RCPT TO:<alice@example.test>"))
	c.expect("250", c.cmd("RCPT TO:<bob@example.test>"))
}
