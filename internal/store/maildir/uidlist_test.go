package maildir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dovecotList is a dovecot-uidlist as Dovecot 2.3.19 wrote it for a
// Maildir of three messages delivered by dovecot-lda, with extensions added
// to message 3 (GUID, POP3 UIDL, sizes) the way migration tools write them.
const dovecotList = "3 V1795996373 N4 G8fe5a203d5ba0c6b0a7d000083ecc375\n" +
	"1 :1795996373.M60969P32010.vm,S=17,W=20\n" +
	"2 W23 :1795996375.M729124P32488.vm,S=20,W=23\n" +
	"3 G0123456789abcdef0123456789abcdef P+OK-imported-42 W25 S22 :1795996375.M756998P32490.vm,S=22,W=25\n"

func TestParseUIDList(t *testing.T) {
	l, bad, err := parseUIDList(strings.NewReader(dovecotList), nil)
	if err != nil || bad != 0 {
		t.Fatalf("parse: %v, %d bad lines", err, bad)
	}
	if l.version != 3 || l.validity != 1795996373 || l.next != 4 || len(l.entries) != 3 {
		t.Fatalf("list = %+v", l)
	}
	e := l.entries["1795996375.M756998P32490.vm"]
	want := uidEntry{uid: 3, name: "1795996375.M756998P32490.vm,S=22,W=25", guid: "0123456789abcdef0123456789abcdef", pop3: "+OK-imported-42"}
	if e != want {
		t.Fatalf("entry 3 = %+v, want %+v", e, want)
	}

	// Version 1 (Dovecot 1.0): no extensions, the name follows the UID.
	l, bad, err = parseUIDList(strings.NewReader("1 1200000000 3\n1 1199999999.P1.host:2,S\n2 1199999999.P2.host\n"), nil)
	if err != nil || bad != 0 || l.version != 1 || l.validity != 1200000000 || len(l.entries) != 2 {
		t.Fatalf("v1: %+v, %d, %v", l, bad, err)
	}
	if e := l.entries["1199999999.P1.host"]; e.uid != 1 || e.name != "1199999999.P1.host" {
		t.Fatalf("v1 entry = %+v (the flags must not be part of the name)", e)
	}

	// A POP3 UIDL may contain ':': the name follows the word that starts
	// with ':', as Dovecot reads it.
	l, bad, err = parseUIDList(strings.NewReader("3 V1 N3\n1 Pa:b,c :1199999999.P1.host,S=5:2,S\n2 :1199999999.P2.host\n"), nil)
	if err != nil || bad != 0 || len(l.entries) != 2 {
		t.Fatalf("UIDL with ':': %+v, %d, %v", l, bad, err)
	}
	if e := l.entries["1199999999.P1.host"]; e.pop3 != "a:b,c" || e.name != "1199999999.P1.host,S=5" {
		t.Fatalf("entry with ':' in its UIDL = %+v", e)
	}
}

func TestParseUIDListMalformed(t *testing.T) {
	for _, h := range []string{
		"",
		"\n1 :a\n",
		"3\n",
		"3 N5 G00\n",                // no UIDVALIDITY
		"3 V0 N5\n",                 // UIDVALIDITY 0
		"3 Vx N5\n",                 // not a number
		"3 V4294967296 N5\n",        // over 32 bits
		"1 12\n",                    // v1 with a field missing
		"4 V1 N1\n",                 // unknown version
		"garbage line here\n1 :a\n", // not a header
	} {
		if _, _, err := parseUIDList(strings.NewReader(h), nil); !errors.Is(err, errUIDList) {
			t.Errorf("header %q: err = %v, want errUIDList", h, err)
		}
	}
	// Damaged message lines are skipped one by one; the rest is kept.
	body := "3 V7 N9\n" +
		"1 :good.1,S=1\n" +
		"x :bad-uid\n" +
		"0 :zero-uid\n" +
		"4294967296 :uid-over-32-bits\n" +
		"5 no-colon-in-v3\n" +
		"6 :\n" + // empty name
		"7 :../../etc/passwd\n" +
		"8 :good.1,S=2\n" + // same base as UID 1: first wins
		"9\n" +
		"\n" +
		"10 P :good.2\n" // an empty P extension is no UIDL
	l, bad, err := parseUIDList(strings.NewReader(body), nil)
	if err != nil {
		t.Fatal(err)
	}
	if bad != 8 || len(l.entries) != 2 {
		t.Fatalf("bad = %d, entries = %+v", bad, l.entries)
	}
	if e := l.entries["good.1"]; e.uid != 1 {
		t.Fatalf("good.1 = %+v", e)
	}
	f, _ := ParseUIDLFormat("%u")
	if u, ok := l.uidl(f, "good.2"); !ok || u != "10" {
		t.Fatalf("good.2 = %q %v", u, ok)
	}
	// A line longer than the limit ends the parse but keeps what was read.
	long := "3 V7 N9\n1 :a\n2 :" + strings.Repeat("b", maxUIDListLine) + "\n3 :c\n"
	l, bad, err = parseUIDList(strings.NewReader(long), nil)
	if err != nil || bad != 1 || len(l.entries) != 1 {
		t.Fatalf("long line: %v, %d, %+v", err, bad, l)
	}
}

