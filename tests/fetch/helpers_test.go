// Package fetch_test drives the real `postino fetch` binary against real
// servers on loopback — `postino serve` and Dovecot — and checks the
// destinations byte by byte: every message exactly once, nothing lost,
// even when the fetch is SIGKILLed at any point.
package fetch_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
	"github.com/postino-mail/postino/pop3"
)

var binPath string

func TestMain(m *testing.M) {
	code := testutil.Main(m, "fetch", &binPath, nil)
	pgtest.Stop()
	os.Exit(code)
}

// run runs a command with extra environment and returns its exit code
// and combined output.
var run = testutil.Runner{Timeout: 60 * time.Second}.Run

// ---- postino serve ----

type postinoServer struct {
	data, pop3Addr, pop3sAddr, fingerprint string
	out                                    *testutil.SyncBuffer
}

var fpRE = regexp.MustCompile(`fingerprint ([0-9A-F]{2}(?::[0-9A-F]{2}){31})`)

// startPostino runs "postino serve" on free loopback ports. pop3Extra
// are more lines of its [pop3] section.
func startPostino(t testing.TB, pop3Extra ...string) *postinoServer {
	t.Helper()
	data := t.TempDir()
	for attempt := 1; ; attempt++ {
		a := testutil.FreeAddrs(t, 2)
		s := &postinoServer{data: data, pop3Addr: a[0], pop3sAddr: a[1], out: &testutil.SyncBuffer{}}
		// Other listeners are disabled with empty addresses in a config.
		cfg := filepath.Join(data, "postino.toml")
		extra := strings.Join(append(pop3Extra, ""), "\n")
		// The admin listener is off unless the test configures it.
		admin := "[admin]\nlisten = \"\"\n"
		if strings.Contains(extra, "[admin]") {
			admin = ""
		}
		os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = %q\n[pop3]\nlisten = %q\nlisten_tls = %q\n%s[smtp]\nlisten = \"\"\nsubmission = \"\"\nsubmissions = \"\"\n%s", data, s.pop3Addr, s.pop3sAddr, extra, admin)), 0o600)
		cmd := exec.Command(binPath, "serve", "--config", cfg)
		cmd.Stdout, cmd.Stderr = s.out, s.out
		p, err := testutil.StartProcess(cmd)
		if err != nil {
			t.Fatal(err)
		}
		ready := p.Poll(15*time.Second, 20*time.Millisecond, func() bool {
			m := fpRE.FindStringSubmatch(s.out.String())
			if m == nil || !strings.Contains(s.out.String(), s.pop3sAddr) {
				return false
			}
			s.fingerprint = m[1]
			return true
		})
		if ready {
			t.Cleanup(func() { p.Terminate(10 * time.Second) })
			return s
		}
		p.Kill()
		if attempt < 3 {
			continue
		}
		t.Fatalf("postino serve did not start:\n%s", s.out)
	}
}

func (s *postinoServer) addUser(t testing.TB, user, pw string) {
	t.Helper()
	if r := run(t, nil, []byte(pw+"\n"), binPath, "user", "add", user, "--password-stdin", "--data", s.data); r.Code != 0 {
		t.Fatalf("user add: %s", r.Output)
	}
}

func (s *postinoServer) deliver(t testing.TB, user string, msg []byte) {
	t.Helper()
	if r := run(t, nil, msg, binPath, "deliver", "--data", s.data, user); r.Code != 0 {
		t.Fatalf("deliver: %s", r.Output)
	}
}

// client logs in with the repository's POP3 client.
func popClient(t testing.TB, addr, user, pw string) *pop3.Client {
	t.Helper()
	c := mailtest.DialPOP3(t, addr, 10*time.Second)
	if err := c.Login(user, pw); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

// serverCount returns the number of messages in a remote mailbox.
func serverCount(t testing.TB, addr, user, pw string) int {
	t.Helper()
	c := popClient(t, addr, user, pw)
	defer c.Quit()
	n, _, err := c.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// ---- test messages ----

// testMessage returns message id with a body of about size octets ending
// in an END line, and lines that need mbox quoting and dot-stuffing.
func testMessage(id, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: sender@example.net\r\nTo: rcpt@example.test\r\nSubject: test %d\r\nMessage-ID: <%d.%d@test>\r\nX-Test-Id: %d\r\n\r\n", id, id, time.Now().UnixNano(), id)
	b.WriteString("From the start, a line mbox must quote.\r\n>From quoted already\r\n.a dot-stuffed line\r\n")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "line %d of message %d: the quick brown fox jumps over the lazy dog\r\n", i, id)
	}
	fmt.Fprintf(&b, "END-%d\r\n", id)
	return b.Bytes()
}

