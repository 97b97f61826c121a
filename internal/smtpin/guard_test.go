package smtpin

import (
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/authguard"
)

// TestAuthGuard: failed AUTH is answered late, and an address that failed
// too often is refused even with the right password (454 4.7.0).
func TestAuthGuard(t *testing.T) {
	e := newEnv(t, RoleSubmission, func(c *envConfig) {
		c.opts.PlaintextAuth = PlaintextAuthLoopback
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
