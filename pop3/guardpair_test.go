package pop3

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/postino-mail/postino/internal/testutil"
)

// pairBackend checks that the server ends every LoginGuard attempt it
// begins exactly once, before it begins the next on that connection.
// Logging in as tempfail@example.test fails with a temporary error.
type pairBackend struct {
	scramBackend
	mu         sync.Mutex
	pending    map[string]bool // per remote address
	violations []string
	begun      int
	ends       map[string]int
}

func (b *pairBackend) Authenticate(ctx context.Context, ci *ConnInfo, user, pass string) (string, error) {
	if user == "tempfail@example.test" {
		return "", errors.New("user database unreadable")
	}
	return b.scramBackend.Authenticate(ctx, ci, user, pass)
}

func (b *pairBackend) LoginAllowed(ctx context.Context, ci *ConnInfo) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := ci.RemoteAddr.String()
	if b.pending[k] {
		b.violations = append(b.violations, "attempt begun while one is in progress on "+k)
	}
	b.pending[k] = true
	b.begun++
	return nil
}

func (b *pairBackend) end(ci *ConnInfo, how string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := ci.RemoteAddr.String()
	if !b.pending[k] {
		b.violations = append(b.violations, how+" without an attempt in progress on "+k)
	}
	delete(b.pending, k)
	b.ends[how]++
}

func (b *pairBackend) LoginFailed(ctx context.Context, ci *ConnInfo, username string) {
	b.end(ci, "failed")
}

func (b *pairBackend) LoginSucceeded(ctx context.Context, ci *ConnInfo, user string) {
	b.end(ci, "succeeded")
}

func (b *pairBackend) LoginAbandoned(ctx context.Context, ci *ConnInfo) { b.end(ci, "abandoned") }

// TestLoginGuardAttemptsPaired: whatever way a login ends (wrong
// password, foreign authorization identity, failed or correct SCRAM
// proof, success, a temporary error, a cancelled exchange, a client that
// goes away), every attempt the LoginGuard let begin is ended exactly
// once, and none is left in progress.
func TestLoginGuardAttemptsPaired(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.SCRAM = true; s.MaxAuthFailures = 100 })
	seed(ts)
	pb := &pairBackend{scramBackend: scramBackend{ts.be}, pending: map[string]bool{}, ends: map[string]int{}}
	ts.Backend = pb

	c := ts.client(t)
	for i, err := range []error{
		c.Login("alice@example.test", "nope"),
		c.Auth(sasl.NewPlainClient("bob@example.test", "alice@example.test", "secret pass")),
		c.Auth(sasl.NewPlainClient("", "alice@example.test", "nope")),
		c.Auth(sasl.NewLoginClient("alice@example.test", "nope")),
		c.Auth(NewSCRAMClient("alice@example.test", "wrong")),
		c.Login("tempfail@example.test", "x"),
	} {
		if err == nil {
			t.Fatalf("login %d succeeded", i)
		}
	}
	if err := c.Auth(NewSCRAMClient("alice@example.test", "secret pass")); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })
	c = ts.client(t)
	if err := c.Login("alice@example.test", "secret pass"); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	// A cancelled exchange, then the client goes away.
	tr := ts.dial(t)
	tr.do("AUTH PLAIN", `^\+ $`)
	tr.do("*", `^-ERR`)
	tr.conn.Close()

	testutil.WaitFor(t, 5*time.Second, "every attempt ended", func() bool {
		pb.mu.Lock()
		defer pb.mu.Unlock()
		return len(pb.pending) == 0
	})
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if len(pb.violations) > 0 {
		t.Fatalf("LoginGuard calls out of order: %q", pb.violations)
	}
	got := fmt.Sprintf("begun %d, failed %d, succeeded %d, abandoned %d", pb.begun, pb.ends["failed"], pb.ends["succeeded"], pb.ends["abandoned"])
	// Each AUTH is first checked (begun and abandoned at once); the
	// credentials are then checked in an attempt of their own.
	if want := "begun 14, failed 5, succeeded 2, abandoned 7"; got != want {
		t.Fatalf("%s; want %s", got, want)
	}
}
