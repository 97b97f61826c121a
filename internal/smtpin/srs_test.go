package smtpin

import (
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/srs"
)

func testSRS(t *testing.T, now *time.Time) *srs.Rewriter {
	t.Helper()
	rw, err := srs.New([]byte("the SRS secret of the test server"))
	if err != nil {
		t.Fatal(err)
	}
	rw.Now = func() time.Time { return *now }
	return rw
}

// TestForwardedSenderRewritten: mail that an unauthenticated client sends
// through a forwarding alias, even with a forged sender of our own domain,
// is queued with an SRS sender of the primary domain and no submitter (so
// the queue does not sign it). The null sender stays null. Mail an
// authenticated user submits keeps its sender and names its submitter.
func TestForwardedSenderRewritten(t *testing.T) {
	now := time.Now()
	rw := testSRS(t, &now)
	for _, from := range []string{"ceo@example.test", "x@remote.example", ""} {
		relay := &fakeRelay{}
		e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.Relay = relay; c.opts.SRS = rw })
		c := e.dial()
		c.ehlo()
		c.send(from, []string{"fwd@example.test"}, "From: <ceo@example.test>\r\nSubject: f\r\n\r\nx\r\n")
		calls := relay.get()
		if len(calls) != 1 {
			t.Fatalf("%d relay calls", len(calls))
		}
		if calls[0].params.AuthUser != "" {
			t.Errorf("forwarded mail from %q queued as submitted by %q", from, calls[0].params.AuthUser)
		}
		if from == "" {
			if calls[0].from != "" {
				t.Errorf("null sender forwarded as %q", calls[0].from)
			}
			continue
		}
		if !strings.HasPrefix(calls[0].from, "SRS0=") || !strings.HasSuffix(calls[0].from, "@example.test") {
			t.Errorf("forwarded from %q with sender %q, want an SRS address", from, calls[0].from)
		}
		if orig, err := rw.Reverse(calls[0].from); err != nil || orig != from {
			t.Errorf("SRS sender reverses to %q, %v", orig, err)
		}
	}

	relay := &fakeRelay{}
	e := newEnv(t, RoleSubmission, func(c *envConfig) { c.opts.Relay = relay; c.opts.SRS = rw })
	c := e.dial()
	c.ehlo()
	c.authPlain("alice@example.test", "alice-pw", 235, "")
	c.send("alice@example.test", []string{"fwd@example.test"}, "Subject: f\r\n\r\nx\r\n")
	calls := relay.get()
	if len(calls) != 1 || calls[0].from != "alice@example.test" || calls[0].params.AuthUser != "alice@example.test" {
		t.Errorf("submission queued as %+v", calls)
	}
}

