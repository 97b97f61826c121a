package smtpin

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/pop3"
)

func hasCap(caps []string, c string) bool {
	return slices.ContainsFunc(caps, func(x string) bool { return x == c })
}

func TestEHLOCapabilities(t *testing.T) {
	base := []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "SMTPUTF8", "DSN", "SIZE 52428800"}
	check := func(t *testing.T, caps []string, want, notWant []string) {
		t.Helper()
		for _, c := range append(slices.Clone(base), want...) {
			if !hasCap(caps, c) {
				t.Errorf("EHLO lacks %q: %q", c, caps)
			}
		}
		for _, c := range notWant {
			if slices.ContainsFunc(caps, func(x string) bool { return strings.HasPrefix(x, c) }) {
				t.Errorf("EHLO has %q: %q", c, caps)
			}
		}
	}
	t.Run("mx without TLS", func(t *testing.T) {
		e := newEnv(t, RoleMX, nil)
		c := e.dial()
		check(t, c.ehlo(), nil, []string{"STARTTLS", "AUTH", "BINARYMIME", "LIMITS"})
		c.cmd(502, "5.5.1", "AUTH PLAIN AGFsaWNlAGFsaWNlLXB3")
		c.cmd(221, "", "QUIT")
	})
	t.Run("mx with TLS", func(t *testing.T) {
		e := newEnv(t, RoleMX, func(c *envConfig) { c.tls = true })
		c := e.dial()
		check(t, c.ehlo(), []string{"STARTTLS"}, []string{"AUTH"})
		c.startTLS()
		check(t, c.ehlo(), nil, []string{"STARTTLS", "AUTH"})
	})
	t.Run("submission, plaintext never", func(t *testing.T) {
		e := newEnv(t, RoleSubmission, func(c *envConfig) { c.tls = true; c.opts.PlaintextAuth = pop3.PlaintextNever })
		c := e.dial()
		check(t, c.ehlo(), []string{"STARTTLS"}, []string{"AUTH"})
		c.startTLS()
		check(t, c.ehlo(), []string{"AUTH PLAIN LOGIN"}, []string{"STARTTLS"})
	})
	t.Run("submission, loopback allowed", func(t *testing.T) {
		e := newEnv(t, RoleSubmission, func(c *envConfig) { c.tls = true })
		c := e.dial()
		check(t, c.ehlo(), []string{"STARTTLS", "AUTH PLAIN LOGIN"}, nil)
	})
	t.Run("submission implicit TLS", func(t *testing.T) {
		e := newEnv(t, RoleSubmission, func(c *envConfig) { c.tls = true; c.opts.PlaintextAuth = pop3.PlaintextNever })
		c := e.dialTLS()
		check(t, c.ehlo(), []string{"AUTH PLAIN LOGIN"}, []string{"STARTTLS"})
	})
	t.Run("lmtp", func(t *testing.T) {
		e := newEnv(t, RoleLMTP, nil)
		c := e.dialNoGreet(e.addr)
		c.expect(220, "LMTP")
		c.cmd(500, "use LHLO", "EHLO client.example")
		lines := c.cmd(250, "", "LHLO client.example")
		check(t, lines[1:], nil, []string{"STARTTLS", "AUTH"})
	})
}

// TestMXDelivery checks the stored form byte for byte: Return-Path,
// Delivered-To, Received, then the message with CRLF line ends.
func TestMXDelivery(t *testing.T) {
	e := newEnv(t, RoleMX, nil)
	c := e.dial()
	c.ehlo()
	msg := "Subject: hello\r\n\r\nHi Alice.\r\n..leading dot\r\n"
	reply := c.send("sender@remote.example", []string{"alice@example.test"}, msg)
	id := queueID(reply)
	c.cmd(221, "", "QUIT")
	got := e.messages("alice@example.test")
	want := "Return-Path: <sender@remote.example>\r\n" +
		"Delivered-To: alice@example.test\r\n" +
		"Received: from client.example ([127.0.0.1])\r\n" +
		"\tby mx.example.test (postino) with ESMTP id " + id + "\r\n" +
		"\tfor <alice@example.test>; " + dateStr + "\r\n" +
		"Subject: hello\r\n\r\nHi Alice.\r\n.leading dot\r\n"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("stored:\n%q\nwant:\n%q", got, want)
	}
}

