package smtp

import (
	"encoding/base64"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func itoa(n int) string { return strconv.Itoa(n) }

// swaksRefused runs swaks and fails unless it fails with a server reply
// matching code (e.g. `554 5\.7\.1`).
func swaksRefused(t *testing.T, swaks, code string, args ...string) testutil.Result {
	t.Helper()
	r := run(t, nil, nil, swaks, append([]string{"--timeout", "30"}, args...)...)
	re := regexp.MustCompile(`(?m)^<~?\*+\s+` + code + ` `)
	if r.Code == 0 || !re.MatchString(r.Output) {
		t.Fatalf("swaks: want a %s reply and a failure exit:\n%s", code, r)
	}
	if regexp.MustCompile(`(?m)^<[-~]  250 2\.0\.0 OK: queued`).MatchString(r.Output) {
		t.Fatalf("swaks: the message was queued:\n%s", r)
	}
	return r
}

// TestNotOpenRelay proves postino relays nothing: the MX refuses remote
// recipients whatever their spelling, submission wants AUTH before MAIL,
// and an authenticated user may not send as someone else.
func TestNotOpenRelay(t *testing.T) {
	swaks := needSwaks(t)
	needPython(t)
	t.Parallel()
	s := startServer(t, serverOpts{})
	tlsArgs := []string{"--tls", "--tls-verify", "--tls-ca-path", s.certFile}

	t.Run("MX-remote-recipient-swaks", func(t *testing.T) {
		swaksRefused(t, swaks, `554 5\.7\.1`, "--server", s.smtp, "--from", "spammer@remote.test", "--to", "victim@elsewhere.test")
		swaksRefused(t, swaks, `554 5\.7\.1`, append([]string{"--server", s.smtp, "--from", alice, "--to", "victim@elsewhere.test"}, tlsArgs...)...)
	})
	t.Run("MX-remote-recipient-raw", func(t *testing.T) {
		rc := dialRaw(t, s.smtp)
		ehlo := rc.ehlo("relay-tester.test")
		if strings.Contains(ehlo, "AUTH") {
			t.Errorf("the MX advertises AUTH:\n%s", ehlo)
		}
		rc.send("AUTH PLAIN " + plainIR(alice, passwd) + "\r\n")
		rc.expect("502 5.5.1")
		rc.send("MAIL FROM:<spammer@remote.test>\r\n")
		rc.expect("250")
		for _, to := range []string{
			"<victim@elsewhere.test>",
			"<VICTIM@ELSEWHERE.TEST>",
			"<victim@[192.0.2.1]>",
			"<@example.test:victim@elsewhere.test>", // source route
			"<victim%elsewhere.test@example.test>",  // percent hack
			"<\"victim@elsewhere.test\"@example.test>",
			"<victim@elsewhere.test@example.test>",
			"<victim!elsewhere.test@example.test>", // bang path
			"<victim@example.test.elsewhere.test>",
			"victim@elsewhere.test",
		} {
			rc.send("RCPT TO:" + to + "\r\n")
			r := rc.expect("5")
			if strings.HasPrefix(r, "552") {
				t.Errorf("RCPT TO:%s: %q", to, r)
			}
		}
		rc.send("RCPT TO:<victim@elsewhere.test>\r\n")
		rc.expect("554 5.7.1")
		rc.send("DATA\r\n")
		rc.expect("5") // no valid recipient
		rc.send("QUIT\r\n")
		rc.expect("221")
	})
	t.Run("submission-without-AUTH", func(t *testing.T) {
		swaksRefused(t, swaks, `530 5\.7\.0`, append([]string{"--server", s.sub, "--from", alice, "--to", "victim@elsewhere.test"}, tlsArgs...)...)
		swaksRefused(t, swaks, `530 5\.7\.0`, append([]string{"--server", s.sub, "--from", alice, "--to", bob}, tlsArgs...)...)
	})
	t.Run("submission-AUTH-as-alice-from-bob", func(t *testing.T) {
		swaksRefused(t, swaks, `553 5\.7\.1`, append([]string{"--server", s.sub, "--auth", "PLAIN", "--auth-user", alice, "--auth-password", passwd,
			"--from", bob, "--to", "victim@elsewhere.test"}, tlsArgs...)...)
		swaksRefused(t, swaks, `553 5\.7\.1`, "--server", s.subs, "--tls-on-connect", "--tls-verify", "--tls-ca-path", s.certFile,
			"--auth", "LOGIN", "--auth-user", alice, "--auth-password", passwd, "--from", "bob+x@example.test", "--to", carol)
		// An alias that reaches bob only is not alice's either; "sales"
		// reaches alice too, so she may use it.
		rep, r := smtplibSend(t, s, "starttls", s.sub, "PLAIN", alice, "team@example.test", []string{bob}, testutil.CRLF("Subject: x\n\nx\n"), false)
		if rep.Error != "" || len(rep.Refused) != 0 {
			t.Errorf("alice sending as team@ (an alias reaching her): %s", r)
		}
	})
	t.Run("submission-wrong-password", func(t *testing.T) {
		swaksRefused(t, swaks, `535 5\.7\.8`, append([]string{"--server", s.sub, "--auth", "PLAIN", "--auth-user", alice, "--auth-password", "wrong",
			"--from", alice, "--to", bob}, tlsArgs...)...)
	})
	t.Run("submission-AUTH-remote-recipient", func(t *testing.T) {
		// An authenticated user's remote recipient goes to the outbound
		// queue (whose DNS here is a dead loopback port, so it stays).
		rep, r := smtplibSend(t, s, "starttls", s.sub, "PLAIN", alice, alice, []string{"friend@elsewhere.test"}, testutil.CRLF("Subject: out\n\nout\n"), false)
		if rep.Error != "" || len(rep.Refused) != 0 {
			t.Fatalf("remote recipient after AUTH: %s", r)
		}
		out := run(t, nil, nil, binPath, "queue", "list", "--config", filepath.Join(s.data, "postino.toml"), "--data", s.data)
		if out.Code != 0 || !strings.Contains(out.Output, "elsewhere.test") || !strings.Contains(out.Output, alice) {
			t.Fatalf("queue list:\n%v", out)
		}
	})
	// Nothing reached any mailbox (the smtplib message above went to bob).
	s.mustCount(t, alice, 0)
	s.mustCount(t, carol, 0)
	if got := s.mustCount(t, bob, 1); !strings.Contains(string(got[0]), "Return-Path: <team@example.test>") {
		t.Errorf("bob's message:\n%q", got[0])
	}
}

// plainIR is the AUTH PLAIN initial response.
func plainIR(user, pw string) string {
	return b64("\x00" + user + "\x00" + pw)
}

// TestPlaintextAuthNever checks that with plaintext_auth = "never" AUTH is
// neither advertised nor accepted before STARTTLS, even from loopback, and
// works after it.
func TestPlaintextAuthNever(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{smtpConfig: `plaintext_auth = "never"`})
	rc := dialRaw(t, s.sub)
	if ehlo := rc.ehlo("client.test"); strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO before STARTTLS:\n%s", ehlo)
	}
	rc.send("AUTH PLAIN " + plainIR(alice, passwd) + "\r\n")
	rc.expect("538 5.7.11")
	rc.send("MAIL FROM:<" + alice + ">\r\n")
	rc.expect("530 5.7.0")
	rc.startTLS(s.tlsConfig())
	if ehlo := rc.ehlo("client.test"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") || strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO after STARTTLS:\n%s", ehlo)
	}
	rc.send("AUTH PLAIN " + plainIR(alice, passwd) + "\r\n")
	rc.expect("235")
	rc.send("MAIL FROM:<" + alice + ">\r\nRCPT TO:<" + bob + ">\r\nDATA\r\n")
	rc.expect("250")
	rc.expect("250")
	rc.expect("354")
	rc.send("Subject: after STARTTLS\r\n\r\nhi\r\n.\r\nQUIT\r\n")
	rc.expect("250 2.0.0")
	rc.expect("221")
	got := s.mustCount(t, bob, 1)
	rec := checkStored(t, got[0], alice, bob, 1, []byte("Subject: after STARTTLS\n\nhi\n"))
	checkReceived(t, rec[0], traceWant{helo: "client.test", protocol: "ESMTPSA", tls: true, user: alice, rcpt: bob})
}

