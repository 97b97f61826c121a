package smtpin

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestRefusedSilentConnections: with every connection slot in use,
// connections that send nothing, not even a ClientHello on the
// implicit-TLS (submissions) port, are all closed within the refusal
// deadline; those beyond the refusals allowed at a time at once; no
// goroutine stays behind; the connection in use is untouched.
func TestRefusedSilentConnections(t *testing.T) {
	for _, mode := range []string{"plain", "starttls", "tls"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, RoleSubmission, func(c *envConfig) {
				c.tls = true
				c.opts.MaxConnections = 1
			})
			held := e.dialMode(mode)
			addr := e.addr
			if mode == "tls" {
				addr = e.tlsAddr
			}
			before := runtime.NumGoroutine()
			const n = 200
			limit := rejectTimeout + 3*time.Second
			closed, atOnce := testutil.SilentFlood(t, addr, n, limit)
			t.Logf("%d of %d silent connections closed, %d at once", closed, n, atOnce)
			if closed != n {
				t.Fatalf("%d of %d silent connections closed within %v", closed, n, limit)
			}
			if mode == "tls" && atOnce < n-maxRefusing {
				t.Errorf("%d silent connections closed at once, want at least %d", atOnce, n-maxRefusing)
			}
			deadline := time.Now().Add(2 * time.Second)
			for runtime.NumGoroutine() > before+5 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if g := runtime.NumGoroutine(); g > before+5 {
				t.Errorf("%d goroutines after the flood, %d before", g, before)
			}
			held.cmd(250, "", "NOOP")
		})
	}
}

// addrConn is a connection with a made-up remote address.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// fakeListener hands out the server ends of pipes whose clients seem to
// come from the addresses given.
type fakeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *fakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *fakeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv6loopback, Port: 25} }

// TestPerIPLimitIPv6Prefix: MaxConnectionsPerIP counts an IPv6 /64 as one
// address: of 50 connections from 50 addresses of one /64, one is
// admitted; one from another /64, and IPv4 addresses, have their own
// slots.
func TestPerIPLimitIPv6Prefix(t *testing.T) {
	e := newEnv(t, RoleMX, func(c *envConfig) { c.opts.MaxConnectionsPerIP = 1 })
	l := &fakeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
	go e.srv.Serve(l)
	// The first line each client reads: its greeting or its refusal.
	first := func(remote string) chan string {
		ch := make(chan string, 1)
		client, server := net.Pipe()
		t.Cleanup(func() { client.Close() })
		go func() {
			client.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, _ := bufio.NewReader(client).ReadString('\n')
			ch <- line
		}()
		l.conns <- addrConn{server, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(remote))}
		return ch
	}
	var lines []chan string
	for i := range 50 {
		lines = append(lines, first(fmt.Sprintf("[2001:db8:1:2:%x::%x]:4%03d", i, i+1, i)))
	}
	admitted, refused := 0, 0
	for _, ch := range lines {
		switch line := <-ch; {
		case strings.HasPrefix(line, "220 "):
			admitted++
		case strings.HasPrefix(line, "421 4.7.0 Too many connections"):
			refused++
		default:
			t.Errorf("first line %q", line)
		}
	}
	if admitted != 1 || refused != 49 {
		t.Fatalf("50 connections from one /64: %d admitted, %d refused; want 1 and 49", admitted, refused)
	}
	for _, remote := range []string{"[2001:db8:1:3::1]:1", "192.0.2.1:1", "192.0.2.2:1", "[::ffff:192.0.2.3]:1"} {
		if line := <-first(remote); !strings.HasPrefix(line, "220 ") {
			t.Errorf("%s: first line %q, want a greeting", remote, line)
		}
	}
	// An IPv4-mapped address is its IPv4 address.
	if line := <-first("[::ffff:192.0.2.1]:2"); !strings.HasPrefix(line, "421 ") {
		t.Errorf("IPv4-mapped address of a busy IPv4 address: first line %q, want 421", line)
	}
}
