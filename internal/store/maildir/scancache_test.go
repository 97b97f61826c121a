package maildir

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeMessages puts n messages with complete names straight into new/.
func writeMessages(t testing.TB, dir string, n int) {
	t.Helper()
	for _, sub := range []string{"new", "cur", "tmp"} {
		os.MkdirAll(filepath.Join(dir, sub), 0o700)
	}
	body := "Subject: x\n\nhello\n"
	for i := range n {
		name := fmt.Sprintf("%d.M%dP1Q%dRabc.host,S=%d,W=%d", 1700000000+i, i, i, len(body), len(body)+3)
		if err := os.WriteFile(filepath.Join(dir, "new", name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func ageDirs(t testing.TB, dir string) {
	t.Helper()
	old := time.Now().Add(-time.Minute)
	for _, sub := range []string{"new", "cur"} {
		if err := os.Chtimes(filepath.Join(dir, sub), old, old); err != nil {
			t.Fatal(err)
		}
	}
}

func TestScanCache(t *testing.T) {
	s, root := newTestStore(t)
	dir := maildirPath(root)
	writeMessages(t, dir, 1500)
	ageDirs(t, dir)

	md := openMD(t, s, "alice@example.test")
	if n := len(md.Messages()); n != 1500 {
		t.Fatalf("%d messages", n)
	}
	md.Close()
	if s.scans.m[s.relDir(t, "alice@example.test")] == nil {
		t.Fatal("large quiet mailbox not cached")
	}
	// A cached snapshot still reads and deletes correctly.
	md = openMD(t, s, "alice@example.test")
	if got := string(readMsg(t, md, 0)); got != "Subject: x\r\n\r\nhello\r\n" {
		t.Fatalf("message 1 = %q", got)
	}
	if err := md.Commit(context.Background(), []int{0}); err != nil {
		t.Fatal(err)
	}
	md.Close()
	// The deletion changed the directory: the next login lists again.
	md = openMD(t, s, "alice@example.test")
	if n := len(md.Messages()); n != 1499 {
		t.Fatalf("after deleting one: %d messages", n)
	}
	md.Close()
	// So does a delivery, even one made by another program.
	ageDirs(t, dir)
	md = openMD(t, s, "alice@example.test") // cached again
	md.Close()
	mustDeliver(t, s, "alice@example.test", "Subject: new\n\nnew\n")
	md = openMD(t, s, "alice@example.test")
	if n := len(md.Messages()); n != 1500 {
		t.Fatalf("after a delivery: %d messages, want 1500", n)
	}
	md.Close()
}

func TestScanCacheSkipsRecentlyChangedDirs(t *testing.T) {
	s, root := newTestStore(t)
	writeMessages(t, maildirPath(root), 1200)
	md := openMD(t, s, "alice@example.test") // directories changed just now
	md.Close()
	if len(s.scans.m) != 0 {
		t.Fatal("a just-changed mailbox was cached (racy timestamps)")
	}
}

// relDir is the cache key of a mailbox.
func (s *Store) relDir(t *testing.T, box string) string {
	d, err := mailboxDir(box)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestStaleTmpRemoved(t *testing.T) {
	s, root := newTestStore(t)
	dir := maildirPath(root)
	writeMessages(t, dir, 1)
	old, fresh := filepath.Join(dir, "tmp", "old"), filepath.Join(dir, "tmp", "fresh")
	os.WriteFile(old, []byte("partial"), 0o600)
	os.WriteFile(fresh, []byte("in progress"), 0o600)
	long := time.Now().Add(-37 * time.Hour)
	os.Chtimes(old, long, long)
	md := openMD(t, s, "alice@example.test")
	md.Close()
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Error("a 37-hour-old tmp/ file was kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("a fresh tmp/ file (a delivery in progress) was removed")
	}
}
