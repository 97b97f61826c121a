package smtpin

import (
	"strconv"
	"strings"
	"testing"
)

// TestHeaderFromNotOwned: on submission with the sender check on, a
// message whose header From or Sender is not the user's is refused with
// 550 5.7.1 after DATA and after the last BDAT chunk, and nothing is
// stored or relayed, for a local recipient (the path that would stream
// into the mailbox) and a remote one; the user's own From and an alias
// the user owns go through. Over plain, STARTTLS and implicit TLS. With
// the check off (restrict_sender = false) the forged From is accepted.
func TestHeaderFromNotOwned(t *testing.T) {
	for _, mode := range []string{"plain", "STARTTLS", "implicit TLS"} {
		t.Run(mode, func(t *testing.T) {
			relay := &fakeRelay{}
			e := newEnv(t, RoleSubmission, func(c *envConfig) { c.tls = true; c.opts.Relay = relay })
			dial := func() *client {
				var c *client
				if mode == "implicit TLS" {
					c = e.dialTLS()
				} else {
					c = e.dial()
				}
				c.ehlo()
				if mode == "STARTTLS" {
					c.startTLS()
					c.ehlo()
				}
				c.authPlain("alice@example.test", testUsers["alice@example.test"], 235, "")
				return c
			}
			c := dial()
			send := func(bdat bool, rcpt, header string, code int, want string) {
				t.Helper()
				msg := header + "Subject: test\r\n\r\nbody\r\n"
				c.cmd(250, "", "MAIL FROM:<alice@example.test>")
				c.cmd(250, "", "RCPT TO:<"+rcpt+">")
				if bdat {
					c.write("BDAT " + strconv.Itoa(len(msg)) + " LAST\r\n" + msg)
					c.expect(code, want)
					return
				}
				c.cmd(354, "", "DATA")
				c.write(msg + ".\r\n")
				c.expect(code, want)
			}
			for _, bdat := range []bool{false, true} {
				for _, rcpt := range []string{"bob@example.test", "friend@remote.example"} {
					send(bdat, rcpt, "From: ceo@example.test\r\n", 550, "5.7.1")
					send(bdat, rcpt, "From: alice@example.test\r\nSender: ceo@example.test\r\n", 550, "5.7.1")
					send(bdat, rcpt, "From: alice@example.test,\r\n ceo@example.test\r\n", 550, "5.7.1")
					send(bdat, rcpt, "From: Not A Header\r\nbroken line\r\n", 550, "5.7.1")
				}
			}
			e.expectNoMessages("bob@example.test")
			if calls := relay.get(); len(calls) != 0 {
				t.Fatalf("refused messages were relayed: %+v", calls)
			}
			send(false, "bob@example.test", "From: Alice <alice@example.test>\r\n", 250, "")
			send(true, "bob@example.test", "From: sales@example.test\r\nSender: alice+x@example.test\r\n", 250, "")
			send(false, "friend@remote.example", "From: alice@example.test\r\n", 250, "")
			send(true, "bob@example.test", "", 250, "") // no From: nothing claimed
			if got := e.messages("bob@example.test"); len(got) != 3 {
				t.Fatalf("%d messages stored, want 3", len(got))
			}
			if calls := relay.get(); len(calls) != 1 || calls[0].params.AuthUser != "alice@example.test" {
				t.Fatalf("relayed %+v", calls)
			}
		})
	}
	t.Run("restrict_sender off", func(t *testing.T) {
		e := newEnv(t, RoleSubmission, func(c *envConfig) { c.opts.AllowAnySender = true })
		c := e.dial()
		c.ehlo()
		c.authPlain("alice@example.test", testUsers["alice@example.test"], 235, "")
		if r := c.send("alice@example.test", []string{"bob@example.test"}, "From: ceo@example.test\r\n\r\nx\r\n"); !strings.Contains(r, "queued") {
			t.Fatal(r)
		}
	})
}
