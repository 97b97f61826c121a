package smtp_test

// Tests of the changes made to this copy of go-smtp; POSTINO.md lists
// each change and its test.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// exchange writes each command and checks that the reply line starts with
// want.
func exchange(t *testing.T, c io.Writer, scanner interface {
	Scan() bool
	Text() string
}, steps [][2]string) {
	t.Helper()
	for _, st := range steps {
		io.WriteString(c, st[0]+"\r\n")
		if !scanner.Scan() {
			t.Fatalf("%q: connection closed", st[0])
		}
		if got := scanner.Text(); !strings.HasPrefix(got, st[1]) {
			t.Fatalf("%q: got %q, want %q", st[0], got, st[1])
		}
	}
}

// A command out of sequence is "503 Bad sequence of commands" (RFC 5321
// §4.3.2, RFC 4954 §4); 502 is for commands not implemented.
func TestPostinoSequenceErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ehlo  bool
		setup []string // after EHLO, each answered 250
		cmd   string
		want  string
	}{
		{"MAIL before EHLO", false, nil, "MAIL FROM:<a@example.test>", "503 5.5.1 "},
		{"AUTH before EHLO", false, nil, "AUTH PLAIN", "503 5.5.1 "},
		{"RCPT without MAIL", true, nil, "RCPT TO:<b@example.test>", "503 5.5.1 "},
		{"RCPT after RSET", true, []string{"MAIL FROM:<a@example.test>", "RSET"}, "RCPT TO:<b@example.test>", "503 5.5.1 "},
		{"DATA without MAIL", true, nil, "DATA", "503 5.5.1 "},
		{"DATA without RCPT", true, []string{"MAIL FROM:<a@example.test>"}, "DATA", "503 5.5.1 "},
		{"DATA after RSET", true, []string{"MAIL FROM:<a@example.test>", "RCPT TO:<b@example.test>", "RSET"}, "DATA", "503 5.5.1 "},
		{"AUTH during a transaction", true, []string{"MAIL FROM:<a@example.test>"}, "AUTH PLAIN", "503 5.5.1 "},
		{"AUTH without mechanism", true, nil, "AUTH", "501 5.5.4 "},
		{"command not implemented", true, nil, "EXPN staff", "502 5.5.1 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, s, c, scanner := testServerGreeted(t)
			defer s.Close()
			defer c.Close()
			var steps [][2]string
			if tc.ehlo {
				steps = append(steps, [2]string{"HELO localhost", "250 "})
			}
			for _, cmd := range tc.setup {
				steps = append(steps, [2]string{cmd, "250 "})
			}
			steps = append(steps, [2]string{tc.cmd, tc.want})
			exchange(t, c, scanner, steps)
		})
	}
}

// BDAT without a recipient is 503 too, and its chunk is still discarded.
func TestPostinoBdatWithoutRcpt(t *testing.T) {
	_, s, c, scanner, _ := testServerEhlo(t)
	defer s.Close()
	defer c.Close()
	io.WriteString(c, "BDAT 6 LAST\r\nNOOP\r\n")
	if !scanner.Scan() || !strings.HasPrefix(scanner.Text(), "503 5.5.1 ") {
		t.Fatalf("BDAT without RCPT: got %q, want 503 5.5.1", scanner.Text())
	}
	exchange(t, c, scanner, [][2]string{
		{"MAIL FROM:<a@example.test>", "250 "},
		{"BDAT 6 LAST\r\nNOOP", "503 5.5.1 "},
		{"NOOP", "250 "},
	})
}

// testTLSConfigs returns a server and a client TLS configuration for a
// fresh self-signed certificate for 127.0.0.1.
func testTLSConfigs(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{RootCAs: pool, ServerName: "localhost"}
	return server, client
}

// startTLS says STARTTLS on c and returns the TLS connection, greeted
// again with EHLO.
func startTLS(t *testing.T, c net.Conn, scanner *bufio.Scanner, cfg *tls.Config) (*tls.Conn, *bufio.Scanner) {
	t.Helper()
	exchange(t, c, scanner, [][2]string{{"STARTTLS", "220 "}})
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	ts := bufio.NewScanner(tc)
	io.WriteString(tc, "EHLO localhost\r\n")
	for ts.Scan() {
		if strings.HasPrefix(ts.Text(), "250 ") {
			return tc, ts
		}
	}
	t.Fatal("no EHLO reply over TLS")
	return nil, nil
}

