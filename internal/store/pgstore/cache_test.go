package pgstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// openCache opens a blob cache in dir, failing the test on error.
func openCache(t *testing.T, dir string, limit int64) *BlobCache {
	t.Helper()
	c, err := OpenBlobCache(dir, limit, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// downloadAll reads every message of alice's maildrop and returns them,
// with what MessageFile said of each before it was read.
func downloadAll(t *testing.T, s *Store) (msgs []string, files []bool, heads []string) {
	t.Helper()
	ctx := context.Background()
	md, err := s.OpenMaildrop(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	for i := range md.Messages() {
		rc, err := md.Open(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		head := ""
		if fm, isFM := rc.(interface {
			MessageFile() ([]byte, *os.File, bool)
		}); isFM {
			var h []byte
			var f *os.File
			h, f, ok = fm.MessageFile()
			if ok {
				// What the server would send: head, then the file.
				rest, err := io.ReadAll(f)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					t.Fatal(err)
				}
				if int64(len(h)+len(rest)) != md.Messages()[i].Size {
					t.Fatalf("message %d: head and file are %d octets, listed %d", i+1, len(h)+len(rest), md.Messages()[i].Size)
				}
			}
			head = string(h)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, string(b))
		files = append(files, ok)
		heads = append(heads, head)
	}
	return msgs, files, heads
}

// The first download of a content fills the node's cache; the next
// session reads it from there: the database only gives the lock, the
// snapshot and the prefixes. A content with a line starting with "." is
// cached but not offered for sendfile, since it needs dot-stuffing.
func TestCacheServesSecondDownload(t *testing.T) {
	for _, blobs := range backends {
		t.Run(blobs.name, func(t *testing.T) {
			cache := openCache(t, t.TempDir(), 64<<20)
			s, qc := countingNodeWith(t, Options{Cache: cache, Blobs: blobs.blobs(t)})
			ctx := context.Background()
			contents := []string{
				sizedMsg(0, 4<<10),
				"Subject: dots\n\n.leading dot\n..two\nend\n",
				sizedMsg(2, ChunkSize+7000), // two chunks
				sizedMsg(3, 50<<10),
				".\n", // the whole content is one dot line
			}
			var want, wantHeads []string
			for i, m := range contents {
				prefix := "Delivered-To: alice@example.test\n"
				if i == 3 {
					deliver(t, s, alice, m) // no prefix
					prefix = ""
				} else if _, err := s.DeliverPrefixed(ctx, alice, []byte(prefix), strings.NewReader(m)); err != nil {
					t.Fatal(err)
				}
				want = append(want, strings.ReplaceAll(prefix+m, "\n", "\r\n"))
				wantHeads = append(wantHeads, strings.ReplaceAll(prefix, "\n", "\r\n"))
			}
			got, files, _ := downloadAll(t, s)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("first session, message %d: %q, want %q", i+1, trunc(got[i]), trunc(want[i]))
				}
				if files[i] {
					t.Fatalf("first session, message %d offered from the cache", i+1)
				}
			}
			if n, _ := cache.Len(); n != len(contents) {
				t.Fatalf("%d contents cached, want %d", n, len(contents))
			}
			before := qc.n.Load()
			got, files, heads := downloadAll(t, s)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("second session, message %d: %q, want %q", i+1, trunc(got[i]), trunc(want[i]))
				}
				wantFile := i != 1 && i != 4
				if files[i] != wantFile {
					t.Fatalf("second session, message %d: offered as a file %v, want %v", i+1, files[i], wantFile)
				}
				if wantFile && heads[i] != wantHeads[i] {
					t.Fatalf("message %d: head %q", i+1, heads[i])
				}
			}
			// Lock and snapshot, the prefixes, release: nothing of the
			// contents.
			if n := qc.n.Load() - before; n != 3 {
				t.Fatalf("second session took %d round trips, want 3", n)
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// Without prefixes (imported mail), a download from the cache costs the
// database what a poll does: the lock with the snapshot, and the
// release.
func TestCachedDownloadRoundTrips(t *testing.T) {
	s, qc := countingNodeWith(t, Options{Cache: openCache(t, t.TempDir(), 64<<20)})
	for i := range 20 {
		deliver(t, s, alice, sizedMsg(i, 20<<10))
	}
	downloadAll(t, s)
	before := qc.n.Load()
	got, files, _ := downloadAll(t, s)
	if n := qc.n.Load() - before; n != 2 {
		t.Fatalf("download from the cache took %d round trips, want 2", n)
	}
	for i := range got {
		if !files[i] || got[i] != strings.ReplaceAll(sizedMsg(i, 20<<10), "\n", "\r\n") {
			t.Fatalf("message %d: from the cache %v, octets right %v", i+1, files[i], got[i] == strings.ReplaceAll(sizedMsg(i, 20<<10), "\n", "\r\n"))
		}
	}
}

// Only a content read whole and matching its key enters the cache: not
// one read in part (TOP, a client gone), nor one changed in the blob
// store.
func TestCacheOnlyVerifiedWholeContents(t *testing.T) {
	cache := openCache(t, t.TempDir(), 64<<20)
	s, _ := countingNodeWith(t, Options{Cache: cache})
	ctx := context.Background()
	deliver(t, s, alice, sizedMsg(0, 40<<10))
	deliver(t, s, alice, "Subject: two\n\nsecond\n")

	md, err := s.OpenMaildrop(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := md.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.CopyN(io.Discard, rc, 1000)
	rc.Close()
	md.Close()
	if n, _ := cache.Len(); n != 0 {
		t.Fatalf("%d contents cached after a partial read, want 0", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(cache.dir, "tmp")); len(ents) != 0 {
		t.Fatalf("%d temporary files left", len(ents))
	}

	// The second content changed in the database, same length.
	if _, err := s.Pool().Exec(ctx, `UPDATE blob_chunks SET data = set_byte(data, length(data) - 4, 88)
		WHERE key = (SELECT blob_key FROM messages WHERE uid = 2)`); err != nil {
		t.Fatal(err)
	}
	md, err = s.OpenMaildrop(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	rc, err = md.Open(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	md.Close()
	if !errors.Is(err, ErrBlobCorrupt) {
		t.Fatalf("changed content read with %v, want ErrBlobCorrupt", err)
	}
	if n, _ := cache.Len(); n != 0 {
		t.Fatalf("%d contents cached, want 0: a changed content must not be kept", n)
	}
}

// The cache keeps at most its limit, dropping the least recently used
// contents first; a content larger than an eighth of the limit is not
// kept at all.
func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	const size = 9000
	cache := openCache(t, t.TempDir(), 10*size)
	s, _ := countingNodeWith(t, Options{Cache: cache})
	ctx := context.Background()
	for i := range 12 {
		deliver(t, s, alice, sizedMsg(i, size-200))
	}
	deliver(t, s, alice, sizedMsg(99, 2*size)) // too large to keep
	md, err := s.OpenMaildrop(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	keys := md.(*Maildrop).keys
	readMsg(t, md, 0)
	for i := 1; i < 13; i++ {
		readMsg(t, md, i)
		readMsg(t, md, 0) // message 1 stays the most recently used
	}
	md.Close()
	n, used := cache.Len()
	if n < 5 {
		t.Fatalf("only %d entries kept", n)
	}
	if used > 10*size {
		t.Fatalf("cache holds %d octets, limit %d", used, 10*size)
	}
	for i, k := range keys {
		// Message 1, and the most recently read of messages 2 to 12
		// (13 is too large to keep).
		want := i == 0 || (i <= 11 && i >= 13-n)
		if got := cache.has(k); got != want {
			t.Fatalf("message %d cached %v, want %v (%d entries)", i+1, got, want, n)
		}
		_, err := os.Stat(filepath.Join(cache.dir, k[:2], k))
		if exists := err == nil; exists != want {
			t.Fatalf("message %d: file exists %v, want %v", i+1, exists, want)
		}
	}
}

// A cache closed cleanly keeps its contents across a restart; one whose
// process ended without closing it (a crash: files written without
// fsync may be incomplete) is emptied. A file damaged behind the cache's
// back is dropped when opened, and the message comes from the blob store.
func TestCacheRestart(t *testing.T) {
	dir := t.TempDir()
	cache := openCache(t, dir, 64<<20)
	dsn := pgtest.NewDB(t)
	s := node(t, dsn, Options{Cache: cache})
	msg := sizedMsg(1, 30<<10)
	deliver(t, s, alice, msg)
	deliver(t, s, alice, sizedMsg(2, 30<<10))
	downloadAll(t, s)
	s.Close() // closes the cache cleanly
	if _, err := os.Stat(filepath.Join(dir, cleanMarker)); err != nil {
		t.Fatalf("no marker after a clean close: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "other"), []byte("x"), 0o600)
	os.MkdirAll(filepath.Join(dir, "ab"), 0o700)
	os.WriteFile(filepath.Join(dir, "ab", "junk"), []byte("x"), 0o600)

	cache = openCache(t, dir, 64<<20)
	if n, _ := cache.Len(); n != 2 {
		t.Fatalf("%d contents after a clean restart, want 2", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "ab", "junk")); err == nil {
		t.Fatal("a stray file in the cache's layout was kept")
	}
	if _, err := os.Stat(filepath.Join(dir, "other")); err != nil {
		t.Fatal("a file that is not the cache's was removed")
	}
	s = node(t, dsn, Options{Cache: cache})
	md, err := s.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	key := md.(*Maildrop).keys[0]
	md.Close()
	// Cut short behind the cache's back.
	path := filepath.Join(dir, key[:2], key)
	if err := os.Truncate(path, 100); err != nil {
		t.Fatal(err)
	}
	got, files, _ := downloadAll(t, s)
	if files[0] || got[0] != strings.ReplaceAll(msg, "\n", "\r\n") {
		t.Fatalf("damaged entry: from the cache %v, octets right %v", files[0], got[0] == strings.ReplaceAll(msg, "\n", "\r\n"))
	}
	if !files[1] {
		t.Fatal("the undamaged entry was not used")
	}
	// Read again from the blob store, so cached again, whole.
	if fi, err := os.Stat(path); err != nil || fi.Size() != int64(len(got[0])) {
		t.Fatalf("entry not refilled: %v", err)
	}

	// No Close: the process "crashed". The next open empties the cache.
	cache = openCache(t, dir, 64<<20)
	if n, _ := cache.Len(); n != 0 {
		t.Fatalf("%d contents kept after a crash, want 0", n)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("a file was kept after a crash")
	}
	cache.Close()
}

// The fill notes whether any line starts with ".", across the pieces it
// is written in.
func TestCacheFillFindsDotLines(t *testing.T) {
	for _, tc := range []struct {
		pieces []string
		dot    bool
	}{
		{[]string{"a\r\nb\r\n"}, false},
		{[]string{".a\r\n"}, true},
		{[]string{"a\r\n", ".b\r\n"}, true},
		{[]string{"a\r", "\n.b\r\n"}, true},
		{[]string{"a.\r\nb\r\n"}, false},
		{[]string{"a\r\n..\r\n"}, true},
	} {
		w := &cacheFill{bol: true, f: devNull(t)}
		for _, p := range tc.pieces {
			w.write([]byte(p))
		}
		if w.dot != tc.dot {
			t.Errorf("%q: dot %v, want %v", tc.pieces, w.dot, tc.dot)
		}
	}
}

func devNull(t *testing.T) *os.File {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// A cache emptied after a crash removes only its own entries: a
// cache_dir pointed at a folder holding other files loses none of them.
func TestCacheEmptiesOnlyItsOwn(t *testing.T) {
	dir := t.TempDir()
	keep := []string{"users.passwd", "mail/example.test/alice/Maildir/new/1", "spool/x", "zz/y", "abc/z"}
	for _, k := range keep {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, k)), 0o700)
		os.WriteFile(filepath.Join(dir, k), []byte("x"), 0o600)
	}
	key := strings.Repeat("ab", 32)
	os.MkdirAll(filepath.Join(dir, "ab"), 0o700)
	os.WriteFile(filepath.Join(dir, "ab", key), []byte("content\r\n"), 0o600)
	c := openCache(t, dir, 1<<20) // no marker: emptied
	if n, _ := c.Len(); n != 0 {
		t.Fatalf("%d entries after an unclean start", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "ab")); err == nil {
		t.Fatal("the cache's own folder was kept")
	}
	for _, k := range keep {
		if _, err := os.Stat(filepath.Join(dir, k)); err != nil {
			t.Errorf("%s removed: %v", k, err)
		}
	}
}

// Fills that end after Close began keep nothing (the marker vouches only
// for what was synced), and one content is filled by one session at a
// time.
func TestCacheFillAfterCloseAndTwice(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<20)
	data := []byte("Subject: x\r\n\r\nbody\r\n")
	sum := sha256.Sum256(data)
	key := hex.EncodeToString(sum[:])
	f1 := c.fill(key, int64(len(data)))
	if f1 == nil {
		t.Fatal("no fill")
	}
	if f2 := c.fill(key, int64(len(data))); f2 != nil {
		t.Fatal("a second fill of a content being filled")
	}
	f1.write(data)
	f1.commit()
	if !c.has(key) {
		t.Fatal("content not kept")
	}
	// Filled again after an eviction, but Close comes first.
	c.drop(key)
	f3 := c.fill(key, int64(len(data)))
	if f3 == nil {
		t.Fatal("no fill once the first one ended")
	}
	f3.write(data)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	f3.commit()
	if c.has(key) {
		t.Fatal("a content filled after Close was kept")
	}
	if c.fill(key, int64(len(data))) != nil {
		t.Fatal("fill after Close")
	}
}

// A content that does not end with a line end is not kept: the server
// sends the final "." right after a cached file.
func TestCacheRefusesUnterminatedContent(t *testing.T) {
	c := openCache(t, t.TempDir(), 1<<20)
	data := []byte("no line end")
	sum := sha256.Sum256(data)
	key := hex.EncodeToString(sum[:])
	f := c.fill(key, int64(len(data)))
	f.write(data)
	f.commit()
	if c.has(key) {
		t.Fatal("an unterminated content was kept")
	}
}
