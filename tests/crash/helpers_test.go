//go:build unix

// Package crash proves postino's crash safety from the outside: it builds
// ./cmd/postino once, runs "postino serve" on free loopback ports, delivers
// and deletes mail while SIGKILLing the server at random moments and
// restarting it on the same ports and data folder, and then checks over
// POP3 that nothing acknowledged was lost, duplicated or damaged, and that
// every QUIT applied its deletions all or nothing.
//
// The size of the runs is set by environment variables (see each test);
// figures are printed with t.Logf and appended to the file named by
// CRASH_REPORT when it is set.
package crash

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
	"github.com/postino-mail/postino/pop3"
)

// binPath is the postino binary built by TestMain.
var binPath string

// cmdTimeout bounds every CLI invocation.
const cmdTimeout = 60 * time.Second

// password is every test user's password.
const password = "crash-test-password"

func TestMain(m *testing.M) {
	code := testutil.Main(m, "crash", &binPath, nil)
	pgtest.Stop()
	os.Exit(code)
}

// backend is the mail store a crash test runs on.
type backend string

const (
	backendMaildir  backend = "maildir"
	backendPostgres backend = "postgres"
)

// storageConfig returns the configuration to append to serverConfig for
// the backend: for PostgreSQL a fresh database of the test's own, with
// the shortest lock_ttl so that a lock left by a killed server passes
// soon.
func storageConfig(t testing.TB, b backend) string {
	t.Helper()
	if b == backendMaildir {
		return ""
	}
	return fmt.Sprintf("\n[storage]\nbackend = \"postgres\"\npostgres_dsn = %q\nlock_ttl = \"3s\"\nmax_connections = 12\n", pgtest.NewDB(t))
}

// envInt returns the positive integer in the environment variable name, or
// def when it is unset. A malformed value fails the test.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

// report logs a line of figures and appends it to $CRASH_REPORT if set.
func report(t testing.TB, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	path := os.Getenv("CRASH_REPORT")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("CRASH_REPORT: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s: %s\n", time.Now().Format(time.RFC3339), t.Name(), line)
}

// errorCap stops a test from printing thousands of identical failures: the
// first limit are reported in full, the rest only counted.
type errorCap struct {
	t     testing.TB
	limit int
	n     int
}

func (e *errorCap) errorf(format string, args ...any) {
	e.t.Helper()
	e.n++
	if e.n <= e.limit {
		e.t.Errorf(format, args...)
	}
}

func (e *errorCap) finish() {
	e.t.Helper()
	if e.n > e.limit {
		e.t.Errorf("... and %d more failures like the above", e.n-e.limit)
	}
}

// serverConfig is the configuration every crash test runs with. POP3's
// command rate limit is off so that a client can pipeline hundreds of DELE
// commands without being slowed down; everything else is the default.
const serverConfig = `hostname = "mx.crash.test"
log_level = "info"

[pop3]
commands_per_second = 0
`

// server is "postino serve" that is killed and restarted on the same ports
// and data folder. Its methods are called by one goroutine at a time;
// addrs may be called from any.
type server struct {
	t       testing.TB
	data    string
	cfgPath string
	logDir  string

	mu         sync.Mutex
	pop3, smtp string

	proc    *testutil.Process
	stdout  *testutil.SyncBuffer
	logPath string
	running bool

	procs   int // processes started
	starts  int // processes started successfully
	kills   int // SIGKILLs delivered to a running server
	rebinds int // times the ports had to be changed
}

// newServer writes the configuration and starts the server on free
// loopback ports. At cleanup a running server is killed.
func newServer(t testing.TB, data string) *server {
	t.Helper()
	return newServerWith(t, data, "")
}