// blankLinesMessage returns message id of about size octets, like
// testMessage, with ten thousand empty lines from octet 26000 on: a copy
// cut off after the first 32 KiB written ends in an empty line.
func blankLinesMessage(id, size int) []byte {
	b := bytes.NewBuffer(testMessage(id, 26000))
	b.Truncate(bytes.LastIndex(b.Bytes(), []byte("END-")))
	b.Write(bytes.Repeat([]byte("\r\n"), 10000))
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(b, "line %d after the empty lines of message %d\r\n", i, id)
	}
	fmt.Fprintf(b, "END-%d\r\n", id)
	return b.Bytes()
}

var testIDRE = regexp.MustCompile(`(?m)^X-Test-Id: (\d+)\r?$`)

// checkMessage checks one stored message (LF or CRLF, marker header
// first, mbox quoting undone) and returns its test id.
func checkMessage(t testing.TB, where string, b []byte) int {
	t.Helper()
	m := testIDRE.FindSubmatch(b)
	if m == nil {
		t.Errorf("%s: no X-Test-Id in %q", where, head(b))
		return -1
	}
	id, _ := strconv.Atoi(string(m[1]))
	if !bytes.HasPrefix(b, []byte("X-Postino-Fetch: ")) && !bytes.Contains(b[:min(len(b), 2000)], []byte("\nX-Postino-Fetch: ")) {
		t.Errorf("%s: message %d lacks the X-Postino-Fetch header", where, id)
	}
	norm := bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	if !bytes.Contains(norm, []byte("\nFrom the start, a line mbox must quote.\n>From quoted already\n.a dot-stuffed line\n")) {
		t.Errorf("%s: message %d: quoting or dot-stuffing lines altered", where, id)
	}
	if !bytes.HasSuffix(bytes.TrimRight(norm, "\n"), []byte(fmt.Sprintf("\nEND-%d", id))) {
		t.Errorf("%s: message %d is truncated: ends %q", where, id, tail(norm))
	}
	return id
}

func head(b []byte) []byte { return b[:min(len(b), 200)] }
func tail(b []byte) []byte { return b[max(0, len(b)-80):] }

// maildirMessages returns the files in new/ and cur/ of dir (recursively,
// so a postino data folder's mailboxes are found too).
func maildirMessages(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if base := filepath.Base(filepath.Dir(p)); base != "new" && base != "cur" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil {
			out[p] = b
		}
		return nil
	})
	return out
}

// mboxMessages splits an mboxrd file into messages, undoing the quoting.
func mboxMessages(t testing.TB, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && !bytes.HasPrefix(data, []byte("From ")) {
		t.Errorf("mbox does not start with a From line: %q", head(data))
	}
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\n\n")) {
		t.Errorf("mbox does not end with an empty line: %q", tail(data))
	}
	var msgs [][]byte
	var cur *bytes.Buffer
	prevBlank := true
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Bytes()
		if prevBlank && bytes.HasPrefix(line, []byte("From ")) {
			if cur != nil {
				msgs = append(msgs, cur.Bytes())
			}
			cur = &bytes.Buffer{}
			prevBlank = false
			continue
		}
		if cur == nil {
			continue
		}
		if l := bytes.TrimLeft(line, ">"); len(l) < len(line) && bytes.HasPrefix(l, []byte("From ")) {
			line = line[1:]
		}
		cur.Write(line)
		cur.WriteByte('\n')
		prevBlank = len(line) == 0
	}
	if cur != nil {
		msgs = append(msgs, cur.Bytes())
	}
	return msgs
}

// destination is one kind of destination under test.
type destination struct {
	kind string // maildir, mbox, mda, local
	arg  string // the --to value
	path string // the Maildir folder or the mbox file
	read func(t testing.TB) [][]byte
	env  []string
}