// TestUnknownUser: an unknown user of a local domain is refused at RCPT
// with 550 5.1.1, while the other recipients of the message get it.
func TestUnknownUser(t *testing.T) {
	swaks := needSwaks(t)
	needPython(t)
	t.Parallel()
	s := startServer(t, serverOpts{})
	swaksRefused(t, swaks, `550 5\.1\.1`, "--server", s.smtp, "--from", "someone@remote.test", "--to", "nobody@example.test")
	swaksRefused(t, swaks, `550 5\.1\.1`, "--server", s.sub, "--tls", "--tls-verify", "--tls-ca-path", s.certFile,
		"--auth", "PLAIN", "--auth-user", alice, "--auth-password", passwd, "--from", alice, "--to", "nobody@example.test")
	// A tag does not make an unknown user known.
	swaksRefused(t, swaks, `550 5\.1\.1`, "--server", s.smtp, "--from", "someone@remote.test", "--to", "nobody+tag@example.test")

	msg := "Subject: partly refused\n\nbody\n"
	rep, r := smtplibSend(t, s, "plain", s.smtp, "none", "", "someone@remote.test",
		[]string{"nobody@example.test", alice}, testutil.CRLF(msg), false)
	if rep.Error != "" || len(rep.Refused) != 1 || rep.Refused["nobody@example.test"][0] != float64(550) ||
		!strings.HasPrefix(rep.Refused["nobody@example.test"][1].(string), "5.1.1 ") {
		t.Fatalf("want only nobody@ refused with 550 5.1.1:\n%s", r)
	}
	got := s.mustCount(t, alice, 1)
	checkStored(t, got[0], "someone@remote.test", alice, 1, []byte(msg))
}

