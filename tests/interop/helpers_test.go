// Package interop runs real POP3 clients (mpop, fetchmail, curl, Python's
// poplib) against the postino binary and compares what they download with
// what postino delivered, byte for byte, after undoing exactly the changes
// each client is documented to make.
package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/pop3"
)

// binPath is the postino binary built by TestMain.
var binPath string

// extTimeout bounds every external command.
const extTimeout = 90 * time.Second

func TestMain(m *testing.M) {
	code := runMain(m)
	writeMatrix()
	os.Exit(code)
}

func runMain(m *testing.M) int {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "go.mod"))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "interop: cannot find the repository root: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "postino-interop-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "interop: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "postino")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", binPath, "./cmd/postino")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "interop: go build ./cmd/postino: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// needProgram returns the path of an external program. A missing program
// fails the test in CI (CI=true) and skips it elsewhere.
func needProgram(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI but not installed: %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

// syncBuffer is a bytes.Buffer safe for a process writing while a test
// reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago: all n are held open together, so they differ.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("picking a free port: %v", err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

// server is a running "postino serve" on loopback.
type server struct {
	t         testing.TB
	data      string
	pop3Addr  string
	pop3sAddr string
	pop3Port  string
	pop3sPort string
	certFile  string
	cmd       *exec.Cmd
	stdout    *syncBuffer
	stderr    *syncBuffer
	done      chan struct{}
	waitErr   error
}

// startServer runs "postino serve" with a new data folder and free loopback
// ports, waits until it has printed both listeners (so they are this
// process's) and they accept, and stops it with SIGTERM at cleanup (it must
// exit 0). A port taken between picking and binding is retried.
func startServer(t testing.TB) *server {
	t.Helper()
	data := t.TempDir()
	for attempt := 1; ; attempt++ {
		s := &server{t: t, data: data, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
		free := freeAddrs(t, 2)
		s.pop3Addr, s.pop3sAddr = free[0], free[1]
		_, s.pop3Port, _ = net.SplitHostPort(s.pop3Addr)
		_, s.pop3sPort, _ = net.SplitHostPort(s.pop3sAddr)
		s.certFile = filepath.Join(s.data, "tls", "cert.pem")
		s.cmd = exec.Command(binPath, "serve", "--data", s.data, "--pop3", s.pop3Addr, "--pop3s", s.pop3sAddr,
			"--smtp", "", "--submission", "", "--submissions", "")
		s.cmd.Stdout = s.stdout
		s.cmd.Stderr = s.stderr
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("starting postino serve: %v", err)
		}
		go func() {
			s.waitErr = s.cmd.Wait()
			close(s.done)
		}()
		err := s.waitReady()
		if err == nil {
			t.Cleanup(s.stop)
			return s
		}
		s.cmd.Process.Kill()
		<-s.done
		if attempt < 3 && (strings.Contains(s.stderr.String(), "cannot listen") || strings.Contains(s.stderr.String(), "already used")) {
			t.Logf("retrying with other ports: %v", err)
			continue
		}
		t.Fatalf("postino serve: %v\nstdout:\n%s\nstderr:\n%s", err, s.stdout, s.stderr)
	}
}

func (s *server) waitReady() error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("exited early (%v)", s.waitErr)
		default:
		}
		out := s.stdout.String()
		if strings.Contains(out, fmt.Sprintf("  %-12s %s\n", "pop3", s.pop3Addr)) && strings.Contains(out, fmt.Sprintf("  %-12s %s\n", "pop3s", s.pop3sAddr)) {
			for _, a := range []string{s.pop3Addr, s.pop3sAddr} {
				c, err := net.DialTimeout("tcp", a, 5*time.Second)
				if err != nil {
					return err
				}
				c.Close()
			}
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("listeners not ready within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) stop() {
	select {
	case <-s.done:
		s.t.Errorf("postino serve had exited (%v):\n%s", s.waitErr, s.stderr)
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		if code := s.cmd.ProcessState.ExitCode(); code != 0 {
			s.t.Errorf("postino serve exited %d after SIGTERM:\n%s", code, s.stderr)
		}
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("postino serve did not exit within 10s of SIGTERM")
	}
}

// cmdResult is the outcome of an external command.
type cmdResult struct {
	cmdline string
	output  string // stdout and stderr combined
	code    int
}

func (r cmdResult) String() string {
	out := r.output
	if len(out) > 8000 {
		out = out[:4000] + "\n[... " + strconv.Itoa(len(out)-8000) + " bytes cut ...]\n" + out[len(out)-4000:]
	}
	return fmt.Sprintf("$ %s\nexit %d, output:\n%s", r.cmdline, r.code, out)
}

// run runs an external command with a timeout, the given extra
// environment and stdin, and returns its combined output and exit code.
// It fails the test if the command cannot start or times out.
func run(t testing.TB, env []string, stdin []byte, name string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), extTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	r := cmdResult{cmdline: name + " " + strings.Join(args, " "), output: out.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("timed out after %v:\n%s", extTimeout, r)
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("cannot run %s: %v", name, err)
	}
	return r
}