// TestSRSBounceRouting: mail to a valid SRS address of a local domain goes
// to the address it was made from (relayed when remote, stored when
// local); forged, tampered and expired SRS addresses are unknown users,
// so SRS does not make an open relay.
func TestSRSBounceRouting(t *testing.T) {
	now := time.Now()
	rw := testSRS(t, &now)
	relay := &fakeRelay{}
	e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.Relay = relay; c.opts.SRS = rw })
	valid, _ := rw.Forward("orig@remote.example", "example.test")
	local, _ := rw.Forward("bob@example.test", "example.test")
	other, _ := srs.New([]byte("an attacker's own secret, not ours"))
	forged, _ := other.Forward("victim@target.example", "example.test")

	const long = "firstname.middlename.lastname.department@subdomain.long-remote-domain.example"
	longSRS, _ := rw.Forward(long, "example.test")

	c := e.dial()
	c.ehlo()
	c.send("", []string{valid}, "Subject: bounce\r\n\r\nx\r\n")
	calls := relay.get()
	if len(calls) != 1 || strings.Join(calls[0].rcpts, ",") != "orig@remote.example" || calls[0].from != "" {
		t.Fatalf("bounce to %s relayed as %+v", valid, calls)
	}
	// A long sender's SRS local part is over 64 octets: still accepted.
	c.send("", []string{longSRS}, "Subject: bounce\r\n\r\nx\r\n")
	if calls = relay.get(); len(calls) != 2 || strings.Join(calls[1].rcpts, ",") != long {
		t.Fatalf("bounce to %s relayed as %+v", longSRS, calls)
	}
	c.send("", []string{strings.ToLower(local)}, "Subject: local bounce\r\n\r\nx\r\n")
	if m := e.messages("bob@example.test"); len(m) != 1 || !strings.Contains(m[0], "Subject: local bounce") {
		t.Errorf("local bounce: %q", m)
	}
	c.cmd(250, "", "MAIL FROM:<>")
	c.cmd(550, "5.1.1", "RCPT TO:<"+forged+">")
	c.cmd(550, "5.1.1", "RCPT TO:<"+strings.Replace(valid, "orig@", "victim@", 1)+">")
	c.cmd(550, "5.1.1", "RCPT TO:<SRS0=abcdefgh=AA=target.example=victim@example.test>")
	c.cmd(550, "5.1.1", "RCPT TO:<SRS1=abcdefgh=fwd.example==x=AA=target.example=victim@example.test>")
	// An SRS address of a domain that is not ours is a relay attempt.
	c.cmd(554, "5.7.1", "RCPT TO:<"+strings.Replace(valid, "@example.test", "@remote.example", 1)+">")
	now = now.Add(22 * 24 * time.Hour)
	c.cmd(550, "5.1.1", "RCPT TO:<"+valid+">")
	c.cmd(221, "", "QUIT")
	if n := len(relay.get()); n != 2 {
		t.Errorf("%d relay calls", n)
	}
}

// TestPostmasterWithoutDomain: RCPT TO:<Postmaster> without a domain, in
// any case, is accepted (RFC 5321 §4.5.1) and delivered to the primary
// domain's postmaster alias, or else to Options.Postmaster, which also
// receives postmaster@ any local domain without such an alias.
func TestPostmasterWithoutDomain(t *testing.T) {
	t.Run("alias", func(t *testing.T) {
		e := newEnv(t, RoleMX, func(c *envConfig) {
			c.aliases = testAliases + "postmaster@example.test: bob@example.test\n"
		})
		c := e.dial()
		c.ehlo()
		for _, to := range []string{"postmaster", "Postmaster", "POSTMASTER"} {
			c.send("x@remote.example", []string{to}, "Subject: to "+to+"\r\n\r\nx\r\n")
		}
		if m := e.messages("bob@example.test"); len(m) != 3 || !strings.Contains(m[0], "for <postmaster@example.test>") {
			t.Errorf("bob got %d messages: %q", len(m), m)
		}
	})
	t.Run("configured", func(t *testing.T) {
		e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.Postmaster = "alice@example.test" })
		c := e.dial()
		c.ehlo()
		c.send("x@remote.example", []string{"postmaster"}, "Subject: pm\r\n\r\nx\r\n")
		c.send("x@remote.example", []string{"postmaster@example.test"}, "Subject: pm2\r\n\r\nx\r\n")
		if m := e.messages("alice@example.test"); len(m) != 2 {
			t.Errorf("alice got %d messages", len(m))
		}
		// Still not an address without a domain in general.
		c.cmd(250, "", "MAIL FROM:<x@remote.example>")
		c.cmd(501, "", "RCPT TO:<root>")
	})
	t.Run("none", func(t *testing.T) {
		e := newEnv(t, RoleMX, nil)
		c := e.dial()
		c.ehlo()
		c.cmd(250, "", "MAIL FROM:<x@remote.example>")
		c.cmd(550, "5.1.1", "RCPT TO:<postmaster>")
		o := *e.srv.options()
		if _, err := New(o); err != nil {
			t.Fatal(err)
		}
		o.Postmaster = "not an address"
		if _, err := New(o); err == nil {
			t.Error("an invalid Postmaster was accepted")
		}
	})
}
