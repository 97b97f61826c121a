// Package blackbox tests the postino binary from the outside: it builds
// ./cmd/postino once, runs "postino serve" on free loopback ports and talks
// to it with the repository's POP3 client and the postino CLI, exactly as an
// administrator and a mail client would.
package blackbox

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/pop3"
)

// binPath is the postino binary built by TestMain.
var binPath string

// cmdTimeout bounds every CLI invocation.
const cmdTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "go.mod"))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "blackbox: cannot find the repository root: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "postino-blackbox-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "blackbox: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "postino")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", binPath, "./cmd/postino")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "blackbox: go build ./cmd/postino: %v\n%s", err, out)
		return 1
	}
	return m.Run()
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

// server is a running "postino serve".
type server struct {
	t         testing.TB
	data      string
	pop3Addr  string // "" when disabled
	pop3sAddr string // "" when disabled
	cmd       *exec.Cmd
	stdout    *syncBuffer
	stderr    *syncBuffer
	done      chan struct{}
	waitErr   error
	stopped   bool
}

// serverOpts tunes startServer.
type serverOpts struct {
	data       string   // data folder; a new t.TempDir() when empty
	noPOP3     bool     // pass --pop3 ""
	noPOP3S    bool     // pass --pop3s ""
	extraArgs  []string // appended to the command line
	noAddrs    bool     // pass neither --pop3 nor --pop3s (config file sets them)
	noDataFlag bool     // do not pass --data (config file sets data_dir)
	pop3Addr   string   // with noAddrs: the address to wait for
	pop3sAddr  string   // with noAddrs: the address to wait for
}

