package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

const alice = "alice@example.test"

// TestWireFormAndSizes: sizes are exact wire sizes (CRLF, final CRLF),
// bodies come back byte for byte in wire form, larger than a chunk too.
func TestWireFormAndSizes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newNode func(Options) *Store) {
		s := newNode(Options{})
		big := bytes.Repeat([]byte("0123456789abcdef\n"), (3*ChunkSize)/17+5) // > 3 chunks
		cases := []struct{ in, wire string }{
			{"Subject: a\n\nbody\n", "Subject: a\r\n\r\nbody\r\n"},
			{"Subject: b\r\n\r\nno final newline", "Subject: b\r\n\r\nno final newline\r\n"},
			{"bare\rCR\n", "bare\rCR\r\n"},
			{string(big), strings.ReplaceAll(string(big), "\n", "\r\n")},
			{strings.Repeat("x", ChunkSize-2), strings.Repeat("x", ChunkSize-2) + "\r\n"}, // exactly one chunk
		}
		for _, c := range cases {
			deliver(t, s, alice, c.in)
		}
		md, err := s.OpenMaildrop(context.Background(), alice)
		if err != nil {
			t.Fatal(err)
		}
		defer md.Close()
		msgs := md.Messages()
		if len(msgs) != len(cases) {
			t.Fatalf("%d messages, want %d", len(msgs), len(cases))
		}
		for i, c := range cases {
			if msgs[i].Size != int64(len(c.wire)) {
				t.Errorf("message %d: size %d, want %d", i, msgs[i].Size, len(c.wire))
			}
			if got := readMsg(t, md, i); got != c.wire {
				t.Errorf("message %d: body differs (%d octets, want %d)", i, len(got), len(c.wire))
			}
		}
	})
}

// TestEmptyMessageMalformed: an empty message is refused permanently.
func TestEmptyMessageMalformed(t *testing.T) {
	s := node(t, pgtest.NewDB(t), Options{})
	if _, err := s.Deliver(context.Background(), alice, strings.NewReader("")); !errors.Is(err, store.ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

// TestSnapshotAtLogin: mail delivered during a session appears only in
// the next one.
func TestSnapshotAtLogin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newNode func(Options) *Store) {
		s := newNode(Options{})
		deliver(t, s, alice, "one\n")
		md, err := s.OpenMaildrop(context.Background(), alice)
		if err != nil {
			t.Fatal(err)
		}
		deliver(t, s, alice, "two\n")
		if n := len(md.Messages()); n != 1 {
			t.Fatalf("snapshot has %d messages, want 1", n)
		}
		md.Close()
		md, err = s.OpenMaildrop(context.Background(), alice)
		if err != nil {
			t.Fatal(err)
		}
		defer md.Close()
		if n := len(md.Messages()); n != 2 {
			t.Fatalf("next session has %d messages, want 2", n)
		}
	})
}

// TestUIDLStableAndNeverReused: UIDLs stay the same across sessions, are
// valid RFC 1939 §7 unique-ids, and a deleted message's UIDL is never
// given again, even to a mailbox removed and created again.
func TestUIDLStableAndNeverReused(t *testing.T) {
	dsn := pgtest.NewDB(t)
	s := node(t, dsn, Options{})
	seen := map[string]bool{}
	var first []string
	for i := range 3 {
		uid := deliver(t, s, alice, fmt.Sprintf("m%d\n", i))
		first = append(first, uid)
		seen[uid] = true
	}
	md, _ := s.OpenMaildrop(context.Background(), alice)
	for i, m := range md.Messages() {
		if m.UID != first[i] {
			t.Fatalf("UIDL %d = %q, Deliver said %q", i, m.UID, first[i])
		}
		for _, c := range []byte(m.UID) {
			if c < 0x21 || c > 0x7e || len(m.UID) > 70 {
				t.Fatalf("UIDL %q not RFC 1939 §7", m.UID)
			}
		}
	}
	if err := md.Commit(context.Background(), []int{2}); err != nil {
		t.Fatal(err)
	}
	md.Close()
	next := deliver(t, s, alice, "m2\n") // same content as the deleted one
	if seen[next] {
		t.Fatalf("UIDL %q reused", next)
	}
	seen[next] = true
	// The mailbox removed and created again.
	if _, err := s.Pool().Exec(context.Background(), `DELETE FROM mailboxes WHERE name = $1`, alice); err != nil {
		t.Fatal(err)
	}
	again := deliver(t, s, alice, "m0\n")
	if seen[again] {
		t.Fatalf("UIDL %q reused after the mailbox was created again", again)
	}
	md, _ = s.OpenMaildrop(context.Background(), alice)
	defer md.Close()
	if got := md.Messages(); len(got) != 1 || got[0].UID != again {
		t.Fatalf("messages %v", got)
	}
}