func TestPipelining(t *testing.T) {
	e := newEnv(t, RoleMX, nil)
	c := e.dial()
	c.ehlo()
	c.write("MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
	c.expect(250, "2.0.0")
	c.expect(250, "2.0.0")
	c.expect(550, "5.1.1 User unknown")
	c.expect(250, "2.0.0")
	c.expect(354, "")
	c.write("Subject: p\r\n\r\nx\r\n.\r\nRSET\r\nNOOP\r\n")
	c.expect(250, "queued as")
	c.expect(250, "")
	c.expect(250, "")
	if n := len(e.messages("alice@example.test")) + len(e.messages("bob@example.test")); n != 2 {
		t.Fatalf("%d messages delivered", n)
	}
}

func TestSize(t *testing.T) {
	e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.MaxMessageBytes = 1000 })
	c := e.dial()
	if caps := c.ehlo(); !hasCap(caps, "SIZE 1000") {
		t.Fatalf("caps %q", caps)
	}
	c.cmd(552, "5.3.4", "MAIL FROM:<a@remote.example> SIZE=2000")
	// The client lies about the size.
	c.cmd(250, "", "MAIL FROM:<a@remote.example> SIZE=100")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
	c.cmd(354, "", "DATA")
	c.write("Subject: big\r\n\r\n" + strings.Repeat("0123456789012345678901234567890123456789\r\n", 50) + ".\r\n")
	c.expect(552, "5.3.4")
	// BDAT over the limit.
	c.cmd(250, "", "MAIL FROM:<a@remote.example>")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
	c.write("BDAT 1200 LAST\r\n" + strings.Repeat("x", 1200))
	c.expect(552, "5.3.4")
	// The connection is still usable and a small message goes through.
	c.send("a@remote.example", []string{"alice@example.test"}, "Subject: small\r\n\r\nok\r\n")
	got := e.messages("alice@example.test")
	if len(got) != 1 || !strings.Contains(got[0], "Subject: small") {
		t.Fatalf("delivered %q", got)
	}
}

