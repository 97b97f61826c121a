package dnscheck

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// fakeServer answers like an SMTP server offering STARTTLS; inject makes
// it send a line right after its "220 go ahead", before the handshake
// (STARTTLS command injection, CVE-2011-0411 style).
func fakeServer(t *testing.T, cert testutil.Cert, inject bool) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				c.Write([]byte("220 fake ESMTP\r\n"))
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					switch strings.ToUpper(strings.TrimSpace(line)) {
					case "STARTTLS":
						reply := "220 go ahead\r\n"
						if inject {
							reply += "250 injected\r\n"
						}
						c.Write([]byte(reply))
						tc := tls.Server(c, cert.Config())
						tc.Handshake()
						return
					default:
						c.Write([]byte("250-fake\r\n250 STARTTLS\r\n"))
					}
				}
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// TestPorts: a reachable STARTTLS port with a trusted certificate is OK,
// its expiry within ExpiryWarn a WARN, an untrusted certificate, a closed
// port and a server that sends data before the handshake FAIL.
func TestPorts(t *testing.T) {
	cert := testutil.NewCert(t, "mail.example.test") // valid for a day
	good := fakeServer(t, cert, false)
	hostile := fakeServer(t, cert, true)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	p := &Plan{Domain: "example.test", Host: "mail.example.test", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	for _, c := range []struct {
		name   string
		port   int
		opts   Options
		status Status
		detail string
	}{
		{"trusted", good, Options{Roots: cert.Pool(), ExpiryWarn: time.Hour}, OK, "certificate for mail.example.test valid until"},
		{"expiring", good, Options{Roots: cert.Pool()}, Warn, "expires soon"},
		{"untrusted", good, Options{}, Fail, "failed to verify certificate"},
		{"injection", hostile, Options{Roots: cert.Pool()}, Fail, "the server sent data before the TLS handshake"},
		{"closed", closedPort, Options{Roots: cert.Pool()}, Fail, "not reachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Timeout, c.opts.Now = 5*time.Second, time.Now
			if c.opts.ExpiryWarn == 0 {
				c.opts.ExpiryWarn = DefaultExpiryWarn
			}
			ch := &checker{p: p, o: c.opts}
			ch.probe(context.Background(), SvcSMTP, "starttls", netip.AddrPortFrom(p.Addrs[0], uint16(c.port)))
			last := ch.out[len(ch.out)-1]
			if last.Status != c.status || !strings.Contains(last.Detail, c.detail) {
				t.Fatalf("got %s, want %s with %q", last, c.status, c.detail)
			}
		})
	}
}