// TestOversize: with max_message_size = 20KiB, a message one octet over
// is refused with 552 5.3.4 whether the client declared its SIZE or not,
// the session goes on, and a message of exactly the limit is accepted.
func TestOversize(t *testing.T) {
	swaks := needSwaks(t)
	needPython(t)
	t.Parallel()
	const limit = 20 << 10
	s := startServer(t, serverOpts{smtpConfig: `max_message_size = "20KiB"`})

	// sized returns a message of exactly n octets with CRLF line ends
	// and lines of at most 80 octets.
	sized := func(n int) string {
		var b strings.Builder
		b.WriteString("Subject: sized\r\n\r\n")
		for n-b.Len() > 80 {
			b.WriteString(strings.Repeat("x", 76) + "\r\n")
		}
		b.WriteString(strings.Repeat("y", n-b.Len()-2) + "\r\n")
		return b.String()
	}
	for _, n := range []int{limit, limit + 1} {
		if m := sized(n); len(m) != n || !strings.HasSuffix(m, "\r\n") {
			t.Fatalf("sized(%d) made %d octets ending %q", n, len(m), m[len(m)-4:])
		}
	}

	t.Run("EHLO-advertises-SIZE", func(t *testing.T) {
		rc := dialRaw(t, s.smtp)
		if ehlo := rc.ehlo("client.test"); !strings.Contains(ehlo, "250-SIZE 20480\n") && !strings.HasSuffix(ehlo, "250 SIZE 20480") {
			t.Errorf("EHLO does not advertise SIZE 20480:\n%s", ehlo)
		}
	})
	t.Run("declared-raw", func(t *testing.T) {
		rc := dialRaw(t, s.smtp)
		rc.ehlo("client.test")
		rc.send("MAIL FROM:<someone@remote.test> SIZE=20481\r\n")
		rc.expect("552 5.3.4")
		rc.send("MAIL FROM:<someone@remote.test> SIZE=20480\r\n")
		rc.expect("250")
		rc.send("QUIT\r\n")
		rc.expect("221")
	})
	t.Run("declared-smtplib", func(t *testing.T) {
		// smtplib declares SIZE= by itself when the server offers SIZE.
		rep, r := smtplibSend(t, s, "plain", s.smtp, "none", "", "someone@remote.test", []string{alice}, []byte(sized(limit+1)), false)
		if rep.Code != 552 || !strings.HasPrefix(rep.Message, "5.3.4 ") {
			t.Fatalf("want 552 5.3.4:\n%s", r)
		}
	})
	t.Run("actual-swaks", func(t *testing.T) {
		// swaks does not declare SIZE: the limit applies to the data.
		body := strings.Repeat(strings.Repeat("x", 70)+"\n", 400)
		swaksRefused(t, swaks, `552 5\.3\.4`, "--server", s.smtp, "--from", "someone@remote.test", "--to", alice,
			"--data", swaksData(t, "Subject: big\n\n"+body))
	})
	t.Run("actual-raw-session-continues", func(t *testing.T) {
		rc := dialRaw(t, s.smtp)
		rc.ehlo("client.test")
		rc.send("MAIL FROM:<someone@remote.test>\r\nRCPT TO:<" + alice + ">\r\nDATA\r\n")
		rc.expect("250")
		rc.expect("250")
		rc.expect("354")
		rc.send(sized(limit+1) + ".\r\n")
		rc.expect("552 5.3.4")
		// The rest of the oversize message was not read as commands, and
		// the session goes on.
		rc.send("MAIL FROM:<someone@remote.test>\r\nRCPT TO:<" + alice + ">\r\nDATA\r\n")
		rc.expect("250")
		rc.expect("250")
		rc.expect("354")
		rc.send(sized(limit-1) + ".\r\nQUIT\r\n")
		rc.expect("250 2.0.0")
		rc.expect("221")
	})
	t.Run("BDAT-exact-limit", func(t *testing.T) {
		m := sized(limit)
		rc := dialRaw(t, s.smtp)
		rc.ehlo("client.test")
		rc.send("MAIL FROM:<someone@remote.test>\r\nRCPT TO:<" + alice + ">\r\nBDAT " + itoa(len(m)-100) + "\r\n" + m[:len(m)-100] +
			"BDAT 101 LAST\r\n" + m[len(m)-100:] + "x")
		rc.expect("250")
		rc.expect("250")
		rc.expect("250")
		rc.expect("552 5.3.4")
		rc.send("MAIL FROM:<someone@remote.test>\r\nRCPT TO:<" + alice + ">\r\nBDAT " + itoa(len(m)-100) + "\r\n" + m[:len(m)-100] +
			"BDAT 100 LAST\r\n" + m[len(m)-100:] + "QUIT\r\n")
		for _, want := range []string{"250", "250", "250", "250 2.0.0", "221"} {
			rc.expect(want)
		}
	})
	got := s.mustCount(t, alice, 2)
	checkStored(t, got[0], "someone@remote.test", alice, 1, []byte(sized(limit-1)))
	checkStored(t, got[1], "someone@remote.test", alice, 1, []byte(sized(limit)))
}