func TestUIDLFormat(t *testing.T) {
	l, _, err := parseUIDList(strings.NewReader(dovecotList), nil)
	if err != nil {
		t.Fatal(err)
	}
	e1 := l.entries["1795996373.M60969P32010.vm"]
	e3 := l.entries["1795996375.M756998P32490.vm"]
	for _, c := range []struct {
		format string
		e      uidEntry
		want   string
	}{
		// What Dovecot 2.3.19 answered to UIDL for this message with
		// pop3_uidl_format = %08Xu%08Xv|%u|%v|%f|%g|%Xv.
		{"%08Xu%08Xv|%u|%v|%f|%g|%Xv", e1, "000000016b0cbad5|1|1795996373|1795996373.M60969P32010.vm,S=17,W=20|1795996373.M60969P32010.vm,S=17,W=20|6b0cbad5"},
		{DefaultDovecotUIDLFormat, e1, "000000016b0cbad5"},
		{"%v.%u", e1, "1795996373.1"},
		{"%u", e1, "1"},
		{"%f", e1, "1795996373.M60969P32010.vm,S=17,W=20"},
		{"%g", e3, "0123456789abcdef0123456789abcdef"},
		{"%UXv-%04u", e1, "6B0CBAD5-0001"},
		{"%10f", e1, "1795996373"}, // a width without '0' takes a prefix
		{"100%%-%u", e1, "100%-1"},
	} {
		f, err := ParseUIDLFormat(c.format)
		if err != nil {
			t.Fatalf("%q: %v", c.format, err)
		}
		if got := f.expand(l, c.e); got != c.want {
			t.Errorf("%q: %q, want %q", c.format, got, c.want)
		}
		if f.String() != c.format {
			t.Errorf("String() = %q", f.String())
		}
	}
	for _, bad := range []string{"", "uidl", "%", "%08X", "%m", "%08Xm", "%{uid}", "%n", "%u %v", "%u\x7f", "%99u"} {
		if _, err := ParseUIDLFormat(bad); !errors.Is(err, ErrUIDLFormat) {
			t.Errorf("%q: err = %v, want ErrUIDLFormat", bad, err)
		}
	}
	// The P extension wins over the format.
	f, _ := ParseUIDLFormat(DefaultDovecotUIDLFormat)
	if u, ok := l.uidl(f, "1795996375.M756998P32490.vm"); !ok || u != "+OK-imported-42" {
		t.Fatalf("P extension: %q %v", u, ok)
	}
	if _, ok := l.uidl(f, "not-listed"); ok {
		t.Fatal("unlisted base has a UIDL")
	}
}

func TestOwnBase(t *testing.T) {
	s, _ := newTestStore(t)
	for range 5 {
		if b := s.uniqueName(); !ownBase(b) {
			t.Fatalf("own name %q not recognised", b)
		}
	}
	for _, b := range []string{
		"1700000000.M123456P4242Q1R0123456789abcdef",
		"1700000000.M1P1Q1R0123456789abcdef.host.example",
	} {
		if !ownBase(b) {
			t.Errorf("%q not recognised", b)
		}
	}
	for _, b := range []string{
		"1795996373.M60969P32010.vm", // Dovecot
		"1795996373.M60969P32010Q2.vm",
		"1700000000.M1P1Q1R0123456789ABCDEF.host", // upper-case hex
		"1700000000.M1P1Q1R0123456789abcde.host",  // 15 digits
		"1700000000.M1P1Q1R0123456789abcdef0",     // 17 digits
		"1700000000.12345_1.mutthost",
		"M1P1Q1R0123456789abcdef",
		"",
	} {
		if ownBase(b) {
			t.Errorf("%q taken for postino's", b)
		}
	}
}

