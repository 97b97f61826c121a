package maildir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/store"
)

func mustUsage(t *testing.T, s *Store, box string) (int, int64) {
	t.Helper()
	n, b, err := s.Usage(context.Background(), box)
	if err != nil {
		t.Fatalf("Usage: %v", err)
	}
	return n, b
}

// TestUsage checks the message count and stored size, served from the
// cache across deliveries, and correct after a commit, a foreign file and
// a second Store (another process) delivering.
func TestUsage(t *testing.T) {
	s, root := newTestStore(t)
	if n, b := mustUsage(t, s, testBox); n != 0 || b != 0 {
		t.Fatalf("missing mailbox: %d, %d", n, b)
	}
	mustDeliver(t, s, testBox, "Subject: a\r\n\r\nhello\r\n") // 18 stored octets
	if n, b := mustUsage(t, s, testBox); n != 1 || b != 18 {
		t.Fatalf("after one: %d, %d", n, b)
	}
	// Cached now: further deliveries are added without listing.
	mustDeliver(t, s, testBox, "x\n")
	mustDeliver(t, s, testBox, "yy\n")
	if n, b := mustUsage(t, s, testBox); n != 3 || b != 18+2+3 {
		t.Fatalf("after three: %d, %d", n, b)
	}
	// The figures come from the cache, not a listing: a file slipped in
	// with new/'s time put back is not seen (the documented accuracy).
	newDir := filepath.Join(maildirPath(root), "new")
	fi, err := os.Stat(newDir)
	if err != nil {
		t.Fatal(err)
	}
	hidden := filepath.Join(newDir, "999.hidden,S=1000")
	if err := os.WriteFile(hidden, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(newDir, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if n, b := mustUsage(t, s, testBox); n != 3 || b != 23 {
		t.Fatalf("cached figures: %d, %d, want 3, 23", n, b)
	}
	if err := os.Remove(hidden); err != nil {
		t.Fatal(err)
	}
	// A delivery by this store keeps the figures cached: it is added,
	// and the hidden file is still not seen (no listing).
	if n, _ := mustUsage(t, s, testBox); n != 3 {
		t.Fatalf("after removing the hidden file: %d", n)
	}
	mustDeliver(t, s, testBox, "abc\n")
	if fi, err = os.Stat(newDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hidden, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(newDir, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if n, b := mustUsage(t, s, testBox); n != 4 || b != 27 {
		t.Fatalf("after a delivery, cached: %d, %d, want 4, 27", n, b)
	}
	if err := os.Remove(hidden); err != nil {
		t.Fatal(err)
	}
	// The cached figures equal a fresh count.
	fresh, err := New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if n, b := mustUsage(t, fresh, testBox); n != 4 || b != 27 {
		t.Fatalf("fresh count: %d, %d", n, b)
	}
	// Another Store delivers: this one's cached figures see it, since
	// new/ changed.
	mustDeliver(t, fresh, testBox, "zzzz\n")
	if n, b := mustUsage(t, s, testBox); n != 5 || b != 32 {
		t.Fatalf("after another store delivered: %d, %d", n, b)
	}
	// A foreign file in cur/ without S= is stat'ed.
	if err := os.WriteFile(filepath.Join(maildirPath(root), "cur", "123.foreign:2,S"), []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, b := mustUsage(t, s, testBox); n != 6 || b != 42 {
		t.Fatalf("with a foreign file: %d, %d", n, b)
	}
	md := openMD(t, s, testBox)
	if err := md.Commit(context.Background(), []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	md.Close()
	if n, b := mustUsage(t, s, testBox); n != 4 {
		t.Fatalf("after deleting two: %d, %d", n, b)
	}
	if _, _, err := s.Usage(context.Background(), "../x@example.test"); !errors.Is(err, store.ErrNoMailbox) {
		t.Fatalf("hostile name: %v", err)
	}
}

// TestRemoveMailbox checks that a mailbox in use is refused, that removal
// takes only the user's directory, and that names cannot escape it.
func TestRemoveMailbox(t *testing.T) {
	s, root := newTestStore(t)
	ctx := context.Background()
	mustDeliver(t, s, testBox, "x\n")
	mustDeliver(t, s, "bob@example.test", "y\n")
	md := openMD(t, s, testBox)
	if err := s.RemoveMailbox(ctx, testBox); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("RemoveMailbox while open = %v, want ErrLocked", err)
	}
	md.Close()
	if err := s.RemoveMailbox(ctx, testBox); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "example.test", "alice")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("user directory still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "example.test", "bob", "Maildir", "new")); err != nil {
		t.Fatalf("the other user's mailbox went too: %v", err)
	}
	if n, _ := mustUsage(t, s, testBox); n != 0 {
		t.Fatalf("usage after removal: %d", n)
	}
	if err := s.RemoveMailbox(ctx, testBox); err != nil {
		t.Fatalf("removing a missing mailbox: %v", err)
	}
	for _, bad := range []string{"..@example.test", "x@..", "a/../../b@example.test", "@example.test", "alice@.example.test"} {
		if err := s.RemoveMailbox(ctx, bad); !errors.Is(err, store.ErrNoMailbox) {
			t.Errorf("RemoveMailbox(%q) = %v, want ErrNoMailbox", bad, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "example.test", "bob")); err != nil {
		t.Fatalf("hostile names removed something: %v", err)
	}
}

// TestUsageConcurrent delivers and checks usage from several goroutines
// (run with -race) and then compares the figures with a fresh count.
func TestUsageConcurrent(t *testing.T) {
	s, root := newTestStore(t)
	ctx := context.Background()
	mustDeliver(t, s, testBox, "first\n")
	done := make(chan error, 8)
	for range 4 {
		go func() {
			for range 10 {
				if _, err := s.Deliver(ctx, testBox, strings.NewReader("x\n")); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		go func() {
			for range 20 {
				if _, _, err := s.Usage(ctx, testBox); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	fresh, err := New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	n, b := mustUsage(t, fresh, testBox)
	if n != 41 || b != 6+40*2 {
		t.Fatalf("fresh count: %d, %d", n, b)
	}
	// The figures of the store that delivered match, once the
	// directories are quiet.
	if n2, b2 := mustUsage(t, s, testBox); n2 != n || b2 != b {
		t.Errorf("cached %d, %d; fresh %d, %d", n2, b2, n, b)
	}
}

// TestRemoveMailboxWith: the callback (the user's deletion) and the
// removal happen under one hold of the maildrop lock. A session holding
// it refuses both; a failing callback removes nothing; a login attempted
// while the callback runs is refused, so the mailbox cannot be half
// removed; a missing mailbox still runs the callback.
func TestRemoveMailboxWith(t *testing.T) {
	s, root := newTestStore(t)
	ctx := context.Background()
	mustDeliver(t, s, testBox, "x\n")
	userDir := filepath.Join(root, "example.test", "alice")

	md := openMD(t, s, testBox)
	ran := false
	err := s.RemoveMailboxWith(ctx, testBox, func(context.Context) error { ran = true; return nil })
	if !errors.Is(err, store.ErrLocked) || ran {
		t.Fatalf("with a session open: err %v, callback ran %v; want ErrLocked and not run", err, ran)
	}
	md.Close()

	errDB := errors.New("users file not writable")
	if err := s.RemoveMailboxWith(ctx, testBox, func(context.Context) error { return errDB }); !errors.Is(err, errDB) {
		t.Fatalf("failing callback: %v", err)
	}
	if n, _ := mustUsage(t, s, testBox); n != 1 {
		t.Fatalf("a failing callback removed the mailbox: %d messages", n)
	}

	var loginErr error
	err = s.RemoveMailboxWith(ctx, testBox, func(ctx context.Context) error {
		// A POP3 login between the user's deletion and the removal.
		md, err := s.OpenMaildrop(ctx, testBox)
		if err == nil {
			md.Close()
		}
		loginErr = err
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(loginErr, store.ErrLocked) {
		t.Fatalf("login during the removal: %v, want ErrLocked", loginErr)
	}
	if _, err := os.Stat(userDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("user directory still there: %v", err)
	}
	// The lock is released: a new session opens the (empty) mailbox.
	openMD(t, s, testBox).Close()

	ran = false
	if err := s.RemoveMailboxWith(ctx, "nobody@example.test", func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("missing mailbox: err %v, callback ran %v", err, ran)
	}
}