// TestOversizeExactLimitDATA: RFC 1870 §4 - SIZE 20480 means a message
// of 20480 octets is accepted (postino accepts it with MAIL SIZE=20480 and
// with BDAT), and DATA must agree.
func TestOversizeExactLimitDATA(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{smtpConfig: `max_message_size = "1KiB"`})
	m := "Subject: exactly 1024 octets\r\n\r\n" + strings.Repeat(strings.Repeat("z", 62)+"\r\n", 15)
	m += strings.Repeat("w", 1024-len(m)-2) + "\r\n"
	if len(m) != 1024 {
		t.Fatalf("test message has %d octets", len(m))
	}
	rc := dialRaw(t, s.smtp)
	rc.ehlo("client.test")
	rc.send("MAIL FROM:<someone@remote.test> SIZE=1024\r\nRCPT TO:<" + alice + ">\r\nDATA\r\n")
	rc.expect("250")
	rc.expect("250")
	rc.expect("354")
	rc.send(m + ".\r\n")
	if r, err := rc.reply(); err != nil || !strings.HasPrefix(r, "250 2.0.0") {
		t.Fatalf("PRODUCT BUG: a message of exactly the advertised SIZE (1024 octets) sent with DATA is refused "+
			"(go-smtp v0.25.1's dataReader answers ErrDataTooLarge once its budget is used up, before it reads the "+
			"terminating dot); MAIL SIZE=1024 and BDAT accept it. Reply %q (%v)\n%s", r, err, rc.tr.String())
	}
	rc.send("QUIT\r\n")
	rc.expect("221")
	got := s.mustCount(t, alice, 1)
	checkStored(t, got[0], "someone@remote.test", alice, 1, []byte(m))
}

// TestSMTPUTF8: a UTF-8 mailbox (jörg@example.test) receives a message
// with UTF-8 envelope and headers sent with SMTPUTF8, and downloads it
// intact; without SMTPUTF8 such an address is refused.
func TestSMTPUTF8(t *testing.T) {
	needPython(t)
	t.Parallel()
	s := startServer(t, serverOpts{})
	const from = "rené@société.test"
	msg := "From: René <" + from + ">\n" +
		"To: Jörg <" + jorg + ">\n" +
		"Subject: Grüße aus Köln ✉\n" +
		"Date: Mon, 02 Nov 2026 10:00:00 +0000\n" +
		"Message-ID: <utf8@société.test>\n" +
		"MIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=utf-8\n" +
		"Content-Transfer-Encoding: 8bit\n" +
		"\n" +
		"Schöne Grüße, 日本語, emoji 🎉\n"
	rep, r := smtplibSend(t, s, "plain", s.smtp, "none", "", from, []string{jorg}, testutil.CRLF(msg), true)
	if rep.Error != "" || len(rep.Refused) != 0 {
		t.Fatalf("smtplib SMTPUTF8:\n%s", r)
	}
	// Without SMTPUTF8 the same addresses are refused (RFC 6531 §3.5).
	rc := dialRaw(t, s.smtp)
	rc.ehlo("client.test")
	rc.send("MAIL FROM:<" + from + ">\r\n")
	rc.expect("553 5.6.7")
	rc.send("MAIL FROM:<someone@remote.test>\r\n")
	rc.expect("250")
	rc.send("RCPT TO:<" + jorg + ">\r\n")
	rc.expect("553 5.6.7")
	rc.send("QUIT\r\n")
	rc.expect("221")

	got := s.mustCount(t, jorg, 1)
	rec := checkStored(t, got[0], from, jorg, 1, []byte(msg))
	checkReceived(t, rec[0], traceWant{helo: "py-client.test", protocol: "UTF8SMTP", rcpt: jorg})
}

