package testutil

import (
	"crypto/tls"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestNewCertHandshake proves that a client trusting Pool completes a TLS
// handshake with a server presenting Config, under a DNS name and an IP
// address of the certificate, and refuses a name it does not hold.
func TestNewCertHandshake(t *testing.T) {
	c := NewCert(t, "localhost", "127.0.0.1")
	if c.Leaf.Subject.CommonName != "localhost" || len(c.Leaf.DNSNames) != 1 || len(c.Leaf.IPAddresses) != 1 {
		t.Fatalf("names: CN %q, DNS %v, IP %v", c.Leaf.Subject.CommonName, c.Leaf.DNSNames, c.Leaf.IPAddresses)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", c.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				conn.(*tls.Conn).Handshake()
				conn.Close()
			}()
		}
	}()
	dial := func(name string) error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr().String(), &tls.Config{RootCAs: c.Pool(), ServerName: name})
		if err == nil {
			conn.Close()
		}
		return err
	}
	for _, name := range []string{"localhost", "127.0.0.1"} {
		if err := dial(name); err != nil {
			t.Errorf("handshake as %s: %v", name, err)
		}
	}
	if err := dial("evil.example"); err == nil {
		t.Error("handshake succeeded for a name the certificate does not hold")
	}
	cp, kp := c.PEM(t)
	if _, err := tls.X509KeyPair(cp, kp); err != nil {
		t.Errorf("PEM pair: %v", err)
	}
}

func TestWaitFor(t *testing.T) {
	var n atomic.Int32
	WaitFor(t, 5*time.Second, "three polls", func() bool { return n.Add(1) >= 3 })
	if n.Load() != 3 {
		t.Errorf("cond called %d times; want 3", n.Load())
	}
	r := runHelper(t, func(tb testing.TB) { WaitFor(tb, 20*time.Millisecond, "never", func() bool { return false }) })
	if !r.failed {
		t.Error("WaitFor did not fail the test when the condition never held")
	}
}

// TestPostfixMasterCF checks the master.cf template: smtpd on the given
// address, every chroot column n (an unprivileged instance cannot
// chroot), the services the tests and the benchmark rely on.
func TestPostfixMasterCF(t *testing.T) {
	cf := PostfixMasterCF("127.0.0.1:2525")
	lines := strings.Split(strings.TrimSpace(cf), "\n")
	if f := strings.Fields(lines[0]); len(f) < 8 || f[0] != "127.0.0.1:2525" || f[1] != "inet" || f[7] != "smtpd" {
		t.Errorf("first line %q: want smtpd on 127.0.0.1:2525", lines[0])
	}
	services := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 8 {
			t.Errorf("line %q: fewer than 8 columns", l)
			continue
		}
		if f[4] != "n" {
			t.Errorf("line %q: chroot column %q, want n", l, f[4])
		}
		services[f[0]] = true
	}
	for _, s := range []string{"pickup", "cleanup", "qmgr", "lmtp", "virtual", "bounce", "postlog"} {
		if !services[s] {
			t.Errorf("service %s missing", s)
		}
	}
	if strings.Contains(cf, "SMTPD_ADDRESS") {
		t.Error("placeholder left in the output")
	}
}