func TestSMTPUTF8(t *testing.T) {
	e := newEnv(t, RoleMX, nil)
	c := e.dial()
	c.ehlo()
	c.cmd(553, "5.6.7", "MAIL FROM:<josé@remote.example>")
	c.cmd(250, "", "MAIL FROM:<jose@remote.example>")
	c.cmd(553, "5.6.7", "RCPT TO:<jörg@example.test>")
	c.cmd(250, "", "RSET")
	c.cmd(250, "", "MAIL FROM:<josé@remote.example> SMTPUTF8 BODY=8BITMIME")
	c.cmd(250, "", "RCPT TO:<jörg@example.test>")
	c.cmd(354, "", "DATA")
	c.write("Subject: Grüße\r\n\r\nHallo Jörg.\r\n.\r\n")
	id := queueID(c.expect(250, "queued")[0])
	got := e.messages("jörg@example.test")
	want := "Return-Path: <josé@remote.example>\r\nDelivered-To: jörg@example.test\r\n" +
		"Received: from client.example ([127.0.0.1])\r\n\tby mx.example.test (postino) with UTF8SMTP id " + id + "\r\n" +
		"\tfor <jörg@example.test>; " + dateStr + "\r\nSubject: Grüße\r\n\r\nHallo Jörg.\r\n"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestBDAT(t *testing.T) {
	e := newEnv(t, RoleMX, nil)
	c := e.dial()
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<a@remote.example> BODY=8BITMIME")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	part1 := "Subject: chunks\r\n\r\nfirst "
	part2 := "second\r\n.\r\nnot the end\r\n"
	c.write("BDAT " + itoa(len(part1)) + "\r\n" + part1)
	c.expect(250, "Continue")
	c.write("BDAT " + itoa(len(part2)) + " LAST\r\n" + part2)
	c.expect(250, "queued as")
	// BDAT without a transaction is refused, and its chunk skipped.
	c.write("BDAT 5 LAST\r\nhello")
	c.expect(503, "5.5.1")
	c.cmd(250, "", "NOOP")
	got := e.messages("bob@example.test")
	if len(got) != 1 || !strings.HasSuffix(got[0], "\r\nSubject: chunks\r\n\r\nfirst second\r\n.\r\nnot the end\r\n") {
		t.Fatalf("got %q", got)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func tlsClient(c *client, e *env) net.Conn {
	tc := tls.Client(c.conn, &tls.Config{RootCAs: e.pool, ServerName: "localhost"})
	c.r = bufio.NewReader(tc)
	return tc
}

func TestSubmissionSTARTTLSAuth(t *testing.T) {
	e := newEnv(t, RoleSubmission, func(c *envConfig) { c.tls = true; c.opts.PlaintextAuth = pop3.PlaintextNever })
	c := e.dial()
	c.ehlo()
	// Before TLS: refused, and MAIL needs AUTH.
	c.cmd(538, "5.7.11 Encryption required for requested authentication mechanism", "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wdw==")
	c.cmd(530, "5.7.0 Authentication required", "MAIL FROM:<alice@example.test>")
	c.startTLS()
	c.ehlo()
	c.cmd(530, "5.7.0", "MAIL FROM:<alice@example.test>")
	c.authPlain("alice@example.test", "wrong", 535, "5.7.8 Authentication credentials invalid")
	c.authPlain("alice@example.test", "alice-pw", 235, "")
	c.cmd(503, "", "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wdw==")
	id := queueID(c.send("alice@example.test", []string{"bob@example.test"}, "Subject: s\r\n\r\nbody\r\n"))
	got := e.messages("bob@example.test")
	if len(got) != 1 {
		t.Fatalf("got %q", got)
	}
	if !strings.Contains(got[0], "Received: from client.example ([127.0.0.1])\r\n\t(using TLSv1.3 with cipher TLS_") ||
		!strings.Contains(got[0], ")\r\n\t(authenticated as alice@example.test)\r\n\tby mx.example.test (postino) with ESMTPSA id "+id+"\r\n\tfor <bob@example.test>; ") {
		t.Fatalf("trace header: %q", got[0])
	}
}

func TestSubmissionAuthLoginImplicitTLS(t *testing.T) {
	e := newEnv(t, RoleSubmission, func(c *envConfig) { c.tls = true; c.opts.PlaintextAuth = pop3.PlaintextNever })
	c := e.dialTLS()
	c.ehlo()
	b64 := base64.StdEncoding.EncodeToString
	c.cmd(334, "VXNlcm5hbWU6", "AUTH LOGIN")
	c.cmd(334, "UGFzc3dvcmQ6", b64([]byte("bob@example.test")))
	c.cmd(235, "", b64([]byte("bob-pw")))
	c.send("bob@example.test", []string{"alice@example.test"}, "Subject: l\r\n\r\nx\r\n")
	// LOGIN with the user name as initial response, and a cancelled exchange.
	c2 := e.dialTLS()
	c2.ehlo()
	c2.cmd(334, "UGFzc3dvcmQ6", "AUTH LOGIN "+b64([]byte("bob@example.test")))
	c2.cmd(501, "", "*")
	c2.cmd(504, "5.5.4", "AUTH CRAM-MD5")
	c2.cmd(334, "VXNlcm5hbWU6", "AUTH login")
	c2.cmd(334, "", b64([]byte("bob@example.test")))
	c2.cmd(535, "5.7.8", b64([]byte("nope")))
	if got := e.messages("alice@example.test"); len(got) != 1 || !strings.Contains(got[0], "with ESMTPSA") {
		t.Fatalf("got %q", got)
	}
}

func TestPlaintextAuthPolicies(t *testing.T) {
	for _, policy := range []pop3.PlaintextPolicy{pop3.PlaintextLoopback, pop3.PlaintextAlways} {
		e := newEnv(t, RoleSubmission, func(c *envConfig) { c.opts.PlaintextAuth = policy })
		c := e.dial()
		if caps := c.ehlo(); !hasCap(caps, "AUTH PLAIN LOGIN") {
			t.Fatalf("%s: caps %q", policy, caps)
		}
		c.authPlain("alice@example.test", "alice-pw", 235, "")
		c.send("alice@example.test", []string{"bob@example.test"}, "Subject: p\r\n\r\nx\r\n")
		if got := e.messages("bob@example.test"); len(got) != 1 || !strings.Contains(got[0], "with ESMTPA id") {
			t.Fatalf("%s: got %q", policy, got)
		}
	}
	if _, err := New(Options{Hostname: "h", Role: RoleMX, PlaintextAuth: pop3.PlaintextPolicy(9)}); err == nil {
		t.Fatal("New accepted a bad policy")
	}
}

// TestNotAnOpenRelay proves remote recipients are refused without AUTH.
func TestNotAnOpenRelay(t *testing.T) {
	relay := &fakeRelay{}
	t.Run("mx", func(t *testing.T) {
		e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.Relay = relay })
		c := e.dial()
		c.ehlo()
		c.cmd(250, "", "MAIL FROM:<spammer@remote.example>")
		c.cmd(554, "5.7.1 Relay access denied", "RCPT TO:<victim@gmail.example>")
		c.cmd(554, "5.7.1 Relay access denied", "RCPT TO:<alice@[127.0.0.1]>")
		c.cmd(554, "5.7.1 Relay access denied", "RCPT TO:<alice@example.test.evil.example>")
		c.cmd(503, "5.5.1", "DATA")
	})
	t.Run("submission without auth", func(t *testing.T) {
		e := newEnv(t, RoleSubmission, func(c *envConfig) { c.opts.Relay = relay })
		c := e.dial()
		c.ehlo()
		c.cmd(530, "5.7.0 Authentication required", "MAIL FROM:<alice@example.test>")
		c.cmd(503, "5.5.1", "RCPT TO:<victim@gmail.example>")
	})
	t.Run("lmtp", func(t *testing.T) {
		e := newEnv(t, RoleLMTP, func(c *envConfig) { c.opts.Relay = relay })
		c := e.dialNoGreet(e.addr)
		c.expect(220, "")
		c.cmd(250, "", "LHLO x")
		c.cmd(250, "", "MAIL FROM:<spammer@remote.example>")
		c.cmd(554, "5.7.1 Relay access denied", "RCPT TO:<victim@gmail.example>")
	})
	if calls := relay.get(); len(calls) != 0 {
		t.Fatalf("relay called: %+v", calls)
	}
}

func TestSubmissionRelay(t *testing.T) {
	t.Run("no relay yet", func(t *testing.T) {
		e := newEnv(t, RoleSubmission, nil)
		c := e.dial()
		c.ehlo()
		c.authPlain("alice@example.test", "alice-pw", 235, "")
		c.cmd(250, "", "MAIL FROM:<alice@example.test>")
		c.cmd(450, "4.7.1 Relaying is not available on this server yet", "RCPT TO:<friend@remote.example>")
		c.cmd(451, "4.3.0 Forwarding", "RCPT TO:<fwd@example.test>")
		c.cmd(250, "", "RCPT TO:<bob@example.test>")
	})
	t.Run("relay", func(t *testing.T) {
		relay := &fakeRelay{}
		e := newEnv(t, RoleSubmission, func(c *envConfig) { c.opts.Relay = relay })
		c := e.dial()
		c.ehlo()
		c.authPlain("alice@example.test", "alice-pw", 235, "")
		c.cmd(250, "", "MAIL FROM:<alice@example.test> RET=HDRS ENVID=env+2B1")
		// ENVID is xtext (RFC 3461 §4): "+2B" is "+".
		c.cmd(250, "", "RCPT TO:<friend@remote.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;friend@remote.example")
		c.cmd(250, "", "RCPT TO:<fwd@example.test>") // alice + friend@remote.example again
		c.cmd(250, "", "RCPT TO:<other@far.example>")
		c.cmd(354, "", "DATA")
		c.write("Subject: r\r\n\r\nx\r\n.\r\n")
		id := queueID(c.expect(250, "queued as")[0])
		calls := relay.get()
		if len(calls) != 1 {
			t.Fatalf("calls %+v", calls)
		}
		call := calls[0]
		if call.from != "alice@example.test" || !slices.Equal(call.rcpts, []string{"friend@remote.example", "other@far.example"}) {
			t.Fatalf("call %+v", call)
		}
		wantParams := envelope.DSNParams{Return: "HDRS", EnvelopeID: "env+1", Recipients: []envelope.RecipientDSN{
			{Notify: []string{"SUCCESS", "FAILURE"}, OriginalRecipientType: "RFC822", OriginalRecipient: "friend@remote.example"},
			{},
		}}
		if call.params.Return != wantParams.Return || call.params.EnvelopeID != wantParams.EnvelopeID ||
			len(call.params.Recipients) != 2 || !slices.Equal(call.params.Recipients[0].Notify, wantParams.Recipients[0].Notify) ||
			call.params.Recipients[0].OriginalRecipient != "friend@remote.example" || call.params.Recipients[1].OriginalRecipient != "" {
			t.Fatalf("params %+v", call.params)
		}
		if !strings.HasPrefix(call.msg, "Received: from client.example ([127.0.0.1])\r\n\t(authenticated as alice@example.test)\r\n\tby mx.example.test (postino) with ESMTPA id "+id+"; "+dateStr+"\r\nSubject: r\r\n") {
			t.Fatalf("relayed message %q", call.msg)
		}
		if got := e.messages("alice@example.test"); len(got) != 1 {
			t.Fatalf("alice got %q", got)
		}
		// A failing relay is a temporary error.
		relay.err = errors.New("queue full")
		c.cmd(250, "", "MAIL FROM:<alice@example.test>")
		c.cmd(250, "", "RCPT TO:<friend@remote.example>")
		c.cmd(354, "", "DATA")
		c.write("Subject: r\r\n\r\nx\r\n.\r\n")
		c.expect(451, "4.3.0")
	})
	t.Run("mx forwards through alias", func(t *testing.T) {
		relay := &fakeRelay{}
		e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.Relay = relay })
		c := e.dial()
		c.ehlo()
		c.send("x@remote.example", []string{"fwd@example.test"}, "Subject: f\r\n\r\nx\r\n")
		calls := relay.get()
		if len(calls) != 1 || !slices.Equal(calls[0].rcpts, []string{"friend@remote.example"}) ||
			calls[0].params.Recipients[0].OriginalRecipient != "fwd@example.test" || calls[0].params.Recipients[0].OriginalRecipientType != "rfc822" {
			t.Fatalf("calls %+v", calls)
		}
		if got := e.messages("alice@example.test"); len(got) != 1 {
			t.Fatalf("alice got %q", got)
		}
	})
}