// TestORCPT: the DSN ORCPT parameter (RFC 3461 §4.2) in the forms real
// MTAs send, on the MX and on LMTP. Postfix 3.7 sends the original
// recipient of an SMTPUTF8 message as "rfc822;" and the xtext of its UTF-8
// octets (see TestPostfixLMTP/SMTPUTF8); RFC 6533 adds "utf-8;".
func TestORCPT(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{})
	for _, addr := range []string{s.smtp, s.lmtp} {
		for _, c := range []struct{ rcpt, orcpt string }{
			{alice, "rfc822;alice@example.test"},
			{alice, "rfc822;alice+2Btag@example.test"},
			{jorg, "utf-8;j\\x{F6}rg@example.test"},
			{jorg, "utf-8;jörg@example.test"},
			{jorg, "rfc822;j+C3+B6rg@example.test"}, // what Postfix sends
		} {
			rc := dialRaw(t, addr)
			if addr == s.lmtp {
				rc.send("LHLO mta.test\r\n")
				rc.expect("250")
			} else {
				rc.ehlo("mta.test")
			}
			rc.send("MAIL FROM:<a@remote.test> SMTPUTF8\r\n")
			rc.expect("250")
			rc.send("RCPT TO:<" + c.rcpt + "> ORCPT=" + c.orcpt + "\r\n")
			if r, err := rc.reply(); err != nil || !strings.HasPrefix(r, "250") {
				role := "MX"
				if addr == s.lmtp {
					role = "LMTP"
				}
				t.Errorf("PRODUCT BUG (%s): RCPT TO:<%s> ORCPT=%s: got %q (%v), want 250 "+
					"(go-smtp v0.25.1 decodes xtext hexchars with strconv.ParseInt(..., 16, 8), which fails above +7F)",
					role, c.rcpt, c.orcpt, r, err)
			}
			rc.send("QUIT\r\n")
			rc.expect("221")
			rc.close()
		}
	}
}

// TestPipelining sends several transactions with PIPELINING (RFC 2920):
// first as the RFC has it (a group ends with DATA; the message, its end
// and the next group go in one write), then everything, messages
// included, in a single write.
func TestPipelining(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{})
	msg1 := "Subject: pipelined 1\n\none\n"
	msg2 := "Subject: pipelined 2\n\n.two\n"
	msg3 := "Subject: pipelined 3\n\nthree\n"
	msg4 := "Subject: pipelined 4\n\nfour\n"

	rc := dialRaw(t, s.smtp)
	if ehlo := rc.ehlo("pipe.test"); !strings.Contains(ehlo, "PIPELINING") {
		t.Fatalf("no PIPELINING:\n%s", ehlo)
	}
	rc.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<" + alice + ">\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<" + bob + ">\r\nDATA\r\n")
	rc.expect("250")
	rc.expect("250")
	rc.expect("550 5.1.1")
	rc.expect("250")
	rc.expect("354")
	rc.send(string(testutil.CRLF(msg1)) + ".\r\nMAIL FROM:<b@remote.test>\r\nRCPT TO:<" + alice + ">\r\nDATA\r\n")
	rc.expect("250 2.0.0")
	rc.expect("250")
	rc.expect("250")
	rc.expect("354")
	rc.send(string(testutil.CRLF(strings.ReplaceAll(msg2, "\n.", "\n.."))) + ".\r\nQUIT\r\n")
	rc.expect("250 2.0.0")
	rc.expect("221")
	rc.expectEOF()

	rc = dialRaw(t, s.smtp)
	rc.send("EHLO pipe.test\r\n" +
		"MAIL FROM:<c@remote.test>\r\nRCPT TO:<" + alice + ">\r\nDATA\r\n" + string(testutil.CRLF(msg3)) + ".\r\n" +
		"RSET\r\nNOOP\r\n" +
		"MAIL FROM:<d@remote.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<" + alice + ">\r\nDATA\r\n" + string(testutil.CRLF(msg4)) + ".\r\n" +
		"QUIT\r\n")
	for _, want := range []string{"250", "250", "250", "354", "250 2.0.0", "250", "250", "250", "550 5.1.1", "250", "354", "250 2.0.0", "221"} {
		rc.expect(want)
	}
	rc.expectEOF()

	got := s.mustCount(t, alice, 4)
	checkStored(t, got[0], "a@remote.test", alice, 1, []byte(msg1))
	checkStored(t, got[1], "b@remote.test", alice, 1, []byte(msg2))
	checkStored(t, got[2], "c@remote.test", alice, 1, []byte(msg3))
	checkStored(t, got[3], "d@remote.test", alice, 1, []byte(msg4))
	got = s.mustCount(t, bob, 1)
	checkStored(t, got[0], "a@remote.test", bob, 1, []byte(msg1))
}

