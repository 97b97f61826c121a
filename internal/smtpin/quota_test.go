package smtpin

import (
	"context"
	"strings"
	"testing"

	"github.com/postino-mail/postino/pop3"
)

// byteQuotas limits mailboxes to a number of octets.
type byteQuotas map[string]int64

func (q byteQuotas) MailboxQuota(mb string) (int64, int64) { return q[mb], 0 }

func quotaEnv(t *testing.T, role Role, relay *fakeRelay) *env {
	return newEnv(t, role, func(c *envConfig) {
		c.tls = true
		c.opts.PlaintextAuth = pop3.PlaintextNever
		c.quotas = byteQuotas{"alice@example.test": 1000}
		if relay != nil {
			c.opts.Relay = relay
		}
	})
}

var (
	quotaBig   = "Subject: big\r\n\r\n" + strings.Repeat("0123456789012345678901234567890123456789\r\n", 30) + "\r\n" // > 1000 octets
	quotaSmall = "Subject: small\r\n\r\n" + strings.Repeat("x", 500) + "\r\n"
)

// TestQuotaRcptSize: a declared SIZE that the quota cannot hold is refused
// at RCPT with 552 5.2.2, for that recipient only.
func TestQuotaRcptSize(t *testing.T) {
	e := quotaEnv(t, RoleMX, nil)
	c := e.dial()
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<x@remote.example> SIZE=2000")
	c.cmd(552, "5.2.2", "RCPT TO:<alice@example.test>")
	c.cmd(552, "5.2.2", "RCPT TO:<alice+tag@example.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.cmd(354, "", "DATA")
	c.write(quotaBig + ".\r\n")
	c.expect(250, "OK")
	e.expectNoMessages("alice@example.test")
	if n := len(e.messages("bob@example.test")); n != 1 {
		t.Fatalf("bob has %d messages", n)
	}
	// A size that fits is accepted.
	c.cmd(250, "", "MAIL FROM:<x@remote.example> SIZE=500")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
}

// TestQuotaData: without SIZE (or with a lying one) the message is
// refused after DATA with 552 5.2.2 and nothing is stored, over plain
// SMTP, STARTTLS and implicit TLS; once the mailbox is full, RCPT gets
// 452 4.2.2.
func TestQuotaData(t *testing.T) {
	for _, mode := range []string{"plain", "starttls", "tls"} {
		t.Run(mode, func(t *testing.T) {
			var c *client
			var e *env
			switch mode {
			case "plain":
				e = quotaEnv(t, RoleMX, nil)
				c = e.dial()
				c.ehlo()
			case "starttls":
				e = quotaEnv(t, RoleSubmission, nil)
				c = e.dial()
				c.ehlo()
				c.startTLS()
				c.ehlo()
				c.authPlain("bob@example.test", "bob-pw", 235, "")
			case "tls":
				e = quotaEnv(t, RoleSubmission, nil)
				c = e.dialTLS()
				c.ehlo()
				c.authPlain("bob@example.test", "bob-pw", 235, "")
			}
			from := "bob@example.test"
			// The client declares a small size and sends a big message.
			c.cmd(250, "", "MAIL FROM:<"+from+"> SIZE=10")
			c.cmd(250, "", "RCPT TO:<alice@example.test>")
			c.cmd(354, "", "DATA")
			c.write(quotaBig + ".\r\n")
			c.expect(552, "5.2.2")
			e.expectNoMessages("alice@example.test")
			// The session goes on: a message that fits is delivered.
			c.send(from, []string{"alice@example.test"}, quotaSmall)
			// A second one would not fit.
			c.cmd(250, "", "MAIL FROM:<"+from+">")
			c.cmd(250, "", "RCPT TO:<alice@example.test>")
			c.cmd(354, "", "DATA")
			c.write(quotaSmall + ".\r\n")
			c.expect(552, "5.2.2")
			// Filled past the quota by another agent (or a lowered
			// quota): RCPT is refused for now.
			if _, err := e.store.Deliver(context.Background(), "alice@example.test", strings.NewReader(quotaBig)); err != nil {
				t.Fatal(err)
			}
			c.cmd(250, "", "RSET")
			c.cmd(250, "", "MAIL FROM:<"+from+">")
			c.cmd(452, "4.2.2", "RCPT TO:<alice@example.test>")
			c.cmd(250, "", "RCPT TO:<carol@other.test>")
			if n := len(e.messages("alice@example.test")); n != 2 {
				t.Fatalf("alice has %d messages, want 2", n)
			}
		})
	}
}

// TestQuotaMultiRecipient: with several recipients the single SMTP reply
// cannot fail one of them: the copy that does not fit goes to the queue
// (which bounces it), the others are delivered; without a queue, the
// whole message is refused and no one gets it.
func TestQuotaMultiRecipient(t *testing.T) {
	relay := &fakeRelay{}
	e := quotaEnv(t, RoleMX, relay)
	c := e.dial()
	c.ehlo()
	c.send("x@remote.example", []string{"alice@example.test", "bob@example.test"}, quotaBig)
	if n := len(e.messages("bob@example.test")); n != 1 {
		t.Fatalf("bob has %d messages", n)
	}
	e.expectNoMessages("alice@example.test")
	calls := relay.get()
	if len(calls) != 1 || len(calls[0].rcpts) != 1 || calls[0].rcpts[0] != "alice@example.test" || calls[0].from != "x@remote.example" ||
		!strings.Contains(calls[0].msg, "Subject: big") {
		t.Fatalf("queued %+v", calls)
	}

	e2 := quotaEnv(t, RoleMX, nil)
	c2 := e2.dial()
	c2.ehlo()
	c2.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c2.cmd(250, "", "RCPT TO:<alice@example.test>")
	c2.cmd(250, "", "RCPT TO:<bob@example.test>")
	c2.cmd(354, "", "DATA")
	c2.write(quotaBig + ".\r\n")
	c2.expect(552, "5.2.2")
	e2.expectNoMessages("alice@example.test")
	e2.expectNoMessages("bob@example.test")
}

// TestQuotaLMTP: LMTP answers 552 5.2.2 for the recipient over quota and
// delivers to the others (RFC 2033 §4.2), with DATA and BDAT.
func TestQuotaLMTP(t *testing.T) {
	e := quotaEnv(t, RoleLMTP, nil)
	c := e.dialNoGreet(e.addr)
	c.expect(220, "LMTP")
	c.cmd(250, "", "LHLO mta.example")
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.cmd(354, "", "DATA")
	c.write(quotaBig + ".\r\n")
	c.expect(552, "5.2.2 <alice@example.test> Mailbox full")
	c.expect(250, "2.0.0 <bob@example.test> OK")
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
	c.write("BDAT " + itoa(len(quotaBig)) + " LAST\r\n" + quotaBig)
	c.expect(250, "<bob@example.test>")
	c.expect(552, "5.2.2 <alice@example.test>")
	// One recipient alone: the message is streamed, and refused as well.
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
	c.cmd(354, "", "DATA")
	c.write(quotaBig + ".\r\n")
	c.expect(552, "5.2.2")
	e.expectNoMessages("alice@example.test")
	if n := len(e.messages("bob@example.test")); n != 2 {
		t.Fatalf("bob has %d messages", n)
	}
}