// A BDAT chunk cut short, however the stream ends, aborts the transaction:
// nothing is delivered, the backend's reader fails and, when the client
// can still read, it is told 421.
func TestPostinoBdatShortChunk(t *testing.T) {
	for _, end := range []string{"EOF", "close_notify", "reset", "timeout"} {
		t.Run(end, func(t *testing.T) {
			serverTLS, clientTLS := testTLSConfigs(t)
			be, s, c, scanner := testServerGreeted(t, func(s *smtp.Server) {
				s.TLSConfig = serverTLS
				if end == "timeout" {
					s.ReadTimeout = 300 * time.Millisecond
				}
			})
			defer s.Close()
			defer c.Close()
			be.dataErrors = make(chan error, 1)
			exchange(t, c, scanner, [][2]string{{"EHLO localhost", "250-"}})
			for scanner.Scan() && !strings.HasPrefix(scanner.Text(), "250 ") {
			}
			var w io.Writer = c
			if end == "close_notify" {
				tc, ts := startTLS(t, c, scanner, clientTLS)
				w, scanner = tc, ts
			}
			exchange(t, w, scanner, [][2]string{
				{"MAIL FROM:<a@example.test>", "250 "},
				{"RCPT TO:<b@example.test>", "250 "},
			})
			io.WriteString(w, "BDAT 100 LAST\r\n"+"Subject: cut short\r\n\r\nHi\r\n")
			switch end {
			case "EOF":
				c.(*net.TCPConn).CloseWrite()
			case "close_notify":
				w.(*tls.Conn).CloseWrite()
			case "reset":
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
			select {
			case err := <-be.dataErrors:
				if err != smtp.ErrDataReset {
					t.Errorf("Data got %v, want ErrDataReset", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Data did not end")
			}
			if len(be.messages)+len(be.anonmsgs) != 0 {
				t.Errorf("a truncated message was delivered: %q", be.anonmsgs[0].Data)
			}
			if end != "reset" {
				if !scanner.Scan() || !strings.HasPrefix(scanner.Text(), "421 4.4.2 ") {
					t.Errorf("reply %q, want 421 4.4.2", scanner.Text())
				}
				if scanner.Scan() {
					t.Errorf("connection left open, then %q", scanner.Text())
				}
			}
		})
	}
}

// STARTTLS inside TLS is out of sequence: 503, not 502.
func TestPostinoStartTLSTwice(t *testing.T) {
	serverTLS, clientTLS := testTLSConfigs(t)
	_, s, c, scanner, _ := testServerEhlo(t, func(s *smtp.Server) { s.TLSConfig = serverTLS })
	defer s.Close()
	defer c.Close()
	tc, ts := startTLS(t, c, scanner, clientTLS)
	exchange(t, tc, ts, [][2]string{{"STARTTLS", "503 5.5.1 "}, {"NOOP", "250 "}})
}

// Message lines are bounded only by the message size (RFC 5321
// §4.5.3.1: as few limits as possible): DATA and BDAT deliver a 5000- and
// a 100000-octet line intact, BDAT also when the chunk comes in the same
// write as its command; command lines keep MaxLineLength.
func TestPostinoLongMessageLines(t *testing.T) {
	for _, n := range []int{5000, 100000} {
		body := "Subject: long\r\n\r\n" + strings.Repeat("x", n) + "\r\nend\r\n"
		for _, mode := range []string{"DATA", "BDAT", "LMTP DATA"} {
			t.Run(fmt.Sprintf("%s-%d", mode, n), func(t *testing.T) {
				var be *backend
				var s *smtp.Server
				var c net.Conn
				var scanner *bufio.Scanner
				if mode == "LMTP DATA" {
					be, s, c, scanner = testServerGreetedLMTP(t, func(s *smtp.Server) { s.LMTP = true })
					exchange(t, c, scanner, [][2]string{{"LHLO localhost", "250-"}})
				} else {
					be, s, c, scanner = testServerGreeted(t)
					exchange(t, c, scanner, [][2]string{{"EHLO localhost", "250-"}})
				}
				defer s.Close()
				defer c.Close()
				for scanner.Scan() && !strings.HasPrefix(scanner.Text(), "250 ") {
				}
				exchange(t, c, scanner, [][2]string{
					{"MAIL FROM:<a@example.test>", "250 "},
					{"RCPT TO:<b@example.test>", "250 "},
				})
				if mode == "BDAT" {
					io.WriteString(c, fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
				} else {
					exchange(t, c, scanner, [][2]string{{"DATA", "354 "}})
					io.WriteString(c, body+".\r\n")
				}
				if !scanner.Scan() || !strings.HasPrefix(scanner.Text(), "250 ") {
					t.Fatalf("reply %q, want 250", scanner.Text())
				}
				if len(be.anonmsgs) != 1 || string(be.anonmsgs[0].Data) != body {
					t.Fatal("the message was not delivered intact")
				}
				// The connection is still in step for commands, and
				// they are still limited.
				exchange(t, c, scanner, [][2]string{
					{"NOOP", "250 "},
					{"NOOP " + strings.Repeat("y", s.MaxLineLength), "500 5.4.0 "},
				})
			})
		}
	}
}

// xtext (RFC 3461 §4) encodes octets: an ORCPT of "rfc822;j+C3+B6rg@..."
// (how Postfix passes on a UTF-8 recipient) is the UTF-8 address
// "jörg@...", while encoded control characters stay refused.
func TestPostinoXtextOctets(t *testing.T) {
	be, s, c, scanner, _ := testServerEhlo(t, func(s *smtp.Server) { s.EnableDSN = true })
	defer s.Close()
	defer c.Close()
	exchange(t, c, scanner, [][2]string{
		{"MAIL FROM:<a@example.test> ENVID=id+2B1", "250 "},
		{"RCPT TO:<j@example.test> ORCPT=rfc822;j+C3+B6rg@example.test", "250 "},
		{"RCPT TO:<k@example.test> ORCPT=rfc822;k+0Ak@example.test", "501 5.5.4 "},
		{"RCPT TO:<l@example.test> ORCPT=rfc822;l+C3@example.test", "501 5.5.4 "}, // not UTF-8
		{"DATA", "354 "},
		{"Subject: x\r\n\r\nx\r\n.", "250 "},
	})
	msg := be.anonmsgs[0]
	if got := msg.Opts.EnvelopeID; got != "id+1" {
		t.Errorf("ENVID %q, want id+1", got)
	}
	if len(msg.RcptOpts) != 1 {
		t.Fatalf("%d recipients accepted, want 1", len(msg.RcptOpts))
	}
	if got := msg.RcptOpts[0].OriginalRecipient; got != "jörg@example.test" {
		t.Errorf("ORCPT %q, want jörg@example.test", got)
	}
}

// A DATA message of exactly MaxMessageBytes octets is accepted; one more
// octet is refused with 552 (RFC 1870 §6.3).
func TestPostinoDataExactSize(t *testing.T) {
	body := "Subject: exact\r\n\r\nfits\r\n"
	for _, tc := range []struct {
		limit int
		want  string
	}{
		{len(body), "250 "},
		{len(body) - 1, "552 5.3.4 "},
	} {
		t.Run(fmt.Sprint(tc.limit), func(t *testing.T) {
			be, s, c, scanner, _ := testServerEhlo(t, func(s *smtp.Server) { s.MaxMessageBytes = int64(tc.limit) })
			defer s.Close()
			defer c.Close()
			exchange(t, c, scanner, [][2]string{
				{"MAIL FROM:<a@example.test>", "250 "},
				{"RCPT TO:<b@example.test>", "250 "},
				{"DATA", "354 "},
				{body + ".", tc.want},
				{"NOOP", "250 "},
			})
			if tc.want == "250 " && (len(be.anonmsgs) != 1 || string(be.anonmsgs[0].Data) != body) {
				t.Error("the message was not delivered intact")
			}
		})
	}
}

// hookBackend is a backend whose sessions pass Data to a function.
type hookBackend struct {
	data func(r io.Reader) error
}

func (b *hookBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return b, nil }
func (b *hookBackend) Reset()                                      {}
func (b *hookBackend) Logout() error                               { return nil }
func (b *hookBackend) Mail(string, *smtp.MailOptions) error        { return nil }
func (b *hookBackend) Rcpt(string, *smtp.RcptOptions) error        { return nil }
func (b *hookBackend) Data(r io.Reader) error                      { return b.data(r) }

// A BDAT message aborted by an oversize chunk whose Data returns late,
// after the next BDAT message has started, does not answer for that
// message: each message gets its own result.
func TestPostinoBdatAbortedResultIsolated(t *testing.T) {
	firstFailed := make(chan struct{})   // the aborted message's Data saw the reset
	firstReturned := make(chan struct{}) // ... and returned its error
	secondStarted := make(chan struct{}) // the next message's Data began
	be := &hookBackend{}
	calls := 0
	be.data = func(r io.Reader) error {
		calls++
		if calls == 1 {
			_, err := io.Copy(io.Discard, r)
			close(firstFailed)
			<-secondStarted
			defer close(firstReturned)
			return fmt.Errorf("aborted: %w", err)
		}
		close(secondStarted)
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		<-firstReturned
		// Leave the aborted message's goroutine time to send its result
		// (into the wrong channel, before the fix).
		time.Sleep(100 * time.Millisecond)
		if string(b) != "second" {
			return fmt.Errorf("got %q", b)
		}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := smtp.NewServer(be)
	s.Domain = "localhost"
	s.MaxMessageBytes = 20
	go s.Serve(l)
	defer s.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	scanner := bufio.NewScanner(c)
	scanner.Scan()
	exchange(t, c, scanner, [][2]string{
		{"HELO localhost", "250 "},
		{"MAIL FROM:<a@example.test>", "250 "},
		{"RCPT TO:<b@example.test>", "250 "},
		{"BDAT 7\r\nfirst", "250 "}, // the chunk is "first\r\n"
		{"BDAT 30 LAST\r\n" + strings.Repeat("z", 28), "552 5.3.4 "},
	})
	<-firstFailed
	exchange(t, c, scanner, [][2]string{
		{"MAIL FROM:<a@example.test>", "250 "},
		{"RCPT TO:<b@example.test>", "250 "},
	})
	io.WriteString(c, "BDAT 6 LAST\r\nsecond")
	if !scanner.Scan() || !strings.HasPrefix(scanner.Text(), "250 ") {
		t.Fatalf("the next message got %q, want 250", scanner.Text())
	}
}
