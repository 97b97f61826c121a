package smtp

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"testing"
)

// TestLongLines: message lines longer than RFC 5321's 1000 octets, as
// real mail has them (unwrapped HTML, base64 written on one line), are
// accepted over SMTP (DATA and BDAT) and LMTP, stored, and downloaded
// over POP3 byte for byte. Command lines stay limited.
func TestLongLines(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{})
	var sent []string
	for _, n := range []int{5000, 100000} {
		for _, mode := range []string{"DATA", "BDAT", "LMTP"} {
			msg := "From: a@remote.test\r\nSubject: " + mode + " " + itoa(n) + "\r\n\r\n<p>" +
				strings.Repeat("long line ", n/10)[:n] + "</p>\r\nend\r\n"
			var rc *rawConn
			if mode == "LMTP" {
				rc = dialRaw(t, s.lmtp)
				rc.send("LHLO lines.test\r\n")
				rc.expect("250")
			} else {
				rc = dialRaw(t, s.smtp)
				rc.ehlo("lines.test")
			}
			rc.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<" + alice + ">\r\n")
			rc.expect("250")
			rc.expect("250")
			if mode == "BDAT" {
				rc.send("BDAT " + itoa(len(msg)) + " LAST\r\n" + msg)
			} else {
				rc.send("DATA\r\n")
				rc.expect("354")
				rc.send(msg + ".\r\n")
			}
			rc.expect("250 2.")
			rc.send("NOOP " + strings.Repeat("x", 3000) + "\r\n")
			rc.expect("500 5.4.0")
			sent = append(sent, msg)
		}
	}
	got := s.mustCount(t, alice, len(sent))
	for i, msg := range sent {
		checkStored(t, got[i], "a@remote.test", alice, 1, []byte(msg))
	}
}

// TestBDATCutShort: a BDAT chunk cut short by the client (FIN in the
// clear, TLS close_notify after STARTTLS and on implicit TLS) is answered
// 421 and nothing is stored; before, over TLS, the truncated message was
// delivered.
func TestBDATCutShort(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{})
	for _, mode := range []string{"MX plain", "submission STARTTLS", "submissions implicit TLS"} {
		var rc *rawConn
		switch mode {
		case "MX plain":
			rc = dialRaw(t, s.smtp)
			rc.ehlo("cut.test")
			rc.send("MAIL FROM:<a@remote.test>\r\n")
		case "submission STARTTLS":
			rc = dialRaw(t, s.sub)
			rc.ehlo("cut.test")
			rc.startTLS(s.tlsConfig())
			rc.ehlo("cut.test")
			rc.send("AUTH PLAIN " + plainIR(bob, passwd) + "\r\n")
			rc.expect("235")
			rc.send("MAIL FROM:<" + bob + ">\r\n")
		case "submissions implicit TLS":
			c, err := tls.Dial("tcp", s.subs, s.tlsConfig())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			rc = &rawConn{t: t, c: c}
			rc.r = bufio.NewReader(c)
			rc.expect("220")
			rc.ehlo("cut.test")
			rc.send("AUTH PLAIN " + plainIR(bob, passwd) + "\r\n")
			rc.expect("235")
			rc.send("MAIL FROM:<" + bob + ">\r\n")
		}
		rc.expect("250")
		rc.send("RCPT TO:<" + alice + ">\r\n")
		rc.expect("250")
		rc.send("BDAT 100 LAST\r\nSubject: cut short\r\n\r\nHi\r\n") // 26 octets of 100
		switch c := rc.c.(type) {
		case *tls.Conn:
			c.CloseWrite() // close_notify
		case *net.TCPConn:
			c.CloseWrite()
		}
		rc.expect("421 4.4.2")
		rc.expectEOF()
	}
	s.mustCount(t, alice, 0)
}