// TestBDAT sends with CHUNKING (RFC 3030): two chunks with a CRLF split
// between them and lines that DATA would have to stuff; then a whole
// pipelined transaction ending with "BDAT 0 LAST"; then a BDAT message
// over submission after STARTTLS and AUTH.
func TestBDAT(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{})
	msg := "Subject: chunked\r\nX-Split: here\r\n\r\n.\r\n..\r\n.leading dot\r\nend\r\n"
	cut := strings.Index(msg, "here\r") + len("here\r") // the chunk ends between CR and LF
	c1, c2 := msg[:cut], msg[cut:]

	rc := dialRaw(t, s.smtp)
	if ehlo := rc.ehlo("bdat.test"); !strings.Contains(ehlo, "CHUNKING") {
		t.Fatalf("no CHUNKING:\n%s", ehlo)
	}
	rc.send("MAIL FROM:<a@remote.test>\r\n")
	rc.expect("250")
	rc.send("RCPT TO:<" + alice + ">\r\n")
	rc.expect("250")
	rc.send("BDAT " + itoa(len(c1)) + "\r\n" + c1)
	rc.expect("250")
	rc.send("BDAT " + itoa(len(c2)) + " LAST\r\n" + c2)
	rc.expect("250 2.0.0")

	msg2 := "Subject: chunked 2\r\n\r\nbody\r\n"
	rc.send("MAIL FROM:<b@remote.test>\r\nRCPT TO:<" + alice + ">\r\nBDAT " + itoa(len(msg2)) + "\r\n" + msg2 + "BDAT 0 LAST\r\nQUIT\r\n")
	for _, want := range []string{"250", "250", "250", "250 2.0.0", "221"} {
		rc.expect(want)
	}

	rc = dialRaw(t, s.sub)
	rc.ehlo("bdat.test")
	rc.startTLS(s.tlsConfig())
	rc.ehlo("bdat.test")
	rc.send("AUTH PLAIN " + plainIR(bob, passwd) + "\r\n")
	rc.expect("235")
	msg3 := "Subject: chunked over TLS\r\n\r\nbody\r\n"
	rc.send("MAIL FROM:<" + bob + ">\r\nRCPT TO:<" + alice + ">\r\nBDAT " + itoa(len(msg3)) + " LAST\r\n" + msg3 + "QUIT\r\n")
	for _, want := range []string{"250", "250", "250 2.0.0", "221"} {
		rc.expect(want)
	}

	got := s.mustCount(t, alice, 3)
	checkStored(t, got[0], "a@remote.test", alice, 1, []byte(msg))
	checkStored(t, got[1], "b@remote.test", alice, 1, []byte(msg2))
	rec := checkStored(t, got[2], bob, alice, 1, []byte(msg3))
	checkReceived(t, rec[0], traceWant{helo: "bdat.test", protocol: "ESMTPSA", tls: true, user: bob, rcpt: alice})
}

// unstuffDots removes the dot at the start of every line of SMTP data:
// RFC 5321 §4.5.2, where only CRLF ends a line, so a line that starts
// with a dot and holds a bare CR or LF is still dot-stuffed.
func unstuffDots(s string) string {
	lines := strings.Split(s, "\r\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, ".")
	}
	return strings.Join(lines, "\r\n")
}

// normalizeEOL is what postino stores for data with bare CRs and LFs:
// each bare CR and each bare LF becomes CRLF.
func normalizeEOL(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n':
			b.WriteString("\r\n")
			i++
		case s[i] == '\r' || s[i] == '\n':
			b.WriteString("\r\n")
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// TestSmuggling sends the SMTP smuggling class (a dot line after a bare LF
// or CR, followed by a second transaction hidden in the data): the hidden
// transaction must never become a second message. Each attempt must give
// exactly one reply to the whole data (one message stored, with the
// hidden commands as content, or a refusal), and the hidden recipient
// (bob) must get nothing.
func TestSmuggling(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{})
	hidden := "MAIL FROM:<admin@example.test>\r\nRCPT TO:<" + bob + ">\r\nDATA\r\nFrom: admin@example.test\r\nSubject: smuggled\r\n\r\nevil\r\n"
	ends := []string{"\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\n..\n", "\r\n\x00.\r\n"}
	accepted := 0
	var wantMsgs []string
	for _, end := range ends {
		for _, addr := range []string{s.smtp, s.sub} {
			rc := dialRaw(t, addr)
			rc.ehlo("smuggler.test")
			if addr == s.sub {
				rc.startTLS(s.tlsConfig())
				rc.ehlo("smuggler.test")
				rc.send("AUTH PLAIN " + plainIR(alice, passwd) + "\r\n")
				rc.expect("235")
			}
			from := "mallory@remote.test"
			if addr == s.sub {
				from = alice
			}
			// The header From is the envelope sender's: submission
			// refuses a From the user does not own.
			data := "From: " + from + "\r\nSubject: smuggling " + strings.NewReplacer("\r", "CR", "\n", "LF", "\x00", "NUL").Replace(end) + "\r\n\r\nfirst" + end + hidden
			rc.send("MAIL FROM:<" + from + ">\r\nRCPT TO:<" + alice + ">\r\nDATA\r\n")
			rc.expect("250")
			rc.expect("250")
			rc.expect("354")
			rc.send(data + ".\r\nQUIT\r\n")
			r, err := rc.reply()
			switch {
			case err != nil:
				t.Fatalf("end %q: reading the reply: %v\n%s", end, err, rc.tr.String())
			case strings.HasPrefix(r, "250 2.0.0 OK: queued"):
				accepted++
				wantMsgs = append(wantMsgs, from+"\x00"+data)
			case strings.HasPrefix(r, "5"):
				t.Logf("end %q refused: %s", end, r)
			default:
				t.Fatalf("end %q: unexpected reply %q\n%s", end, r, rc.tr.String())
			}
			rc.expect("221") // not a reply to a hidden command
			rc.expectEOF()
		}
	}
	s.mustCount(t, bob, 0)
	got := s.mustCount(t, alice, accepted)
	for i, w := range wantMsgs {
		from, data, _ := strings.Cut(w, "\x00")
		// The hidden transaction is content of the one message: the
		// fields are in the header of the real message, and the hidden
		// header ends up in its body.
		prefix := "Return-Path: <" + from + ">\r\nDelivered-To: " + alice + "\r\nReceived: "
		head, body, _ := strings.Cut(string(got[i]), "\r\n\r\n")
		if !strings.HasPrefix(head, prefix) || !strings.Contains(head, "\r\nFrom: "+from+"\r\nSubject: smuggling ") ||
			!strings.HasPrefix(body, "first\r\n") || !strings.HasSuffix(body, "\r\nMAIL FROM:<admin@example.test>\r\nRCPT TO:<"+bob+">\r\nDATA\r\nFrom: admin@example.test\r\nSubject: smuggled\r\n\r\nevil\r\n") {
			t.Errorf("message %d is not the whole first message:\n%q", i+1, got[i])
		}
		// The stored message is the data unstuffed, with every bare CR
		// and LF made CRLF: no other octet is lost or added.
		if _, err := parseStored(got[i], from, alice, 1, []byte(normalizeEOL(unstuffDots(data)))); err != nil {
			t.Errorf("message %d differs from the sent data with bare CR/LF made CRLF: %v\nsent: %q\ngot:  %q", i+1, err, data, got[i])
		}
	}
	if accepted == 0 {
		t.Errorf("every attempt was refused; expected the harmless ones to be delivered as one message")
	}
}

