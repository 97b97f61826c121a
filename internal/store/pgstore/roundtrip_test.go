package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// countingNode opens a Store whose pool counts the statements it sends.
func countingNode(t testing.TB) (*Store, *queryCounter) {
	t.Helper()
	return countingNodeWith(t, Options{})
}

// countingNodeWith is countingNode with options (a blob cache).
func countingNodeWith(t testing.TB, o Options) (*Store, *queryCounter) {
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
	o.SpoolDir = t.TempDir()
	s := newStore(pool, o)
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

// With the vault on, the messages a session deleted stay in the table
// but leave the snapshot: the next session's read-ahead reads only the
// messages of its snapshot, each with its own content and date.
func TestReadAheadWithVault(t *testing.T) {
	s, qc := countingNode(t)
	s.SetVault(true)
	ctx := context.Background()
	var msgs []string
	for i := range 5 {
		m := sizedMsg(i, 10<<10)
		deliver(t, s, alice, m)
		msgs = append(msgs, strings.ReplaceAll(m, "\n", "\r\n"))
	}
	md, err := s.OpenMaildrop(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	readMsg(t, md, 0) // reads all five ahead
	if err := md.Commit(ctx, []int{1, 3}); err != nil {
		t.Fatal(err)
	}
	if n := md.(*Maildrop).Vaulted(); n != 2 {
		t.Fatalf("%d messages vaulted, want 2", n)
	}
	md.Close()

	before := qc.n.Load()
	smd, err := s.OpenMaildrop(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	md2 := smd.(*Maildrop)
	if n := len(md2.Messages()); n != 3 {
		t.Fatalf("snapshot of %d messages, want 3 (two in the vault)", n)
	}
	for i, w := range []string{msgs[0], msgs[2], msgs[4]} {
		if got := readMsg(t, md2, i); !strings.HasSuffix(got, w) {
			t.Fatalf("message %d reads %q..., want the content of %q...", i+1, got[:40], w[:12])
		}
		if md2.InternalDate(i).IsZero() {
			t.Fatalf("message %d has no internal date", i+1)
		}
	}
	md2.Close()
	// Lock and snapshot, one read-ahead query, release.
	if n := qc.n.Load() - before; n != 3 {
		t.Fatalf("download session took %d round trips, want 3", n)
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

// A delivery to an existing mailbox takes three round trips when its
// content is small (the blob row with the content, whether stored or not;
// BEGIN with the blob's touch and the counters; the message row with
// COMMIT), and four above 64 KiB (the blob row and whether its content is
// stored, then the content on its own), three when that content is
// already stored (another recipient's copy); every message reads back
// exactly.
func TestDeliverRoundTrips(t *testing.T) {
	s, qc := countingNode(t)
	deliver(t, s, alice, "first\n") // creates the mailbox
	var uidls []string
	for _, c := range []struct {
		msg  string
		want int64
	}{
		{"second\n", 3},
		{"second\n", 3},           // stored already
		{sizedMsg(1, 100<<10), 4}, // large, new
		{sizedMsg(1, 100<<10), 3}, // large, stored already
	} {
		before := qc.n.Load()
		uidls = append(uidls, deliver(t, s, alice, c.msg))
		if n := qc.n.Load() - before; n != c.want {
			t.Fatalf("delivery of %d octets took %d round trips, want %d", len(c.msg), n, c.want)
		}
	}
	md, err := s.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	msgs := md.Messages()
	if len(msgs) != 5 {
		t.Fatalf("snapshot of %d messages, want 5", len(msgs))
	}
	large := strings.ReplaceAll(sizedMsg(1, 100<<10), "\n", "\r\n")
	for i, w := range []string{"first\r\n", "second\r\n", "second\r\n", large, large} {
		if i > 0 && msgs[i].UID != uidls[i-1] {
			t.Fatalf("message %d has UIDL %s, want %s", i+1, msgs[i].UID, uidls[i-1])
		}
		if got := readMsg(t, md, i); got != w {
			t.Fatalf("message %d reads %d octets, want %d", i+1, len(got), len(w))
		}
	}
	var blobs int
	if err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM blob_chunks`).Scan(&blobs); err != nil {
		t.Fatal(err)
	}
	if blobs != 3 {
		t.Fatalf("%d chunks stored, want 3 (each content once)", blobs)
	}
}

// The UIDL an imported message took is skipped by the next delivery
// (RFC 1939 §7), and the message is stored once.
func TestDeliverSkipsImportedUIDL(t *testing.T) {
	s, _ := countingNode(t)
	deliver(t, s, alice, "first\n")
	var mbID, next int64
	if err := s.Pool().QueryRow(context.Background(), `SELECT id, uidl_next FROM mailboxes WHERE name = $1`, alice).Scan(&mbID, &next); err != nil {
		t.Fatal(err)
	}
	taken := makeUIDL(mbID, next)
	if err := s.Import(context.Background(), alice, taken, time.Now(), strings.NewReader("imported\n")); err != nil {
		t.Fatal(err)
	}
	u := deliver(t, s, alice, "new\n")
	if u != makeUIDL(mbID, next+1) {
		t.Fatalf("delivery got UIDL %s, want %s (after the imported %s)", u, makeUIDL(mbID, next+1), taken)
	}
	var n int
	if err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM messages`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("%d messages stored, want 3", n)
	}
}

// The collector runs between the blob's write and the metadata of a
// delivery to an existing mailbox, once the blob aged past the grace
// period: the pipelined transaction notices, the blob is stored again
// and the message is complete.
func TestCollectDuringPipelinedDelivery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newNode func(Options) *Store) {
		collectMidDelivery(t, newNode, true)
	})
}
