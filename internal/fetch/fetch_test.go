package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/postino-mail/postino/pop3"
)

func spoolString(t *testing.T, s string) *Message {
	t.Helper()
	sp, err := newSpooler(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.close)
	m, err := sp.spool(strings.NewReader(s), nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Account, m.Key = "acct", "uid1"
	return m
}

const sample = "Return-Path: <a@b.example>\r\nSubject: x\r\n\r\nFrom me\r\n>From you\r\nline\r\n"

func TestStateJournalReplay(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenState(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenState(dir, "a"); !errors.Is(err, ErrStateLocked) {
		t.Errorf("second OpenState = %v, want ErrStateLocked", err)
	}
	s.Intent("u1", &Message{ID: ID{SHA256: "h1"}, Size: 10})
	s.Done("u1", "d1", "h1", 10)
	s.Intent("u2", &Message{ID: ID{SHA256: "h2"}, Size: 20, BodySHA256: "b2", BodySize: 7})
	s.Close() // killed: no Save
	// A torn last line is ignored.
	f, _ := os.OpenFile(filepath.Join(dir, "a.journal"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`0badc0de {"op":"done","key":"u2"`)
	f.Close()

	s, err = OpenState(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r := s.State.Messages["u1"]; r == nil || !r.Delivered() || r.Dest != "d1" || r.Pending {
		t.Errorf("u1 = %+v", r)
	}
	if r := s.State.Messages["u2"]; r == nil || r.Delivered() || !r.Pending || r.SHA256 != "h2" || r.BodySHA256 != "b2" || r.BodySize != 7 {
		t.Errorf("u2 = %+v", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.journal")); !os.IsNotExist(err) {
		t.Errorf("journal not folded into the snapshot: %v", err)
	}
}

func TestCRLFToLF(t *testing.T) {
	for in, want := range map[string]string{
		"a\r\nb\r\n": "a\nb\n", "a\rb\r": "a\rb\r", "\r\r\n": "\r\n", "x": "x",
	} {
		got, _ := io.ReadAll(&crlfToLF{r: iotestOneByte(strings.NewReader(in))})
		if string(got) != want {
			t.Errorf("crlfToLF(%q) = %q, want %q", in, got, want)
		}
	}
}

type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) { return o.r.Read(p[:1]) }
func iotestOneByte(r io.Reader) io.Reader    { return oneByte{r} }

func TestHeaderHash(t *testing.T) {
	m := spoolString(t, sample)
	h, _ := HeaderHash(strings.NewReader("Return-Path: <a@b.example>\r\nSubject: x\r\n\r\n"))
	if h != m.HeaderSHA256 {
		t.Errorf("header hash of TOP n 0 differs from the spooled message's")
	}
	body := sha256.Sum256([]byte("From me\n>From you\nline\n"))
	if m.BodySHA256 != hex.EncodeToString(body[:]) || m.BodySize != 23 {
		t.Errorf("body hash %s size %d, want the LF form of the body", m.BodySHA256, m.BodySize)
	}
	if m.ReturnPath() != "a@b.example" {
		t.Errorf("ReturnPath = %q", m.ReturnPath())
	}
}

func TestMboxDeliverFind(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mbox")
	b := &Mbox{Path: p}
	ctx := context.Background()
	m := spoolString(t, sample)
	if res, _, _ := b.Find(ctx, m.Want()); res != NotFound {
		t.Fatalf("Find in missing mbox = %v", res)
	}
	if _, err := b.Deliver(ctx, m); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	if !bytes.Contains(data, []byte("\n>From me\n>>From you\n")) || !bytes.HasPrefix(data, []byte("From a@b.example ")) {
		t.Errorf("mboxrd quoting wrong:\n%s", data)
	}
	if _, err := os.Stat(p + ".lock"); !os.IsNotExist(err) {
		t.Error("dot-lock left behind")
	}
	if res, where, err := b.Find(ctx, m.Want()); res != Found || where != "offset 0" || err != nil {
		t.Errorf("Find = %v %q %v", res, where, err)
	}
	// A partial copy of a second message at the end is truncated away.
	m2 := spoolString(t, strings.Replace(sample, "line", "other", 1))
	m2.Key = "uid2"
	full := len(data)
	if _, err := b.Deliver(ctx, m2); err != nil {
		t.Fatal(err)
	}
	data2, _ := os.ReadFile(p)
	os.WriteFile(p, data2[:len(data2)-8], 0o600)
	if res, _, _ := b.Find(ctx, m2.Want()); res != NotFound {
		t.Errorf("Find(partial) = %v, want NotFound", res)
	}
	if data3, _ := os.ReadFile(p); len(data3) != full {
		t.Errorf("partial entry not truncated: %d octets, want %d", len(data3), full)
	}
	if res, _, _ := b.Find(ctx, m.Want()); res != Found {
		t.Errorf("first message lost")
	}
	// A stale dot-lock of a dead process does not block.
	os.WriteFile(p+".lock", []byte("999999999\n"), 0o600)
	if _, err := b.Deliver(ctx, m2); err != nil {
		t.Errorf("stale dot-lock: %v", err)
	}
}

func TestMaildirFind(t *testing.T) {
	d := &Maildir{Dir: filepath.Join(t.TempDir(), "md")}
	ctx := context.Background()
	m := spoolString(t, sample)
	where, err := d.Deliver(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(d.Dir, where))
	if !bytes.HasPrefix(data, []byte(m.Marker()+"\nReturn-Path:")) || bytes.Contains(data, []byte("\r")) {
		t.Errorf("stored message: %q", data)
	}
	if res, w, _ := d.Find(ctx, m.Want()); res != Found || w != where {
		t.Errorf("Find = %v %q", res, w)
	}
	other := m.ID
	other.Key = "uid9"
	if res, _, _ := d.Find(ctx, Want{ID: other}); res != NotFound {
		t.Errorf("Find(other) = %v", res)
	}
}

// TestMaildirNamesAsStore checks that the Maildir destination writes the
// names of postino's own store: Dovecot-compatible, with the ,S= (file)
// and ,W= (wire, CRLF) sizes that let a Maildir be listed without reading
// bodies, and the ID's token that Find looks for.
func TestMaildirNamesAsStore(t *testing.T) {
	d := &Maildir{Dir: filepath.Join(t.TempDir(), "md")}
	m := spoolString(t, sample)
	where, err := d.Deliver(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(d.Dir, where))
	if err != nil {
		t.Fatal(err)
	}
	wire := len(data) + bytes.Count(data, []byte("\n"))
	name := strings.TrimPrefix(where, "new/")
	base, sizes, ok := strings.Cut(name, ",")
	if !ok || sizes != fmt.Sprintf("S=%d,W=%d", len(data), wire) {
		t.Errorf("name %q: want sizes S=%d,W=%d", name, len(data), wire)
	}
	if !strings.Contains(base, "X"+m.Token()+".") || strings.ContainsAny(base, ":/") || len(base) > 70 {
		t.Errorf("unique part %q", base)
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		n    int
		err  error
		want int
	}{
		{1, nil, ExitNewMail},
		{0, nil, ExitNoMail},
		{0, &authError{errors.New("x")}, ExitAuth},
		{0, &tlsError{errors.New("x")}, ExitTLS},
		{0, ErrStateLocked, ExitLocked},
		{0, &pop3.Error{Code: pop3.CodeInUse}, ExitLocked},
		{0, &pop3.Error{Text: "huh"}, ExitProtocol},
		{0, io.ErrUnexpectedEOF, ExitNetwork},
		{2, errors.Join(ErrDestination, errors.New("disk full")), ExitDelivery},
	} {
		if got := ExitCode(tc.n, tc.err); got != tc.want {
			t.Errorf("ExitCode(%d, %v) = %d, want %d", tc.n, tc.err, got, tc.want)
		}
	}
	if Worst(ExitNoMail, ExitNewMail) != ExitNewMail || Worst(ExitNewMail, ExitAuth) != ExitAuth || Worst(ExitNoMail, ExitNoMail) != ExitNoMail {
		t.Error("Worst")
	}
}

// blankBody returns a message whose body has runs of empty lines, so that a
// copy cut off inside the body can end in an empty line.
func blankBody() string {
	var b strings.Builder
	b.WriteString("Return-Path: <a@b.example>\r\nSubject: blanks\r\n\r\n")
	for i := range 40 {
		fmt.Fprintf(&b, "paragraph %d\r\n\r\n\r\n", i)
	}
	b.WriteString("END\r\n")
	return b.String()
}

// TestMboxFindPartialEndingInBlankLine: a copy cut off by a crash right
// after an empty line of the body is partial, not "modified since": Find
// reports it not found and truncates it away, and a copy whose header a
// mail reader rewrote is still found.
func TestMboxFindPartialEndingInBlankLine(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "mbox")
	b := &Mbox{Path: p}
	first := spoolString(t, sample)
	if _, err := b.Deliver(ctx, first); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)
	m := spoolString(t, blankBody())
	m.Key = "uid2"
	if _, err := b.Deliver(ctx, m); err != nil {
		t.Fatal(err)
	}
	full, _ := os.ReadFile(p)
	// Cut inside the body, just after an empty line.
	cut := bytes.Index(full[len(before):], []byte("paragraph 20\n\n")) + len(before) + len("paragraph 20\n\n")
	if err := os.WriteFile(p, full[:cut], 0o600); err != nil {
		t.Fatal(err)
	}
	if res, where, err := b.Find(ctx, m.Want()); res != NotFound || err != nil {
		t.Fatalf("Find(copy cut after an empty line) = %v %q %v, want NotFound", res, where, err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, before) {
		t.Errorf("partial copy not truncated away: %d octets, want %d", len(got), len(before))
	}

	// A partial copy that is no longer at the end (another program
	// appended after it) is not found either, and a new complete copy
	// after it is.
	if err := os.WriteFile(p, append(full[:cut:cut], "\nFrom other@example Mon Jan  1 00:00:00 2024\nSubject: other\n\nhello\n\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if res, where, err := b.Find(ctx, m.Want()); res != NotFound || err != nil {
		t.Fatalf("Find(partial copy followed by another message) = %v %q %v, want NotFound", res, where, err)
	}
	if _, err := b.Deliver(ctx, m); err != nil {
		t.Fatal(err)
	}
	if res, where, err := b.Find(ctx, m.Want()); res != Found || err != nil || where == "offset "+itoa(int64(len(before))) {
		t.Errorf("Find(complete copy after a partial one) = %v %q %v, want Found after the partial copy", res, where, err)
	}

	// A mail reader added a Status field to the header of a complete
	// copy: still found.
	os.WriteFile(p, before, 0o600)
	if _, err := b.Deliver(ctx, m); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	data = bytes.Replace(data, []byte("Subject: blanks\n"), []byte("Subject: blanks\nStatus: RO\n"), 1)
	os.WriteFile(p, data, 0o600)
	if res, where, err := b.Find(ctx, m.Want()); res != Found || err != nil {
		t.Errorf("Find(copy with a rewritten header) = %v %q %v, want Found", res, where, err)
	}
	// The same with the body cut short is partial.
	os.WriteFile(p, data[:bytes.Index(data, []byte("paragraph 30\n"))], 0o600)
	if res, where, err := b.Find(ctx, m.Want()); res != NotFound || err != nil {
		t.Errorf("Find(copy with a rewritten header, cut short) = %v %q %v, want NotFound", res, where, err)
	}
}

// recordDirSyncs makes syncDir, and the Maildir writer of the store,
// record the directories they fsync.
func recordDirSyncs(t *testing.T) func() map[string]bool {
	var mu sync.Mutex
	synced := map[string]bool{}
	note := func(dir string) {
		mu.Lock()
		synced[filepath.Clean(dir)] = true
		mu.Unlock()
	}
	old := syncDirFunc
	syncDirFunc = func(dir string) error {
		note(dir)
		return old(dir)
	}
	dirSynced = note
	t.Cleanup(func() { syncDirFunc, dirSynced = old, nil })
	return func() map[string]bool {
		mu.Lock()
		defer mu.Unlock()
		out := maps.Clone(synced)
		clear(synced)
		return out
	}
}

// TestNewDestinationsDurable: creating a Maildir (and missing parents), an
// mbox file or a state directory fsyncs the parent of everything created,
// so that a power failure cannot keep the done record and lose the copy.
func TestNewDestinationsDurable(t *testing.T) {
	ctx := context.Background()
	synced := recordDirSyncs(t)
	root := t.TempDir()
	m := spoolString(t, sample)
	synced()

	md := filepath.Join(root, "a", "b", "Maildir")
	if _, err := (&Maildir{Dir: md}).Deliver(ctx, m); err != nil {
		t.Fatal(err)
	}
	got := synced()
	for _, dir := range []string{root, filepath.Join(root, "a"), filepath.Join(root, "a", "b"), md, filepath.Join(md, "new")} {
		if !got[dir] {
			t.Errorf("new Maildir: %s not fsync'd (fsync'd: %v)", dir, slices.Sorted(maps.Keys(got)))
		}
	}
	// An existing Maildir costs no extra directory fsync.
	if _, err := (&Maildir{Dir: md}).Deliver(ctx, m); err != nil {
		t.Fatal(err)
	}
	if got := synced(); len(got) != 1 || !got[filepath.Join(md, "new")] {
		t.Errorf("existing Maildir: fsync'd %v, want only new/", slices.Sorted(maps.Keys(got)))
	}

	mbox := filepath.Join(root, "mboxes")
	os.Mkdir(mbox, 0o700)
	synced()
	if _, err := (&Mbox{Path: filepath.Join(mbox, "inbox")}).Deliver(ctx, m); err != nil {
		t.Fatal(err)
	}
	if got := synced(); !got[mbox] {
		t.Errorf("new mbox file: its directory was not fsync'd (fsync'd: %v)", slices.Sorted(maps.Keys(got)))
	}

	st, err := OpenState(filepath.Join(root, "state", "fetch"), "acct")
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if got := synced(); !got[root] || !got[filepath.Join(root, "state")] {
		t.Errorf("new state directory: parents not fsync'd (fsync'd: %v)", slices.Sorted(maps.Keys(got)))
	}
}

// TestServerLiesAboutSize: a server that sends far more than the size it
// announced in LIST, or more than max_size, is stopped by the POP3 client.
// The run fails with ExitProtocol (not a network error to retry), nothing
// is delivered and nothing is deleted, and the next run does the same.
func TestServerLiesAboutSize(t *testing.T) {
	big := append(fakeMessage("big"), bytes.Repeat([]byte("x123456789012345678901234567890\r\n"), 4096)...)
	cases := []struct {
		name    string
		listed  int
		maxSize int64
	}{
		{"announced 100", 100, 0},
		{"over max_size", 0, 0}, // listed honestly: skipped by its LIST size
		{"max_size below the truth", -100, -50},
	}
	for _, sec := range []Security{SecurityNone, SecurityStartTLS, SecurityTLS} {
		for _, tc := range cases {
			t.Run(string(sec)+"/"+tc.name, func(t *testing.T) {
				srv := startFakePOP(t, sec, fakeMsg{uidl: "u1", data: big, listed: tc.listed})
				dir := t.TempDir()
				a := srv.account(sec, dir)
				a.MaxSize = tc.maxSize
				switch tc.name {
				case "over max_size":
					a.MaxSize = int64(len(big)) / 2
				case "max_size below the truth":
					// LIST announces a little less than the truth (within
					// the client's slack) and max_size lies between them.
					a.MaxSize = int64(len(big)) + tc.maxSize
					srv.mu.Lock()
					srv.msgs[0].listed = len(big) + tc.listed
					srv.mu.Unlock()
				}
				a.Delete = true
				for run := 0; run < 2; run++ {
					var log bytes.Buffer
					f := &Fetcher{StateDir: filepath.Join(dir, "state"), Logger: slog.New(slog.NewTextHandler(&log, nil))}
					res, err := f.Run(context.Background(), a)
					if tc.name == "over max_size" {
						if err != nil || res.New != 0 {
							t.Fatalf("run %d: %+v, %v\n%s", run, res, err, log.String())
						}
					} else {
						var le *pop3.LimitError
						if !errors.As(err, &le) || ExitCode(res.New, err) != ExitProtocol {
							t.Fatalf("run %d: want a *pop3.LimitError and exit %d, got %v (exit %d)\n%s", run, ExitProtocol, err, ExitCode(res.New, err), log.String())
						}
					}
					if got := maildirFiles(t, dir); len(got) != 0 {
						t.Fatalf("run %d: %d messages delivered", run, len(got))
					}
					if srv.count() != 1 {
						t.Fatalf("run %d: the message was deleted from the server", run)
					}
				}
			})
		}
	}
}