// TestDotCRLine: a data line made of a dot and a bare CR (".\r" then CRLF,
// or ".\r" then text), which no client produces (it would send "..\r"),
// is dot-stuffing (RFC 5321 §4.5.2): the dot goes, the CR stays (stored as
// CRLF), and the end-of-data line right after it still ends the message.
// A reader that lost track there would take the commands that follow for
// message data. Over the MX in clear, submission after STARTTLS, and
// submissions (implicit TLS).
func TestDotCRLine(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{})
	for _, mode := range []string{"MX", "submission-STARTTLS", "submissions-TLS"} {
		var rc *rawConn
		from := alice
		switch mode {
		case "MX":
			rc = dialRaw(t, s.smtp)
			rc.ehlo("dotcr.test")
			from = "mallory@remote.test"
		case "submission-STARTTLS":
			rc = dialRaw(t, s.sub)
			rc.ehlo("dotcr.test")
			rc.startTLS(s.tlsConfig())
		case "submissions-TLS":
			rc = dialRawTLS(t, s.subs, s.tlsConfig())
		}
		rc.ehlo("dotcr.test")
		// The header From is the envelope sender's: submission refuses
		// a From the user does not own.
		data := "From: " + from + "\r\nSubject: dot CR\r\n\r\nfirst\r\n.\rsecond\r\n.\r\r\n"
		if mode != "MX" {
			rc.send("AUTH PLAIN " + plainIR(alice, passwd) + "\r\n")
			rc.expect("235")
		}
		rc.send("MAIL FROM:<" + from + ">\r\nRCPT TO:<" + bob + ">\r\nDATA\r\n")
		rc.expect("250")
		rc.expect("250")
		rc.expect("354")
		rc.send(data + ".\r\nRSET\r\nQUIT\r\n")
		rc.expect("250 2.0.0")
		rc.expect("250") // RSET: a command, not message data
		rc.expect("221")
		rc.expectEOF()
		got := s.mustCount(t, bob, 1)
		want := "From: " + from + "\r\nSubject: dot CR\r\n\r\nfirst\r\n\r\nsecond\r\n\r\n\r\n"
		if w := normalizeEOL(unstuffDots(data)); w != want {
			t.Fatalf("%s: unstuffDots and normalizeEOL make %q", mode, w)
		}
		checkStored(t, got[0], from, bob, 1, []byte(want))
		// Start the next mode with an empty mailbox.
		c := mailtest.DialPOP3(t, s.pop3, 10*time.Second)
		if err := c.Login(bob, passwd); err != nil {
			t.Fatal(err)
		}
		if err := c.Dele(1); err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHangupMidData: a client that goes away in the middle of the message
// (DATA in clear and over TLS, with or without close_notify, and inside
// a BDAT chunk) delivers nothing.
func TestHangupMidData(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{})
	partial := "From: a@remote.test\r\nSubject: cut short\r\n\r\nline one\r\nline two\r\n."
	for i, mode := range []string{"DATA", "DATA-TLS-abrupt", "DATA-TLS-close-notify", "BDAT", "BDAT-first-chunk"} {
		before := strings.Count(s.Stderr.String(), "smtp: receiving message")
		rc := dialRaw(t, s.smtp)
		rc.ehlo("hangup.test")
		if strings.Contains(mode, "TLS") {
			rc.startTLS(s.tlsConfig())
			rc.ehlo("hangup.test")
		}
		rc.send("MAIL FROM:<a@remote.test>\r\n")
		rc.expect("250")
		rc.send("RCPT TO:<" + alice + ">\r\n")
		rc.expect("250")
		switch mode {
		case "BDAT":
			rc.send("BDAT 10\r\n0123456789")
			rc.expect("250")
			rc.send("BDAT 1000 LAST\r\n" + partial)
		case "BDAT-first-chunk":
			rc.send("BDAT 1000\r\n" + partial)
		default:
			rc.send("DATA\r\n")
			rc.expect("354")
			rc.send(partial)
		}
		switch mode {
		case "DATA-TLS-abrupt":
			rc.c.(interface{ NetConn() net.Conn }).NetConn().Close()
		default:
			rc.close() // for TLS: close_notify, then close
		}
		// Give postino time to see the end of the connection: it logs the
		// failed reception of a DATA message (for BDAT the message is
		// simply never complete). The log line only speeds this up.
		if !strings.HasPrefix(mode, "BDAT") {
			deadline := time.Now().Add(5 * time.Second)
			for strings.Count(s.Stderr.String(), "smtp: receiving message") <= before && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
		time.Sleep(200 * time.Millisecond)
		if n := len(s.mailbox(t, alice)); n != 0 {
			t.Fatalf("%s (attempt %d): %d messages delivered, want 0", mode, i, n)
		}
	}
	// The server is still fine.
	rc := dialRaw(t, s.smtp)
	rc.ehlo("hangup.test")
	rc.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<" + alice + ">\r\nDATA\r\n")
	rc.expect("250")
	rc.expect("250")
	rc.expect("354")
	rc.send("Subject: whole\r\n\r\nok\r\n.\r\nQUIT\r\n")
	rc.expect("250 2.0.0")
	rc.expect("221")
	got := s.mustCount(t, alice, 1)
	checkStored(t, got[0], "a@remote.test", alice, 1, []byte("Subject: whole\n\nok\n"))
}

// TestAliasesCatchAllPlus sends to aliases, a nested alias, a catch-all
// and plus-addresses, and checks each mailbox gets one copy with the right
// Delivered-To and the original recipient in Received's "for".
func TestAliasesCatchAllPlus(t *testing.T) {
	needPython(t)
	t.Parallel()
	s := startServer(t, serverOpts{})
	type copyWant struct{ mailbox, deliveredTo, forRcpt string }
	cases := []struct {
		rcpts []string
		want  []copyWant
	}{
		{[]string{"sales@example.test"}, []copyWant{{alice, alice, "sales@example.test"}, {bob, bob, "sales@example.test"}}},
		{[]string{"team@example.test"}, []copyWant{{alice, alice, "team@example.test"}, {bob, bob, "team@example.test"}, {carol, carol, "team@example.test"}}},
		{[]string{"anything@catch.test"}, []copyWant{{carol, carol, "anything@catch.test"}}},
		{[]string{"alice+news@example.test"}, []copyWant{{alice, "alice+news@example.test", "alice+news@example.test"}}},
		{[]string{"sales+q4@example.test"}, []copyWant{{alice, alice, "sales+q4@example.test"}, {bob, bob, "sales+q4@example.test"}}},
		{[]string{"carol+x@catch.test"}, []copyWant{{carol, "carol+x@catch.test", "carol+x@catch.test"}}},
		// One copy per mailbox: alice directly and through the alias.
		{[]string{alice, "sales@example.test"}, []copyWant{{alice, alice, alice}, {bob, bob, "sales@example.test"}}},
		{[]string{"SALES@Example.Test"}, []copyWant{{alice, alice, "SALES@example.test"}, {bob, bob, "SALES@example.test"}}},
	}
	want := map[string][]copyWant{}
	msgs := map[string][]string{}
	for i, c := range cases {
		msg := "Subject: alias case " + itoa(i) + "\n\nto " + strings.Join(c.rcpts, ", ") + "\n"
		rep, r := smtplibSend(t, s, "plain", s.smtp, "none", "", "someone@remote.test", c.rcpts, testutil.CRLF(msg), false)
		if rep.Error != "" || len(rep.Refused) != 0 {
			t.Fatalf("sending to %v:\n%s", c.rcpts, r)
		}
		for _, w := range c.want {
			want[w.mailbox] = append(want[w.mailbox], w)
			msgs[w.mailbox] = append(msgs[w.mailbox], msg)
		}
	}
	for _, mb := range []string{alice, bob, carol, jorg} {
		got := s.mustCount(t, mb, len(want[mb]))
		for i, w := range want[mb] {
			received, err := parseStored(got[i], "someone@remote.test", w.deliveredTo, 1, []byte(msgs[mb][i]))
			if err != nil {
				t.Errorf("%s message %d (want Delivered-To %s): %v\n%q", mb, i+1, w.deliveredTo, err, got[i])
				continue
			}
			checkReceived(t, received[0], traceWant{helo: "py-client.test", protocol: "ESMTP", rcpt: w.forRcpt})
		}
	}
}
