package pgstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// TestCommitAnswerLost: when the answer to a delivery's COMMIT is lost
// (the connection breaks after the server received it), Deliver asks the
// database whether the transaction committed. If it did, the delivery
// succeeded: reporting a failure would make the sender send the message
// again and store it twice. If it did not (the connection broke before
// the COMMIT reached the server), the delivery fails and nothing is
// stored.
func TestCommitAnswerLost(t *testing.T) {
	addr := pgtest.Addr(t)
	dsn := pgtest.NewDB(t)
	p := pgtest.NewProxy(t, addr)
	s := node(t, strings.Replace(dsn, addr, p.Addr(), 1), Options{})
	t.Cleanup(p.Close)
	s.outcomeWait = 10 * time.Second
	ctx := context.Background()

	// The COMMIT reaches the server; its answer is lost.
	s.beforeCommit = func() { p.LoseReplies(300 * time.Millisecond) }
	uid, err := s.Deliver(ctx, alice, strings.NewReader("Subject: 1\n\nthe answer to COMMIT is lost\n"))
	if err != nil {
		t.Fatalf("Deliver after a lost COMMIT answer: %v, want success (the transaction committed)", err)
	}
	// The connection breaks before the COMMIT goes out.
	s.beforeCommit = p.Reset
	if _, err := s.Deliver(ctx, alice, strings.NewReader("Subject: 2\n\nthe COMMIT is never sent\n")); err == nil {
		t.Fatal("Deliver succeeded although its COMMIT never reached the server")
	}
	s.beforeCommit = nil

	md, err := s.OpenMaildrop(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	msgs := md.Messages()
	if len(msgs) != 1 || msgs[0].UID != uid || !strings.Contains(readMsg(t, md, 0), "the answer to COMMIT is lost") {
		t.Fatalf("%d messages (%v), want only the first, UIDL %s", len(msgs), msgs, uid)
	}
}

// TestCommitAnswerLostPipelined: the same on the pipelined path, which a
// delivery to an existing mailbox takes: the second batch carries the
// INSERT and the COMMIT, and when its answer is lost the database is
// asked whether the message is there.
func TestCommitAnswerLostPipelined(t *testing.T) {
	addr := pgtest.Addr(t)
	dsn := pgtest.NewDB(t)
	p := pgtest.NewProxy(t, addr)
	s := node(t, strings.Replace(dsn, addr, p.Addr(), 1), Options{})
	t.Cleanup(p.Close)
	s.outcomeWait = 10 * time.Second
	ctx := context.Background()

	// The first delivery creates the mailbox (general path); the next
	// ones are pipelined. The second prepares the pipelined statements on
	// the connection (pgx caches them), so that the batch below goes out
	// whole, COMMIT included, as on a busy node.
	first, err := s.Deliver(ctx, alice, strings.NewReader("Subject: 0\n\ncreates the mailbox\n"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Deliver(ctx, alice, strings.NewReader("Subject: 0\n\npipelined\n"))
	if err != nil {
		t.Fatal(err)
	}
	// The batch with the COMMIT reaches the server; its answer is lost.
	s.beforeCommit = func() { p.LoseReplies(300 * time.Millisecond) }
	uid, err := s.Deliver(ctx, alice, strings.NewReader("Subject: 1\n\nthe answer to the pipelined COMMIT is lost\n"))
	if err != nil {
		t.Fatalf("pipelined Deliver after a lost COMMIT answer: %v, want success (the transaction committed)", err)
	}
	// The connection breaks before the batch with the COMMIT goes out.
	s.beforeCommit = p.Reset
	if _, err := s.Deliver(ctx, alice, strings.NewReader("Subject: 2\n\nthe pipelined COMMIT is never sent\n")); err == nil {
		t.Fatal("pipelined Deliver succeeded although its COMMIT never reached the server")
	}
	s.beforeCommit = nil
	// The mailbox's counters are not stuck: the next delivery succeeds.
	last, err := s.Deliver(ctx, alice, strings.NewReader("Subject: 3\n\nafter the failures\n"))
	if err != nil {
		t.Fatal(err)
	}

	md, err := s.OpenMaildrop(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	msgs := md.Messages()
	if len(msgs) != 4 || msgs[0].UID != first || msgs[1].UID != second || msgs[2].UID != uid || msgs[3].UID != last ||
		!strings.Contains(readMsg(t, md, 2), "the answer to the pipelined COMMIT is lost") {
		t.Fatalf("%d messages (%v), want %s, %s, %s, %s", len(msgs), msgs, first, second, uid, last)
	}
}