// startServer runs "postino serve" on free loopback ports and waits until
// it has printed its listeners and they accept connections. It is stopped
// with SIGTERM at cleanup, which must make it exit 0. A port taken by
// someone else between picking and binding is retried with new ports.
func startServer(t testing.TB, o serverOpts) *server {
	t.Helper()
	if o.data == "" {
		o.data = t.TempDir()
	}
	for attempt := 1; ; attempt++ {
		s := &server{t: t, data: o.data, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
		args := []string{"serve"}
		if !o.noAddrs {
			args = append(args, "--smtp", "", "--submission", "", "--submissions", "")
		}
		if !o.noDataFlag {
			args = append(args, "--data", s.data)
		}
		switch {
		case o.noAddrs:
			s.pop3Addr, s.pop3sAddr = o.pop3Addr, o.pop3sAddr
		default:
			free := freeAddrs(t, 2)
			if o.noPOP3 {
				args = append(args, "--pop3", "")
			} else {
				s.pop3Addr = free[0]
				args = append(args, "--pop3", s.pop3Addr)
			}
			if o.noPOP3S {
				args = append(args, "--pop3s", "")
			} else {
				s.pop3sAddr = free[1]
				args = append(args, "--pop3s", s.pop3sAddr)
			}
		}
		args = append(args, o.extraArgs...)
		s.cmd = exec.Command(binPath, args...)
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
			t.Cleanup(func() {
				if !s.stopped {
					s.stop()
				}
			})
			return s
		}
		s.cmd.Process.Kill()
		<-s.done
		if attempt < 3 && !o.noAddrs && (strings.Contains(s.stderr.String(), "cannot listen") || strings.Contains(s.stderr.String(), "already used")) {
			t.Logf("retrying with other ports: %v", err)
			continue
		}
		t.Fatalf("postino serve %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, s.stdout, s.stderr)
	}
}

// waitReady waits until the banner lists the expected listeners (so they
// are this process's, not someone else's on a reused port) and they accept
// connections.
func (s *server) waitReady() error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-s.done:
			return fmt.Errorf("exited early (%v)", s.waitErr)
		default:
		}
		out := s.stdout.String()
		ready := (s.pop3Addr == "" || strings.Contains(out, fmt.Sprintf("  %-12s %s\n", "pop3", s.pop3Addr))) &&
			(s.pop3sAddr == "" || strings.Contains(out, fmt.Sprintf("  %-12s %s\n", "pop3s", s.pop3sAddr)))
		if ready {
			for _, a := range []string{s.pop3Addr, s.pop3sAddr} {
				if a == "" {
					continue
				}
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

// signal sends sig to the server process.
func (s *server) signal(sig os.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signalling postino: %v", err)
	}
}

// wait waits up to d for the process to exit and returns its exit code.
func (s *server) wait(d time.Duration) (int, bool) {
	select {
	case <-s.done:
		return s.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return -1, false
	}
}

// stop sends SIGTERM and checks that the server exits 0 within a few
// seconds.
func (s *server) stop() {
	s.t.Helper()
	s.stopped = true
	select {
	case <-s.done:
		s.t.Errorf("postino serve had already exited (%v)\nstderr:\n%s", s.waitErr, s.stderr)
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	code, ok := s.wait(10 * time.Second)
	if !ok {
		s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("postino serve did not exit within 10s of SIGTERM\nstderr:\n%s", s.stderr)
		return
	}
	if code != 0 {
		s.t.Errorf("postino serve exited %d after SIGTERM, want 0\nstderr:\n%s", code, s.stderr)
	}
}

// kill9 kills the server with SIGKILL and waits for it.
func (s *server) kill9() {
	s.t.Helper()
	s.stopped = true
	s.cmd.Process.Kill()
	if _, ok := s.wait(10 * time.Second); !ok {
		s.t.Fatalf("postino serve did not die after SIGKILL")
	}
}

// cliResult is the outcome of one postino CLI invocation.
type cliResult struct {
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// postino runs the binary with stdin and returns its output and exit code.
func postino(t testing.TB, stdin []byte, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("running postino %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("postino %s timed out\n%s", strings.Join(args, " "), r)
	}
	return r
}

// addUser runs "postino user add ADDR --password-stdin".
func addUser(t testing.TB, data, addr, pw string) {
	t.Helper()
	if r := postino(t, []byte(pw+"\n"), "user", "add", addr, "--password-stdin", "--data", data); r.code != 0 {
		t.Fatalf("user add %s: %s", addr, r)
	}
}

// deliver runs "postino deliver" and returns its result.
func deliver(t testing.TB, data, from string, msg []byte, rcpts ...string) cliResult {
	t.Helper()
	args := []string{"deliver", "--data", data, "--from", from}
	args = append(args, rcpts...)
	return postino(t, msg, args...)
}

// mustDeliver delivers and fails the test unless the exit code is 0.
func mustDeliver(t testing.TB, data, from string, msg []byte, rcpts ...string) {
	t.Helper()
	if r := deliver(t, data, from, msg, rcpts...); r.code != 0 {
		t.Fatalf("deliver to %v: %s", rcpts, r)
	}
}

// dial connects to the plain POP3 listener.
func (s *server) dial() *pop3.Client {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pop3.Dial(ctx, s.pop3Addr)
	if err != nil {
		s.t.Fatalf("dialing %s: %v", s.pop3Addr, err)
	}
	c.Timeout = 30 * time.Second
	s.t.Cleanup(func() { c.Close() })
	return c
}

// tlsConfig trusts the server's certificate in DATA/tls/cert.pem.
func (s *server) tlsConfig() *tls.Config {
	s.t.Helper()
	pem, err := os.ReadFile(filepath.Join(s.data, "tls", "cert.pem"))
	if err != nil {
		s.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		s.t.Fatalf("no certificate in %s/tls/cert.pem", s.data)
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// login connects and logs in, failing the test on error.
func (s *server) login(user, pw string) *pop3.Client {
	s.t.Helper()
	c := s.dial()
	if err := c.Login(user, pw); err != nil {
		s.t.Fatalf("login %s: %v", user, err)
	}
	return c
}

// tryLogin connects and logs in, returning the login error (the client is
// closed on error).
func (s *server) tryLogin(user, pw string) (*pop3.Client, error) {
	s.t.Helper()
	c := s.dial()
	if err := c.Login(user, pw); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// retrieveAll logs in, downloads every message and quits without deleting.
func (s *server) retrieveAll(user, pw string) [][]byte {
	s.t.Helper()
	c := s.login(user, pw)
	msgs := retrAll(s.t, c)
	if err := c.Quit(); err != nil {
		s.t.Fatalf("QUIT: %v", err)
	}
	return msgs
}

// retrAll downloads every message of an open session and checks that LIST
// sizes are the exact RETR octet counts.
func retrAll(t testing.TB, c *pop3.Client) [][]byte {
	t.Helper()
	list, err := c.List()
	if err != nil {
		t.Fatalf("LIST: %v", err)
	}
	var msgs [][]byte
	for _, e := range list {
		r, err := c.Retr(e.Number)
		if err != nil {
			t.Fatalf("RETR %d: %v", e.Number, err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("RETR %d: %v", e.Number, err)
		}
		if int64(len(b)) != e.Size {
			t.Errorf("message %d: LIST says %d octets, RETR gave %d", e.Number, e.Size, len(b))
		}
		msgs = append(msgs, b)
	}
	return msgs
}

// wireForm is what POP3 must serve for a message delivered by "postino
// deliver --from from rcpt": the two trace lines, CRLF line ends, and a
// final CRLF.
func wireForm(from, rcpt string, msg []byte) []byte {
	s := strings.ReplaceAll(string(msg), "\r\n", "\n")
	s = "Return-Path: <" + from + ">\nDelivered-To: " + rcpt + "\n" + s
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

// isCode reports whether err is a POP3 -ERR with the response code.
func isCode(err error, code string) bool {
	var pe *pop3.Error
	return errors.As(err, &pe) && pe.Code == code
}

// listeningPorts returns the TCP ports (decimal strings) on which process
// pid has listening sockets, from /proc. ok is false where /proc is not
// available.
func listeningPorts(t testing.TB, pid int) (ports []string, ok bool) {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Logf("cannot list the server's sockets: %v", err)
		return nil, false
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			var port int
			fmt.Sscanf(hexPort, "%X", &port)
			ports = append(ports, fmt.Sprint(port))
		}
	}
	return ports, true
}