func TestSenderRestriction(t *testing.T) {
	e := newEnv(t, RoleSubmission, nil)
	c := e.dial()
	c.ehlo()
	c.authPlain("alice@example.test", "alice-pw", 235, "")
	c.cmd(553, "5.7.1 Sender address not owned by user", "MAIL FROM:<bob@example.test>")
	c.cmd(553, "5.7.1", "MAIL FROM:<alice@remote.example>")
	c.cmd(501, "5.1.7", "MAIL FROM:<alice..x@example.test>")
	for _, from := range []string{"alice@example.test", "Alice@EXAMPLE.test", "alice+news@example.test", "sales@example.test", "sales+x@example.test", "fwd@example.test", ""} {
		c.cmd(250, "", "MAIL FROM:<"+from+">")
		c.cmd(250, "", "RSET")
	}
	e2 := newEnv(t, RoleSubmission, func(c *envConfig) { c.opts.AllowAnySender = true })
	c2 := e2.dial()
	c2.ehlo()
	c2.authPlain("alice@example.test", "alice-pw", 235, "")
	c2.cmd(250, "", "MAIL FROM:<bob@example.test>")
}

func TestRecipients(t *testing.T) {
	e := newEnv(t, RoleMX, nil)
	c := e.dial()
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(550, "5.1.1 User unknown", "RCPT TO:<nobody@example.test>")
	c.cmd(550, "5.1.1 User unknown", "RCPT TO:<ghost@example.test>") // alias to a missing user
	c.cmd(501, "5.1.3", "RCPT TO:<a..b@example.test>")
	c.cmd(501, "", "RCPT TO:<>")
	c.cmd(250, "", "RSET")
	// Duplicates: alice, alice+tag, sales (alice and bob), ALICE: one copy each.
	rcpts := []string{"alice@example.test", "alice+tag@example.test", "sales@example.test", "ALICE@Example.Test", "sales+x@example.test"}
	id := queueID(c.send("x@remote.example", rcpts, "Subject: d\r\n\r\nx\r\n"))
	a, b := e.messages("alice@example.test"), e.messages("bob@example.test")
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("alice %d, bob %d copies", len(a), len(b))
	}
	if !strings.HasPrefix(a[0], "Return-Path: <x@remote.example>\r\nDelivered-To: alice@example.test\r\n") ||
		!strings.Contains(a[0], "id "+id+"\r\n\tfor <alice@example.test>;") {
		t.Fatalf("alice %q", a[0])
	}
	if !strings.HasPrefix(b[0], "Return-Path: <x@remote.example>\r\nDelivered-To: bob@example.test\r\n") ||
		!strings.Contains(b[0], "\tfor <sales@example.test>;") {
		t.Fatalf("bob %q", b[0])
	}
	// Plus-addressing keeps the tag in Delivered-To; catch-all.
	c.send("x@remote.example", []string{"bob+lists@example.test"}, "Subject: p\r\n\r\nx\r\n")
	c.send("x@remote.example", []string{"anything@other.test"}, "Subject: c\r\n\r\nx\r\n")
	if b := e.messages("bob@example.test"); len(b) != 2 || !strings.Contains(b[1], "Delivered-To: bob+lists@example.test\r\n") {
		t.Fatalf("bob %q", b)
	}
	if cm := e.messages("carol@other.test"); len(cm) != 1 || !strings.Contains(cm[0], "Delivered-To: carol@other.test\r\n") ||
		!strings.Contains(cm[0], "for <anything@other.test>") {
		t.Fatalf("carol %q", cm)
	}
}

