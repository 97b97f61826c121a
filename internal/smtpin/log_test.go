package smtpin

import (
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/srs"
	"github.com/postino-mail/postino/internal/testutil"
)

// jsonLog makes the env log JSON at debug level into buf.
func jsonLog(buf *testutil.SyncBuffer) func(*envConfig) {
	return func(c *envConfig) {
		c.opts.Logger = slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// logLines decodes a JSON log, failing the test on any line that is not
// JSON or has a key twice.
func logLines(t *testing.T, buf *testutil.SyncBuffer) []testutil.LogLine {
	t.Helper()
	lines, err := testutil.ParseJSONLog(buf.String())
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

// refusals returns the "smtp: refused" lines.
func refusals(t *testing.T, buf *testutil.SyncBuffer) []testutil.LogLine {
	t.Helper()
	return refusalsAfter(t, buf, 0)
}

// refusalsAfter returns the "smtp: refused" lines logged after the first
// off bytes.
func refusalsAfter(t *testing.T, buf *testutil.SyncBuffer, off int) []testutil.LogLine {
	t.Helper()
	lines, err := testutil.ParseJSONLog(buf.String()[off:])
	if err != nil {
		t.Fatal(err)
	}
	var out []testutil.LogLine
	for _, l := range lines {
		if l.Str("msg") == "smtp: refused" {
			out = append(out, l)
		}
	}
	return out
}

// wantRefusal checks the one refusal line of a case: every key present,
// and the values given.
func wantRefusal(t *testing.T, lines []testutil.LogLine, level, from, rcpt, code, reason string) testutil.LogLine {
	t.Helper()
	if len(lines) != 1 {
		t.Fatalf("%d refusal lines, want 1: %v", len(lines), lines)
	}
	l := lines[0]
	for _, k := range []string{"id", "remote", "from", "rcpt", "code", "reason"} {
		if !l.Has(k) {
			t.Errorf("refusal line without %q: %v", k, l)
		}
	}
	if l.Str("level") != level || l.Str("from") != from || l.Str("rcpt") != rcpt || l.Str("code") != code || !strings.Contains(l.Str("reason"), reason) {
		t.Errorf("refusal line %v; want level %s from %q rcpt %q code %q reason ~%q", l, level, from, rcpt, code, reason)
	}
	if !strings.HasPrefix(l.Str("remote"), "127.0.0.1:") || l.Str("id") == "" {
		t.Errorf("refusal line %v: remote or id missing", l)
	}
	return l
}

// TestRefusalLogged: every kind of refusal logs one line with id, remote,
// from, rcpt, code and reason, at Info, or Warn for policy and attacks.
func TestRefusalLogged(t *testing.T) {
	now := time.Now()
	rw := testSRS(t, &now)
	other, _ := srs.New([]byte("an attacker's own secret, not ours"))
	forged, _ := other.Forward("victim@far.example", "example.test")
	cases := []struct {
		name               string
		role               Role
		mod                func(*envConfig)
		run                func(c *client)
		level, from, rcpt  string
		code, reason       string
		sameIDAsTransction bool
	}{
		{"unknown user", RoleMX, nil, func(c *client) {
			c.cmd(250, "", "MAIL FROM:<x@remote.example>")
			c.cmd(550, "5.1.1", "RCPT TO:<nobody@example.test>")
		}, "INFO", "x@remote.example", "nobody@example.test", "550 5.1.1", "unknown user", true},
		{"relay denied", RoleMX, nil, func(c *client) {
			c.cmd(250, "", "MAIL FROM:<x@remote.example>")
			c.cmd(554, "5.7.1", "RCPT TO:<victim@far.example>")
		}, "WARN", "x@remote.example", "victim@far.example", "554 5.7.1", "relay denied", true},
		{"lmtp unknown user", RoleLMTP, nil, func(c *client) {
			c.cmd(250, "", "MAIL FROM:<x@remote.example>")
			c.cmd(550, "5.1.1", "RCPT TO:<nobody@example.test>")
		}, "INFO", "x@remote.example", "nobody@example.test", "550 5.1.1", "unknown user", true},
		{"forged SRS", RoleMX, func(c *envConfig) { c.opts.SRS = rw; c.opts.Relay = &fakeRelay{} }, func(c *client) {
			c.cmd(250, "", "MAIL FROM:<>")
			c.cmd(550, "5.1.1", "RCPT TO:<"+forged+">")
		}, "WARN", "", forged, "550 5.1.1", "invalid SRS address", true},
		{"too big", RoleMX, func(c *envConfig) { c.opts.MaxMessageBytes = 200 }, func(c *client) {
			c.dataToAlice()
			c.write("Subject: big\r\n\r\n" + strings.Repeat("x", 400) + "\r\n.\r\n")
			c.expect(552, "5.3.4")
		}, "INFO", "x@remote.example", "", "552 5.3.4", "message not received", true},
		{"sender not owned", RoleSubmission, nil, func(c *client) {
			c.authPlain("alice@example.test", "alice-pw", 235, "")
			c.cmd(553, "5.7.1", "MAIL FROM:<bob@example.test>")
		}, "WARN", "bob@example.test", "", "553 5.7.1", "not owned by user alice@example.test", false},
		{"mail before auth", RoleSubmission, nil, func(c *client) {
			c.cmd(530, "5.7.0", "MAIL FROM:<alice@example.test>")
		}, "WARN", "alice@example.test", "", "530 5.7.0", "before AUTH", false},
		{"too many recipients", RoleMX, func(c *envConfig) { c.opts.MaxRecipients = 1 }, func(c *client) {
			c.dataToAlice() // MAIL, RCPT alice, DATA: 354
			c.write("Subject: x\r\n\r\nx\r\n.\r\n")
			c.expect(250, "queued as")
			c.cmd(250, "", "MAIL FROM:<x@remote.example>")
			c.cmd(250, "", "RCPT TO:<alice@example.test>")
			c.cmd(452, "4.5.3", "RCPT TO:<bob@example.test>")
		}, "INFO", "x@remote.example", "bob@example.test", "452 4.5.3", "more than 1 recipients", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf testutil.SyncBuffer
			e := newEnv(t, tc.role, func(c *envConfig) {
				jsonLog(&buf)(c)
				if tc.mod != nil {
					tc.mod(c)
				}
			})
			c := e.dial()
			if tc.role == RoleLMTP {
				c.cmd(250, "", "LHLO client.example")
			} else {
				c.ehlo()
			}
			tc.run(c)
			c.cmd(221, "", "QUIT")
			l := wantRefusal(t, refusals(t, &buf), tc.level, tc.from, tc.rcpt, tc.code, tc.reason)
			if tc.sameIDAsTransction {
				// The refusal carries the transaction's id, as the
				// MAIL debug line does.
				found := false
				for _, m := range logLines(t, &buf) {
					if m.Str("msg") == "smtp: mail" && m.Str("id") == l.Str("id") {
						found = true
					}
				}
				if !found {
					t.Errorf("refusal id %q is not the transaction's:\n%s", l.Str("id"), buf.String())
				}
			}
		})
	}
}

// TestTooManyErrorsLogged: reaching MaxErrors logs the 421 as a refusal.
func TestTooManyErrorsLogged(t *testing.T) {
	var buf testutil.SyncBuffer
	e := newEnv(t, RoleMX, func(c *envConfig) { jsonLog(&buf)(c); c.opts.MaxErrors = 2 })
	c := e.dial()
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(550, "5.1.1", "RCPT TO:<nobody@example.test>")
	c.cmd(421, "4.7.0", "RCPT TO:<nobody2@example.test>")
	c.closed()
	lines := refusals(t, &buf)
	if len(lines) != 3 || lines[2].Str("code") != "421 4.7.0" || lines[2].Str("level") != "WARN" || lines[2].Str("rcpt") != "nobody2@example.test" {
		t.Fatalf("refusal lines %v", lines)
	}
}

// TestConnectionLimitLogged: a connection over the limits is refused
// with 421 and one refusal line.
func TestConnectionLimitLogged(t *testing.T) {
	var buf testutil.SyncBuffer
	e := newEnv(t, RoleMX, func(c *envConfig) { jsonLog(&buf)(c); c.opts.MaxConnections = 1 })
	e.dial()
	c := e.dialNoGreet(e.addr)
	c.expect(421, "4.7.0 Too many connections")
	lines := refusals(t, &buf)
	if len(lines) != 1 {
		t.Fatalf("refusal lines %v", lines)
	}
	for _, k := range []string{"id", "remote", "from", "rcpt", "code", "reason"} {
		if !lines[0].Has(k) {
			t.Errorf("refusal line without %q: %v", k, lines[0])
		}
	}
	if lines[0].Str("code") != "421 4.7.0" || lines[0].Str("level") != "WARN" || lines[0].Str("role") != "mx" {
		t.Errorf("refusal line %v", lines[0])
	}
}

// TestAuthFailureCauseLoggedOnly: an unknown user and a wrong password get
// the same reply, on plain (loopback), STARTTLS and implicit TLS, with
// PLAIN and LOGIN; only the log tells them apart.
func TestAuthFailureCauseLoggedOnly(t *testing.T) {
	var buf testutil.SyncBuffer
	e := newEnv(t, RoleSubmission, func(c *envConfig) { jsonLog(&buf)(c); c.tls = true })
	for _, mode := range []string{"plain", "starttls", "tls"} {
		for _, mech := range []string{"PLAIN", "LOGIN"} {
			replies := map[string]string{}
			for _, who := range []struct{ user, pw, cause string }{
				{"nobody@example.test", "alice-pw", "unknown user"},
				{"alice@example.test", "wrong-pw", "wrong password"},
			} {
				off := len(buf.String())
				var c *client
				if mode == "tls" {
					c = e.dialTLS()
				} else {
					c = e.dial()
				}
				c.ehlo()
				if mode == "starttls" {
					c.startTLS()
					c.ehlo()
				}
				if mech == "PLAIN" {
					ir := base64Std("\x00" + who.user + "\x00" + who.pw)
					c.write("AUTH PLAIN " + ir + "\r\n")
				} else {
					c.cmd(334, "", "AUTH LOGIN")
					c.cmd(334, "", base64Std(who.user))
					c.write(base64Std(who.pw) + "\r\n")
				}
				code, lines := c.reply()
				replies[who.cause] = strings.Join(append([]string{string(rune('0' + code/100))}, lines...), "|")
				c.cmd(221, "", "QUIT")
				wantRefusal(t, refusalsAfter(t, &buf, off), "WARN", who.user, "", "535 5.7.8", "login failed: "+who.cause)
			}
			if replies["unknown user"] != replies["wrong password"] {
				t.Errorf("%s %s: unknown user answered %q, wrong password %q", mode, mech, replies["unknown user"], replies["wrong password"])
			}
		}
	}
}

// base64Std is base64 in the standard encoding.
func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestLogNoDuplicateKeys: whole sessions over SMTP, submission and LMTP,
// logged as JSON at debug level, never write a key twice in a line (the
// session's logger already has role, remote and tls).
func TestLogNoDuplicateKeys(t *testing.T) {
	for _, role := range []Role{RoleMX, RoleSubmission, RoleLMTP} {
		t.Run(role.String(), func(t *testing.T) {
			var buf testutil.SyncBuffer
			e := newEnv(t, role, func(c *envConfig) { jsonLog(&buf)(c); c.opts.Relay = &fakeRelay{} })
			c := e.dial()
			rcpts := []string{"alice@example.test", "sales@example.test"}
			switch role {
			case RoleLMTP:
				c.cmd(250, "", "LHLO client.example")
			case RoleSubmission:
				c.ehlo()
				c.authPlain("alice@example.test", "wrong", 535, "")
				c.authPlain("alice@example.test", "alice-pw", 235, "")
				rcpts = append(rcpts, "friend@remote.example")
			default:
				c.ehlo()
			}
			c.cmd(250, "", "MAIL FROM:<alice@example.test>")
			c.cmd(550, "5.1.1", "RCPT TO:<nobody@example.test>")
			for _, r := range rcpts {
				c.cmd(250, "", "RCPT TO:<"+r+">")
			}
			c.cmd(354, "", "DATA")
			c.write("Subject: s\r\n\r\nx\r\n.\r\n")
			n := 1
			if role == RoleLMTP {
				n = len(rcpts) // RFC 2033 §4.2: one reply per recipient
			}
			for range n {
				c.expect(250, "")
			}
			c.cmd(221, "", "QUIT")
			e.waitIdle()
			lines := logLines(t, &buf)
			if !hasLine(lines, "smtp: rcpt") || !hasLine(lines, "smtp: refused") {
				t.Errorf("the session's debug and refusal lines are missing:\n%s", buf.String())
			}
		})
	}
}

func hasLine(lines []testutil.LogLine, msg string) bool {
	for _, l := range lines {
		if l.Str("msg") == msg {
			return true
		}
	}
	return false
}
