package server

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/testutil"
)

// scrape fetches url and returns its body and status.
func scrape(t *testing.T, url string) (int, string) {
	t.Helper()
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// samples parses the Prometheus text format into "name{labels}" -> value.
func samples(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", l)
		}
		out[l[:i]] = v
	}
	return out
}

// TestAdminMetricsAfterTraffic builds a server with the admin listener,
// sends real traffic (LMTP and MX deliveries, a refused relay attempt,
// a good and two forged POP3 logins) and checks the scraped values (the
// queue gauges are 0: nothing is queued); then /healthz and /readyz,
// and /readyz again once the user database is unreadable and once the
// mail folder is gone.
func TestAdminMetricsAfterTraffic(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.Listen = "127.0.0.1:0"
	// Loopback is not trusted here, so that the guard blocks it after
	// three failed logins, without delays.
	cfg.SMTP.TrustedNetworks = nil
	cfg.Users.MaxFailures = 3
	cfg.Users.FailureDelay = config.D(0)
	logger := slog.New(slog.DiscardHandler)
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
	if addr["admin"] == "" {
		t.Fatalf("no admin listener in %v", srv.Listeners())
	}
	base := "http://" + addr["admin"]
	db := srv.Users()
	db.Argon2 = auth.Argon2Parameters{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	h, err := db.HashPassword("alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Add(context.Background(), "alice@example.test", h); err != nil {
		t.Fatal(err)
	}
	cl := &clients{t: t}

	// Two messages over LMTP, one over the MX.
	c := cl.dial(addr["lmtp"], false, "")
	c.expect("220", c.line())
	c.expect("250", c.cmd("LHLO client.example.test"))
	for range 2 {
		c.expect("250", c.cmd("MAIL FROM:<bob@remote.example>"))
		c.expect("250", c.cmd("RCPT TO:<alice@example.test>"))
		c.expect("354", c.cmd("DATA"))
		c.expect("250", c.cmd("Subject: hello\r\n\r\nbody\r\n."))
	}
	c = cl.ehlo(addr["smtp"])
	c.expect("250", c.cmd("MAIL FROM:<bob@remote.example>"))
	c.expect("250", c.cmd("RCPT TO:<alice@example.test>"))
	c.expect("354", c.cmd("DATA"))
	c.expect("250", c.cmd("Subject: hi\r\n\r\nbody\r\n."))
	// An attacker: a relay attempt and an unknown user are refused.
	c.expect("250", c.cmd("MAIL FROM:<spam@attacker.example>"))
	c.expect("554 5.7.1", c.cmd("RCPT TO:<victim@elsewhere.example>"))
	c.expect("550 5.1.1", c.cmd("RCPT TO:<nobody@example.test>"))
	// POP3: one good login, two forged.
	p := cl.pop3Login(addr["pop3"], "alice@example.test", "alice-pw", "+OK")
	p.expect("+OK", p.cmd("QUIT"))
	cl.pop3Login(addr["pop3"], "alice@example.test", "guessed", "-ERR")
	cl.pop3Login(addr["pop3"], "mallory@example.test", "guessed", "-ERR")
	// SMTP AUTH on submission (in the clear from loopback): one good, a
	// third failure that blocks the address, and a refused attempt.
	plain := func(user, pw string) string {
		return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pw))
	}
	sub := cl.ehlo(addr["submission"])
	sub.expect("235", sub.cmd("AUTH PLAIN %s", plain("alice@example.test", "alice-pw")))
	sub = cl.ehlo(addr["submission"])
	sub.expect("535", sub.cmd("AUTH PLAIN %s", plain("alice@example.test", "guessed")))
	sub = cl.ehlo(addr["submission"])
	sub.expect("4", sub.cmd("AUTH PLAIN %s", plain("alice@example.test", "alice-pw")))

	code, text := scrape(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	got := samples(t, text)
	want := map[string]float64{
		`postino_connections_total{listener="lmtp"}`:                 1,
		`postino_connections_total{listener="smtp"}`:                 1,
		`postino_connections_total{listener="pop3"}`:                 3,
		`postino_connections_total{listener="submission"}`:           3,
		`postino_logins_total{protocol="smtp",result="ok"}`:          1,
		`postino_logins_total{protocol="smtp",result="failed"}`:      1,
		`postino_logins_total{protocol="smtp",result="blocked"}`:     1,
		`postino_login_blocks_total`:                                 1,
		`postino_messages_received_total{role="lmtp"}`:               2,
		`postino_messages_received_total{role="mx"}`:                 1,
		`postino_messages_delivered_total{destination="local"}`:      3,
		`postino_logins_total{protocol="pop3",result="ok"}`:          1,
		`postino_logins_total{protocol="pop3",result="failed"}`:      2,
		`postino_messages_refused_total{code="550 5.1.1",role="mx"}`: 1,
		`postino_queue_messages`:                                     0,
		`postino_queue_oldest_seconds`:                               0,
		// The MX session's HELO check, timed at EHLO.
		`postino_check_seconds_count{check="helo",stage="connect"}`: 1,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	relay := 0.0
	for k, v := range got {
		if strings.HasPrefix(k, `postino_messages_refused_total{code="554 5.7.1"`) {
			relay += v
		}
	}
	if relay != 1 {
		t.Errorf("relay refusals = %v, want 1", relay)
	}
	for k := range got {
		if strings.Contains(k, "alice") || strings.Contains(k, "127.0.0.1") {
			t.Errorf("unbounded label in %s", k)
		}
	}

	if code, body := scrape(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := scrape(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if code, _ := scrape(t, base+"/nothing"); code != 404 {
		t.Errorf("/nothing = %d, want 404", code)
	}
	resp, err := http.Post(base+"/metrics", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics = %d, want 405", resp.StatusCode)
	}

	// The user database becomes unreadable: not ready, and why.
	users := cfg.UsersFile()
	if err := os.Rename(users, users+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(users, 0o700); err != nil {
		t.Fatal(err)
	}
	code, body := scrape(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "users: ") || strings.Contains(body, "storage") {
		t.Errorf("/readyz with unreadable users = %d %q", code, body)
	}
	os.Remove(users)
	if err := os.Rename(users+".away", users); err != nil {
		t.Fatal(err)
	}
	// The mail folder disappears (a failed mount): not ready either.
	mail := cfg.MailDir()
	if err := os.Rename(mail, filepath.Join(cfg.DataDir, "mail.away")); err != nil {
		t.Fatal(err)
	}
	code, body = scrape(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "storage: mail folder unreachable") {
		t.Errorf("/readyz without the mail folder = %d %q", code, body)
	}
	if code, _ := scrape(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d while not ready, want 200", code)
	}
}

// TestReloadTurnsVaultOn: pop3.vault_days applies on reload: a POP3
// deletion before it is gone, one after it is in the vault.
func TestReloadTurnsVaultOn(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.Listen = ""
	logger := slog.New(slog.DiscardHandler)
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
	db := srv.Users()
	db.Argon2 = auth.Argon2Parameters{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	h, _ := db.HashPassword("alice-pw")
	if err := db.Add(context.Background(), "alice@example.test", h); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	md := srv.store.(*maildir.Store)
	for range 2 {
		if _, err := srv.store.Deliver(ctx, "alice@example.test", strings.NewReader("Subject: x\n\nbody\n")); err != nil {
			t.Fatal(err)
		}
	}
	cl := &clients{t: t}
	deleteOne := func() {
		c := cl.pop3Login(addr["pop3"], "alice@example.test", "alice-pw", "+OK")
		c.expect("+OK", c.cmd("DELE 1"))
		c.expect("+OK", c.cmd("QUIT"))
	}
	deleteOne()
	if l, err := md.VaultList(ctx, "alice@example.test"); err != nil || len(l) != 0 {
		t.Fatalf("vault without vault_days: %v, %v", l, err)
	}
	next := *srv.Config()
	next.POP3.VaultDays = 3
	if _, err := srv.Reload(&next, logger); err != nil {
		t.Fatal(err)
	}
	deleteOne()
	if l, err := md.VaultList(ctx, "alice@example.test"); err != nil || len(l) != 1 {
		t.Fatalf("vault after reload: %v, %v", l, err)
	}
	if got := testutilToFloat(t, srv.Metrics(), "postino_vault_moved_total"); got != 1 {
		t.Errorf("postino_vault_moved_total = %v", got)
	}
}

// testutilToFloat returns the value of a metric without labels.
func testutilToFloat(t *testing.T, m interface {
	Registry() *prometheus.Registry
}, name string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return -1
}

// TestAdminQueueMetrics: a message submitted for a remote domain whose
// route (on loopback) refuses connections stays queued: the scrape shows
// one queue entry with an age, a deferred attempt, and no remote
// delivery; once the route's server answers, the message is delivered
// and the queue gauges drop to 0.
func TestAdminQueueMetrics(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.Listen = "127.0.0.1:0"
	// A port that refuses connections for now.
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	remote := hold.Addr().String()
	hold.Close()
	cfg.Queue.Routes = []string{"remote.example=" + remote}
	cfg.Queue.MinBackoff = config.D(time.Second)
	cfg.Queue.MaxBackoff = config.D(time.Second)
	cfg.Queue.STARTTLS = false
	logger := slog.New(slog.DiscardHandler)
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
	db := srv.Users()
	db.Argon2 = auth.Argon2Parameters{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	h, _ := db.HashPassword("alice-pw")
	if err := db.Add(context.Background(), "alice@example.test", h); err != nil {
		t.Fatal(err)
	}
	cl := &clients{t: t}
	c := cl.ehlo(addr["submission"])
	c.expect("235", c.cmd("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice-pw"))))
	c.expect("250", c.cmd("MAIL FROM:<alice@example.test>"))
	c.expect("250", c.cmd("RCPT TO:<bob@remote.example>"))
	c.expect("354", c.cmd("DATA"))
	c.expect("250", c.cmd("From: alice@example.test\r\nSubject: out\r\n\r\nbody\r\n."))

	base := "http://" + addr["admin"] + "/metrics"
	var got map[string]float64
	testutil.WaitFor(t, 20*time.Second, "a deferred attempt and an aged queue entry", func() bool {
		_, text := scrape(t, base)
		got = samples(t, text)
		return got[`postino_delivery_attempts_total{result="deferred"}`] >= 1 && got[`postino_queue_oldest_seconds`] > 0
	})
	if got[`postino_queue_messages`] != 1 || got[`postino_messages_received_total{role="submission"}`] != 1 || got[`postino_queue_scrape_errors`] != 0 {
		t.Fatalf("queue metrics: %v", got)
	}
	if _, ok := got[`postino_messages_delivered_total{destination="remote"}`]; ok {
		t.Fatalf("remote delivery counted: %v", got)
	}

	// The route's server comes up: a minimal SMTP server that takes it.
	l, err := net.Listen("tcp", remote)
	if err != nil {
		t.Fatalf("route port taken meanwhile: %v", err)
	}
	defer l.Close()
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go fakeSMTP(nc)
		}
	}()
	testutil.WaitFor(t, 30*time.Second, "the queued message delivered", func() bool {
		_, text := scrape(t, base)
		got = samples(t, text)
		// The attempt is counted before its entry leaves the queue.
		return got[`postino_messages_delivered_total{destination="remote"}`] == 1 && got[`postino_queue_messages`] == 0
	})
	if got[`postino_queue_oldest_seconds`] != 0 || got[`postino_delivery_attempts_total{result="delivered"}`] != 1 {
		t.Fatalf("after delivery: %v", got)
	}
}

// fakeSMTP accepts one message on nc and answers everything with success.
func fakeSMTP(nc net.Conn) {
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(nc)
	io.WriteString(nc, "220 remote.example ESMTP\r\n")
	data := false
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return
		}
		l = strings.TrimRight(l, "\r\n")
		switch {
		case data:
			if l == "." {
				data = false
				io.WriteString(nc, "250 2.0.0 queued\r\n")
			}
		case strings.HasPrefix(strings.ToUpper(l), "EHLO"):
			io.WriteString(nc, "250-remote.example\r\n250 8BITMIME\r\n")
		case strings.ToUpper(l) == "DATA":
			data = true
			io.WriteString(nc, "354 go ahead\r\n")
		case strings.ToUpper(l) == "QUIT":
			io.WriteString(nc, "221 bye\r\n")
			return
		default:
			io.WriteString(nc, "250 2.0.0 ok\r\n")
		}
	}
}
