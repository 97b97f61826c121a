package pop3

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// TestUpdate: settings given by Update apply to the connections accepted
// afterwards (here the plaintext policy and the connection limit); a
// session already open keeps those it began with.
func TestUpdate(t *testing.T) {
	ts := startServer(t, nil)
	old := ts.dial(t)

	next := &Server{
		Backend:        ts.be,
		TLSConfig:      ts.TLSConfig,
		Implementation: "postino-test",
		Plaintext:      PlaintextNever,
		MaxConnections: 2,
	}
	ts.Update(next)

	// A new cleartext session may not send a password, not even from
	// loopback.
	tr := ts.dial(t)
	tr.do("USER alice@example.test", `^-ERR \[AUTH\] Plaintext authentication disallowed`)
	// The session opened before keeps the loopback policy.
	old.do("USER alice@example.test", `^\+OK`)
	old.do("PASS secret pass", `^\+OK Logged in`)

	// Two sessions are open: a third is refused under the new limit.
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "-ERR [SYS/TEMP] Too many connections") {
		t.Errorf("third connection got %q, want the connection limit", line)
	}
}