// TestCommitAllOrNothing: QUIT removes every marked message or none: a
// message gone from under the lock makes the whole commit fail.
func TestCommitAllOrNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newNode func(Options) *Store) {
		s := newNode(Options{})
		for i := range 4 {
			deliver(t, s, alice, fmt.Sprintf("m%d\n", i))
		}
		md, err := s.OpenMaildrop(context.Background(), alice)
		if err != nil {
			t.Fatal(err)
		}
		// A fault: message 3's row disappears behind the session's back.
		if _, err := s.Pool().Exec(context.Background(), `DELETE FROM messages WHERE pop3_uidl = $1`, md.Messages()[3].UID); err != nil {
			t.Fatal(err)
		}
		if err := md.Commit(context.Background(), []int{0, 1, 3}); err == nil {
			t.Fatal("commit succeeded with a message missing")
		}
		md.Close()
		if n, _, _ := s.Usage(context.Background(), alice); n != 3 {
			t.Fatalf("%d messages left, want 3 (nothing applied)", n)
		}
		md, _ = s.OpenMaildrop(context.Background(), alice)
		if err := md.Commit(context.Background(), []int{0, 2}); err != nil {
			t.Fatal(err)
		}
		md.Close()
		md, _ = s.OpenMaildrop(context.Background(), alice)
		defer md.Close()
		if got := md.Messages(); len(got) != 1 || readMsg(t, md, 0) != "m1\r\n" {
			t.Fatalf("left %v", got)
		}
	})
}

// TestUsage counts messages and wire octets.
func TestUsage(t *testing.T) {
	s := node(t, pgtest.NewDB(t), Options{})
	if n, b, err := s.Usage(context.Background(), alice); err != nil || n != 0 || b != 0 {
		t.Fatalf("empty mailbox: %d %d %v", n, b, err)
	}
	deliver(t, s, alice, "a\n")
	deliver(t, s, alice, "bb")
	if n, b, err := s.Usage(context.Background(), alice); err != nil || n != 2 || b != 3+4 {
		t.Fatalf("usage %d %d %v, want 2 7", n, b, err)
	}
}