func TestLocalDomainsOption(t *testing.T) {
	e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.LocalDomains = []string{"example.test", "extra.test"} })
	c := e.dial()
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(550, "5.1.1", "RCPT TO:<who@extra.test>")
	c.cmd(554, "5.7.1", "RCPT TO:<who@other2.test>")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
}

func TestTooManyRecipients(t *testing.T) {
	e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.MaxRecipients = 2 })
	c := e.dial()
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.cmd(452, "4.5.3 Too many recipients", "RCPT TO:<jörg@example.test>")
	c.cmd(354, "", "DATA")
	c.write("Subject: x\r\n\r\nx\r\n.\r\n")
	c.expect(250, "")
}

// TestLineTooLong: command lines are limited (MaxLineLength); message
// lines are not, in DATA and BDAT alike (RFC 5321 §4.5.3.1: as few limits
// as possible), and they are stored byte for byte.
func TestLineTooLong(t *testing.T) {
	e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.MaxLineLength = 200 })
	c := e.dial()
	c.ehlo()
	c.write("NOOP " + strings.Repeat("x", 300) + "\r\n")
	c.expect(500, "5.4.0 Too long line")
	c.closed()

	for _, n := range []int{300, 5000, 100000} {
		body := "Subject: long\r\n\r\n" + strings.Repeat("y", n) + "\r\nend\r\n"
		e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.MaxLineLength = 200 })
		c := e.dial()
		c.ehlo()
		c.dataToAlice()
		c.write(body + ".\r\n")
		c.expect(250, "queued")
		c.cmd(250, "", "MAIL FROM:<x@remote.example>")
		c.cmd(250, "", "RCPT TO:<alice@example.test>")
		c.write("BDAT " + itoa(len(body)) + " LAST\r\n" + body)
		c.expect(250, "queued")
		c.write("NOOP " + strings.Repeat("x", 300) + "\r\n")
		c.expect(500, "5.4.0 Too long line")
		got := e.messages("alice@example.test")
		if len(got) != 2 || !strings.HasSuffix(got[0], "\r\n"+body) || !strings.HasSuffix(got[1], "\r\n"+body) {
			t.Fatalf("%d-octet line: the messages were not stored intact", n)
		}
	}
}

