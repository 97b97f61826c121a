package testutil

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer safe for a process writing while a test
// reads.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the buffer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago: all n are held open together, so they differ.
func FreeAddrs(t testing.TB, n int) []string {
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

// Process is a started command (typically a server) and a goroutine
// waiting for it, so that a test can watch for its exit while it runs.
type Process struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error // what Cmd.Wait returned, once done is closed
}

// StartProcess starts cmd, which the caller has set up (output, process
// attributes), and waits for it in the background.
func StartProcess(cmd *exec.Cmd) (*Process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns what waiting for the process returned; nil while it runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Wait waits up to d for the process to exit and returns its exit code
// (-1 if a signal ended it). exited is false if it is still running.
func (p *Process) Wait(d time.Duration) (code int, exited bool) {
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return -1, false
	}
}

// Kill kills the process with SIGKILL and waits until it is gone.
func (p *Process) Kill() {
	p.Cmd.Process.Kill()
	<-p.done
}

// Terminate sends SIGTERM and waits up to d for the process to exit. If
// it does not, it is killed (and waited for) and Terminate returns false.
func (p *Process) Terminate(d time.Duration) bool {
	p.Cmd.Process.Signal(syscall.SIGTERM)
	if _, ok := p.Wait(d); ok {
		return true
	}
	p.Kill()
	return false
}

// Stop sends SIGTERM and fails the test unless the process was still
// running, exits within d and exits 0. stderr is shown with a failure.
func (p *Process) Stop(t testing.TB, d time.Duration, stderr fmt.Stringer) {
	t.Helper()
	if p.Exited() {
		t.Errorf("%s had already exited (%v)\nstderr:\n%s", p.name(), p.err, stderr)
		return
	}
	if !p.Terminate(d) {
		t.Errorf("%s did not exit within %v of SIGTERM\nstderr:\n%s", p.name(), d, stderr)
		return
	}
	if code := p.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s exited %d after SIGTERM, want 0\nstderr:\n%s", p.name(), code, stderr)
	}
}

// name is the program's base name and its first argument ("postino
// serve"), for messages.
func (p *Process) name() string {
	name := filepath.Base(p.Cmd.Path)
	if len(p.Cmd.Args) > 1 {
		name += " " + p.Cmd.Args[1]
	}
	return name
}

// Poll calls cond every interval until it reports true (Poll returns
// true), or until timeout has passed or the process has exited (Poll
// returns false). cond is called once more after the process exits.
func (p *Process) Poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		exited := p.Exited()
		if cond() {
			return true
		}
		if exited || time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// BannerLine is the line "postino serve" prints at start for a listener
// name ("pop3", "smtp", ...) on addr.
func BannerLine(name, addr string) string {
	return fmt.Sprintf("  %-12s %s\n", name, addr)
}

// WaitBanner waits until out, the standard output of "postino serve",
// lists every listener of listeners (name → address; "" addresses are
// not waited for) in its banner, so that they are this process's and not
// someone else's on a reused port, and each accepts a connection
// (addresses starting with "/" are unix sockets). It polls every
// interval, and fails when the process exits or timeout passes.
func (p *Process) WaitBanner(out fmt.Stringer, listeners map[string]string, timeout, interval time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.Exited() {
			return fmt.Errorf("exited early (%v)", p.err)
		}
		text := out.String()
		ready := true
		for name, addr := range listeners {
			if addr != "" && !strings.Contains(text, BannerLine(name, addr)) {
				ready = false
			}
		}
		if ready {
			return dialAll(listeners)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("listeners not ready within %v", timeout)
		}
		time.Sleep(interval)
	}
}

// dialAll connects to and disconnects from every non-empty address.
func dialAll(listeners map[string]string) error {
	for _, a := range listeners {
		if a == "" {
			continue
		}
		network := "tcp"
		if strings.HasPrefix(a, "/") {
			network = "unix"
		}
		c, err := net.DialTimeout(network, a, 5*time.Second)
		if err != nil {
			return err
		}
		c.Close()
	}
	return nil
}

// Serve is a running "postino serve" started by StartServe.
type Serve struct {
	*Process
	Stdout *SyncBuffer
	Stderr *SyncBuffer
}

// ServeConfig tells StartServe how to run a server.
type ServeConfig struct {
	Bin string // the postino binary
	// FreeAddrs is how many free loopback addresses are picked (anew
	// for every attempt) and passed to Setup.
	FreeAddrs int
	// Setup returns the command line (after Bin) for the free addresses
	// and the listeners, banner name → address, that must be ready (""
	// addresses are not waited for).
	Setup func(free []string) (args []string, listeners map[string]string)
	// Retry allows three attempts in all when the server fails because a
	// port was taken between picking and binding.
	Retry bool
}

// serveReadyTimeout bounds how long StartServe waits for the listeners.
const serveReadyTimeout = 15 * time.Second

// StartServe runs a server as c says and waits until its banner lists the
// listeners and they accept connections. It fails the test if the server
// cannot start. Stopping it (Process.Stop) is up to the caller.
func StartServe(t testing.TB, c ServeConfig) *Serve {
	t.Helper()
	for attempt := 1; ; attempt++ {
		args, listeners := c.Setup(FreeAddrs(t, c.FreeAddrs))
		s := &Serve{Stdout: &SyncBuffer{}, Stderr: &SyncBuffer{}}
		cmd := exec.Command(c.Bin, args...)
		cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
		p, err := StartProcess(cmd)
		if err != nil {
			t.Fatalf("starting postino %s: %v", strings.Join(args, " "), err)
		}
		s.Process = p
		err = p.WaitBanner(s.Stdout, listeners, serveReadyTimeout, 20*time.Millisecond)
		if err == nil {
			return s
		}
		p.Kill()
		if stderr := s.Stderr.String(); attempt < 3 && c.Retry && (strings.Contains(stderr, "cannot listen") || strings.Contains(stderr, "already used")) {
			t.Logf("retrying with other ports: %v", err)
			continue
		}
		t.Fatalf("postino %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, s.Stdout, s.Stderr)
	}
}
