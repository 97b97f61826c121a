package smtpin

import (
	"net/netip"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/authguard"
)

// openMode connects in the clear, with STARTTLS or with implicit TLS and
// returns the client once it is greeted (after EHLO), or nil when the
// server refused the connection with 421.
func (e *env) openMode(mode string) *client {
	e.t.Helper()
	addr := e.addr
	if mode == "tls" {
		addr = e.tlsAddr
	}
	c := e.dialNoGreet(addr)
	if mode == "tls" {
		c.conn = tlsClient(c, e)
	}
	code, lines := c.reply()
	switch code {
	case 220:
	case 421:
		return nil
	default:
		e.t.Fatalf("greeting %d %q", code, lines)
	}
	c.ehlo()
	if mode == "starttls" {
		c.startTLS()
		c.ehlo()
	}
	return c
}

// TestReconnectAtLimit: a client using all its per-IP connections that
// ends one (QUIT, 221 read) and reconnects at once is never refused, in
// the clear, after STARTTLS and over implicit TLS.
func TestReconnectAtLimit(t *testing.T) {
	const limit, rounds = 3, 60
	for _, mode := range []string{"plain", "starttls", "tls"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, RoleMX, func(c *envConfig) {
				c.tls = true
				c.opts.MaxConnectionsPerIP = limit
			})
			conns := make([]*client, limit)
			for i := range conns {
				if conns[i] = e.openMode(mode); conns[i] == nil {
					t.Fatalf("connection %d of %d refused", i+1, limit)
				}
			}
			for i := range rounds {
				k := i % limit
				conns[k].cmd(221, "", "QUIT")
				if conns[k] = e.openMode(mode); conns[k] == nil {
					t.Fatalf("round %d: reconnecting right after QUIT refused with 421", i+1)
				}
			}
			// Postfix does not wait for the reply to QUIT
			// (smtp_skip_quit_response = yes): it closes and may
			// connect again before the server has read the QUIT.
			for i := range rounds {
				k := i % limit
				conns[k].write("QUIT\r\n")
				conns[k].conn.Close()
				if conns[k] = e.openMode(mode); conns[k] == nil {
					t.Fatalf("round %d: reconnecting right after QUIT and close refused with 421", i+1)
				}
			}
			// The limit itself still holds.
			if c := e.openMode(mode); c != nil {
				t.Fatalf("connection %d of %d accepted", limit+1, limit)
			}
		})
	}
}

// TestTrustedNetworks: addresses in TrustedNetworks have no per-IP
// connection limit, others keep theirs; trusted addresses get no other
// privilege: no relaying, no submission without AUTH; a Guard that
// trusts them never blocks them (the accounts they fail on are counted).
func TestTrustedNetworks(t *testing.T) {
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	e := newEnv(t, RoleMX, func(c *envConfig) {
		c.opts.MaxConnectionsPerIP = 1
		c.opts.TrustedNetworks = loopback
	})
	var open []*client
	for range 10 {
		open = append(open, e.dial())
	}
	// Trusted, yet not a relay.
	c := open[0]
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<x@example.test>")
	c.cmd(554, "5.7.1 Relay access denied", "RCPT TO:<victim@remote.example>")

	// Another network is trusted: loopback is limited again.
	e = newEnv(t, RoleMX, func(c *envConfig) {
		c.opts.MaxConnectionsPerIP = 1
		c.opts.TrustedNetworks = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	})
	e.dial()
	start := time.Now()
	c = e.dialNoGreet(e.addr)
	c.expect(421, "4.7.0 Too many connections")
	if d := time.Since(start); d < slotWait {
		t.Fatalf("refused after %v, before waiting %v for a slot", d, slotWait)
	}

	// Submission from a trusted network: AUTH is still required; the
	// address is never blocked, but the account's failures are counted.
	guard := &authguard.Guard{MaxFailures: 2, BaseDelay: -1, Trusted: loopback}
	e = newEnv(t, RoleSubmission, func(c *envConfig) {
		c.opts.MaxConnectionsPerIP = 1
		c.opts.TrustedNetworks = loopback
		c.opts.Guard = guard
	})
	c = e.dial()
	c.ehlo()
	c.cmd(530, "5.7.0 Authentication required", "MAIL FROM:<alice@example.test>")
	c.authPlain("alice@example.test", "wrong", 535, "5.7.8")
	c2 := e.dial()
	c2.ehlo()
	c2.authPlain("alice@example.test", "wrong again", 535, "5.7.8")
	c2.authPlain("alice@example.test", "and again", 535, "5.7.8")
	if b := guard.Blocks(); len(b) != 1 || b[0].Kind != authguard.KindAccount || b[0].Failures != 3 {
		t.Fatalf("guard holds %v, want the account's 3 failures only", b)
	}
	c.authPlain("alice@example.test", "alice-pw", 235, "2.0.0")
}

// TestSlotWaitersBounded: an address at its limit cannot pile up
// connections waiting for a slot: beyond as many as its limit, more are
// refused at once, and a waiter is refused when no slot frees in time.
func TestSlotWaitersBounded(t *testing.T) {
	e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.MaxConnectionsPerIP = 1 })
	e.dial()
	start := time.Now()
	waiter := e.dialNoGreet(e.addr) // accepted first: it waits for a slot
	extra := e.dialNoGreet(e.addr)
	extra.expect(421, "4.7.0 Too many connections")
	if d := time.Since(start); d >= slotWait {
		t.Fatalf("a connection beyond the waiters was refused after %v, not at once", d)
	}
	waiter.expect(421, "4.7.0 Too many connections")
	if d := time.Since(start); d < slotWait {
		t.Fatalf("the waiter was refused after %v, before slotWait", d)
	}
}
