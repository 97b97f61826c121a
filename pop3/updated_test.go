package pop3

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// notifyBackend is memBackend whose maildrops implement UpdateNotifier.
type notifyBackend struct {
	*memBackend
	mu    sync.Mutex
	calls [][]int
}

type notifyDrop struct {
	Maildrop
	b *notifyBackend
}

func (d *notifyDrop) Updated(ctx context.Context, retrieved []int) error {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	d.b.calls = append(d.b.calls, slices.Clone(retrieved))
	return nil
}

func (b *notifyBackend) OpenMaildrop(ctx context.Context, ci *ConnInfo, user string) (Maildrop, error) {
	md, err := b.memBackend.OpenMaildrop(ctx, ci, user)
	if err != nil {
		return nil, err
	}
	return &notifyDrop{Maildrop: md, b: b}, nil
}

func (b *notifyBackend) updates() [][]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.calls)
}

// TestUpdatedReportsRetrieved: at QUIT the maildrop learns which messages
// were sent whole and kept: RETR, and TOP with as many lines as the body
// or more (fetchmail's TOP n 99999999), not a TOP that cut the body, not
// a deleted message; a session that ends without QUIT reports nothing.
func TestUpdatedReportsRetrieved(t *testing.T) {
	var nb *notifyBackend
	ts := startServer(t, func(s *Server) {
		nb = &notifyBackend{memBackend: s.Backend.(*memBackend)}
		s.Backend = nb
	})
	seed(ts)
	ts.be.add("alice@example.test", "uid-4", msgDots)
	ts.be.add("alice@example.test", "uid-5", msgPlain)

	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.multi("RETR 1")      // whole
	tr.multi("TOP 2 4")     // msgDots has 4 body lines: whole
	tr.multi("TOP 4 2")     // cut: not downloaded
	tr.multi("TOP 5 99999") // whole
	tr.multi("RETR 3")
	tr.do("DELE 3", `^\+OK`) // downloaded, but deleted
	tr.do("QUIT", `^\+OK`)
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })
	if got := nb.updates(); len(got) != 1 || !slices.Equal(got[0], []int{0, 1, 4}) {
		t.Fatalf("Updated calls = %v, want one with [0 1 4]", got)
	}

	// Dropped connection: no UPDATE state, nothing reported.
	tr = ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.multi("RETR 1")
	tr.conn.Close()
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })
	// QUIT after nothing was downloaded reports an empty list.
	tr = ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.do("QUIT", `^\+OK`)
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })
	if got := nb.updates(); len(got) != 2 || len(got[1]) != 0 {
		t.Fatalf("Updated calls = %v, want a second, empty one", got)
	}
}

// expireBackend is memBackend with a per-user EXPIRE.
type expireBackend struct{ *memBackend }

func (expireBackend) UserExpire(ctx context.Context, user string) string {
	if user == "alice@example.test" {
		return "5"
	}
	return ""
}

// TestCapaExpirePerUser: with an ExpirePolicy backend CAPA says
// "EXPIRE 30 USER" before login (RFC 2449 §6.7) and the user's own value,
// or the server's, after it.
func TestCapaExpirePerUser(t *testing.T) {
	ts := startServer(t, func(s *Server) {
		s.Backend = expireBackend{s.Backend.(*memBackend)}
		s.Expire = "30"
	})
	ts.be.users["bob@example.test"] = "bob pass"
	tr := ts.dial(t)
	if body := tr.multi("CAPA"); !strings.Contains(body, "\r\nEXPIRE 30 USER\r\n") {
		t.Errorf("CAPA before login:\n%s", body)
	}
	tr = ts.loggedIn(t, "alice@example.test", "secret pass")
	if body := tr.multi("CAPA"); !strings.Contains(body, "\r\nEXPIRE 5\r\n") {
		t.Errorf("CAPA of alice:\n%s", body)
	}
	tr = ts.loggedIn(t, "bob@example.test", "bob pass")
	if body := tr.multi("CAPA"); !strings.Contains(body, "\r\nEXPIRE 30\r\n") {
		t.Errorf("CAPA of bob:\n%s", body)
	}
}
