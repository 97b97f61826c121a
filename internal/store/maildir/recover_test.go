package maildir

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// onDisk returns the unique parts of the files in new/ and cur/ of the
// Maildir of box, sorted.
func onDisk(t *testing.T, root, box string) []string {
	t.Helper()
	dir, err := mailboxDir(box)
	if err != nil {
		t.Fatal(err)
	}
	var bases []string
	for _, sub := range []string{"new", "cur"} {
		for _, n := range dirNames(t, filepath.Join(root, dir, sub)) {
			bases = append(bases, parseName(n).base)
		}
	}
	slices.Sort(bases)
	return bases
}

// journals lists the journal folder.
func journals(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, journalDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestRecoverJournals leaves half-applied commits in three mailboxes, as a
// crash in the middle of the unlinks does, and checks that RecoverJournals
// on a new Store (a restarted server) completes them on disk without any
// mailbox being opened, skips a mailbox whose lock is held, and discards a
// damaged journal without deleting anything.
func TestRecoverJournals(t *testing.T) {
	s, root := newTestStore(t)
	boxes := []string{"alice@example.test", "bob@example.test", "carol@other.test", "dave@example.test"}
	uids := map[string][]string{}
	for _, box := range boxes {
		for i := range 6 {
			uids[box] = append(uids[box], mustDeliver(t, s, box, fmt.Sprintf("Subject: %d\n\n%s\n", i, box)))
		}
	}
	want := map[string][]string{}
	for _, box := range boxes {
		dir, _ := mailboxDir(box)
		md := openMD(t, s, box)
		del := []string{uids[box][1], uids[box][2], uids[box][4]}
		if err := s.writeJournal(dir, del, 0); err != nil {
			t.Fatal(err)
		}
		// The crash came after the first unlink.
		for _, n := range dirNames(t, filepath.Join(root, dir, "new")) {
			if parseName(n).base == del[0] {
				if err := os.Remove(filepath.Join(root, dir, "new", n)); err != nil {
					t.Fatal(err)
				}
			}
		}
		md.Close()
		w := slices.Clone(uids[box])
		w = slices.DeleteFunc(w, func(u string) bool { return slices.Contains(del, u) })
		slices.Sort(w)
		want[box] = w
	}
	if len(onDisk(t, root, boxes[0])) != 5 {
		t.Fatal("the half-applied state was not set up")
	}
	// A damaged journal, as if edited by hand.
	bad := filepath.Join(root, journalDir, "0123456789abcdef0123456789abcdef")
	if err := os.WriteFile(bad, []byte(journalHeader+"\ndir \"example.test/alice/Maildir\"\n\""+uids[boxes[0]][0]+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2, err := New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	// dave's mailbox is held by a session: its journal is left for it.
	held, err := s2.OpenMaildrop(context.Background(), "dave@example.test")
	if err != nil {
		t.Fatal(err)
	}
	// OpenMaildrop completed dave's journal itself.
	if got := onDisk(t, root, "dave@example.test"); !slices.Equal(got, want["dave@example.test"]) {
		t.Fatalf("dave after OpenMaildrop: %v, want %v", got, want["dave@example.test"])
	}
	daveDir, _ := mailboxDir("dave@example.test")
	if err := s2.writeJournal(daveDir, []string{uids["dave@example.test"][0]}, 0); err != nil {
		t.Fatal(err)
	}
	n, err := s2.RecoverJournals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("RecoverJournals completed %d journals, want 3", n)
	}
	for _, box := range boxes[:3] {
		if got := onDisk(t, root, box); !slices.Equal(got, want[box]) {
			t.Errorf("%s on disk: %v, want %v", box, got, want[box])
		}
	}
	if got := onDisk(t, root, "dave@example.test"); !slices.Equal(got, want["dave@example.test"]) {
		t.Errorf("the locked mailbox was changed: %v", got)
	}
	if j := journals(t, root); !slices.Equal(j, []string{filepath.Base(journalPath(daveDir))}) {
		t.Errorf("journals left: %v, want only dave's", j)
	}
	held.Close()
	if n, err := s2.RecoverJournals(context.Background()); err != nil || n != 1 {
		t.Errorf("second RecoverJournals: %d, %v", n, err)
	}
	if j := journals(t, root); len(j) != 0 {
		t.Errorf("journals left: %v", j)
	}
	if got := onDisk(t, root, "dave@example.test"); len(got) != len(want["dave@example.test"])-1 {
		t.Errorf("dave's second journal not applied: %v", got)
	}
}

// TestRecoverJournalsNone: a root without the journal folder (never
// committed) is fine, the journal of a mailbox removed meanwhile is
// dropped, and a cancelled context is honoured.
func TestRecoverJournalsNone(t *testing.T) {
	s, root := newTestStore(t)
	if n, err := s.RecoverJournals(context.Background()); n != 0 || err != nil {
		t.Fatalf("RecoverJournals = %d, %v", n, err)
	}
	mustDeliver(t, s, "gone@example.test", "x\n")
	if err := s.writeJournal("example.test/gone/Maildir", []string{"x"}, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "example.test", "gone")); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RecoverJournals(context.Background()); n != 1 || err != nil {
		t.Fatalf("RecoverJournals with a removed mailbox = %d, %v", n, err)
	}
	if j := journals(t, root); len(j) != 0 {
		t.Fatalf("journals left: %v", j)
	}
	mustDeliver(t, s, testBox, "x\n")
	if err := s.writeJournal("example.test/alice/Maildir", []string{"nothing"}, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.RecoverJournals(ctx); err == nil {
		t.Fatal("RecoverJournals ignored a cancelled context")
	}
}

// TestCommitUnlinkFailure: once the journal is durable, Commit succeeds
// even when an unlink fails (here a directory that cannot be removed sits
// under the unique name of a marked message), the journal stays, and the
// deletion completes later, at startup recovery, without a login.
func TestCommitUnlinkFailure(t *testing.T) {
	s, root := newTestStore(t)
	var uids []string
	for i := range 4 {
		uids = append(uids, mustDeliver(t, s, testBox, fmt.Sprintf("m%d\n", i)))
	}
	dir := "example.test/alice/Maildir"
	md := openMD(t, s, testBox)
	obstacle := filepath.Join(root, dir, "cur", uids[2]+":2,S")
	if err := os.MkdirAll(filepath.Join(obstacle, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := md.Commit(context.Background(), []int{1, 2}); err != nil {
		t.Fatalf("Commit after a durable journal: %v", err)
	}
	md.Close()
	if j := journals(t, root); len(j) != 1 {
		t.Fatalf("journal folder after a failed unlink: %v", j)
	}
	// The next login cannot show half the UPDATE: it fails while the
	// obstacle stays.
	if _, err := s.OpenMaildrop(context.Background(), testBox); err == nil || !strings.Contains(err.Error(), "deleting") {
		t.Fatalf("OpenMaildrop with the journal unapplied: %v", err)
	}
	if err := os.Remove(filepath.Join(obstacle, "x")); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RecoverJournals(context.Background()); n != 1 || err != nil {
		t.Fatalf("RecoverJournals = %d, %v", n, err)
	}
	want := []string{uids[0], uids[3]}
	slices.Sort(want)
	if got := onDisk(t, root, testBox); !slices.Equal(got, want) {
		t.Fatalf("on disk %v, want %v", got, want)
	}
	if j := journals(t, root); len(j) != 0 {
		t.Fatalf("journals left: %v", j)
	}
}