// dovecotMaildir writes, for alice@example.test, the Maildir Dovecot left:
// three messages (one already read by a MUA and moved to cur/ with flags)
// and its dovecot-uidlist.
func dovecotMaildir(t testing.TB, root string) string {
	t.Helper()
	dir := maildirPath(root)
	for _, sub := range []string{"new", "cur", "tmp"} {
		os.MkdirAll(filepath.Join(dir, sub), 0o700)
	}
	files := map[string]string{
		"new/1795996373.M60969P32010.vm,S=17,W=20":      "Subject: a\n\nbody\n",
		"new/1795996375.M729124P32488.vm,S=20,W=23":     "Subject: b\n\nbody b\n",
		"cur/1795996375.M756998P32490.vm,S=22,W=25:2,S": "Subject: c\n\nbody cc\n",
		"dovecot-uidlist": dovecotList,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func uidls(md *Maildrop) []string {
	var u []string
	for _, m := range md.Messages() {
		u = append(u, m.UID)
	}
	return u
}

func TestDovecotUIDLs(t *testing.T) {
	s, root := newTestStore(t)
	dir := dovecotMaildir(t, root)
	own := mustDeliver(t, s, "alice@example.test", "Subject: new\r\n\r\nafter the move\r\n")

	want := []string{"000000016b0cbad5", "000000026b0cbad5", "+OK-imported-42", own}
	md := openMD(t, s, "alice@example.test")
	if got := uidls(md); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("UIDLs = %q, want %q", got, want)
	}
	md.Close()

	// A MUA reads message 1 (moved to cur/ with flags), another program
	// renames message 2 with other fields: the UIDLs stay.
	os.Rename(filepath.Join(dir, "new/1795996373.M60969P32010.vm,S=17,W=20"), filepath.Join(dir, "cur/1795996373.M60969P32010.vm,S=17,W=20:2,RS"))
	os.Rename(filepath.Join(dir, "new/1795996375.M729124P32488.vm,S=20,W=23"), filepath.Join(dir, "new/1795996375.M729124P32488.vm,W=23,S=20"))
	md = openMD(t, s, "alice@example.test")
	if got := uidls(md); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after renames UIDLs = %q, want %q", got, want)
	}
	// Deleting one keeps the others' UIDLs.
	if err := md.Commit(context.Background(), []int{0}); err != nil {
		t.Fatal(err)
	}
	md.Close()
	md = openMD(t, s, "alice@example.test")
	if got := uidls(md); fmt.Sprint(got) != fmt.Sprint(want[1:]) {
		t.Fatalf("after delete UIDLs = %q, want %q", got, want[1:])
	}
	md.Close()

	// Dovecot run on the Maildir again adds postino's message to its list:
	// that message keeps postino's UIDL.
	list := dovecotList + "4 :" + own + ",S=27,W=29\n"
	if err := os.WriteFile(filepath.Join(dir, uidlistName), []byte(list), 0o600); err != nil {
		t.Fatal(err)
	}
	md = openMD(t, s, "alice@example.test")
	if got := uidls(md); fmt.Sprint(got) != fmt.Sprint(want[1:]) {
		t.Fatalf("with postino's message in the list UIDLs = %q, want %q", got, want[1:])
	}
	md.Close()
}

func TestDovecotUIDLFormatSetting(t *testing.T) {
	s, root := newTestStore(t)
	dovecotMaildir(t, root)
	if err := s.SetDovecotUIDLFormat("%m"); !errors.Is(err, ErrUIDLFormat) {
		t.Fatalf("%%m: %v", err)
	}
	if err := s.SetDovecotUIDLFormat("%v.%u"); err != nil {
		t.Fatal(err)
	}
	md := openMD(t, s, "alice@example.test")
	want := []string{"1795996373.1", "1795996373.2", "+OK-imported-42"}
	if got := uidls(md); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("UIDLs = %q, want %q", got, want)
	}
	md.Close()

	// Disabled: the file names give the UIDLs.
	if err := s.SetDovecotUIDLFormat(""); err != nil {
		t.Fatal(err)
	}
	md = openMD(t, s, "alice@example.test")
	want = []string{"1795996373.M60969P32010.vm", "1795996375.M729124P32488.vm", "1795996375.M756998P32490.vm"}
	if got := uidls(md); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("disabled: UIDLs = %q, want %q", got, want)
	}
	md.Close()
}

