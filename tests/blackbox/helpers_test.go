// Package blackbox tests the postino binary from the outside: it builds
// ./cmd/postino once, runs "postino serve" on free loopback ports and talks
// to it with the repository's POP3 client and the postino CLI, exactly as an
// administrator and a mail client would.
package blackbox

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
	"github.com/postino-mail/postino/pop3"
)

// binPath is the postino binary built by TestMain.
var binPath string

// cmdTimeout bounds every CLI invocation.
const cmdTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	os.Exit(testutil.Main(m, "blackbox", &binPath, nil))
}

// server is a running "postino serve".
type server struct {
	*testutil.Serve
	t         testing.TB
	data      string
	pop3Addr  string // "" when disabled
	pop3sAddr string // "" when disabled
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
	s := &server{t: t, data: o.data}
	nAddrs := 2
	if o.noAddrs {
		nAddrs = 0
	}
	s.Serve = testutil.StartServe(t, testutil.ServeConfig{
		Bin:       binPath,
		FreeAddrs: nAddrs,
		Retry:     !o.noAddrs,
		Setup: func(free []string) ([]string, map[string]string) {
			args := []string{"serve"}
			if !o.noAddrs {
				args = append(args, "--smtp", "", "--submission", "", "--submissions", "", "--admin", "")
			}
			if !o.noDataFlag {
				args = append(args, "--data", s.data)
			}
			s.pop3Addr, s.pop3sAddr = "", ""
			switch {
			case o.noAddrs:
				s.pop3Addr, s.pop3sAddr = o.pop3Addr, o.pop3sAddr
			default:
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
			return args, map[string]string{"pop3": s.pop3Addr, "pop3s": s.pop3sAddr}
		},
	})
	t.Cleanup(func() {
		if !s.stopped {
			s.stop()
		}
	})
	return s
}

// signal sends sig to the server process.
func (s *server) signal(sig os.Signal) {
	s.t.Helper()
	if err := s.Cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signalling postino: %v", err)
	}
}

// stop sends SIGTERM and checks that the server exits 0 within a few
// seconds.
func (s *server) stop() {
	s.t.Helper()
	s.stopped = true
	s.Stop(s.t, 10*time.Second, s.Stderr)
}

// kill9 kills the server with SIGKILL and waits for it.
func (s *server) kill9() {
	s.t.Helper()
	s.stopped = true
	s.Cmd.Process.Kill()
	if _, ok := s.Wait(10 * time.Second); !ok {
		s.t.Fatalf("postino serve did not die after SIGKILL")
	}
}

// run runs a postino CLI command with stdin and returns its output and
// exit code.
var run = testutil.Runner{Timeout: cmdTimeout, Split: true}.Run

// postino runs the binary with stdin and returns its output and exit code.
func postino(t testing.TB, stdin []byte, args ...string) testutil.Result {
	t.Helper()
	return run(t, nil, stdin, binPath, args...)
}

// addUser runs "postino user add ADDR --password-stdin", after "postino
// init" when the data folder does not exist yet (user add refuses to
// create one).
func addUser(t testing.TB, data, addr, pw string) {
	t.Helper()
	if _, err := os.Stat(data); errors.Is(err, os.ErrNotExist) {
		if r := postino(t, nil, "init", "--data", data); r.Code != 0 {
			t.Fatalf("init --data %s: %s", data, r)
		}
	}
	if r := postino(t, []byte(pw+"\n"), "user", "add", addr, "--password-stdin", "--data", data); r.Code != 0 {
		t.Fatalf("user add %s: %s", addr, r)
	}
}

// deliver runs "postino deliver" and returns its result.
func deliver(t testing.TB, data, from string, msg []byte, rcpts ...string) testutil.Result {
	t.Helper()
	args := []string{"deliver", "--data", data, "--from", from}
	args = append(args, rcpts...)
	return postino(t, msg, args...)
}

// mustDeliver delivers and fails the test unless the exit code is 0.
func mustDeliver(t testing.TB, data, from string, msg []byte, rcpts ...string) {
	t.Helper()
	if r := deliver(t, data, from, msg, rcpts...); r.Code != 0 {
		t.Fatalf("deliver to %v: %s", rcpts, r)
	}
}

// dial connects to the plain POP3 listener.
func (s *server) dial() *pop3.Client {
	s.t.Helper()
	c := mailtest.DialPOP3(s.t, s.pop3Addr, 30*time.Second)
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
	return mailtest.RetrAll(t, c, "")
}

// wireForm is what POP3 must serve for a message delivered by "postino
// deliver --from from rcpt".
var wireForm = testutil.WireForm

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
