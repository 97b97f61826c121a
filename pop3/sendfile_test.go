package pop3

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fileBackend serves memBackend's messages as FileMessages: the first
// line of each (up to its CRLF) is the head, the rest a file. reads
// counts the messages read with Read instead of sent from their file.
type fileBackend struct {
	*memBackend
	dir   string
	extra string // appended to every file: longer than listed
	reads atomic.Int64
}

type fileDrop struct {
	*memDrop
	fb *fileBackend
}

func (b *fileBackend) OpenMaildrop(ctx context.Context, ci *ConnInfo, user string) (Maildrop, error) {
	md, err := b.memBackend.OpenMaildrop(ctx, ci, user)
	if err != nil {
		return nil, err
	}
	return &fileDrop{memDrop: md.(*memDrop), fb: b}, nil
}

func (d *fileDrop) Open(ctx context.Context, i int) (io.ReadCloser, error) {
	data := d.msgs[i].data
	cut := strings.Index(data, "\r\n") + 2
	path := filepath.Join(d.fb.dir, d.msgs[i].uid)
	if err := os.WriteFile(path, []byte(data[cut:]+d.fb.extra), 0o600); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &fileMsg{Reader: strings.NewReader(data), head: []byte(data[:cut]), f: f, reads: &d.fb.reads}, nil
}

type fileMsg struct {
	io.Reader
	head  []byte
	f     *os.File
	reads *atomic.Int64
	read  bool
}

func (m *fileMsg) Read(p []byte) (int, error) {
	if !m.read {
		m.read = true
		m.reads.Add(1)
	}
	return m.Reader.Read(p)
}

func (m *fileMsg) Close() error { return m.f.Close() }

func (m *fileMsg) MessageFile() ([]byte, *os.File, bool) { return m.head, m.f, true }

func startFileServer(t *testing.T) (*testServer, *fileBackend) {
	fb := &fileBackend{dir: t.TempDir()}
	ts := startServer(t, func(s *Server) {
		fb.memBackend = s.Backend.(*memBackend)
		s.Backend = fb
	})
	return ts, fb
}

// On a cleartext connection RETR sends a FileMessage's file with
// sendfile(2): the octets are exactly the message's, its head is
// dot-stuffed, and the message is never read through the process. Over
// TLS (implicit or STLS) and for TOP it is read as usual.
func TestRetrSendsFile(t *testing.T) {
	ts, fb := startFileServer(t)
	big := strings.Repeat("a line of the body that fills the message up\r\n", 60000) // 2.8 MB: several pieces
	msgs := []string{
		"Delivered-To: alice@example.test\r\nSubject: one\r\n\r\nbody\r\n",
		".Head-line: starts with a dot\r\nSubject: two\r\n\r\n" + big,
	}
	for i, m := range msgs {
		ts.be.add("alice@example.test", "u"+string(rune('1'+i)), m)
	}
	check := func(c *Client, how string) {
		t.Helper()
		for i, want := range msgs {
			r, err := c.Retr(i + 1)
			if err != nil {
				t.Fatalf("%s: RETR %d: %v", how, i+1, err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("%s: RETR %d: %v", how, i+1, err)
			}
			if string(got) != want {
				t.Fatalf("%s: RETR %d: %d octets, want %d (%q...)", how, i+1, len(got), len(want), trunc(string(got)))
			}
		}
	}

	c := ts.client(t)
	if err := c.Login("alice@example.test", "secret pass"); err != nil {
		t.Fatal(err)
	}
	check(c, "cleartext")
	if n := fb.reads.Load(); n != 0 {
		t.Fatalf("cleartext: %d messages read through the process, want 0 (sendfile)", n)
	}
	r, err := c.Top(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(r); string(got) != "Delivered-To: alice@example.test\r\nSubject: one\r\n\r\n" {
		t.Fatalf("TOP 1 0: %q", got)
	}
	if n := fb.reads.Load(); n != 1 {
		t.Fatalf("TOP: %d messages read, want 1", n)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	// The raw transcript: the head's dot line is stuffed.
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	body := tr.multi("RETR 2")
	if !strings.HasPrefix(body, "..Head-line: starts with a dot\r\n") {
		t.Fatalf("head not dot-stuffed: %q", trunc(body))
	}
	tr.do("QUIT", `^\+OK`)

	fb.reads.Store(0)
	tc, err := DialTLS(context.Background(), ts.tlsAddr, ts.tlsClient)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.Timeout = 10 * time.Second
	if err := tc.Login("alice@example.test", "secret pass"); err != nil {
		t.Fatal(err)
	}
	check(tc, "implicit TLS")
	tc.Quit()

	sc := ts.client(t)
	if err := sc.StartTLS(ts.tlsClient); err != nil {
		t.Fatal(err)
	}
	if err := sc.Login("alice@example.test", "secret pass"); err != nil {
		t.Fatal(err)
	}
	check(sc, "STLS")
	sc.Quit()
	if n := fb.reads.Load(); n != 4 {
		t.Fatalf("TLS: %d messages read through the process, want 4", n)
	}
}

// A file longer than the listed size is not passed off as the message:
// the connection is dropped before the terminating dot, and the message
// is not counted as downloaded.
func TestRetrFileLongerThanListed(t *testing.T) {
	ts, fb := startFileServer(t)
	fb.extra = "more\r\n"
	ts.be.add("alice@example.test", "u1", "Subject: one\r\n\r\nbody\r\n")
	tr := ts.loggedIn(t, "alice@example.test", "secret pass")
	tr.send("RETR 1")
	tr.expect(`^\+OK 22 octets$`)
	tr.expect(`^Subject: one$`)
	tr.expect(`^$`)
	tr.expect(`^body$`)
	tr.closed()
}

// The file goes to the TCP connection under a wrapper that names it
// (NetConn, as the PROXY protocol's connections do).
func TestReaderFromUnwraps(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if readerFrom(c) == nil {
		t.Fatal("no ReaderFrom for a TCP connection")
	}
	if readerFrom(wrapped{c}) == nil {
		t.Fatal("no ReaderFrom through NetConn")
	}
	if readerFrom(opaque{c}) != nil {
		t.Fatal("a wrapper that does not name its connection must not be bypassed")
	}
}

type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

type opaque struct{ net.Conn }

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80]
	}
	return s
}
