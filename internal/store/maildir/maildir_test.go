package maildir

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/postino-mail/postino/internal/store"
)

const testBox = "alice@example.test"

func newTestStore(t testing.TB) (*Store, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "mail")
	s, err := New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, root
}

func maildirPath(root string) string {
	return filepath.Join(root, "example.test", "alice", "Maildir")
}

// refStored is the reference for what Deliver stores: CRLF becomes LF.
func refStored(in []byte) []byte {
	return bytes.ReplaceAll(in, []byte("\r\n"), []byte("\n"))
}

// refWire is the reference wire form of stored octets (see wire.go).
func refWire(stored []byte) []byte {
	var out []byte
	for i, c := range stored {
		if c == '\n' && (i == 0 || stored[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	if len(stored) > 0 && stored[len(stored)-1] != '\n' {
		out = append(out, '\r', '\n')
	}
	return out
}

func openMD(t testing.TB, s *Store, box string) *Maildrop {
	t.Helper()
	md, err := s.OpenMaildrop(context.Background(), box)
	if err != nil {
		t.Fatalf("OpenMaildrop: %v", err)
	}
	return md.(*Maildrop)
}

func readMsg(t testing.TB, md *Maildrop, i int) []byte {
	t.Helper()
	rc, err := md.Open(context.Background(), i)
	if err != nil {
		t.Fatalf("Open(%d): %v", i, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading message %d: %v", i, err)
	}
	return b
}

func mustDeliver(t testing.TB, s *Store, box, msg string) string {
	t.Helper()
	uid, err := s.Deliver(context.Background(), box, strings.NewReader(msg))
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	return uid
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

var deliverCases = []struct {
	name, in, wire string
}{
	{"lf", "Subject: a\n\nbody\n", "Subject: a\r\n\r\nbody\r\n"},
	{"crlf", "Subject: a\r\n\r\nbody\r\n", "Subject: a\r\n\r\nbody\r\n"},
	{"mixed", "a\r\nb\nc\r\n", "a\r\nb\r\nc\r\n"},
	{"no final newline", "Subject: a\n\nbody", "Subject: a\r\n\r\nbody\r\n"},
	{"no final newline crlf", "a\r\nb", "a\r\nb\r\n"},
	{"dots", ".\n..x\n.y\r\n.", ".\r\n..x\r\n.y\r\n.\r\n"},
	{"8bit", "Subject: caf\xc3\xa9\n\n\xff\xfe\x00\x80\n", "Subject: caf\xc3\xa9\r\n\r\n\xff\xfe\x00\x80\r\n"},
	{"bare cr", "a\rb\r\nc\r", "a\rb\r\nc\r\r\n"},
	{"bare cr before crlf", "x\r\r\n", "x\r\n"}, // documented: the CRLF becomes LF and the CR before it then pairs with it
	{"only newline", "\n", "\r\n"},
	{"only crlf", "\r\n", "\r\n"},
	{"single byte", "x", "x\r\n"},
	{"blank lines", "\n\n\r\n\n", "\r\n\r\n\r\n\r\n"},
}

func TestDeliverRoundTrip(t *testing.T) {
	readers := map[string]func(string) io.Reader{
		"plain":   func(s string) io.Reader { return strings.NewReader(s) },
		"onebyte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"dataerr": func(s string) io.Reader { return iotest.DataErrReader(strings.NewReader(s)) },
		"half":    func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
	}
	s, root := newTestStore(t)
	type want struct {
		uid    string
		stored string
		wire   string
	}
	var wants []want
	for _, c := range deliverCases {
		for rn, mk := range readers {
			uid, err := s.Deliver(context.Background(), testBox, mk(c.in))
			if err != nil {
				t.Fatalf("%s/%s: Deliver: %v", c.name, rn, err)
			}
			wants = append(wants, want{uid, string(refStored([]byte(c.in))), c.wire})
		}
	}
	// Sanity check of the reference functions against the table.
	for _, c := range deliverCases {
		if got := string(refWire(refStored([]byte(c.in)))); got != c.wire {
			t.Fatalf("%s: reference wire %q, table says %q", c.name, got, c.wire)
		}
	}
	md := openMD(t, s, testBox)
	defer md.Close()
	msgs := md.Messages()
	if len(msgs) != len(wants) {
		t.Fatalf("got %d messages, want %d", len(msgs), len(wants))
	}
	byUID := map[string]int{}
	for i, m := range msgs {
		byUID[m.UID] = i
	}
	newDir := filepath.Join(maildirPath(root), "new")
	for _, w := range wants {
		i, ok := byUID[w.uid]
		if !ok {
			t.Fatalf("uid %s not listed", w.uid)
		}
		got := readMsg(t, md, i)
		if string(got) != w.wire {
			t.Errorf("uid %s: got %q, want %q", w.uid, got, w.wire)
		}
		if msgs[i].Size != int64(len(got)) {
			t.Errorf("uid %s: Size %d, read %d octets", w.uid, msgs[i].Size, len(got))
		}
		// The file: name carries S= and W=, content is the LF form.
		name := formatName(w.uid, int64(len(w.stored)), int64(len(w.wire)))
		data, err := os.ReadFile(filepath.Join(newDir, name))
		if err != nil {
			t.Fatalf("uid %s: stored file: %v", w.uid, err)
		}
		if string(data) != w.stored {
			t.Errorf("uid %s: stored %q, want %q", w.uid, data, w.stored)
		}
	}
	// The reader behaves as an io.Reader should.
	for i, m := range msgs {
		rc, err := md.Open(context.Background(), i)
		if err != nil {
			t.Fatal(err)
		}
		want := readMsg(t, md, i)
		if err := iotest.TestReader(rc, want); err != nil {
			t.Errorf("message %d (%s): %v", i, m.UID, err)
		}
		rc.Close()
	}
}

func TestDeliverLarge(t *testing.T) {
	s, _ := newTestStore(t)
	// Lines of varied lengths, CRLF and LF, CRs placed at every position
	// relative to the 32 KiB chunk boundaries.
	var in bytes.Buffer
	for i := 0; in.Len() < 300<<10; i++ {
		in.WriteString(strings.Repeat("x", i%97))
		switch i % 3 {
		case 0:
			in.WriteString("\r\n")
		case 1:
			in.WriteString("\n")
		case 2:
			in.WriteString("\r")
		}
	}
	in.WriteString("tail")
	for _, r := range []io.Reader{bytes.NewReader(in.Bytes()), iotest.HalfReader(bytes.NewReader(in.Bytes()))} {
		if _, err := s.Deliver(context.Background(), testBox, r); err != nil {
			t.Fatal(err)
		}
	}
	want := refWire(refStored(in.Bytes()))
	md := openMD(t, s, testBox)
	defer md.Close()
	for i, m := range md.Messages() {
		got := readMsg(t, md, i)
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d differs (len %d, want %d)", i, len(got), len(want))
		}
		if m.Size != int64(len(want)) {
			t.Fatalf("Size %d, want %d", m.Size, len(want))
		}
		// Small reads.
		rc, _ := md.Open(context.Background(), i)
		got, err := io.ReadAll(iotest.OneByteReader(rc))
		rc.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("one-byte reads: err %v, equal %v", err, bytes.Equal(got, want))
		}
	}
}

var uniqueRe = regexp.MustCompile(`^[0-9]+\.M[0-9]+P[0-9]+Q[0-9]+R[0-9a-f]{16}\.[\x21-\x2b\x2d-\x39\x3b-\x7e]+,S=([0-9]+),W=([0-9]+)$`)

func TestLayout(t *testing.T) {
	s, root := newTestStore(t)
	uid := mustDeliver(t, s, testBox, "Subject: x\n\nhello\n")
	md := filepath.Join(root, "example.test", "alice", "Maildir")
	for _, sub := range []string{"", "cur", "new", "tmp"} {
		fi, err := os.Stat(filepath.Join(md, sub))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want directory 0700", sub, fi.Mode())
		}
	}
	if n := dirNames(t, filepath.Join(md, "tmp")); len(n) != 0 {
		t.Errorf("tmp not empty: %v", n)
	}
	names := dirNames(t, filepath.Join(md, "new"))
	if len(names) != 1 {
		t.Fatalf("new/ holds %v", names)
	}
	m := uniqueRe.FindStringSubmatch(names[0])
	if m == nil {
		t.Fatalf("name %q is not <unique>,S=,W=", names[0])
	}
	if !strings.HasPrefix(names[0], uid+",") {
		t.Errorf("uid %q is not the base of %q", uid, names[0])
	}
	fi, err := os.Stat(filepath.Join(md, "new", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if m[1] != fmt.Sprint(fi.Size()) {
		t.Errorf("S=%s, file size %d", m[1], fi.Size())
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("message mode %v", fi.Mode())
	}
	if m[2] != "21" { // "Subject: x\r\n\r\nhello\r\n"
		t.Errorf("W=%s, want 21", m[2])
	}
}

func TestUniqueName(t *testing.T) {
	s, _ := newTestStore(t)
	if got := sanitizeHost("a/b:c,d e\x00é"); got != `a\057b\072c\054d_e___` {
		t.Errorf("sanitizeHost: %q", got)
	}
	for _, host := range []string{"", "h", strings.Repeat("verylonghostname.", 10)} {
		s.host = sanitizeHost(host)
		for range 100 {
			u := s.uniqueName()
			if !validUID(u) || uidFor(u) != u || strings.ContainsAny(u, ",:/") {
				t.Fatalf("host %q: bad unique name %q", host, u)
			}
			if host != "" && !strings.Contains(u, ".") {
				t.Fatalf("no host part: %q", u)
			}
		}
	}
	s.counter.Store(1<<64 - 10) // absurdly long counter: still plain
	if u := s.uniqueName(); !validUID(u) {
		t.Fatalf("bad unique name %q", u)
	}
}

func TestEmptyMessage(t *testing.T) {
	s, root := newTestStore(t)
	_, err := s.Deliver(context.Background(), testBox, strings.NewReader(""))
	if !errors.Is(err, store.ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if n := dirNames(t, filepath.Join(maildirPath(root), sub)); len(n) != 0 {
			t.Errorf("%s not empty: %v", sub, n)
		}
	}
}

type failingReader struct {
	data   []byte
	err    error
	onRead func()
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.onRead != nil {
		r.onRead()
	}
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data[:min(len(r.data), 100)])
	r.data = r.data[n:]
	return n, nil
}

func TestDeliverErrorsLeaveNothing(t *testing.T) {
	s, root := newTestStore(t)
	boom := errors.New("boom")
	_, err := s.Deliver(context.Background(), testBox, &failingReader{data: []byte(strings.Repeat("line\r\n", 100)), err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err = s.Deliver(ctx, testBox, &failingReader{
		data:   []byte(strings.Repeat("line\r\n", 100)),
		err:    io.EOF,
		onRead: func() { calls++; cancel() },
	})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("got %v after %d reads, want context.Canceled after 1", err, calls)
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if n := dirNames(t, filepath.Join(maildirPath(root), sub)); len(n) != 0 {
			t.Errorf("%s not empty: %v", sub, n)
		}
	}
}

func TestForeignMessages(t *testing.T) {
	s, root := newTestStore(t)
	md0 := openMD(t, s, testBox) // creates the Maildir
	if len(md0.Messages()) != 0 {
		t.Fatal("new mailbox not empty")
	}
	md0.Close()
	dir := maildirPath(root)
	// As mutt or procmail would write them: no size fields, LF.
	body1 := "From: bob\nSubject: one\n\nhi\n"
	body2 := "From: carol\r\nSubject: two\r\n\r\nno newline" // CRLF on disk
	write := func(sub, name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, sub, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("cur", "1700000000.12345_1.mutthost:2,S", body1)
	write("new", "1700000001.12346_1.mutthost", body2)
	// Dovecot-style with sizes: trusted without reading.
	write("cur", "1700000002.M5P7.dove,S=6,W=9:2,RS", "a\nb\nc\n")
	// Not messages.
	write("cur", ".hidden", "x")
	if err := os.Mkdir(filepath.Join(dir, "cur", "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}

	md := openMD(t, s, testBox)
	msgs := md.Messages()
	want := []store.MessageInfo{
		{UID: "1700000000.12345_1.mutthost", Size: int64(len(refWire([]byte(body1))))},
		{UID: "1700000001.12346_1.mutthost", Size: int64(len(refWire([]byte(body2))))},
		{UID: "1700000002.M5P7.dove", Size: 9},
	}
	if !slices.Equal(msgs, want) {
		t.Fatalf("Messages() = %v, want %v", msgs, want)
	}
	if got := readMsg(t, md, 0); string(got) != string(refWire([]byte(body1))) {
		t.Errorf("message 1: %q", got)
	}
	if got := readMsg(t, md, 1); string(got) != "From: carol\r\nSubject: two\r\n\r\nno newline\r\n" {
		t.Errorf("message 2: %q", got)
	}
	if got := readMsg(t, md, 2); string(got) != "a\r\nb\r\nc\r\n" {
		t.Errorf("message 3: %q", got)
	}
	md.Close()

	// The sizes were cached: a doctored cache entry with the right file
	// size is believed, which shows bodies are not read again.
	cache, err := os.ReadFile(filepath.Join(dir, sizesName))
	if err != nil {
		t.Fatalf("size cache: %v", err)
	}
	if !bytes.Contains(cache, []byte(`"1700000000.12345_1.mutthost" 27 31`)) {
		t.Fatalf("cache lacks entry: %q", cache)
	}
	doctored := bytes.Replace(cache, []byte(`"1700000000.12345_1.mutthost" 27 31`), []byte(`"1700000000.12345_1.mutthost" 27 999`), 1)
	if err := os.WriteFile(filepath.Join(dir, sizesName), doctored, 0o600); err != nil {
		t.Fatal(err)
	}
	md = openMD(t, s, testBox)
	if got := md.Messages()[0].Size; got != 999 {
		t.Errorf("cached size not used: %d", got)
	}
	md.Close()

	// A change of file size invalidates the entry; the flags change (a
	// rename) keeps the UID.
	write("cur", "1700000000.12345_1.mutthost:2,S", body1+"more\n")
	if err := os.Rename(filepath.Join(dir, "cur", "1700000000.12345_1.mutthost:2,S"),
		filepath.Join(dir, "cur", "1700000000.12345_1.mutthost:2,RS")); err != nil {
		t.Fatal(err)
	}
	md = openMD(t, s, testBox)
	defer md.Close()
	if got, want := md.Messages()[0], (store.MessageInfo{UID: "1700000000.12345_1.mutthost", Size: 37}); got != want {
		t.Errorf("after change: %v, want %v", got, want)
	}
	if got := readMsg(t, md, 0); len(got) != 37 {
		t.Errorf("read %d octets", len(got))
	}
}

func TestLockSameProcess(t *testing.T) {
	s, _ := newTestStore(t)
	md := openMD(t, s, testBox)
	if _, err := s.OpenMaildrop(context.Background(), testBox); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	// Another Store on the same root (another descriptor) conflicts too.
	s2, err := New(s.root.Name(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.OpenMaildrop(context.Background(), testBox); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("open from second store: %v, want ErrLocked", err)
	}
	// Other mailboxes are independent.
	other := openMD(t, s, "bob@example.test")
	other.Close()
	// Delivery is not blocked.
	mustDeliver(t, s, testBox, "x\n")
	if err := md.Close(); err != nil {
		t.Fatal(err)
	}
	if err := md.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := md.Open(context.Background(), 0); err == nil {
		t.Error("Open after Close succeeded")
	}
	md2 := openMD(t, s, testBox)
	md2.Close()
}

const lockHelperEnv = "POSTINO_MAILDIR_LOCK_HELPER"

// TestLockHelperProcess is not a test: it is run as a child process by
// TestLockReleasedOnKill to hold a lock until killed.
func TestLockHelperProcess(t *testing.T) {
	root := os.Getenv(lockHelperEnv)
	if root == "" {
		t.Skip("helper process only")
	}
	s, err := New(root, nil)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if _, err := s.OpenMaildrop(context.Background(), testBox); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	time.Sleep(time.Minute)
	os.Exit(2)
}

func TestLockReleasedOnKill(t *testing.T) {
	s, root := newTestStore(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	if _, err := s.OpenMaildrop(context.Background(), testBox); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("open while child holds lock: %v, want ErrLocked", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	md := openMD(t, s, testBox)
	md.Close()
}

func TestSnapshot(t *testing.T) {
	s, _ := newTestStore(t)
	u1 := mustDeliver(t, s, testBox, "one\n")
	md := openMD(t, s, testBox)
	before := slices.Clone(md.Messages())
	u2 := mustDeliver(t, s, testBox, "two\n")
	if got := md.Messages(); !slices.Equal(got, before) || len(got) != 1 || got[0].UID != u1 {
		t.Fatalf("snapshot changed: %v", got)
	}
	if err := md.Commit(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	md.Close()
	md = openMD(t, s, testBox)
	defer md.Close()
	var uids []string
	for _, m := range md.Messages() {
		uids = append(uids, m.UID)
	}
	if !slices.Equal(uids, []string{u1, u2}) {
		t.Fatalf("after reopen: %v, want [%s %s]", uids, u1, u2)
	}
}

func TestCommit(t *testing.T) {
	s, root := newTestStore(t)
	var uids []string
	for i := range 6 {
		uids = append(uids, mustDeliver(t, s, testBox, fmt.Sprintf("message %d\n", i)))
	}
	md := openMD(t, s, testBox)
	if n := len(md.Messages()); n != 6 {
		t.Fatalf("%d messages", n)
	}
	// One of them has been read and flagged by mutt meanwhile.
	moveToCur(t, root, uids[3], ":2,S")
	if err := md.Commit(context.Background(), []int{1, 3, 3, 4}); err != nil {
		t.Fatal(err)
	}
	if err := md.Commit(context.Background(), []int{0}); err == nil {
		t.Error("second Commit succeeded")
	}
	md.Close()
	if _, err := os.Stat(filepath.Join(root, journalPath("example.test/alice/Maildir"))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("journal left behind: %v", err)
	}
	md = openMD(t, s, testBox)
	defer md.Close()
	var got []string
	for i, m := range md.Messages() {
		got = append(got, m.UID)
		if want := fmt.Sprintf("message %d\r\n", slices.Index(uids, m.UID)); string(readMsg(t, md, i)) != want {
			t.Errorf("message %s has wrong content", m.UID)
		}
	}
	if want := []string{uids[0], uids[2], uids[5]}; !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	if err := md.Commit(context.Background(), []int{7}); err == nil {
		t.Error("Commit of out-of-range index succeeded")
	}
}

// moveToCur moves the message with the given UID from new/ to cur/ adding
// info, as a MUA does.
func moveToCur(t testing.TB, root, uid, info string) {
	t.Helper()
	dir := maildirPath(root)
	for _, n := range dirNames(t, filepath.Join(dir, "new")) {
		if strings.HasPrefix(n, uid+",") {
			if err := os.Rename(filepath.Join(dir, "new", n), filepath.Join(dir, "cur", n+info)); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("uid %s not in new/", uid)
}

func TestOpenAfterMove(t *testing.T) {
	s, root := newTestStore(t)
	uid := mustDeliver(t, s, testBox, "Subject: moved\n\nbody")
	md := openMD(t, s, testBox)
	defer md.Close()
	moveToCur(t, root, uid, ":2,")
	if got := readMsg(t, md, 0); string(got) != "Subject: moved\r\n\r\nbody\r\n" {
		t.Fatalf("got %q", got)
	}
	// Flags changed again, by rename within cur/.
	dir := filepath.Join(maildirPath(root), "cur")
	n := dirNames(t, dir)[0]
	if err := os.Rename(filepath.Join(dir, n), filepath.Join(dir, strings.TrimSuffix(n, ":2,")+":2,FS")); err != nil {
		t.Fatal(err)
	}
	if got := readMsg(t, md, 0); string(got) != "Subject: moved\r\n\r\nbody\r\n" {
		t.Fatalf("got %q", got)
	}
	// Deleted by someone else.
	if err := os.Remove(filepath.Join(dir, dirNames(t, dir)[0])); err != nil {
		t.Fatal(err)
	}
	if _, err := md.Open(context.Background(), 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of deleted message: %v", err)
	}
	if err := md.Commit(context.Background(), []int{0}); err != nil {
		t.Fatalf("Commit of already deleted message: %v", err)
	}
}

func TestJournalRecovery(t *testing.T) {
	s, root := newTestStore(t)
	var uids []string
	for i := range 5 {
		uids = append(uids, mustDeliver(t, s, testBox, fmt.Sprintf("m%d\n", i)))
	}
	dir := "example.test/alice/Maildir"
	md := openMD(t, s, testBox)
	// Crash after the journal is durable, before any unlink: the commit
	// must complete at the next open. One listed file is already gone (a
	// crash in the middle of the unlinks) and one was moved by a MUA.
	if err := s.writeJournal(dir, []string{uids[0], uids[2], uids[3]}, 0); err != nil {
		t.Fatal(err)
	}
	for _, n := range dirNames(t, filepath.Join(root, dir, "new")) {
		if strings.HasPrefix(n, uids[0]+",") {
			os.Remove(filepath.Join(root, dir, "new", n))
		}
	}
	moveToCur(t, root, uids[3], ":2,S")
	md.Close() // the "crashed" session's lock goes away with it

	md = openMD(t, s, testBox)
	var got []string
	for _, m := range md.Messages() {
		got = append(got, m.UID)
	}
	if want := []string{uids[1], uids[4]}; !slices.Equal(got, want) {
		t.Fatalf("after recovery %v, want %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(root, journalPath(dir))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("journal not removed: %v", err)
	}
	if n := dirNames(t, filepath.Join(root, dir, "cur")); len(n) != 0 {
		t.Fatalf("cur/ holds %v", n)
	}
	md.Close()

	// A crash while the journal was still being written leaves only the
	// temporary file: nothing is deleted.
	jp := filepath.Join(root, journalPath(dir))
	if err := os.WriteFile(jp+".tmp", []byte(journalHeader+"\ndir \""+dir+"\"\n\""+uids[1]+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A damaged journal deletes nothing either.
	if err := os.WriteFile(jp, []byte(journalHeader+"\ndir \""+dir+"\"\n\""+uids[4]+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	md = openMD(t, s, testBox)
	if n := len(md.Messages()); n != 2 {
		t.Fatalf("%d messages after void journals, want 2", n)
	}
	for _, p := range []string{jp, jp + ".tmp"} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s not removed: %v", p, err)
		}
	}
	md.Close()

	// A journal written by an earlier version, in the Maildir, is
	// completed too.
	legacy := filepath.Join(root, dir, journalNameV1)
	if err := os.WriteFile(legacy, []byte(journalHeaderV1+"\n\""+uids[4]+"\"\nend\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	md = openMD(t, s, testBox)
	defer md.Close()
	if m := md.Messages(); len(m) != 1 || m[0].UID != uids[1] {
		t.Fatalf("after a v1 journal: %v", m)
	}
	if _, err := os.Stat(legacy); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("v1 journal not removed: %v", err)
	}
}

func TestParseJournal(t *testing.T) {
	good := journalHeader + "\ndir \"example.test/alice/Maildir\"\n\"a\"\n\"b c\\n\"\nend\n"
	dir, bases, _, ok := parseJournal([]byte(good))
	if !ok || len(bases) != 2 || dir != "example.test/alice/Maildir" {
		t.Fatalf("parseJournal(good) = %q, %v, %v", dir, bases, ok)
	}
	if _, ok := bases["b c\n"]; !ok {
		t.Errorf("quoted base not decoded: %v", bases)
	}
	if dir, bases, _, ok := parseJournal([]byte(journalHeaderV1 + "\n\"a\"\nend\n")); !ok || dir != "" || len(bases) != 1 {
		t.Errorf("v1 journal: %q, %v, %v", dir, bases, ok)
	}
	for _, bad := range []string{"", journalHeader + "\n", journalHeader + "\nend", good[:len(good)-5], "x\nend\n",
		journalHeader + "\ndir \"example.test/alice/Maildir\"\na\nend\n", journalHeader + "\ndir \"example.test/alice/Maildir\"\n\"\"\nend\n",
		journalHeader + "\n\"a\"\nend\n", journalHeader + "\ndir \"../x/Maildir\"\n\"a\"\nend\n", journalHeader + "\ndir \"a/b/c\"\n\"a\"\nend\n",
		journalHeaderV1 + "\ndir \"example.test/alice/Maildir\"\n\"a\"\nend\n"} {
		if _, _, _, ok := parseJournal([]byte(bad)); ok {
			t.Errorf("parseJournal(%q) accepted", bad)
		}
	}
}

func TestUIDs(t *testing.T) {
	s, root := newTestStore(t)
	const n = 300
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n / 6 {
				uid, err := s.Deliver(context.Background(), testBox, strings.NewReader(fmt.Sprintf("g%d i%d\n", g, i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[uid] {
					t.Errorf("duplicate uid %s", uid)
				}
				seen[uid] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	dir := maildirPath(root)
	// Odd names from elsewhere get hashed UIDs.
	long := "1800000000." + strings.Repeat("x", 80)
	odd := "1800000001.caf\xc3\xa9 host"
	for _, name := range []string{long + ":2,S", odd, ",S=3,W=4"} {
		if err := os.WriteFile(filepath.Join(dir, "cur", name), []byte("hi\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	md := openMD(t, s, testBox)
	first := slices.Clone(md.Messages())
	md.Close()
	if len(first) != n+3 {
		t.Fatalf("%d messages, want %d", len(first), n+3)
	}
	uidSet := map[string]bool{}
	for _, m := range first {
		if !validUID(m.UID) {
			t.Errorf("invalid uid %q", m.UID)
		}
		if uidSet[m.UID] {
			t.Errorf("duplicate uid %q in listing", m.UID)
		}
		uidSet[m.UID] = true
	}
	for u := range seen {
		if !uidSet[u] {
			t.Errorf("delivered uid %s not listed", u)
		}
	}
	for _, base := range []string{long, odd} {
		h := uidFor(base)
		if !uidSet[h] || len(h) != 33 || h[0] != 'H' {
			t.Errorf("base %q: hashed uid %q not listed", base, h)
		}
	}
	md = openMD(t, s, testBox)
	defer md.Close()
	if !slices.Equal(md.Messages(), first) {
		t.Error("listing not stable across reopen")
	}
}

func TestOrder(t *testing.T) {
	s, root := newTestStore(t)
	dir := maildirPath(root)
	openMD(t, s, testBox).Close()
	names := []string{
		"1700000001.M999P1Q1R0000000000000000.h,S=2,W=3",
		"1700000001.M1000P1Q1R0000000000000000.h,S=2,W=3",
		"1600000000.M5P1.h,S=2,W=3",
		"1700000001.M1000P1Q2R0000000000000000.h,S=2,W=3",
		"1700000000.99.mutt",
		"zzz",
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, "new", n), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	md := openMD(t, s, testBox)
	defer md.Close()
	var got []string
	for _, m := range md.Messages() {
		got = append(got, m.UID)
	}
	want := []string{
		"zzz",
		"1600000000.M5P1.h",
		"1700000000.99.mutt",
		"1700000001.M999P1Q1R0000000000000000.h",
		"1700000001.M1000P1Q1R0000000000000000.h",
		"1700000001.M1000P1Q2R0000000000000000.h",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestSizeMismatch(t *testing.T) {
	s, root := newTestStore(t)
	uid := mustDeliver(t, s, testBox, "abc\ndef\n") // W=10
	dir := filepath.Join(maildirPath(root), "new")
	cur := formatName(uid, 8, 10)
	for _, c := range []struct {
		w     int64
		short bool
	}{{9, false}, {11, true}, {100, true}} {
		next := formatName(uid, 8, c.w)
		if err := os.Rename(filepath.Join(dir, cur), filepath.Join(dir, next)); err != nil {
			t.Fatal(err)
		}
		cur = next
		md := openMD(t, s, testBox)
		rc, err := md.Open(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		md.Close()
		if !errors.Is(err, ErrSizeMismatch) {
			t.Fatalf("W=%d: read error %v, want ErrSizeMismatch", c.w, err)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) != c.short {
			t.Errorf("W=%d: %v: ErrUnexpectedEOF %v, want %v", c.w, err, !c.short, c.short)
		}
		if int64(len(got)) > c.w {
			t.Errorf("W=%d: returned %d octets", c.w, len(got))
		}
	}
}

func TestMailboxConfinement(t *testing.T) {
	s, root := newTestStore(t)
	bad := []string{
		"", "alice", "@example.test", "alice@", "../x@example.test", "alice@../etc",
		"a/b@example.test", "alice@ex/ample.test", `a\b@example.test`, "a\x00b@example.test",
		".alice@example.test", "alice@.example.test", "a..b@example.test", "alice@example..test",
		"..@example.test", "alice@..", "a\nb@example.test", ".@x", "x@.",
	}
	for _, box := range bad {
		if _, err := s.Deliver(context.Background(), box, strings.NewReader("x\n")); !errors.Is(err, store.ErrNoMailbox) {
			t.Errorf("Deliver(%q): %v, want ErrNoMailbox", box, err)
		}
		if _, err := s.OpenMaildrop(context.Background(), box); !errors.Is(err, store.ErrNoMailbox) {
			t.Errorf("OpenMaildrop(%q): %v, want ErrNoMailbox", box, err)
		}
	}
	if n := dirNames(t, root); len(n) != 0 {
		t.Errorf("root holds %v after invalid names", n)
	}
	// A symbolic link planted under the root cannot lead outside it.
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "evil.test")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliver(context.Background(), "x@evil.test", strings.NewReader("x\n")); err == nil {
		t.Error("delivery through a symlink out of the root succeeded")
	}
	if n := dirNames(t, outside); len(n) != 0 {
		t.Errorf("files created outside the root: %v", n)
	}
	// Unusual but harmless names work.
	for _, box := range []string{"a+b@example.test", "déjà@exämple.test", "o'neil@x.test"} {
		mustDeliver(t, s, box, "x\n")
	}
}

// TestOpenMaildropIncomplete: a Maildir missing a folder (made by hand,
// or cur/ removed) or with a file in a folder's place is completed or
// refused at login, and an existing message is still served.
func TestOpenMaildropIncomplete(t *testing.T) {
	s, root := newTestStore(t)
	if _, err := s.Deliver(context.Background(), testBox, strings.NewReader("Subject: x\n\nbody\n")); err != nil {
		t.Fatal(err)
	}
	dir := maildirPath(root)
	for _, sub := range []string{"cur", "tmp"} {
		if err := os.Remove(filepath.Join(dir, sub)); err != nil {
			t.Fatal(err)
		}
	}
	md := openMD(t, s, testBox)
	if got := string(readMsg(t, md, 0)); got != "Subject: x\r\n\r\nbody\r\n" {
		t.Fatalf("message %q", got)
	}
	md.Close()
	for _, sub := range []string{"cur", "tmp"} {
		if fi, err := os.Stat(filepath.Join(dir, sub)); err != nil || !fi.IsDir() {
			t.Fatalf("%s/ not made at login: %v", sub, err)
		}
	}
	// A symlink in place of cur/ pointing outside the store is not
	// followed out of it: the login fails or sees an empty cur/.
	os.Remove(filepath.Join(dir, "cur"))
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret:2,"), []byte("secret\n"), 0o600)
	if err := os.Symlink(outside, filepath.Join(dir, "cur")); err != nil {
		t.Fatal(err)
	}
	if m, err := s.OpenMaildrop(context.Background(), testBox); err == nil {
		for i := range m.Messages() {
			rc, err := m.Open(context.Background(), i)
			if err == nil {
				b, _ := io.ReadAll(rc)
				rc.Close()
				if strings.Contains(string(b), "secret") {
					t.Fatal("a message outside the store was served")
				}
			}
		}
		m.Close()
	}
}