// TestStoredOnce: a message delivered to several mailboxes, each copy
// with its own header lines, is one blob; each mailbox reads its header
// lines and the shared content, in wire form.
func TestStoredOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newNode func(Options) *Store) {
		s := newNode(Options{})
		d := &delivery.Deliverer{Store: s, SpoolDir: t.TempDir()}
		sp, err := d.Spool(context.Background(), strings.NewReader("Subject: to all\n\nhello\n"))
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Close()
		mbs := []string{"a@example.test", "b@example.test", "c@example.test"}
		for _, mb := range mbs {
			if _, err := d.DeliverSpooled(context.Background(), "x@remote.example", mb, mb, sp, "Received: for "+mb+"\r\n"); err != nil {
				t.Fatal(err)
			}
		}
		var blobs, chunks int
		s.Pool().QueryRow(context.Background(), `SELECT (SELECT count(*) FROM blobs), (SELECT count(*) FROM blob_chunks)`).Scan(&blobs, &chunks)
		if blobs != 1 {
			t.Fatalf("%d blobs, want 1", blobs)
		}
		if _, isS3 := s.blobs.(*S3Blobs); !isS3 && chunks != 1 {
			t.Fatalf("%d chunks, want 1", chunks)
		}
		for _, mb := range mbs {
			md, err := s.OpenMaildrop(context.Background(), mb)
			if err != nil {
				t.Fatal(err)
			}
			want := "Return-Path: <x@remote.example>\r\nDelivered-To: " + mb + "\r\nReceived: for " + mb + "\r\nSubject: to all\r\n\r\nhello\r\n"
			if got := readMsg(t, md, 0); got != want || md.Messages()[0].Size != int64(len(want)) {
				t.Fatalf("%s reads %q (size %d), want %q", mb, got, md.Messages()[0].Size, want)
			}
			md.Close()
		}
	})
}

// TestDeliverPrefixed: the stored message is always the wire form of
// prefix and body together, whatever their shapes.
func TestDeliverPrefixed(t *testing.T) {
	s := node(t, pgtest.NewDB(t), Options{})
	cases := []struct{ prefix, body, wire string }{
		{"A: 1\n", "B: 2\n\nx", "A: 1\r\nB: 2\r\n\r\nx\r\n"},
		{"A: 1\r\n", "\nbody\n", "A: 1\r\n\r\nbody\r\n"},
		{"A: 1", "\nbody", "A: 1\r\nbody\r\n"},                                                // prefix not a whole line
		{"A: 1\r", "\nbody\r\n", "A: 1\r\nbody\r\n"},                                          // CR and LF split
		{"A: 1\n", "", "A: 1\r\n"},                                                            // only the prefix
		{strings.Repeat("H: x\n", 20000), "b\n", strings.Repeat("H: x\r\n", 20000) + "b\r\n"}, // over maxPrefix
	}
	for i, c := range cases {
		mb := fmt.Sprintf("p%d@example.test", i)
		if _, err := s.DeliverPrefixed(context.Background(), mb, []byte(c.prefix), strings.NewReader(c.body)); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		md, err := s.OpenMaildrop(context.Background(), mb)
		if err != nil {
			t.Fatal(err)
		}
		if got := readMsg(t, md, 0); got != c.wire || md.Messages()[0].Size != int64(len(c.wire)) {
			t.Errorf("case %d: got %q (size %d), want %q", i, got, md.Messages()[0].Size, c.wire)
		}
		md.Close()
	}
	if _, err := s.DeliverPrefixed(context.Background(), alice, nil, strings.NewReader("")); !errors.Is(err, store.ErrMalformed) {
		t.Fatalf("empty message: %v", err)
	}
}

// TestConcurrentDeliveries: parallel deliveries to one mailbox, from two
// nodes, get distinct UIDLs and IMAP UIDs and all arrive.
func TestConcurrentDeliveries(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a, b := node(t, dsn, Options{NodeID: "a"}), node(t, dsn, Options{NodeID: "b"})
	var wg sync.WaitGroup
	uids := make(chan string, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			uid, err := s.Deliver(context.Background(), alice, strings.NewReader(fmt.Sprintf("m%d %d\n", i, rand.Int())))
			if err != nil {
				t.Error(err)
				return
			}
			uids <- uid
		}()
	}
	wg.Wait()
	close(uids)
	seen := map[string]bool{}
	for u := range uids {
		if seen[u] {
			t.Fatalf("UIDL %q given twice", u)
		}
		seen[u] = true
	}
	var distinctUIDs int
	a.Pool().QueryRow(context.Background(), `SELECT count(DISTINCT uid) FROM messages`).Scan(&distinctUIDs)
	if len(seen) != 40 || distinctUIDs != 40 {
		t.Fatalf("%d UIDLs, %d IMAP UIDs, want 40", len(seen), distinctUIDs)
	}
}

