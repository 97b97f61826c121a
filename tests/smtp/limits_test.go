package smtp

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// greeting connects to addr and returns the server's first reply line.
func greeting(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	return strings.TrimRight(line, "\r\n")
}

// TestTrustedNetworksConfig: with the default smtp.trusted_networks
// (loopback), a loopback client may open more connections than
// smtp.max_connections_per_ip; with another network trusted, the limit
// applies to it; and trust gives no relaying.
func TestTrustedNetworksConfig(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{smtpConfig: "max_connections_per_ip = 2\n"})
	for i := range 6 {
		if g := greeting(t, s.smtp); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("trusted loopback, connection %d: %q", i+1, g)
		}
	}
	rc := dialRaw(t, s.smtp)
	rc.ehlo("relay.test")
	rc.send("MAIL FROM:<someone@remote.test>\r\n")
	rc.expect("250")
	rc.send("RCPT TO:<victim@elsewhere.test>\r\n")
	rc.expect("554 5.7.1")

	s = startServer(t, serverOpts{smtpConfig: "max_connections_per_ip = 2\ntrusted_networks = [\"192.0.2.0/24\"]\n"})
	for i := range 2 {
		if g := greeting(t, s.smtp); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("connection %d: %q", i+1, g)
		}
	}
	if g := greeting(t, s.smtp); !strings.HasPrefix(g, "421 4.7.0 Too many connections") {
		t.Fatalf("third connection from an untrusted address: %q", g)
	}
}