func newDestination(t testing.TB, kind string) *destination {
	dir := t.TempDir()
	d := &destination{kind: kind}
	switch kind {
	case "maildir":
		md := filepath.Join(dir, "Maildir")
		d.arg = "maildir:" + md
		d.path = md
		d.read = func(t testing.TB) [][]byte {
			var out [][]byte
			for _, b := range maildirMessages(t, md) {
				out = append(out, b)
			}
			return out
		}
	case "mbox":
		p := filepath.Join(dir, "inbox.mbox")
		d.arg = "mbox:" + p
		d.path = p
		d.read = func(t testing.TB) [][]byte { return mboxMessages(t, p) }
	case "mda":
		// An MDA that writes each message to a file named by its
		// fetch ID (so a redelivery would be visible as a second
		// file), and a check command that looks for it.
		out := filepath.Join(dir, "mda")
		os.MkdirAll(out, 0o755)
		d.arg = fmt.Sprintf(`mda:f=%s/$(date +%%s%%N).$$; cat > "$f.tmp" && mv "$f.tmp" "$f.msg"`, out)
		d.read = func(t testing.TB) [][]byte {
			var msgs [][]byte
			ents, _ := os.ReadDir(out)
			for _, e := range ents {
				if strings.HasSuffix(e.Name(), ".msg") {
					b, _ := os.ReadFile(filepath.Join(out, e.Name()))
					msgs = append(msgs, b)
				}
			}
			return msgs
		}
		d.env = []string{"MDA_DIR=" + out}
	case "local":
		data := filepath.Join(dir, "local")
		os.MkdirAll(data, 0o700)
		if r := run(t, nil, []byte("x\n"), binPath, "user", "add", "me@local.test", "--password-stdin", "--data", data); r.Code != 0 {
			t.Fatalf("user add: %s", r.Output)
		}
		d.arg = "local:me@local.test"
		d.env = []string{"LOCAL_DATA=" + data}
		d.read = func(t testing.TB) [][]byte {
			var out [][]byte
			for _, b := range maildirMessages(t, filepath.Join(data, "mail")) {
				out = append(out, b)
			}
			return out
		}
	}
	return d
}

// extraArgs returns the arguments a destination needs.
func (d *destination) extraArgs() []string {
	for _, e := range d.env {
		if v, ok := strings.CutPrefix(e, "LOCAL_DATA="); ok {
			return []string{"--data", v}
		}
	}
	return nil
}

// checkExactlyOnce checks that the destination holds each id in want
// exactly once, intact, and nothing else.
func checkExactlyOnce(t testing.TB, d *destination, want []int) {
	t.Helper()
	count := map[int]int{}
	for i, b := range d.read(t) {
		count[checkMessage(t, fmt.Sprintf("%s message %d", d.kind, i), b)]++
	}
	for _, id := range want {
		if count[id] != 1 {
			t.Errorf("%s: message %d present %d times, want exactly once", d.kind, id, count[id])
		}
		delete(count, id)
	}
	var extra []int
	for id := range count {
		extra = append(extra, id)
	}
	sort.Ints(extra)
	if len(extra) > 0 {
		t.Errorf("%s: unexpected messages %v", d.kind, extra)
	}
}