func TestNUL(t *testing.T) {
	e := newEnv(t, RoleMX, nil)
	c := e.dial()
	c.ehlo()
	c.dataToAlice()
	c.write("Subject: nul\r\n\r\nbad\x00byte\r\nmore\r\n.\r\n")
	c.expect(554, "5.6.0 Message contains NUL octets")
	c.cmd(250, "", "NOOP")
	e.expectNoMessages("alice@example.test")
}

func TestClientVanishes(t *testing.T) {
	e := newEnv(t, RoleMX, nil)
	c := e.dial()
	c.ehlo()
	c.dataToAlice()
	c.write("Subject: half\r\n\r\nthe first half\r\n")
	c.conn.Close()

	c = e.dial()
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
	c.write("BDAT 10\r\n0123456789")
	c.expect(250, "Continue")
	c.write("BDAT 100 LAST\r\nonly a part")
	c.conn.Close()
	e.waitIdle()
	e.expectNoMessages("alice@example.test")
}

func TestErrorLimit(t *testing.T) {
	e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.MaxErrors = 3 })
	c := e.dial()
	c.ehlo()
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(550, "5.1.1", "RCPT TO:<a@example.test>")
	c.cmd(554, "5.7.1", "RCPT TO:<a@remote.example>")
	c.write("RCPT TO:<b@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
	c.expect(421, "4.7.0 Too many errors")
	c.closed()
	e.waitIdle()

	// Errors in DATA count too, and survive STARTTLS.
	e = newEnv(t, RoleSubmission, func(c *envConfig) { c.opts.MaxErrors = 2; c.tls = true; c.opts.PlaintextAuth = pop3.PlaintextNever })
	c = e.dial()
	c.ehlo()
	c.cmd(530, "", "MAIL FROM:<x@example.test>")
	c.startTLS()
	c.ehlo()
	c.authPlain("alice@example.test", "bad", 421, "4.7.0 Too many errors")
	c.closed()
}

func TestTimeouts(t *testing.T) {
	e := newEnv(t, RoleMX, func(c *envConfig) {
		c.opts.ReadTimeout = 300 * time.Millisecond
		c.opts.DataTimeout = 300 * time.Millisecond
	})
	c := e.dial()
	c.ehlo()
	start := time.Now()
	c.expect(421, "4.4.2 Idle timeout")
	c.closed()
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("idle timeout after %v", d)
	}

	c = e.dial()
	c.ehlo()
	c.dataToAlice()
	c.write("Subject: slow\r\n\r\n")
	c.expect(421, "4.4.2 Error receiving the message")
	// What the client sends after the timeout is never read as commands.
	c.write("MAIL FROM:<x@remote.example>\r\n")
	c.closed()
	e.waitIdle()
	e.expectNoMessages("alice@example.test")
}