// postino runs the binary and fails the test unless it exits 0.
func postino(t testing.TB, stdin []byte, args ...string) {
	t.Helper()
	if r := run(t, nil, stdin, binPath, args...); r.code != 0 {
		t.Fatalf("postino failed:\n%s", r)
	}
}

// addUser creates a user on the server.
func (s *server) addUser(t testing.TB, addr, pw string) {
	t.Helper()
	postino(t, []byte(pw+"\n"), "user", "add", addr, "--password-stdin", "--data", s.data)
}

// fill delivers the messages to rcpt with postino deliver and returns
// their expected wire forms by id.
func (s *server) fill(t testing.TB, rcpt string, msgs []testMsg) map[int][]byte {
	t.Helper()
	want := map[int][]byte{}
	for _, m := range msgs {
		postino(t, m.raw, "deliver", "--data", s.data, "--from", sender, rcpt)
		want[m.id] = wireForm(sender, rcpt, m.raw)
	}
	return want
}

// pop3Client logs in with the repository's POP3 client.
func (s *server) pop3Client(t testing.TB, user, pw string) *pop3.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pop3.Dial(ctx, s.pop3Addr)
	if err != nil {
		t.Fatalf("dialing %s: %v", s.pop3Addr, err)
	}
	c.Timeout = 30 * time.Second
	if err := c.Login(user, pw); err != nil {
		c.Close()
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

// stat returns the number of messages in a mailbox, checked with the
// repository's POP3 client.
func (s *server) stat(t testing.TB, user, pw string) int {
	t.Helper()
	c := s.pop3Client(t, user, pw)
	defer c.Quit()
	n, _, err := c.Stat()
	if err != nil {
		t.Fatalf("STAT: %v", err)
	}
	return n
}

// uidls returns the mailbox's unique-ids.
func (s *server) uidls(t testing.TB, user, pw string) []string {
	t.Helper()
	c := s.pop3Client(t, user, pw)
	defer c.Quit()
	l, err := c.UIDL()
	if err != nil {
		t.Fatalf("UIDL: %v", err)
	}
	var out []string
	for _, e := range l {
		out = append(out, e.UID)
	}
	return out
}

// writeFile0600 writes a client configuration file readable only by its
// owner, as mpop and fetchmail demand.
func writeFile0600(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// readDirFiles returns the contents of the regular files in dir (sorted by
// name).
func readDirFiles(t testing.TB, dir string) [][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// ---- normalisations ----

// normalizer undoes a client's documented change to one message. It returns
// an error when the message does not carry exactly that change.
type normalizer func([]byte) ([]byte, error)

// exact: the client keeps the bytes.
func exact(b []byte) ([]byte, error) { return b, nil }

// stripReceivedBy removes the one Received header field a client adds,
// recognised by sig (e.g. "(fetchmail-"), wherever the client put it in the
// header section. There must be exactly one such field.
func stripReceivedBy(sig string) normalizer {
	return func(b []byte) ([]byte, error) {
		end := len(b)
		for _, sep := range []string{"\r\n\r\n", "\n\n"} {
			if i := bytes.Index(b, []byte(sep)); i >= 0 && i < end {
				end = i + len(sep)/2
			}
		}
		type field struct{ start, end int }
		var found []field
		for pos := 0; pos < end; {
			// A field runs from pos to the next line not starting with
			// white space.
			next := pos
			for {
				nl := bytes.IndexByte(b[next:end], '\n')
				if nl < 0 {
					next = end
					break
				}
				next += nl + 1
				if next >= end || (b[next] != ' ' && b[next] != '\t') {
					break
				}
			}
			f := b[pos:next]
			if len(f) >= 9 && strings.EqualFold(string(f[:9]), "Received:") && bytes.Contains(f, []byte(sig)) {
				found = append(found, field{pos, next})
			}
			pos = next
		}
		if len(found) != 1 {
			return nil, fmt.Errorf("want exactly one Received header field containing %q, found %d in %q", sig, len(found), head(b))
		}
		out := append([]byte(nil), b[:found[0].start]...)
		return append(out, b[found[0].end:]...), nil
	}
}

// lfToCRLF undoes a conversion to LF line ends; the message must contain no
// CR at all (a half-converted message is a difference, not a
// normalisation).
func lfToCRLF(b []byte) ([]byte, error) {
	if i := bytes.IndexByte(b, '\r'); i >= 0 {
		return nil, fmt.Errorf("CR at offset %d in a message the client should have converted to LF", i)
	}
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")), nil
}

// chain applies normalisations in order.
func chain(ns ...normalizer) normalizer {
	return func(b []byte) ([]byte, error) {
		var err error
		for _, n := range ns {
			if b, err = n(b); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
}

func head(b []byte) []byte {
	if len(b) > 300 {
		return b[:300]
	}
	return b
}

var idRE = regexp.MustCompile(`(?m)^X-Interop-Id: (\d+)\r?$`)

// compareDownloads normalises each downloaded message, identifies it by its
// X-Interop-Id header and compares it with the expected wire form. Every
// expected message must be there exactly once.
func compareDownloads(t testing.TB, got [][]byte, want map[int][]byte, norm normalizer) {
	t.Helper()
	seen := map[int]int{}
	for i, raw := range got {
		b, err := norm(raw)
		if err != nil {
			t.Errorf("download %d: %v", i, err)
			continue
		}
		m := idRE.FindSubmatch(b)
		if m == nil {
			t.Errorf("download %d has no X-Interop-Id header: %q", i, head(b))
			continue
		}
		id, _ := strconv.Atoi(string(m[1]))
		seen[id]++
		w, ok := want[id]
		if !ok {
			t.Errorf("download %d is message %d, which was not expected here", i, id)
			continue
		}
		if !bytes.Equal(b, w) {
			t.Errorf("message %d (%s) differs: %s", id, corpusName(id), describeDiff(b, w))
		}
	}
	var ids []int
	for id := range want {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("message %d (%s) downloaded %d times, want once", id, corpusName(id), seen[id])
		}
	}
}

// describeDiff locates the first difference between got and want.
func describeDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-40)
	ctx := func(b []byte) []byte { return b[min(lo, len(b)):min(i+40, len(b))] }
	return fmt.Sprintf("got %d octets, want %d; first difference at offset %d:\n got ...%q...\nwant ...%q...",
		len(got), len(want), i, ctx(got), ctx(want))
}

// ---- the interop matrix ----

type matrixRow struct {
	client, transport, mode, delivery, result string
}

var (
	matrixMu   sync.Mutex
	matrixRows []matrixRow
)

// record adds this (sub)test to the matrix; its result is taken when the
// test ends.
func record(t *testing.T, client, transport, mode, delivery string) {
	t.Cleanup(func() {
		res := "PASS"
		switch {
		case t.Skipped():
			res = "SKIP"
		case t.Failed():
			res = "FAIL"
		}
		matrixMu.Lock()
		matrixRows = append(matrixRows, matrixRow{client, transport, mode, delivery, res})
		matrixMu.Unlock()
		t.Logf("matrix: %-9s | %-12s | %-26s | %-52s | %s", client, transport, mode, delivery, res)
	})
}

// matrixTable formats the rows recorded so far.
func matrixTable() string {
	matrixMu.Lock()
	rows := append([]matrixRow(nil), matrixRows...)
	matrixMu.Unlock()
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].client < rows[j].client })
	var b strings.Builder
	fmt.Fprintf(&b, "| %-9s | %-12s | %-26s | %-52s | %-6s |\n", "client", "transport", "mode", "delivery / normalisation", "result")
	fmt.Fprintf(&b, "|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 11), strings.Repeat("-", 14), strings.Repeat("-", 28), strings.Repeat("-", 54), strings.Repeat("-", 8))
	for _, r := range rows {
		fmt.Fprintf(&b, "| %-9s | %-12s | %-26s | %-52s | %-6s |\n", r.client, r.transport, r.mode, r.delivery, r.result)
	}
	return b.String()
}

// writeMatrix prints the matrix in verbose mode and writes it to
// $INTEROP_MATRIX when set.
func writeMatrix() {
	table := matrixTable()
	if testing.Verbose() {
		fmt.Print("\nPOP3 client interop matrix:\n" + table)
	}
	if f := os.Getenv("INTEROP_MATRIX"); f != "" {
		if err := os.WriteFile(f, []byte(table), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "interop: writing %s: %v\n", f, err)
		}
	}
}