// checkPartialCopy checks that a fetch killed at the deliver-partial step
// of its nth message left that message cut short at the destination: for a
// Maildir, one file in tmp/ without the message's END line (and nth-1
// messages in new/); for an mbox, nth entries of which the last lacks its
// END line.
func checkPartialCopy(t testing.TB, d *destination, nth int) {
	t.Helper()
	switch d.kind {
	case "maildir":
		ents, err := os.ReadDir(filepath.Join(d.path, "tmp"))
		if err != nil || len(ents) != 1 {
			t.Fatalf("maildir tmp/ after the kill: %d files (%v), want one partial copy", len(ents), err)
		}
		b, _ := os.ReadFile(filepath.Join(d.path, "tmp", ents[0].Name()))
		if len(b) == 0 || bytes.Contains(b, []byte("\nEND-")) {
			t.Fatalf("maildir tmp/%s (%d octets) is not a partial copy", ents[0].Name(), len(b))
		}
		if n := len(maildirMessages(t, d.path)); n != nth-1 {
			t.Errorf("maildir holds %d complete messages after the kill, want %d", n, nth-1)
		}
	case "mbox":
		data, err := os.ReadFile(d.path)
		if err != nil {
			t.Fatalf("mbox after the kill: %v", err)
		}
		entries := bytes.Split(data, []byte("\n\nFrom "))
		last := entries[len(entries)-1]
		if len(entries) != nth || bytes.Contains(last, []byte("\nEND-")) || !bytes.Contains(last, []byte("\nX-Test-Id: ")) {
			t.Fatalf("mbox after the kill: %d entries, last %d octets ending %q; want %d entries, the last cut short", len(entries), len(last), tail(last), nth)
		}
	default:
		t.Fatalf("no partial copy to check for a %s destination", d.kind)
	}
}

// checkNoLeftovers checks that nothing of an interrupted delivery remains
// at the destination: an empty Maildir tmp/, an mbox without a dot-lock.
func checkNoLeftovers(t testing.TB, d *destination) {
	t.Helper()
	switch d.kind {
	case "maildir":
		if ents, _ := os.ReadDir(filepath.Join(d.path, "tmp")); len(ents) != 0 {
			t.Errorf("maildir tmp/ holds %d files after recovery, want none", len(ents))
		}
	case "mbox":
		if _, err := os.Stat(d.path + ".lock"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("mbox dot-lock left behind: %v", err)
		}
	}
}

