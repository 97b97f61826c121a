package pop3

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// openMode connects in the clear, with STLS or with implicit TLS and
// returns a transcript after the greeting (and STLS), or nil when the
// server refused the connection as over its limits.
func (ts *testServer) openMode(t *testing.T, mode string) *transcript {
	t.Helper()
	addr := ts.addr
	if mode == "tls" {
		addr = ts.tlsAddr
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if mode == "tls" {
		c = tls.Client(c, ts.tlsClient)
	}
	tr := &transcript{t: t, conn: c, r: bufio.NewReader(c)}
	line := tr.readLine()
	switch {
	case strings.HasPrefix(line, "-ERR [SYS/TEMP] Too many connections"):
		return nil
	case line != "+OK postino ready.":
		t.Fatalf("greeting %q", line)
	}
	if mode == "stls" {
		tr.do("STLS", `^\+OK`)
		tc := tls.Client(c, ts.tlsClient)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		tr.conn, tr.r = tc, bufio.NewReader(tc)
	}
	return tr
}

// TestReconnectAtLimit: a client using all its per-IP connections that
// ends one (QUIT, +OK read; or a dropped connection) and reconnects at
// once is never refused, in the clear, after STLS and over implicit TLS.
func TestReconnectAtLimit(t *testing.T) {
	const limit, rounds = 3, 60
	for _, mode := range []string{"plain", "stls", "tls"} {
		t.Run(mode, func(t *testing.T) {
			ts := startServer(t, func(s *Server) { s.MaxConnectionsPerIP = limit })
			conns := make([]*transcript, limit)
			for i := range conns {
				if conns[i] = ts.openMode(t, mode); conns[i] == nil {
					t.Fatalf("connection %d of %d refused", i+1, limit)
				}
			}
			for i := range rounds {
				k := i % limit
				if k == 0 {
					// A logged-in session: QUIT runs the UPDATE state.
					conns[k].do("USER alice@example.test", `^\+OK`)
					conns[k].do("PASS secret pass", `^\+OK Logged in`)
				}
				conns[k].do("QUIT", `^\+OK`)
				if conns[k] = ts.openMode(t, mode); conns[k] == nil {
					t.Fatalf("round %d: reconnecting right after QUIT refused", i+1)
				}
			}
			for i := range rounds {
				k := i % limit
				conns[k].conn.Close()
				if conns[k] = ts.openMode(t, mode); conns[k] == nil {
					t.Fatalf("round %d: reconnecting right after closing refused", i+1)
				}
			}
			// The limit itself still holds.
			start := time.Now()
			if tr := ts.openMode(t, mode); tr != nil {
				t.Fatalf("connection %d of %d accepted", limit+1, limit)
			}
			if d := time.Since(start); d < slotWait {
				t.Fatalf("refused after %v, before waiting %v for a slot", d, slotWait)
			}
		})
	}
}

// TestSlotWaitersBounded: an address at its limit cannot pile up
// connections waiting for a slot: beyond as many as its limit, more are
// refused at once, and a waiter is refused when no slot frees in time.
func TestSlotWaitersBounded(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.MaxConnectionsPerIP = 1 })
	ts.dial(t)
	start := time.Now()
	waiter, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Close()
	testutil.WaitFor(t, 5*time.Second, "a waiter", func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		return len(ts.waiting) == 1
	})
	if tr := ts.openMode(t, "plain"); tr != nil {
		t.Fatal("a connection beyond the waiters was accepted")
	}
	if d := time.Since(start); d >= slotWait {
		t.Fatalf("a connection beyond the waiters was refused after %v, not at once", d)
	}
	tr := &transcript{t: t, conn: waiter, r: bufio.NewReader(waiter)}
	tr.expect(`^-ERR \[SYS/TEMP\] Too many connections`)
	if d := time.Since(start); d < slotWait {
		t.Fatalf("the waiter was refused after %v, before slotWait", d)
	}
}