// TestDovecotUIDLsHostile covers a uidlist written by someone who wants to
// break the mailbox: UIDLs that POP3 cannot carry, duplicates, a damaged
// header, an unreadable file.
func TestDovecotUIDLsHostile(t *testing.T) {
	s, root := newTestStore(t)
	dir := dovecotMaildir(t, root)
	write := func(list string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, uidlistName), []byte(list), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	own := []string{"1795996373.M60969P32010.vm", "1795996375.M729124P32488.vm", "1795996375.M756998P32490.vm"}

	// P with a 71-octet UIDL, and two messages claiming the same UIDL.
	write("3 V5 N4\n" +
		"1 P" + strings.Repeat("x", 71) + " :1795996373.M60969P32010.vm\n" +
		"2 Psame :1795996375.M729124P32488.vm\n" +
		"3 Psame :1795996375.M756998P32490.vm\n")
	md := openMD(t, s, "alice@example.test")
	want := []string{own[0], "same", own[2]}
	if got := uidls(md); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("UIDLs = %q, want %q", got, want)
	}
	md.Close()

	// A format that makes a UIDL longer than 70 octets falls back too.
	write(dovecotList)
	if err := s.SetDovecotUIDLFormat("%f%f"); err != nil {
		t.Fatal(err)
	}
	md = openMD(t, s, "alice@example.test")
	if got := uidls(md); fmt.Sprint(got[:2]) != fmt.Sprint(own[:2]) {
		t.Fatalf("too long: UIDLs = %q", got)
	}
	md.Close()
	s.SetDovecotUIDLFormat(DefaultDovecotUIDLFormat)

	// A damaged header: nothing can be imported.
	write("3 Vgarbage\n1 :1795996373.M60969P32010.vm\n")
	md = openMD(t, s, "alice@example.test")
	if got := uidls(md); fmt.Sprint(got) != fmt.Sprint(own) {
		t.Fatalf("damaged header: UIDLs = %q", got)
	}
	md.Close()

	// A symbolic link out of the mail root is not followed: the login
	// fails rather than import UIDLs from a file outside.
	outside := filepath.Join(t.TempDir(), "list")
	os.WriteFile(outside, []byte("3 V5 N2\n1 Pstolen :1795996373.M60969P32010.vm\n"), 0o600)
	os.Remove(filepath.Join(dir, uidlistName))
	if err := os.Symlink(outside, filepath.Join(dir, uidlistName)); err != nil {
		t.Fatal(err)
	}
	if md, err := s.OpenMaildrop(context.Background(), "alice@example.test"); err == nil {
		u := uidls(md.(*Maildrop))
		md.Close()
		t.Fatalf("symlink out of the root: login succeeded with UIDLs %q", u)
	}

	// A uidlist that cannot be read fails the login rather than show
	// other UIDLs (a directory in its place gives EISDIR on any user).
	os.Remove(filepath.Join(dir, uidlistName))
	os.Mkdir(filepath.Join(dir, uidlistName), 0o700)
	if md, err := s.OpenMaildrop(context.Background(), "alice@example.test"); err == nil {
		md.Close()
		t.Fatal("unreadable dovecot-uidlist: login succeeded")
	}
}

// TestDovecotUIDLsScanCache checks that the snapshot cache of a large
// mailbox is not reused once dovecot-uidlist appears or changes.
func TestDovecotUIDLsScanCache(t *testing.T) {
	s, root := newTestStore(t)
	dir := maildirPath(root)
	writeMessages(t, dir, 1200)
	ageDirs(t, dir)
	first := "1700000000.M0P1Q0Rabc.host"

	md := openMD(t, s, "alice@example.test")
	if got := md.Messages()[0].UID; got != first {
		t.Fatalf("UIDL 1 = %q", got)
	}
	md.Close()
	if s.scans.m[s.relDir(t, "alice@example.test")] == nil {
		t.Fatal("not cached")
	}
	list := filepath.Join(dir, uidlistName)
	old := time.Now().Add(-time.Minute)
	os.WriteFile(list, []byte("3 V9 N2\n1 :"+first+",S=19,W=22\n"), 0o600)
	os.Chtimes(list, old, old)
	md = openMD(t, s, "alice@example.test")
	if got := md.Messages()[0].UID; got != "0000000100000009" {
		t.Fatalf("after the uidlist appeared UIDL 1 = %q", got)
	}
	md.Close()
	if s.scans.m[s.relDir(t, "alice@example.test")] == nil {
		t.Fatal("not cached with a quiet uidlist")
	}
	// Same mtime, other size.
	os.WriteFile(list, []byte("3 V10 N2\n1 :"+first+",S=19,W=22\n"), 0o600)
	os.Chtimes(list, old, old)
	md = openMD(t, s, "alice@example.test")
	if got := md.Messages()[0].UID; got != "000000010000000a" {
		t.Fatalf("after the uidlist changed UIDL 1 = %q", got)
	}
	md.Close()
}

func TestParseUIDListKeep(t *testing.T) {
	keep := map[string]struct{}{"1795996375.M729124P32488.vm": {}, "not-in-the-list": {}}
	l, bad, err := parseUIDList(strings.NewReader(dovecotList), keep)
	if err != nil || bad != 0 {
		t.Fatal(err, bad)
	}
	if len(l.entries) != 1 || l.entries["1795996375.M729124P32488.vm"].uid != 2 {
		t.Fatalf("entries = %+v", l.entries)
	}
}
