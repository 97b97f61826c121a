package smtpin

import (
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/pop3"
)

// TestAuthGuard: failed AUTH is answered late, and an address that failed
// too often is refused even with the right password (454 4.7.0).
func TestAuthGuard(t *testing.T) {
	e := newEnv(t, RoleSubmission, func(c *envConfig) {
		c.opts.PlaintextAuth = pop3.PlaintextLoopback
		c.opts.Guard = &authguard.Guard{MaxFailures: 2, BaseDelay: 100 * time.Millisecond, MaxDelay: 100 * time.Millisecond}
	})
	c := e.dial()
	c.ehlo()
	start := time.Now()
	c.authPlain("alice@example.test", "wrong", 535, "5.7.8")
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("failed AUTH answered after %v", d)
	}
	c.authPlain("nobody@example.test", "wrong", 535, "5.7.8")
	c.authPlain("alice@example.test", "alice-pw", 454, "4.7.0 Too many failed logins")
}

// authLogin runs AUTH LOGIN (prompted user name, then password).
func (c *client) authLogin(user, pw string, code int, want string) {
	c.t.Helper()
	c.cmd(334, "VXNlcm5hbWU6", "AUTH LOGIN")
	c.cmd(334, "UGFzc3dvcmQ6", base64.StdEncoding.EncodeToString([]byte(user)))
	c.cmd(code, want, base64.StdEncoding.EncodeToString([]byte(pw)))
}

// smtpAuthMechs are the submission AUTH mechanisms.
var smtpAuthMechs = []struct {
	name string
	auth func(c *client, user, pw string, code int, want string)
}{
	{"PLAIN", (*client).authPlain},
	{"LOGIN", (*client).authLogin},
}

// dialMode connects in the clear, with STARTTLS or with implicit TLS, and
// sends EHLO.
func (e *env) dialMode(mode string) *client {
	e.t.Helper()
	var c *client
	switch mode {
	case "plain":
		c = e.dial()
	case "starttls":
		c = e.dial()
		c.ehlo()
		c.startTLS()
	case "tls":
		c = e.dialTLS()
	default:
		panic(mode)
	}
	c.ehlo()
	return c
}

// TestAuthGuardEveryMechanism: per mechanism and transport, each failure
// is held back, N failures block the address, and the blocked address is
// then refused by every mechanism on every transport, right password or
// not. A PLAIN login as someone else counts as a failure too.
func TestAuthGuardEveryMechanism(t *testing.T) {
	const maxFailures, delay = 3, 50 * time.Millisecond
	modes := []string{"plain", "starttls", "tls"}
	for _, mech := range smtpAuthMechs {
		for _, mode := range modes {
			t.Run(mech.name+"/"+mode, func(t *testing.T) {
				e := newEnv(t, RoleSubmission, func(c *envConfig) {
					c.tls = true
					c.opts.Guard = &authguard.Guard{MaxFailures: maxFailures, BaseDelay: delay, MaxDelay: delay}
				})
				c := e.dialMode(mode)
				for i := range maxFailures - 1 {
					start := time.Now()
					mech.auth(c, "alice@example.test", fmt.Sprint("guess", i), 535, "5.7.8")
					if d := time.Since(start); d < delay {
						t.Fatalf("failure %d answered after %v", i+1, d)
					}
				}
				// The last failure: a login as someone else.
				start := time.Now()
				ir := base64.StdEncoding.EncodeToString([]byte("bob@example.test\x00alice@example.test\x00alice-pw"))
				c.cmd(535, "5.7.8", "AUTH PLAIN "+ir)
				if d := time.Since(start); d < delay {
					t.Fatalf("foreign authorization identity answered after %v", d)
				}
				for _, m := range smtpAuthMechs {
					for _, mode2 := range modes {
						c := e.dialMode(mode2)
						m.auth(c, "alice@example.test", "alice-pw", 454, "4.7.0 Too many failed logins")
						c.cmd(530, "5.7.0", "MAIL FROM:<alice@example.test>")
					}
				}
			})
		}
	}
}