func TestConnectionLimits(t *testing.T) {
	e := newEnv(t, RoleSubmission, func(c *envConfig) { c.opts.MaxConnectionsPerIP = 2; c.tls = true })
	c1 := e.dial()
	c2 := e.dial()
	c3 := e.dialNoGreet(e.addr)
	c3.expect(421, "4.7.0 Too many connections")
	c3.closed()
	// Implicit TLS: the refusal comes over TLS.
	c4 := e.dialNoGreet(e.tlsAddr)
	c4.conn = tlsClient(c4, e)
	c4.expect(421, "4.7.0 Too many connections")
	c1.cmd(221, "", "QUIT")
	c1.closed()
	testutil.WaitFor(t, 5*time.Second, "one tracked connection", func() bool { e.srv.mu.Lock(); defer e.srv.mu.Unlock(); return len(e.srv.conns) == 1 })
	c5 := e.dial()
	c5.cmd(250, "", "NOOP")
	c2.cmd(250, "", "NOOP")

	e = newEnv(t, RoleMX, func(c *envConfig) { c.opts.MaxConnections = 1 })
	e.dial()
	c6 := e.dialNoGreet(e.addr)
	c6.expect(421, "Too many connections")
}

func TestLMTP(t *testing.T) {
	e := newEnv(t, RoleLMTP, func(c *envConfig) {
		c.store = func(s store.Store) store.Store { return failingStore{s, "bob@example.test"} }
	})
	c := e.dialNoGreet(e.addr)
	c.expect(220, "LMTP")
	c.cmd(250, "", "LHLO mta.example")
	c.cmd(250, "", "MAIL FROM:<x@remote.example>")
	c.cmd(250, "", "RCPT TO:<alice@example.test>")
	c.cmd(550, "5.1.1 User unknown", "RCPT TO:<nobody@example.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.cmd(250, "", "RCPT TO:<alice+x@example.test>")
	c.cmd(354, "", "DATA")
	c.write("Subject: lmtp\r\n\r\nx\r\n.\r\n")
	c.expect(250, "2.0.0 <alice@example.test> OK: delivered as ")
	c.expect(451, "4.3.0 <bob@example.test> Temporary local problem")
	c.expect(250, "2.0.0 <alice+x@example.test> OK: delivered as ")
	// BDAT over LMTP also replies per recipient.
	c.cmd(250, "", "MAIL FROM:<x@remote.example> SMTPUTF8")
	c.cmd(250, "", "RCPT TO:<jörg@example.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	msg := "Subject: b\r\n\r\ny\r\n"
	c.write("BDAT " + itoa(len(msg)) + " LAST\r\n" + msg)
	c.expect(250, "2.0.0 <jörg@example.test> OK")
	c.expect(451, "<bob@example.test>")
	if got := e.messages("alice@example.test"); len(got) != 1 || !strings.Contains(got[0], "with LMTP id") {
		t.Fatalf("alice %q", got)
	}
	if got := e.messages("jörg@example.test"); len(got) != 1 {
		t.Fatalf("jörg %q", got)
	}
}

// TestSmuggling sends the 2023 SMTP smuggling payloads: a fake end of data
// made with bare LF or CR, followed by a second transaction. Exactly one
// message must be delivered, containing everything, and never a second
// one to the smuggled recipient.
func TestSmuggling(t *testing.T) {
	for _, end := range []string{"\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\r\n\x00.\r\n"} {
		t.Run(strings.NewReplacer("\r", "CR", "\n", "LF", "\x00", "NUL").Replace(end), func(t *testing.T) {
			e := newEnv(t, RoleMX, nil)
			c := e.dial()
			c.ehlo()
			c.dataToAlice()
			c.write("Subject: outer\r\n\r\nouter body" + end +
				"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\ninner\r\n.\r\n")
			code, lines := c.reply()
			c.cmd(250, "", "NOOP") // in step: no other reply is pending
			if got := e.messages("bob@example.test"); len(got) != 0 {
				t.Fatalf("smuggled message delivered: %q", got)
			}
			got := e.messages("alice@example.test")
			switch code {
			case 250:
				if len(got) != 1 || !strings.Contains(got[0], "outer body") || !strings.Contains(got[0], "Subject: smuggled") {
					t.Fatalf("alice got %q", got)
				}
				// Stored with CRLF only: no bare CR or LF left for a later hop.
				body := strings.ReplaceAll(got[0], "\r\n", "")
				if strings.ContainsAny(body, "\r\n") {
					t.Fatalf("bare CR or LF stored: %q", got[0])
				}
			case 554:
				if len(got) != 0 {
					t.Fatalf("rejected but delivered %q", got)
				}
			default:
				t.Fatalf("reply %d %q", code, lines)
			}
		})
	}
}

func TestShutdown(t *testing.T) {
	e := newEnv(t, RoleMX, nil)
	c := e.dial()
	c.ehlo()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
	c.closed()
	if err := <-e.done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
	if _, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		t.Fatal("listener still open")
	}
	if err := e.srv.Shutdown(context.Background()); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("second Shutdown = %v", err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := e.srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown = %v", err)
	}
	// A server with nothing open shuts down at once.
	e2 := newEnv(t, RoleMX, nil)
	if err := e2.srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	good := *newEnv(t, RoleMX, nil).srv.options()
	for _, mod := range []func(*Options){
		func(o *Options) { o.Hostname = "" },
		func(o *Options) { o.Role = 0 },
		func(o *Options) { o.Deliverer = nil },
		func(o *Options) { o.Users = nil },
	} {
		o := good
		mod(&o)
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	// The limits that are settings have their defaults in the
	// configuration only: a zero one is a programming error.
	for field, mod := range map[string]func(*Options){
		"MaxMessageBytes": func(o *Options) { o.MaxMessageBytes = 0 },
		"MaxRecipients":   func(o *Options) { o.MaxRecipients = 0 },
		"ReadTimeout":     func(o *Options) { o.ReadTimeout = 0 },
		"DataTimeout":     func(o *Options) { o.DataTimeout = -time.Second },
		"MaxErrors":       func(o *Options) { o.MaxErrors = 0 },
	} {
		o := good
		mod(&o)
		var oe *OptionError
		if _, err := New(o); !errors.As(err, &oe) || oe.Field != field {
			t.Errorf("New with zero %s: err = %v, want an OptionError for it", field, err)
		}
	}
	o := good
	o.TLS = nil
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServeTLS(nil); err == nil {
		t.Error("ServeTLS without TLS succeeded")
	}
	if RoleMX.String() != "mx" || RoleSubmission.String() != "submission" || RoleLMTP.String() != "lmtp" || Role(9).String() != "Role(9)" {
		t.Error("Role.String")
	}
}

// TestBDATCutShort: a client that announces a BDAT chunk and ends the
// stream before sending all of it (FIN in the clear, TLS close_notify
// after STARTTLS and on implicit TLS) gets 421 and nothing is stored,
// for one recipient or several.
func TestBDATCutShort(t *testing.T) {
	for _, mode := range []string{"plain", "STARTTLS", "implicit TLS"} {
		for _, rcpts := range [][]string{{"alice@example.test"}, {"alice@example.test", "bob@example.test"}} {
			t.Run(fmt.Sprintf("%s/%d", mode, len(rcpts)), func(t *testing.T) {
				e := newEnv(t, RoleSubmission, func(c *envConfig) { c.tls = true })
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
				c.cmd(250, "", "MAIL FROM:<alice@example.test>")
				for _, r := range rcpts {
					c.cmd(250, "", "RCPT TO:<"+r+">")
				}
				c.write("BDAT 9\r\nSubject: ")
				c.expect(250, "")
				c.write("BDAT 100 LAST\r\ncut short\r\n\r\nonly 29 octets\r\n")
				switch conn := c.conn.(type) {
				case *tls.Conn:
					conn.CloseWrite() // close_notify
				case *net.TCPConn:
					conn.CloseWrite()
				}
				c.expect(421, "4.4.2")
				c.closed()
				e.waitIdle()
				for _, r := range rcpts {
					e.expectNoMessages(r)
				}
			})
		}
	}
}

// TestSequenceErrors: commands out of order are "503 5.5.1 Bad sequence
// of commands" (RFC 5321 §4.3.2, RFC 4954 §4), not 502 (not implemented).
func TestSequenceErrors(t *testing.T) {
	e := newEnv(t, RoleSubmission, nil)
	c := e.dial()
	c.cmd(503, "5.5.1", "MAIL FROM:<alice@example.test>") // before EHLO
	c.ehlo()
	c.cmd(503, "5.5.1", "RCPT TO:<bob@example.test>")
	c.cmd(503, "5.5.1", "DATA")
	c.write("BDAT 5 LAST\r\nhello")
	c.expect(503, "5.5.1")
	c.authPlain("alice@example.test", testUsers["alice@example.test"], 235, "")
	c.cmd(250, "", "MAIL FROM:<alice@example.test>")
	c.cmd(503, "5.5.1", "DATA")
	c.cmd(503, "5.5.1", "AUTH PLAIN")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.cmd(250, "", "RSET")
	c.cmd(503, "5.5.1", "RCPT TO:<bob@example.test>")
	c.cmd(503, "5.5.1", "DATA")
	c.cmd(502, "5.5.1", "EXPN staff") // not implemented
	c.send("alice@example.test", []string{"bob@example.test"}, "Subject: in order\r\n\r\nok\r\n")
}
