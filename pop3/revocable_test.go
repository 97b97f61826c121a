package pop3

import (
	"context"
	"testing"
	"time"
)

// revBackend hands out maildrops whose lock the test can take away.
type revBackend struct {
	*memBackend
	done chan struct{}
}

type revDrop struct {
	*memDrop
	done chan struct{}
}

func (d *revDrop) Done() <-chan struct{} { return d.done }

func (b *revBackend) OpenMaildrop(ctx context.Context, ci *ConnInfo, user string) (Maildrop, error) {
	md, err := b.memBackend.OpenMaildrop(ctx, ci, user)
	if err != nil {
		return nil, err
	}
	return &revDrop{memDrop: md.(*memDrop), done: b.done}, nil
}

// TestRevokedMaildropEndsSession: when a Revocable maildrop's lock is
// lost, an idle session is told -ERR [SYS/TEMP] and closed, and its
// marked deletions are not applied.
func TestRevokedMaildropEndsSession(t *testing.T) {
	rb := &revBackend{done: make(chan struct{})}
	ts := startServer(t, func(s *Server) {
		rb.memBackend = s.Backend.(*memBackend)
		s.Backend = rb
	})
	ts.be.add("alice@example.test", "u1", "Subject: x\r\n\r\nbody\r\n")
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.do("DELE 1", `^\+OK`)
	close(rb.done)
	tr.expect(`^-ERR \[SYS/TEMP\] Maildrop lock lost`)
	tr.closed()
	deadline := time.Now().Add(5 * time.Second)
	for ts.be.isLocked("alice@example.test") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ts.be.isLocked("alice@example.test") {
		t.Fatal("maildrop not closed")
	}
	ts.be.mu.Lock()
	defer ts.be.mu.Unlock()
	if ts.be.commits != 0 || len(ts.be.boxes["alice@example.test"]) != 1 {
		t.Fatalf("commits %d, messages %d: deletions applied", ts.be.commits, len(ts.be.boxes["alice@example.test"]))
	}
}

// TestRevokedBeforeCommand: a command already sent when the lock is lost
// is not run.
func TestRevokedBeforeCommand(t *testing.T) {
	rb := &revBackend{done: make(chan struct{})}
	ts := startServer(t, func(s *Server) {
		rb.memBackend = s.Backend.(*memBackend)
		s.Backend = rb
	})
	ts.be.add("alice@example.test", "u1", "Subject: x\r\n\r\nbody\r\n")
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.do("DELE 1", `^\+OK`)
	close(rb.done)
	time.Sleep(100 * time.Millisecond)
	tr.send("QUIT")
	tr.expect(`^-ERR \[SYS/TEMP\] Maildrop lock lost`)
	tr.closed()
	ts.be.mu.Lock()
	defer ts.be.mu.Unlock()
	if ts.be.commits != 0 {
		t.Fatal("QUIT after the lock was lost applied deletions")
	}
}