func ids(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// ---- fetch runs ----

// account is the remote side of a fetch: where and as whom.
type account struct {
	server, user, pw string
	extra            []string // --security, --fingerprint, ...
}

// fetchArgs builds the command line of a fetch.
func fetchArgs(a account, d *destination, state string, more ...string) []string {
	args := []string{"fetch", "--server", a.server, "--user", a.user, "--password-command", "echo " + a.pw,
		"--to", d.arg, "--state-dir", state, "--name", "acct", "--timeout", "10s"}
	args = append(args, a.extra...)
	args = append(args, d.extraArgs()...)
	return append(args, more...)
}

func fetch(t testing.TB, env []string, a account, d *destination, state string, more ...string) testutil.Result {
	t.Helper()
	return run(t, env, nil, binPath, fetchArgs(a, d, state, more...)...)
}

// ---- Dovecot ----

type dovecot struct {
	dir, conf, pop3Addr, pop3sAddr, fingerprint string
}

// startDovecot runs a private Dovecot on loopback with users u1..u4@test
// (password "secret"). settings are more lines of its configuration; a
// setting given there wins over the one given before. A missing Dovecot
// skips the test, or fails it in CI.
func startDovecot(t testing.TB, settings ...string) *dovecot {
	t.Helper()
	bin, err := exec.LookPath("dovecot")
	if err == nil {
		_, err = os.Stat("/usr/lib/dovecot/dovecot-lda")
	}
	if err != nil {
		testutil.SkipOrFatal(t, "dovecot (dovecot-pop3d) not installed: %v", err)
	}
	dir, err := os.MkdirTemp("", "postino-fetch-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // the mail and login users must reach it
	t.Cleanup(func() { os.RemoveAll(dir) })
	certPEM, keyPEM, fp := selfSigned(t)
	os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600)
	var pw strings.Builder
	for i := 1; i <= 4; i++ {
		fmt.Fprintf(&pw, "u%d@test:{PLAIN}secret\n", i)
	}
	os.WriteFile(filepath.Join(dir, "passwd"), []byte(pw.String()), 0o644)
	mail := filepath.Join(dir, "mail")
	os.MkdirAll(mail, 0o755)
	os.Chown(mail, mailUID(t), mailUID(t))
	for attempt := 1; ; attempt++ {
		a := testutil.FreeAddrs(t, 2)
		_, p1, _ := net.SplitHostPort(a[0])
		_, p2, _ := net.SplitHostPort(a[1])
		d := &dovecot{dir: dir, conf: filepath.Join(dir, "dovecot.conf"), pop3Addr: a[0], pop3sAddr: a[1], fingerprint: fp}
		conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
instance_name = postino-fetch-test-%[2]s
listen = 127.0.0.1
protocols = pop3
ssl = yes
ssl_cert = <%[1]s/cert.pem
ssl_key = <%[1]s/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:%[1]s/mail/%%u
pop3_uidl_format = %%08Xu%%08Xv
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 0
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[1]s/passwd
}
userdb {
  driver = static
  args = uid=mail gid=mail home=%[1]s/home/%%u
}
service pop3-login {
  chroot =
  inet_listener pop3 {
    port = %[3]s
  }
  inet_listener pop3s {
    port = %[4]s
    ssl = yes
  }
}
service anvil {
  chroot =
}
`, dir, p1, p1, p2) + strings.Join(append(settings, ""), "\n")
		os.WriteFile(d.conf, []byte(conf), 0o644)
		cmd := exec.Command(bin, "-F", "-c", d.conf)
		out := &testutil.SyncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		p, err := testutil.StartProcess(cmd)
		if err != nil {
			t.Fatal(err)
		}
		ok := p.Poll(10*time.Second, 30*time.Millisecond, func() bool {
			c, err := net.DialTimeout("tcp", d.pop3Addr, time.Second)
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
		if ok {
			t.Cleanup(func() { p.Terminate(10 * time.Second) })
			return d
		}
		p.Kill()
		log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
		if attempt < 3 {
			continue
		}
		t.Fatalf("dovecot did not start:\n%s\n%s", out, log)
	}
}

func mailUID(t testing.TB) int {
	out, err := exec.Command("id", "-u", "mail").Output()
	if err != nil {
		t.Fatalf("id -u mail: %v", err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

// deliver stores a message with dovecot-lda.
func (d *dovecot) deliver(t testing.TB, user string, msg []byte) {
	t.Helper()
	if r := run(t, nil, msg, "/usr/lib/dovecot/dovecot-lda", "-c", d.conf, "-d", user); r.Code != 0 {
		t.Fatalf("dovecot-lda: %s", r.Output)
	}
}

// selfSigned returns a certificate for localhost and 127.0.0.1, its key
// and its SHA-256 fingerprint.
func selfSigned(t testing.TB) (certPEM, keyPEM []byte, fp string) {
	t.Helper()
	c := testutil.NewCert(t, "localhost", "127.0.0.1")
	certPEM, keyPEM = c.PEM(t)
	sum := sha256.Sum256(c.DER)
	return certPEM, keyPEM, hex.EncodeToString(sum[:])
}

// ---- a misbehaving proxy ----

// proxy forwards loopback connections to a server. dropAfter > 0 cuts the
// first connection after that many octets from the server; noUIDL
// answers UIDL itself with -ERR, imitating a server without UIDL (it reads
// commands, so it only works for cleartext sessions).
type proxy struct {
	addr      string
	target    string
	dropAfter int64
	noUIDL    bool
	mu        sync.Mutex
	conns     int
}

func startProxy(t testing.TB, target string, dropAfter int64, noUIDL bool) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: l.Addr().String(), target: target, dropAfter: dropAfter, noUIDL: noUIDL}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) serve(c net.Conn) {
	defer c.Close()
	p.mu.Lock()
	p.conns++
	first := p.conns == 1
	p.mu.Unlock()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	var wmu sync.Mutex // both directions may answer the client
	go func() {
		if !p.noUIDL {
			io.Copy(s, c)
			s.Close()
			return
		}
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				s.Close()
				return
			}
			if p.noUIDL && strings.HasPrefix(strings.ToUpper(line), "UIDL") {
				wmu.Lock()
				c.Write([]byte("-ERR command not supported\r\n"))
				wmu.Unlock()
				continue
			}
			s.Write([]byte(line))
		}
	}()
	var sent int64
	buf := make([]byte, 4096)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if first && p.dropAfter > 0 && sent+int64(n) > p.dropAfter {
				chunk = chunk[:p.dropAfter-sent]
				wmu.Lock()
				c.Write(chunk)
				wmu.Unlock()
				return // drop the connection mid-response
			}
			sent += int64(n)
			wmu.Lock()
			c.Write(chunk)
			wmu.Unlock()
		}
		if err != nil {
			return
		}
	}
}
