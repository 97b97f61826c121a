package maildir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeliverFolder checks the writer used for Maildir folders outside the
// store: the store's names (tag in place of the random part, sizes), the
// subdirectories made when missing, a hostile tag refused, and the hook
// that runs with a partial file in tmp/.
func TestDeliverFolder(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	name, err := DeliverFolder(ctx, dir, strings.NewReader("Subject: a\r\n\r\nbody\r\n"), FolderOptions{Tag: "abc123"})
	if err != nil {
		t.Fatal(err)
	}
	if f := parseName(name); f.size != 17 || f.wire != 20 || !strings.Contains(name, "Xabc123.") {
		t.Errorf("name %q parsed as %+v", name, f)
	}
	for _, sub := range []string{"tmp", "cur"} {
		if fi, err := os.Stat(filepath.Join(dir, sub)); err != nil || !fi.IsDir() {
			t.Errorf("%s: %v", sub, err)
		}
	}
	if _, err := DeliverFolder(ctx, dir, strings.NewReader("x\n"), FolderOptions{Tag: "../x"}); err == nil {
		t.Error("a tag with a path was accepted")
	}
	// The hook sees the first chunk in tmp/; an error after it leaves
	// nothing behind.
	big := strings.Repeat("line of text\r\n", 20000)
	var partial int64
	boom := errors.New("boom")
	_, err = DeliverFolder(ctx, dir, &failAfter{r: strings.NewReader(big), n: len(big) / 2, err: boom}, FolderOptions{Tag: "t2", AfterFirstChunk: func() {
		ents, _ := os.ReadDir(filepath.Join(dir, "tmp"))
		for _, e := range ents {
			if fi, err := e.Info(); err == nil {
				partial += fi.Size()
			}
		}
	}})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if partial <= 0 || partial >= int64(len(big)) {
		t.Errorf("tmp/ held %d octets at the hook, want a partial file", partial)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ keeps %d files after the failure", len(ents))
	}
}

// failAfter reads n octets of r and then fails with err.
type failAfter struct {
	r   *strings.Reader
	n   int
	err error
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	k, err := f.r.Read(p)
	f.n -= k
	return k, err
}

// TestDeliverFolderDeferDirSync: with DeferDirSync, DeliverFolder fsyncs
// no directory (the message is in new/ all the same), and SyncFolder then
// fsyncs new/ once for every message of the batch.
func TestDeliverFolderDeferDirSync(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// Create the subdirectories first: their creation is synced anyway.
	if _, err := DeliverFolder(ctx, dir, strings.NewReader("Subject: first\r\n\r\nx\r\n"), FolderOptions{}); err != nil {
		t.Fatal(err)
	}
	var synced []string
	record := func(d string) { synced = append(synced, d) }
	var names []string
	for i := range 3 {
		name, err := DeliverFolder(ctx, dir, strings.NewReader("Subject: batch\r\n\r\nbody\r\n"), FolderOptions{Tag: "b" + string(rune('0'+i)), DirSynced: record, DeferDirSync: true})
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	if len(synced) != 0 {
		t.Fatalf("directories fsync'd during deferred deliveries: %v", synced)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, "new", n)); err != nil {
			t.Errorf("deferred delivery not in new/: %v", err)
		}
	}
	if err := SyncFolder(dir, record); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "new"); len(synced) != 1 || synced[0] != want {
		t.Fatalf("SyncFolder fsync'd %v, want [%s]", synced, want)
	}
	// Without the option every delivery fsyncs new/ itself.
	synced = nil
	if _, err := DeliverFolder(ctx, dir, strings.NewReader("Subject: c\r\n\r\nx\r\n"), FolderOptions{DirSynced: record}); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 {
		t.Fatalf("a delivery without DeferDirSync fsync'd %v, want new/", synced)
	}
	if err := SyncFolder(filepath.Join(dir, "missing"), nil); err == nil {
		t.Error("SyncFolder of a missing folder succeeded")
	}
}

// TestOpenFolder: a Folder opened once creates the subdirectories of a
// new folder (fsyncing the folder), stores several messages with the names
// DeliverFolder gives, refuses a hostile tag, and SyncNew fsyncs new/.
func TestOpenFolder(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "f")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var synced []string
	record := func(d string) { synced = append(synced, d) }
	f, err := OpenFolder(dir, record)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(synced) != 1 || synced[0] != dir {
		t.Fatalf("creating the subdirectories fsync'd %v, want [%s]", synced, dir)
	}
	synced = nil
	for i := range 3 {
		name, err := f.Deliver(ctx, strings.NewReader("Subject: a\r\n\r\nbody\r\n"), FolderOptions{Tag: "t" + string(rune('0'+i)), DeferDirSync: true, DirSynced: record})
		if err != nil {
			t.Fatal(err)
		}
		if p := parseName(name); p.size != 17 || p.wire != 20 || !strings.Contains(name, "Xt"+string(rune('0'+i))+".") {
			t.Errorf("name %q parsed as %+v", name, p)
		}
	}
	if _, err := f.Deliver(ctx, strings.NewReader("x\n"), FolderOptions{Tag: "../x"}); err == nil {
		t.Error("a tag with a path was accepted")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "new")); len(ents) != 3 {
		t.Errorf("new/ holds %d messages, want 3", len(ents))
	}
	if err := f.SyncNew(record); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "new"); len(synced) != 1 || synced[0] != want {
		t.Errorf("fsync'd %v, want [%s]", synced, want)
	}
}

// TestFolderKeepsItsDirectories: a Folder writes through the tmp/ and new/
// it opened. A hostile local user who, during a batch, moves them away and
// puts symbolic links to a directory outside the folder in their place
// gets nothing written outside: the messages go on landing in the opened
// directories (now under their new names, inside the folder).
func TestFolderKeepsItsDirectories(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	dir := filepath.Join(base, "f")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	f, err := OpenFolder(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Deliver(ctx, strings.NewReader("Subject: 1\r\n\r\nx\r\n"), FolderOptions{DeferDirSync: true}); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"tmp", "new"} {
		if err := os.Rename(filepath.Join(dir, sub), filepath.Join(dir, "old-"+sub)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(dir, sub)); err != nil {
			t.Fatal(err)
		}
	}
	name, err := f.Deliver(ctx, strings.NewReader("Subject: 2\r\n\r\nx\r\n"), FolderOptions{DeferDirSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SyncNew(nil); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("%d files written outside the folder", len(ents))
	}
	if _, err := os.Stat(filepath.Join(dir, "old-new", name)); err != nil {
		t.Errorf("message not in the opened new/: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "old-tmp")); len(ents) != 0 {
		t.Errorf("opened tmp/ keeps %d files", len(ents))
	}
}

// TestFolderSyncFailure: when the fsync of new/ after a delivery fails,
// the message is taken back out of new/ (and nothing is left in tmp/), so
// that the source keeps it.
func TestFolderSyncFailure(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f, err := OpenFolder(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := syncDirFunc
	t.Cleanup(func() { syncDirFunc = old })
	boom := errors.New("disk on fire")
	syncDirFunc = func(*os.Root, string) error { return boom }
	if _, err := f.Deliver(ctx, strings.NewReader("Subject: s\r\n\r\nx\r\n"), FolderOptions{}); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the sync failure", err)
	}
	for _, sub := range []string{"tmp", "new"} {
		if ents, _ := os.ReadDir(filepath.Join(dir, sub)); len(ents) != 0 {
			t.Errorf("%s/ keeps %d files after the failed sync", sub, len(ents))
		}
	}
}
