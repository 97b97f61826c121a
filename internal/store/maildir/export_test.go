package maildir

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/store"
)

// memDrop is a store.Maildrop held in memory: the source of an export,
// with UIDLs no Maildir file name could carry.
type memDrop struct {
	uids  []string
	msgs  [][]byte    // wire form
	dates []time.Time // internal dates, when known
}

func (m *memDrop) InternalDate(i int) time.Time {
	if i < len(m.dates) {
		return m.dates[i]
	}
	return time.Time{}
}

func (m *memDrop) Messages() []store.MessageInfo {
	out := make([]store.MessageInfo, len(m.uids))
	for i, u := range m.uids {
		out[i] = store.MessageInfo{UID: u, Size: int64(len(m.msgs[i]))}
	}
	return out
}

func (m *memDrop) Open(_ context.Context, i int) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(m.msgs[i])), nil
}
func (m *memDrop) Commit(context.Context, []int) error { return nil }
func (m *memDrop) Close() error                        { return nil }

// exportSource has UIDLs with ':', ',', '/' and a Dovecot-looking one,
// and a message with a bare CR in a line.
func exportSource() *memDrop {
	return &memDrop{
		uids: []string{"P1.1", "a:b,c/d", "00000001" + "5f0e3a11", "~!x"},
		msgs: [][]byte{
			[]byte("Subject: one\r\n\r\nbody one\r\n"),
			[]byte("Subject: two\r\n\r\nline\r\n.dot\r\n"),
			[]byte("Subject: three\r\n\r\na\rb\r\n"),
			[]byte("Subject: four\r\n\r\n" + strings.Repeat("x", 100000) + "\r\n"),
		},
	}
}

// checkExported opens the export under root as a Maildir store serving
// Dovecot's UIDLs (the default) and checks UIDLs and octets against src.
func checkExported(t *testing.T, root, box string, src *memDrop) {
	t.Helper()
	s, err := New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	md := openMD(t, s, box)
	defer md.Close()
	got := md.Messages()
	if len(got) != len(src.uids) {
		t.Fatalf("exported maildrop has %d messages, want %d", len(got), len(src.uids))
	}
	byUID := map[string]int{}
	for i, m := range got {
		byUID[m.UID] = i
	}
	for j, u := range src.uids {
		i, ok := byUID[u]
		if !ok {
			t.Fatalf("UIDL %q missing from the export (have %v)", u, got)
		}
		if b := readMsg(t, md, i); !bytes.Equal(b, src.msgs[j]) {
			t.Errorf("message %q: got %q, want %q", u, b, src.msgs[j])
		}
		if got[i].Size != int64(len(src.msgs[j])) {
			t.Errorf("message %q: size %d, want %d", u, got[i].Size, len(src.msgs[j]))
		}
	}
}

func TestExportMaildrop(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "export")
	dir, err := ExportDir(root, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	src := exportSource()
	arrived := time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)
	src.dates = []time.Time{arrived}
	res, err := ExportMaildrop(ctx, dir, src)
	if err != nil {
		t.Fatal(err)
	}
	if res.Written != 4 || res.Skipped != 0 {
		t.Fatalf("first export: %+v, want 4 written", res)
	}
	// The file of a message whose arrival is known has it as its time.
	for _, n := range dirNames(t, filepath.Join(dir, "new")) {
		fi, err := os.Stat(filepath.Join(dir, "new", n))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(n, exportTag("P1.1")) != fi.ModTime().Equal(arrived) {
			t.Errorf("%s has time %v; only P1.1's is %v", n, fi.ModTime(), arrived)
		}
	}
	checkExported(t, root, "alice@example.test", src)
	list, err := os.ReadFile(filepath.Join(dir, uidlistName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(list), "3 V") || !strings.Contains(string(list), " Pa:b,c/d :") {
		t.Errorf("dovecot-uidlist:\n%s", list)
	}

	// Idempotent: nothing written again.
	res, err = ExportMaildrop(ctx, dir, src)
	if err != nil || res.Written != 0 || res.Skipped != 4 {
		t.Fatalf("second export: %+v, %v; want 4 skipped", res, err)
	}
	// A new message in the source is added, the others kept.
	src.uids = append(src.uids, "new-one")
	src.msgs = append(src.msgs, []byte("Subject: five\r\n\r\nfive\r\n"))
	res, err = ExportMaildrop(ctx, dir, src)
	if err != nil || res.Written != 1 || res.Skipped != 4 {
		t.Fatalf("third export: %+v, %v; want 1 written", res, err)
	}
	checkExported(t, root, "alice@example.test", src)
	if n := len(dirNames(t, filepath.Join(dir, "new"))); n != 5 {
		t.Errorf("new/ has %d files, want 5", n)
	}
}

// TestExportInterrupted: a run that died after writing message files but
// before the list finds them again by their tag and writes no copy.
func TestExportInterrupted(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	dir, _ := ExportDir(root, "alice@example.test")
	src := exportSource()
	if _, err := ExportMaildrop(ctx, dir, src); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, uidlistName)); err != nil {
		t.Fatal(err)
	}
	// A message the user deleted from the export is written again.
	names := dirNames(t, filepath.Join(dir, "new"))
	if err := os.Remove(filepath.Join(dir, "new", names[0])); err != nil {
		t.Fatal(err)
	}
	res, err := ExportMaildrop(ctx, dir, src)
	if err != nil || res.Written != 1 || res.Skipped != 3 {
		t.Fatalf("export after interruption: %+v, %v; want 1 written, 3 skipped", res, err)
	}
	checkExported(t, root, "alice@example.test", src)
	if n := len(dirNames(t, filepath.Join(dir, "new"))); n != 4 {
		t.Errorf("new/ has %d files, want 4", n)
	}
}

// TestExportHostileList: a dovecot-uidlist that is not one refuses the
// export rather than be replaced.
func TestExportHostileList(t *testing.T) {
	root := t.TempDir()
	dir, _ := ExportDir(root, "alice@example.test")
	os.MkdirAll(dir, 0o700)
	if err := os.WriteFile(filepath.Join(dir, uidlistName), []byte("9 garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ExportMaildrop(context.Background(), dir, exportSource()); err == nil {
		t.Fatal("export over a malformed dovecot-uidlist succeeded")
	}
	if _, err := ExportDir(root, "../x@example.test"); err == nil {
		t.Fatal("ExportDir accepted a mailbox name with ..")
	}
}

// FuzzExportList: any two UIDLs written into a dovecot-uidlist by an
// export are read back as they were, under the file they name.
func FuzzExportList(f *testing.F) {
	f.Add("P1.1", "a:b,c/d")
	f.Add(":x", "::")
	f.Add("G1", "P2")
	f.Fuzz(func(t *testing.T, u1, u2 string) {
		if !validUID(u1) || !validUID(u2) || u1 == u2 {
			return
		}
		dir := t.TempDir()
		l := &uidList{version: 3, validity: 7, next: 3, entries: map[string]uidEntry{}}
		for i, u := range []string{u1, u2} {
			name := fmt.Sprintf("1.M1P1Q%dX%s.host,S=1,W=2", i, exportTag(u))
			l.entries[parseName(name).base] = uidEntry{uid: uint32(i + 1), name: name, pop3: u}
		}
		if err := writeExportList(dir, l); err != nil {
			t.Fatal(err)
		}
		got, err := readExportList(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.entries) != 2 || got.validity != 7 || got.next != 3 {
			t.Fatalf("read back %+v", got)
		}
		for base, e := range l.entries {
			if g := got.entries[base]; g != e {
				t.Fatalf("entry %+v read back as %+v", e, g)
			}
		}
	})
}
