package smtp

import (
	"strings"
	"testing"
	"time"
)

// TestQuotaEndToEnd runs "postino serve" with users.default_quota: a
// message that does not fit is refused after DATA over MX, STARTTLS
// submission and implicit-TLS submission; a full mailbox is refused at
// RCPT; with two recipients the one with room gets the message and the
// sender gets a 5.2.2 DSN for the other from the queue.
func TestQuotaEndToEnd(t *testing.T) {
	s := startServer(t, serverOpts{extraConfig: "[users]\ndefault_quota = \"2KiB\"\n"})
	big := "Subject: big\r\n\r\n" + strings.Repeat("0123456789012345678901234567890123456789\r\n", 60) + ".\r\n" // > 2 KiB
	mid := "Subject: mid\r\n\r\n" + strings.Repeat("m", 1200) + "\r\n.\r\n"

	// DATA over each transport, each time from bob to alice.
	mx := dialRaw(t, s.smtp)
	mx.ehlo("client.example")
	sub := dialRaw(t, s.sub)
	sub.ehlo("client.example")
	sub.startTLS(s.tlsConfig())
	sub.ehlo("client.example")
	subs := dialRawTLS(t, s.subs, s.tlsConfig())
	subs.ehlo("client.example")
	for _, c := range []*rawConn{sub, subs} {
		c.send("AUTH PLAIN " + plainIR(bob, passwd) + "\r\n")
		c.expect("235")
	}
	for _, c := range []*rawConn{mx, sub, subs} {
		c.send("MAIL FROM:<" + bob + ">\r\n")
		c.expect("250")
		c.send("RCPT TO:<" + alice + ">\r\n")
		c.expect("250")
		c.send("DATA\r\n")
		c.expect("354")
		c.send(big)
		c.expect("552 5.2.2")
		// A declared size that cannot fit is refused at RCPT.
		c.send("MAIL FROM:<" + bob + "> SIZE=5000\r\n")
		c.expect("250")
		c.send("RCPT TO:<" + alice + ">\r\n")
		c.expect("552 5.2.2")
		c.send("RSET\r\n")
		c.expect("250")
	}
	s.mustCount(t, alice, 0)

	// alice's mailbox takes one mid message; a second does not fit, so
	// with carol as well, carol gets it and bob gets the bounce.
	mx.send("MAIL FROM:<" + bob + ">\r\nRCPT TO:<" + alice + ">\r\nDATA\r\n")
	mx.expect("250")
	mx.expect("250")
	mx.expect("354")
	mx.send(mid)
	mx.expect("250")
	mx.send("MAIL FROM:<" + bob + ">\r\nRCPT TO:<" + alice + ">\r\nRCPT TO:<" + carol + ">\r\nDATA\r\n")
	mx.expect("250")
	mx.expect("250")
	mx.expect("250")
	mx.expect("354")
	mx.send(mid)
	mx.expect("250")
	s.mustCount(t, alice, 1)
	s.mustCount(t, carol, 1)
	dsn := string(s.waitMailbox(t, bob, 1, 30*time.Second)[0])
	for _, want := range []string{"Return-Path: <>", "report-type=delivery-status", "Final-Recipient: rfc822; " + alice, "Action: failed", "Status: 5.2.2"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
}