// newServerWith is newServer with extra appended to the configuration.
func newServerWith(t testing.TB, data, extra string) *server {
	t.Helper()
	s := &server{t: t, data: data, logDir: t.TempDir()}
	s.cfgPath = filepath.Join(s.logDir, "postino.toml")
	if err := os.WriteFile(s.cfgPath, []byte(serverConfig+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(extra, `backend = "postgres"`) {
		// The users of the data folder go into the database, as when a
		// single server moves to a cluster.
		if r := postino(t, nil, "db", "migrate", "--config", s.cfgPath, "--data", data); r.Code != 0 {
			t.Fatalf("db migrate: %s", r)
		}
		if r := postino(t, nil, "db", "import", "--config", s.cfgPath, "--data", data); r.Code != 0 {
			t.Fatalf("db import: %s", r)
		}
	}
	s.pickPorts()
	t.Cleanup(func() {
		if s.running {
			s.proc.Kill()
			s.running = false
		}
	})
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *server) pickPorts() {
	a := testutil.FreeAddrs(s.t, 2)
	s.mu.Lock()
	s.pop3, s.smtp = a[0], a[1]
	s.mu.Unlock()
}

// addrs returns the current POP3 and SMTP addresses.
func (s *server) addrs() (pop3Addr, smtpAddr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pop3, s.smtp
}

// start starts the server on its ports. After a SIGKILL the ports are
// normally free at once; if something else took one meanwhile, binding is
// retried for a while and then the server moves to new free ports.
func (s *server) start() error {
	if s.running {
		return errors.New("server already running")
	}
	var err error
	for attempt := 1; attempt <= 100; attempt++ {
		var bindErr bool
		bindErr, err = s.startOnce()
		if err == nil {
			s.starts++
			return nil
		}
		if !bindErr {
			return err
		}
		if attempt%25 == 0 {
			s.t.Logf("ports still taken after %d attempts (%v); moving to new ports", attempt, err)
			s.pickPorts()
			s.rebinds++
			continue
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("cannot start postino serve: %w", err)
}

// startOnce runs one server process and waits until it is ready. bindErr
// reports a failure to bind a port.
func (s *server) startOnce() (bindErr bool, err error) {
	pop3Addr, smtpAddr := s.addrs()
	s.procs++
	s.logPath = filepath.Join(s.logDir, fmt.Sprintf("serve-%04d.log", s.procs))
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return false, err
	}
	defer logFile.Close()
	s.stdout = &testutil.SyncBuffer{}
	cmd := exec.Command(binPath, "serve", "--config", s.cfgPath, "--data", s.data,
		"--pop3", pop3Addr, "--pop3s", "", "--smtp", smtpAddr, "--submission", "", "--submissions", "", "--admin", "")
	cmd.Stdout = s.stdout
	cmd.Stderr = logFile
	setPdeathsig(cmd)
	if s.proc, err = testutil.StartProcess(cmd); err != nil {
		return false, fmt.Errorf("starting postino serve: %w", err)
	}
	s.running = true
	// The banner must list both listeners at the expected addresses (so
	// they are this process's, not someone else's on a reused port).
	err = s.proc.WaitBanner(s.stdout, map[string]string{"pop3": pop3Addr, "smtp": smtpAddr}, 20*time.Second, 5*time.Millisecond)
	if err == nil {
		return false, nil
	}
	s.proc.Kill()
	s.running = false
	log, _ := os.ReadFile(s.logPath)
	if strings.Contains(string(log), "cannot listen") {
		return true, fmt.Errorf("%v: %s", err, lastLines(string(log), 3))
	}
	return false, fmt.Errorf("postino serve: %v\nstdout:\n%s\nstderr:\n%s", err, s.stdout, lastLines(string(log), 30))
}

// logFiles lists the server's log files, one per process started.
func (s *server) logFiles() []string {
	m, _ := filepath.Glob(filepath.Join(s.logDir, "serve-*.log"))
	return m
}

// kill SIGKILLs the running server and waits until it is gone.
func (s *server) kill() {
	if !s.running {
		return
	}
	s.proc.Kill()
	s.running = false
	s.kills++
}

// stop sends SIGTERM and checks that the server exits 0.
func (s *server) stop() {
	s.t.Helper()
	if !s.running {
		return
	}
	if !s.proc.Terminate(15 * time.Second) {
		s.t.Errorf("postino serve did not exit within 15s of SIGTERM")
	}
	s.running = false
	if code := s.proc.Cmd.ProcessState.ExitCode(); code != 0 {
		log, _ := os.ReadFile(s.logPath)
		s.t.Errorf("postino serve exited %d after SIGTERM, want 0\n%s", code, lastLines(string(log), 30))
	}
}

// countInLogs counts the lines containing substr over every server log.
func (s *server) countInLogs(substr string) int {
	n := 0
	for _, p := range s.logFiles() {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		n += strings.Count(string(b), substr)
	}
	return n
}

// checkLogs fails the test if any server process panicked, hit a Go
// runtime fatal error or logged a storage error.
func (s *server) checkLogs() {
	s.t.Helper()
	for _, p := range s.logFiles() {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, bad := range []string{"panic:", "fatal error:", "discarding corrupt commit journal", "level=ERROR"} {
			if i := strings.Index(string(b), bad); i >= 0 {
				s.t.Errorf("server log %s contains %q:\n%s", filepath.Base(p), bad, excerpt(string(b), i))
			}
		}
	}
}

func excerpt(s string, i int) string {
	start := max(0, i-300)
	end := min(len(s), i+1500)
	return s[start:end]
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// postino runs the binary with stdin and returns its output and exit code.
func postino(t testing.TB, stdin []byte, args ...string) testutil.Result {
	t.Helper()
	return testutil.Runner{Timeout: cmdTimeout, Split: true}.Run(t, nil, stdin, binPath, args...)
}

// addUser runs "postino user add ADDR --password-stdin --scheme SCHEME".
func addUser(t testing.TB, data, addr, scheme string) {
	t.Helper()
	if r := postino(t, []byte(password+"\n"), "user", "add", addr, "--password-stdin", "--scheme", scheme, "--data", data); r.Code != 0 {
		t.Fatalf("user add %s: %s", addr, r)
	}
}

// deliverOutcome is how one "postino deliver" ended.
type deliverOutcome int

const (
	deliverAcked  deliverOutcome = iota // exit 0
	deliverKilled                       // killed by the test: unknown
	deliverFailed                       // another exit code
)

// runDeliver runs "postino deliver" with msg on stdin, with the
// configuration file cfg unless it is empty. With killAfter > 0 the
// process is SIGKILLed after that long if it is still running.
func runDeliver(cfg, data, from, rcpt string, msg []byte, killAfter time.Duration) (deliverOutcome, string) {
	args := []string{"deliver", "--data", data, "--from", from, rcpt}
	if cfg != "" {
		args = append([]string{"deliver", "--config", cfg}, args[1:]...)
	}
	cmd := exec.Command(binPath, args...)
	cmd.Stdin = bytes.NewReader(msg)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		return deliverFailed, err.Error()
	}
	if killAfter > 0 {
		timer := time.AfterFunc(killAfter, func() { cmd.Process.Signal(syscall.SIGKILL) })
		defer timer.Stop()
	} else {
		timer := time.AfterFunc(cmdTimeout, func() { cmd.Process.Signal(syscall.SIGKILL) })
		defer timer.Stop()
	}
	err := cmd.Wait()
	if err == nil {
		return deliverAcked, ""
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && killAfter > 0 {
		return deliverKilled, ""
	}
	return deliverFailed, fmt.Sprintf("%v: %s", err, errb.String())
}

// ---- test messages ----

// sender is the envelope sender and From of every test message.
const sender = "crash@sender.test"

// bodyAlphabet is what body lines are made of.
const bodyAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-_=+/()'!?"

// textPool is random text from which body lines are cut, which is much
// cheaper than drawing every character.
var textPool = func() string {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 1<<16)
	for i := range b {
		b[i] = bodyAlphabet[rng.IntN(len(bodyAlphabet))]
	}
	return string(b)
}()

// makeMessage builds test message seq for rcpt with CRLF line ends: a
// header naming it (Message-ID, X-Seq, X-Via) and carrying the length and
// SHA-256 of its body, and a random body with lines that start with dots,
// lone dots, empty lines and long lines. Unless small is set, it is
// occasionally large.
func makeMessage(rng *rand.Rand, run string, seq int, rcpt, via string, small bool) []byte {
	var body strings.Builder
	size := 50 + rng.IntN(6000)
	if small {
		size = 20 + rng.IntN(1500)
	} else if rng.IntN(40) == 0 {
		size = 64*1024 + rng.IntN(256*1024)
	}
	for body.Len() < size {
		switch rng.IntN(20) {
		case 0:
			body.WriteString(".\r\n")
		case 1:
			body.WriteString("\r\n")
		case 2:
			body.WriteString("..leading dots " + strconv.Itoa(seq) + "\r\n")
		default:
			n := rng.IntN(120)
			off := rng.IntN(len(textPool) - n)
			if n > 0 && rng.IntN(8) == 0 {
				body.WriteByte('.')
				off, n = off+1, n-1
			}
			body.WriteString(textPool[off : off+n])
			body.WriteString("\r\n")
		}
	}
	b := body.String()
	sum := sha256.Sum256([]byte(b))
	var m strings.Builder
	fmt.Fprintf(&m, "From: Crash Test <%s>\r\n", sender)
	fmt.Fprintf(&m, "To: <%s>\r\n", rcpt)
	fmt.Fprintf(&m, "Subject: crash test message %d\r\n", seq)
	fmt.Fprintf(&m, "Message-ID: <%d.%s@crash.test>\r\n", seq, run)
	fmt.Fprintf(&m, "X-Seq: %d\r\n", seq)
	fmt.Fprintf(&m, "X-Via: %s\r\n", via)
	fmt.Fprintf(&m, "X-Body-Length: %d\r\n", len(b))
	fmt.Fprintf(&m, "X-Body-SHA256: %s\r\n", hex.EncodeToString(sum[:]))
	m.WriteString("\r\n")
	m.WriteString(b)
	return []byte(m.String())
}

// toLF converts CRLF line ends to LF.
func toLF(msg []byte) []byte {
	return bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
}

// checked is what verifyMessage learnt from an intact message.
type checked struct {
	seq         int
	via         string
	deliveredTo string
}

// verifyMessage checks a message as downloaded over POP3 (CRLF line ends,
// un-stuffed): its header must name it consistently and its body must
// have exactly the length and SHA-256 its header announces.
func verifyMessage(run string, wire []byte) (checked, error) {
	var c checked
	head, body, ok := bytes.Cut(wire, []byte("\r\n\r\n"))
	if !ok {
		return c, errors.New("no end of header")
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(head), "\r\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue // folded continuation (Received)
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return c, fmt.Errorf("malformed header line %q", line)
		}
		name = strings.ToLower(name)
		if _, dup := fields[name]; dup && name != "received" {
			return c, fmt.Errorf("header %s appears twice", name)
		}
		fields[name] = strings.TrimSpace(value)
	}
	seq, err := strconv.Atoi(fields["x-seq"])
	if err != nil {
		return c, fmt.Errorf("bad X-Seq %q", fields["x-seq"])
	}
	c.seq = seq
	c.via = fields["x-via"]
	c.deliveredTo = fields["delivered-to"]
	if want := fmt.Sprintf("<%d.%s@crash.test>", seq, run); fields["message-id"] != want {
		return c, fmt.Errorf("seq %d: Message-ID %q, want %q", seq, fields["message-id"], want)
	}
	if want := fmt.Sprintf("crash test message %d", seq); fields["subject"] != want {
		return c, fmt.Errorf("seq %d: Subject %q, want %q", seq, fields["subject"], want)
	}
	if fields["return-path"] != "<"+sender+">" {
		return c, fmt.Errorf("seq %d: Return-Path %q", seq, fields["return-path"])
	}
	if n, err := strconv.Atoi(fields["x-body-length"]); err != nil || n != len(body) {
		return c, fmt.Errorf("seq %d: body is %d octets, header says %q", seq, len(body), fields["x-body-length"])
	}
	sum := sha256.Sum256(body)
	if got := hex.EncodeToString(sum[:]); got != fields["x-body-sha256"] {
		return c, fmt.Errorf("seq %d: body SHA-256 %s, header says %s", seq, got, fields["x-body-sha256"])
	}
	return c, nil
}

// ---- a minimal SMTP client that knows exactly what was acknowledged ----

// smtpConn is one SMTP connection.
type smtpConn struct {
	c net.Conn
	r *bufio.Reader
}

// sendResult is what is known about one message after a send attempt.
type sendResult int

const (
	sendNotSent   sendResult = iota // failed before the message body was sent: safe to retry
	sendAcked                       // 250 after the final dot
	sendUncertain                   // the connection broke after the body began
	sendRejected                    // an error reply after the final dot
)

func dialSMTP(addr string) (*smtpConn, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	s := &smtpConn{c: c, r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if code, text, err := s.reply(); err != nil || code != 220 {
		c.Close()
		return nil, fmt.Errorf("greeting %d %s: %v", code, text, err)
	}
	if code, text, err := s.cmd("EHLO client.crash.test"); err != nil || code != 250 {
		c.Close()
		return nil, fmt.Errorf("EHLO: %d %s: %v", code, text, err)
	}
	return s, nil
}

func (s *smtpConn) Close() error { return s.c.Close() }

// reply reads a (possibly multi-line) reply.
func (s *smtpConn) reply() (int, string, error) {
	var text []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return 0, strings.Join(text, " "), err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, line, fmt.Errorf("malformed reply %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, line, fmt.Errorf("malformed reply %q", line)
		}
		text = append(text, line[min(4, len(line)):])
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.Join(text, " "), nil
		}
	}
}

func (s *smtpConn) cmd(line string) (int, string, error) {
	if _, err := io.WriteString(s.c, line+"\r\n"); err != nil {
		return 0, "", err
	}
	return s.reply()
}

// send runs one transaction. err describes any failure.
func (s *smtpConn) send(from, rcpt string, msg []byte) (sendResult, error) {
	s.c.SetDeadline(time.Now().Add(20 * time.Second))
	for _, step := range []struct {
		line string
		want int
	}{
		{"MAIL FROM:<" + from + ">", 250},
		{"RCPT TO:<" + rcpt + ">", 250},
		{"DATA", 354},
	} {
		code, text, err := s.cmd(step.line)
		if err != nil {
			return sendNotSent, err
		}
		if code != step.want {
			return sendNotSent, fmt.Errorf("%s: %d %s", step.line, code, text)
		}
	}
	// From here on the server may have the whole message.
	var b bytes.Buffer
	for line := range strings.SplitAfterSeq(string(msg), "\r\n") {
		if strings.HasPrefix(line, ".") {
			b.WriteByte('.')
		}
		b.WriteString(line)
	}
	b.WriteString(".\r\n")
	if _, err := s.c.Write(b.Bytes()); err != nil {
		return sendUncertain, err
	}
	code, text, err := s.reply()
	switch {
	case err != nil:
		return sendUncertain, err
	case code == 250:
		return sendAcked, nil
	default:
		return sendRejected, fmt.Errorf("after DATA: %d %s", code, text)
	}
}

// ---- POP3 ----

// popLogin connects and logs in, retrying for a while while the maildrop
// is still locked by a session that is ending.
func popLogin(addr, user string) (*pop3.Client, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := pop3.Dial(ctx, addr)
		cancel()
		if err != nil {
			return nil, err
		}
		c.Timeout = 60 * time.Second
		err = c.Login(user, password)
		if err == nil {
			return c, nil
		}
		c.Close()
		var pe *pop3.Error
		if !errors.As(err, &pe) || pe.Code != "IN-USE" || time.Now().After(deadline) {
			return nil, fmt.Errorf("login %s: %w", user, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mailbox is one mailbox as listed over POP3.
type mailbox struct {
	uids  []string         // by message number - 1
	sizes map[string]int64 // by UID
}

// listMailbox reads UIDL and LIST of an open session.
func listMailbox(c *pop3.Client) (mailbox, error) {
	mb := mailbox{sizes: map[string]int64{}}
	ul, err := c.UIDL()
	if err != nil {
		return mb, fmt.Errorf("UIDL: %w", err)
	}
	ll, err := c.List()
	if err != nil {
		return mb, fmt.Errorf("LIST: %w", err)
	}
	if len(ul) != len(ll) {
		return mb, fmt.Errorf("UIDL lists %d messages, LIST %d", len(ul), len(ll))
	}
	for i := range ul {
		if ul[i].Number != i+1 || ll[i].Number != i+1 {
			return mb, fmt.Errorf("message numbers out of order at %d: UIDL %d, LIST %d", i+1, ul[i].Number, ll[i].Number)
		}
		if _, dup := mb.sizes[ul[i].UID]; dup {
			return mb, fmt.Errorf("UID %q listed twice", ul[i].UID)
		}
		mb.uids = append(mb.uids, ul[i].UID)
		mb.sizes[ul[i].UID] = ll[i].Size
	}
	return mb, nil
}

// downloaded is one message retrieved over POP3.
type downloaded struct {
	uid  string
	data []byte
}

// download logs in, lists and retrieves every message (checking that LIST
// sizes are exact RETR octet counts) and quits without deleting anything.
func download(addr, user string) ([]downloaded, []string, error) {
	c, err := popLogin(addr, user)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	if _, err := c.Capabilities(); err != nil {
		return nil, nil, fmt.Errorf("CAPA: %w", err)
	}
	mb, err := listMailbox(c)
	if err != nil {
		return nil, nil, err
	}
	var problems []string
	msgs := make([]downloaded, 0, len(mb.uids))
	nums := make([]int, len(mb.uids))
	for i := range nums {
		nums[i] = i + 1
	}
	err = c.RetrAll(nums, func(n int, r io.Reader, err error) error {
		if err != nil {
			problems = append(problems, fmt.Sprintf("RETR %d (%s): %v", n, mb.uids[n-1], err))
			return nil
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		uid := mb.uids[n-1]
		if int64(len(b)) != mb.sizes[uid] {
			problems = append(problems, fmt.Sprintf("message %d (%s): LIST says %d octets, RETR gave %d", n, uid, mb.sizes[uid], len(b)))
		}
		msgs = append(msgs, downloaded{uid: uid, data: b})
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("RETR: %w", err)
	}
	if err := c.Quit(); err != nil {
		return nil, nil, fmt.Errorf("QUIT: %w", err)
	}
	return msgs, problems, nil
}

// maildirOf is the Maildir of a user in the data folder.
func maildirOf(data, user string) string {
	local, domain, _ := strings.Cut(user, "@")
	return filepath.Join(data, "mail", domain, local, "Maildir")
}

// baseOf is the Maildir unique name of a file name: the part before the
// first ',' or ':' (which postino uses as the UIDL).
func baseOf(name string) string {
	if i := strings.IndexAny(name, ",:"); i > 0 {
		return name[:i]
	}
	return name
}
