package pop3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// memBackend is an in-memory Backend for protocol tests. The storage
// contract itself is tested against the real stores in their packages.
type memBackend struct {
	mu       sync.Mutex
	users    map[string]string // user -> password
	boxes    map[string][]memMsg
	locked   map[string]bool
	failOpen error
	commits  int
}

type memMsg struct {
	uid  string
	data string // wire form
}

func newMemBackend() *memBackend {
	return &memBackend{
		users:  map[string]string{"alice@example.test": "secret pass", "bob@example.test": "hunter2"},
		boxes:  map[string][]memMsg{},
		locked: map[string]bool{},
	}
}

func (b *memBackend) add(user, uid, data string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.boxes[user] = append(b.boxes[user], memMsg{uid, data})
}

func (b *memBackend) Authenticate(ctx context.Context, ci *ConnInfo, user, pass string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.users[user]; ok && p == pass {
		return user, nil
	}
	return "", ErrAuthFailed
}

func (b *memBackend) OpenMaildrop(ctx context.Context, ci *ConnInfo, user string) (Maildrop, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failOpen != nil {
		return nil, b.failOpen
	}
	if b.locked[user] {
		return nil, ErrInUse
	}
	b.locked[user] = true
	return &memDrop{b: b, user: user, msgs: append([]memMsg(nil), b.boxes[user]...)}, nil
}

type memDrop struct {
	b    *memBackend
	user string
	msgs []memMsg
}

func (d *memDrop) Messages() []MessageInfo {
	out := make([]MessageInfo, len(d.msgs))
	for i, m := range d.msgs {
		out[i] = MessageInfo{UID: m.uid, Size: int64(len(m.data))}
	}
	return out
}

func (d *memDrop) Open(ctx context.Context, i int) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(d.msgs[i].data)), nil
}

func (d *memDrop) Commit(ctx context.Context, del []int) error {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	d.b.commits++
	gone := map[string]bool{}
	for _, i := range del {
		gone[d.msgs[i].uid] = true
	}
	var keep []memMsg
	for _, m := range d.b.boxes[d.user] {
		if !gone[m.uid] {
			keep = append(keep, m)
		}
	}
	d.b.boxes[d.user] = keep
	return nil
}

func (d *memDrop) Close() error {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	d.b.locked[d.user] = false
	return nil
}

func (b *memBackend) isLocked(user string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.locked[user]
}

// testServer runs a Server on a loopback listener for one test.
type testServer struct {
	*Server
	addr      string
	tlsAddr   string
	be        *memBackend
	tlsClient *tls.Config
}

func startServer(t *testing.T, configure func(*Server)) *testServer {
	t.Helper()
	be := newMemBackend()
	cert, pool := testCert(t)
	srv := &Server{
		Backend:        be,
		TLSConfig:      &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Implementation: "postino-test",
	}
	if configure != nil {
		configure(srv)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lt, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	go srv.ServeTLS(lt)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &testServer{Server: srv, addr: l.Addr().String(), tlsAddr: lt.Addr().String(), be: be,
		tlsClient: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
}

var (
	certOnce sync.Once
	certVal  testutil.Cert
)

func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	certOnce.Do(func() { certVal = testutil.NewCert(t, "localhost") })
	return certVal.Config().Certificates[0], certVal.Pool()
}

// transcript drives a raw POP3 conversation and checks every reply line.
type transcript struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (ts *testServer) dial(t *testing.T) *transcript {
	t.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tr := &transcript{t: t, conn: c, r: bufio.NewReader(c)}
	tr.expect(`^\+OK postino ready\.$`)
	return tr
}

// loggedIn returns a transcript in the TRANSACTION state.
func (ts *testServer) loggedIn(t *testing.T, user, pass string) *transcript {
	t.Helper()
	tr := ts.dial(t)
	tr.do("USER "+user, `^\+OK`)
	tr.do("PASS "+pass, `^\+OK Logged in`)
	return tr
}

func (tr *transcript) send(line string) {
	tr.t.Helper()
	tr.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(tr.conn, line+"\r\n"); err != nil {
		tr.t.Fatalf("send %q: %v", line, err)
	}
}

func (tr *transcript) readLine() string {
	tr.t.Helper()
	tr.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := tr.r.ReadString('\n')
	if err != nil {
		tr.t.Fatalf("reading reply: %v (got %q)", err, line)
	}
	if !strings.HasSuffix(line, "\r\n") {
		tr.t.Fatalf("reply %q does not end in CRLF", line)
	}
	return strings.TrimSuffix(line, "\r\n")
}

// expect reads one line per pattern and matches it.
func (tr *transcript) expect(patterns ...string) {
	tr.t.Helper()
	for _, p := range patterns {
		line := tr.readLine()
		if !regexp.MustCompile(p).MatchString(line) {
			tr.t.Fatalf("reply %q does not match %q", line, p)
		}
	}
}

// do sends a command and matches its reply lines.
func (tr *transcript) do(cmd string, patterns ...string) {
	tr.t.Helper()
	tr.send(cmd)
	tr.expect(patterns...)
}

// multi sends a command, expects +OK and returns the multi-line body
// exactly as sent (still stuffed), terminator excluded.
func (tr *transcript) multi(cmd string) string {
	tr.t.Helper()
	tr.send(cmd)
	first := tr.readLine()
	if !strings.HasPrefix(first, "+OK") {
		tr.t.Fatalf("%s: got %q", cmd, first)
	}
	var b bytes.Buffer
	for {
		tr.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := tr.r.ReadString('\n')
		if err != nil {
			tr.t.Fatalf("%s: reading body: %v", cmd, err)
		}
		if line == ".\r\n" {
			return b.String()
		}
		b.WriteString(line)
	}
}

// closed checks that the server closed the connection.
func (tr *transcript) closed() {
	tr.t.Helper()
	tr.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := tr.r.ReadString('\n')
	if err == nil {
		tr.t.Fatalf("expected the connection to close, got %q", line)
	}
}

func (ts *testServer) client(t *testing.T) *Client {
	t.Helper()
	c, err := Dial(context.Background(), ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 10 * time.Second
	t.Cleanup(func() { c.Close() })
	return c
}

var _ = fmt.Sprintf
