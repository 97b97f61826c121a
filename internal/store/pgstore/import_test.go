package pgstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// TestImportMaildirKeepsUIDLs: a Maildir moved from Dovecot, imported,
// keeps every UIDL (Dovecot's and postino's own), byte-exact contents and
// sizes; importing again copies nothing; new mail gets new UIDLs.
func TestImportMaildirKeepsUIDLs(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "example.test", "alice", "Maildir")
	for _, sub := range []string{"new", "cur", "tmp"} {
		os.MkdirAll(filepath.Join(dir, sub), 0o700)
	}
	// As Dovecot 2.3 left it: three messages and dovecot-uidlist (the
	// third with a POP3 UIDL extension, as migration tools write it).
	files := map[string]string{
		"new/1795996373.M60969P32010.vm,S=17,W=20":      "Subject: a\n\nbody\n",
		"new/1795996375.M729124P32488.vm,S=20,W=23":     "Subject: b\n\nbody bb\n",
		"cur/1795996375.M756998P32490.vm,S=22,W=25:2,S": "Subject: c\n\nbody cccc\n",
		"dovecot-uidlist": "3 V1795996373 N4 G8fe5a203d5ba0c6b0a7d000083ecc375\n" +
			"1 :1795996373.M60969P32010.vm,S=17,W=20\n" +
			"2 W23 :1795996375.M729124P32488.vm,S=20,W=23\n" +
			"3 G0123456789abcdef0123456789abcdef P+OK-imported-42 W25 S22 :1795996375.M756998P32490.vm,S=22,W=25\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	src, err := maildir.New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.SetDovecotUIDLFormat(maildir.DefaultDovecotUIDLFormat); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Deliver(context.Background(), alice, strings.NewReader("Subject: d\n\npostino's own\n")); err != nil {
		t.Fatal(err)
	}
	smd, err := src.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	defer smd.Close()

	s := node(t, pgtest.NewDB(t), Options{})
	n, err := s.ImportMaildrop(context.Background(), alice, smd)
	if err != nil || n != 4 {
		t.Fatalf("imported %d, %v", n, err)
	}
	if n, err := s.ImportMaildrop(context.Background(), alice, smd); err != nil || n != 0 {
		t.Fatalf("second import copied %d, %v", n, err)
	}
	md, err := s.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	want := smd.Messages()
	got := md.Messages()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("imported %v, want %v", got, want)
	}
	if got[0].UID != "000000016b0cbad5" || got[2].UID != "+OK-imported-42" {
		t.Fatalf("Dovecot's UIDLs not kept: %v", got)
	}
	for i := range want {
		if a, b := readMsg(t, md, i), readMsg(t, smd, i); a != b {
			t.Fatalf("message %d: %q, Maildir has %q", i, a, b)
		}
	}
	// An imported UIDL deleted stays used.
	if err := md.Commit(context.Background(), []int{2}); err != nil {
		t.Fatal(err)
	}
	md.Close()
	if err := s.Import(context.Background(), alice, "+OK-imported-42", time.Time{}, strings.NewReader("x\n")); !errors.Is(err, ErrUIDLUsed) {
		t.Fatalf("reimport of a deleted UIDL: %v", err)
	}
	for _, bad := range []string{"", "has space", strings.Repeat("x", 71), "tab\t"} {
		if err := s.Import(context.Background(), alice, bad, time.Time{}, strings.NewReader("x\n")); err == nil {
			t.Errorf("UIDL %q accepted", bad)
		}
	}
}

// TestGeneratedUIDLSkipsImported: an imported UIDL that looks like one
// postino generates is never given to a new message.
func TestGeneratedUIDLSkipsImported(t *testing.T) {
	s := node(t, pgtest.NewDB(t), Options{})
	first := deliver(t, s, alice, "one\n")
	// The next generated UIDL, taken by an import.
	next := first[:strings.LastIndexByte(first, '.')+1] + "2"
	if err := s.Import(context.Background(), alice, next, time.Time{}, strings.NewReader("imported\n")); err != nil {
		t.Fatal(err)
	}
	if got := deliver(t, s, alice, "two\n"); got == next || got == first {
		t.Fatalf("new message got UIDL %q, already used", got)
	}
}