// TestMailboxNames: names that cannot be addresses are refused; a name
// written to break SQL is only a name.
func TestMailboxNames(t *testing.T) {
	s := node(t, pgtest.NewDB(t), Options{})
	hostile := `o'brien"; DROP TABLE messages; --@example.test`
	deliver(t, s, hostile, "x\n")
	if n, _, err := s.Usage(context.Background(), hostile); err != nil || n != 1 {
		t.Fatalf("hostile name: %d messages, %v", n, err)
	}
	if n, _, _ := s.Usage(context.Background(), "o'brien@example.test"); n != 0 {
		t.Fatal("hostile name reached another mailbox")
	}
	for _, mb := range []string{"", "a\nb@x", strings.Repeat("a", 400)} {
		if _, err := s.Deliver(context.Background(), mb, strings.NewReader("x\n")); !errors.Is(err, store.ErrNoMailbox) {
			t.Errorf("Deliver(%q) = %v", mb, err)
		}
		if _, err := s.OpenMaildrop(context.Background(), mb); !errors.Is(err, store.ErrNoMailbox) {
			t.Errorf("OpenMaildrop(%q) = %v", mb, err)
		}
	}
}

// TestDatabaseDown: with PostgreSQL unreachable, delivery and logins
// fail with an error (never ErrLocked, never a success).
func TestDatabaseDown(t *testing.T) {
	addr := pgtest.Addr(t)
	dsn := pgtest.NewDB(t)
	p := pgtest.NewProxy(t, addr)
	s := node(t, strings.Replace(dsn, addr, p.Addr(), 1), Options{})
	t.Cleanup(p.Close) // before the pool closes: no connection left hanging
	deliver(t, s, alice, "before\n")
	p.Cut()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.Deliver(ctx, alice, strings.NewReader("during\n")); err == nil {
		t.Fatal("delivery succeeded with the database down")
	}
	if _, err := s.OpenMaildrop(ctx, alice); err == nil || errors.Is(err, store.ErrLocked) {
		t.Fatalf("OpenMaildrop = %v, want a temporary failure", err)
	}
	// Open itself needs the database.
	if _, err := Open(ctx, Options{DSN: strings.Replace(dsn, addr, p.Addr(), 1)}); err == nil {
		t.Fatal("Open succeeded with the database down")
	}
}

// TestRemoveMailbox: removal waits for no session (ErrLocked while one,
// on any node, holds the mailbox), runs before under the lock, and
// leaves nothing when before fails.
func TestRemoveMailbox(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a, b := node(t, dsn, Options{NodeID: "a"}), node(t, dsn, Options{NodeID: "b"})
	deliver(t, a, alice, "one\n")
	md, _ := a.OpenMaildrop(context.Background(), alice)
	ran := false
	if err := b.RemoveMailboxWith(context.Background(), alice, func(context.Context) error { ran = true; return nil }); !errors.Is(err, store.ErrLocked) || ran {
		t.Fatalf("remove during a session: %v (before ran: %v)", err, ran)
	}
	md.Close()
	boom := errors.New("boom")
	if err := b.RemoveMailboxWith(context.Background(), alice, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("remove with a failing before: %v", err)
	}
	if n, _, _ := a.Usage(context.Background(), alice); n != 1 {
		t.Fatalf("%d messages after a failed removal, want 1", n)
	}
	if err := b.RemoveMailbox(context.Background(), alice); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := a.Usage(context.Background(), alice); n != 0 {
		t.Fatalf("%d messages after removal", n)
	}
	if md, err := a.OpenMaildrop(context.Background(), alice); err != nil || len(md.Messages()) != 0 {
		t.Fatalf("after removal: %v", err)
	} else {
		md.Close()
	}
}
