package pop3backend

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/pop3"
)

// popRefusals returns the "pop3: refused" lines of a JSON log, failing on
// any line that is not JSON or has a key twice.
func popRefusals(t *testing.T, text string) []testutil.LogLine {
	t.Helper()
	lines, err := testutil.ParseJSONLog(text)
	if err != nil {
		t.Fatal(err)
	}
	var out []testutil.LogLine
	for _, l := range lines {
		if l.Str("msg") == "pop3: refused" {
			out = append(out, l)
		}
	}
	return out
}

// TestLoginFailureCauseLoggedOnly: with every mechanism, in the clear,
// after STLS and over implicit TLS, an unknown user and a wrong password
// get the same response; the log line of each (keys id, remote, user,
// code, reason) tells which it was.
func TestLoginFailureCauseLoggedOnly(t *testing.T) {
	var buf testutil.SyncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := startGuardedLog(t, 1000, logger)
	for _, mech := range mechanisms {
		for _, tr := range transports {
			answers := map[string]string{}
			for _, who := range []struct{ user, cause string }{
				{"ghost@example.test", "unknown user"},
				{"alice@example.test", "wrong password"},
			} {
				off := len(buf.String())
				c := e.dial(t, tr)
				err := mech.login(c, who.user, "wrong pw")
				var perr *pop3.Error
				if !errors.As(err, &perr) || !errors.Is(err, pop3.ErrAuthFailed) {
					t.Fatalf("%s/%s %s: %v, want [AUTH]", mech.name, tr, who.user, err)
				}
				answers[who.cause] = perr.Code + " " + perr.Text
				c.Close()
				lines := popRefusals(t, buf.String()[off:])
				if len(lines) != 1 {
					t.Fatalf("%s/%s %s: %d refusal lines: %v", mech.name, tr, who.user, len(lines), lines)
				}
				l := lines[0]
				for _, k := range []string{"id", "remote", "user", "code", "reason"} {
					if !l.Has(k) {
						t.Errorf("%s/%s: refusal line without %q: %v", mech.name, tr, k, l)
					}
				}
				if l.Str("user") != who.user || l.Str("code") != "-ERR [AUTH]" || !strings.Contains(l.Str("reason"), who.cause) || !strings.HasPrefix(l.Str("remote"), "127.0.0.1:") {
					t.Errorf("%s/%s: refusal line %v; want user %s, code -ERR [AUTH], reason ~%q", mech.name, tr, l, who.user, who.cause)
				}
			}
			if answers["unknown user"] != answers["wrong password"] {
				t.Errorf("%s/%s: unknown user answered %q, wrong password %q", mech.name, tr, answers["unknown user"], answers["wrong password"])
			}
		}
	}
}

// TestInUseAndBlockedLogged: [IN-USE] and a blocked address's
// [LOGIN-DELAY] are logged as refusals (the block at Warn).
func TestInUseAndBlockedLogged(t *testing.T) {
	var buf testutil.SyncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	e := startGuardedLog(t, 1, logger)
	first := e.dial(t, "plain")
	if err := first.Login("alice@example.test", "right pw"); err != nil {
		t.Fatal(err)
	}
	second := e.dial(t, "plain")
	if err := second.Login("alice@example.test", "right pw"); !errors.Is(err, pop3.ErrInUse) {
		t.Fatalf("second session: %v, want [IN-USE]", err)
	}
	off := len(buf.String())
	lines := popRefusals(t, buf.String())
	if len(lines) != 1 || lines[0].Str("code") != "-ERR [IN-USE]" || lines[0].Str("user") != "alice@example.test" || lines[0].Str("level") != "INFO" {
		t.Fatalf("refusal lines %v", lines)
	}
	first.Quit()
	// One failure blocks the address; the next login is refused.
	c := e.dial(t, "plain")
	if err := c.Login("alice@example.test", "wrong"); !errors.Is(err, pop3.ErrAuthFailed) {
		t.Fatal(err)
	}
	c = e.dial(t, "tls")
	if err := c.Login("alice@example.test", "right pw"); !isLoginDelay(err) {
		t.Fatalf("blocked address: %v", err)
	}
	lines = popRefusals(t, buf.String()[off:])
	if len(lines) != 2 || lines[1].Str("code") != "-ERR [LOGIN-DELAY]" || lines[1].Str("level") != "WARN" || lines[1].Str("reason") == "" {
		t.Fatalf("refusal lines %v", lines)
	}
}
