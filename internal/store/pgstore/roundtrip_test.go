package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// countingNode opens a Store whose pool counts the statements it sends.
func countingNode(t testing.TB) (*Store, *queryCounter) {
	t.Helper()
	dsn := pgtest.NewDB(t)
	node(t, dsn, Options{}).Close() // migrates
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	qc := &queryCounter{}
	pc.ConnConfig.Tracer = qc
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(pool, Options{SpoolDir: t.TempDir()})
	t.Cleanup(s.Close)
	return s, qc
}

// sizedMsg returns a message of about size octets, numbered n.
func sizedMsg(n, size int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Subject: %d\n\n", n)
	for sb.Len() < size {
		fmt.Fprintf(&sb, "line of message %d to fill it up\n", n)
	}
	return sb.String()
}

// A download session reads the small messages that follow the one asked
// for in the same query: 20 messages of 20 KB cost two queries, not 20,
// and every message still reads back exactly, a large one in between
// included.
func TestDownloadReadsAhead(t *testing.T) {
	s, qc := countingNode(t)
	var want []string
	for i := range 21 {
		size := 20 << 10
		if i == 10 {
			size = ChunkSize + 5000 // two chunks: read on its own
		}
		m := sizedMsg(i, size)
		if _, err := s.DeliverPrefixed(context.Background(), alice, []byte("Delivered-To: alice@example.test\n"), strings.NewReader(m)); err != nil {
			t.Fatal(err)
		}
		want = append(want, "Delivered-To: alice@example.test\r\n"+strings.ReplaceAll(m, "\n", "\r\n"))
	}
	before := qc.n.Load()
	md, err := s.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if got := readMsg(t, md, i); got != w {
			t.Fatalf("message %d reads %d octets, want %d", i+1, len(got), len(w))
		}
	}
	md.Close()
	// lock and snapshot (one round trip), 10 small messages (one
	// query), the large one (prefix and first chunk, then its second and
	// last chunk), 10 small ones (one query), release.
	if n := qc.n.Load() - before; n != 6 {
		t.Fatalf("download session took %d round trips, want 6", n)
	}
}

// A poll session (login, UIDL, QUIT) takes two round trips: the lock
// with the snapshot, and the release.
func TestPollRoundTrips(t *testing.T) {
	s, qc := countingNode(t)
	deliver(t, s, alice, "one\n")
	deliver(t, s, alice, "two\n")
	before := qc.n.Load()
	md, err := s.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(md.Messages()); n != 2 {
		t.Fatalf("snapshot of %d messages, want 2", n)
	}
	md.Close()
	if n := qc.n.Load() - before; n != 2 {
		t.Fatalf("poll session took %d round trips, want 2", n)
	}
	// The lock was released: another session takes it.
	md, err = s.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	md.Close()
}

// A message whose blob is gone fails when opened, even when it was read
// ahead with others, and the others still read.
func TestReadAheadMissingBlob(t *testing.T) {
	s, _ := countingNode(t)
	deliver(t, s, alice, "one\n")
	deliver(t, s, alice, "two\n")
	deliver(t, s, alice, "three\n")
	if _, err := s.Pool().Exec(context.Background(), `DELETE FROM blob_chunks WHERE key = (SELECT blob_key FROM messages WHERE uid = 2)`); err != nil {
		t.Fatal(err)
	}
	md, err := s.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	if got := readMsg(t, md, 0); got != "one\r\n" {
		t.Fatalf("message 1 reads %q", got)
	}
	if _, err := md.Open(context.Background(), 1); !errors.Is(err, ErrBlobMissing) {
		t.Fatalf("message 2: %v, want ErrBlobMissing", err)
	}
	if got := readMsg(t, md, 2); got != "three\r\n" {
		t.Fatalf("message 3 reads %q", got)
	}
	// Read again (a second RETR): from the database, the same octets.
	if got := readMsg(t, md, 0); got != "one\r\n" {
		t.Fatalf("message 1 read again: %q", got)
	}
}
