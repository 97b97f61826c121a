package fetch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// fakeMsg is one message of a fakePOP mailbox: the UIDL it is listed
// under, sent as is whatever it contains, and its content (CRLF).
type fakeMsg struct {
	uidl string
	data []byte
	// listed, if not 0, is the size LIST announces instead of the real
	// one: a server that lies about sizes.
	listed int
}

// fakePOP is a hostile POP3 server on loopback: it lists whatever UIDLs
// its mailbox holds (with spaces, bare CRs, too long, duplicated), or
// refuses UIDL and TOP; it offers STLS, or speaks implicit TLS.
type fakePOP struct {
	addr        string
	fingerprint string

	mu     sync.Mutex
	msgs   []fakeMsg
	noUIDL bool // UIDL and TOP answer -ERR

	// active counts the open sessions, and maxActive the most open at
	// once; retrDelay slows each RETR down.
	active, maxActive int
	retrDelay         time.Duration
}

// startFakePOP listens on 127.0.0.1 with security "none" (no STLS),
// "starttls" (STLS offered) or "tls" (implicit TLS).
func startFakePOP(t *testing.T, security Security, msgs ...fakeMsg) *fakePOP {
	t.Helper()
	cert, fp := testCert(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakePOP{addr: l.Addr().String(), fingerprint: fp, msgs: msgs}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if security == SecurityTLS {
				c = tls.Server(c, cfg)
			}
			go s.serve(c, security == SecurityStartTLS, cfg)
		}
	}()
	return s
}

// add appends a message to the mailbox.
func (s *fakePOP) add(uidl string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, fakeMsg{uidl: uidl, data: data})
}

// count returns the number of messages in the mailbox.
func (s *fakePOP) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// rename changes the UIDL of every message listed under from.
func (s *fakePOP) rename(from, to string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.msgs {
		if s.msgs[i].uidl == from {
			s.msgs[i].uidl = to
		}
	}
}

func (s *fakePOP) serve(c net.Conn, stls bool, cfg *tls.Config) {
	defer func() { c.Close() }()
	s.mu.Lock()
	s.active++
	s.maxActive = max(s.maxActive, s.active)
	retrDelay := s.retrDelay
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	}()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	reply := func(format string, args ...any) {
		fmt.Fprintf(w, format+"\r\n", args...)
		w.Flush()
	}
	body := func(data []byte) {
		for line := range bytes.Lines(data) {
			if line[0] == '.' {
				w.WriteByte('.')
			}
			w.Write(line)
		}
		w.WriteString(".\r\n")
		w.Flush()
	}
	// The session's view of the mailbox (RFC 1939 §5: numbers are fixed
	// for the session), and its deletions.
	s.mu.Lock()
	msgs := append([]fakeMsg(nil), s.msgs...)
	noUIDL := s.noUIDL
	s.mu.Unlock()
	deleted := map[int]bool{}
	get := func(arg string) (int, bool) {
		n, err := strconv.Atoi(arg)
		if err != nil || n < 1 || n > len(msgs) || deleted[n] {
			reply("-ERR no such message")
			return 0, false
		}
		return n, true
	}
	reply("+OK fake POP3 server ready")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			reply("-ERR empty command")
			continue
		}
		switch cmd := strings.ToUpper(f[0]); {
		case cmd == "CAPA":
			reply("+OK")
			caps := "USER\r\nPIPELINING\r\n"
			if !noUIDL {
				caps += "UIDL\r\nTOP\r\n"
			}
			if stls {
				caps += "STLS\r\n"
			}
			body([]byte(caps))
		case cmd == "STLS" && stls:
			reply("+OK begin TLS")
			tc := tls.Server(c, cfg)
			if tc.Handshake() != nil {
				return
			}
			c, stls = tc, false
			br, w = bufio.NewReader(c), bufio.NewWriter(c)
		case cmd == "USER" || cmd == "PASS" || cmd == "NOOP" || cmd == "RSET":
			reply("+OK")
		case cmd == "STAT":
			reply("+OK %d 0", len(msgs))
		case cmd == "LIST":
			reply("+OK")
			var b bytes.Buffer
			for i, m := range msgs {
				if !deleted[i+1] {
					size := len(m.data)
					if m.listed != 0 {
						size = m.listed
					}
					fmt.Fprintf(&b, "%d %d\r\n", i+1, size)
				}
			}
			body(b.Bytes())
		case cmd == "UIDL" && !noUIDL:
			reply("+OK")
			var b bytes.Buffer
			for i, m := range msgs {
				if !deleted[i+1] {
					fmt.Fprintf(&b, "%d %s\r\n", i+1, m.uidl)
				}
			}
			body(b.Bytes())
		case cmd == "RETR" && len(f) == 2:
			if n, ok := get(f[1]); ok {
				time.Sleep(retrDelay)
				reply("+OK")
				body(msgs[n-1].data)
			}
		case cmd == "TOP" && len(f) == 3 && !noUIDL:
			if n, ok := get(f[1]); ok {
				reply("+OK")
				data := msgs[n-1].data
				if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
					data = data[:i+4]
				}
				body(data)
			}
		case cmd == "DELE" && len(f) == 2:
			if n, ok := get(f[1]); ok {
				deleted[n] = true
				reply("+OK")
			}
		case cmd == "QUIT":
			// RFC 1939 §6: the UPDATE state removes the deleted messages.
			s.mu.Lock()
			var keep []fakeMsg
			for _, m := range s.msgs {
				gone := false
				for n := range deleted {
					if bytes.Equal(msgs[n-1].data, m.data) && msgs[n-1].uidl == m.uidl {
						gone = true
						delete(deleted, n)
						break
					}
				}
				if !gone {
					keep = append(keep, m)
				}
			}
			s.msgs = keep
			s.mu.Unlock()
			reply("+OK bye")
			return
		default:
			reply("-ERR unknown command")
		}
	}
}

// account returns an account of the fake server with security sec,
// delivering into a Maildir under dir.
func (s *fakePOP) account(sec Security, dir string) *Account {
	host, port, _ := net.SplitHostPort(s.addr)
	p, _ := strconv.Atoi(port)
	a := &Account{Name: "acct", Server: host, Port: p, Security: sec, User: "u",
		Password: func() (string, error) { return "pw", nil },
		Dest:     &Maildir{Dir: filepath.Join(dir, "Maildir")}, Timeout: 10 * time.Second}
	if sec == SecurityNone {
		a.AllowPlaintext = true
	} else {
		a.Fingerprint = s.fingerprint
	}
	return a
}

// testCert returns a self-signed certificate for 127.0.0.1 and its
// SHA-256 fingerprint.
func testCert(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	c := testutil.NewCert(t, "127.0.0.1")
	sum := sha256.Sum256(c.DER)
	return c.Config().Certificates[0], hex.EncodeToString(sum[:])
}

// fakeMessage returns a small message whose body names id.
func fakeMessage(id string) []byte {
	return []byte("From: a@example.net\r\nSubject: " + id + "\r\n\r\nbody of " + id + "\r\n.leading dot\r\n")
}

// runFetch runs one fetch of a and returns its result and log.
func runFetch(t *testing.T, a *Account, state string, del bool) (Result, string) {
	t.Helper()
	var log bytes.Buffer
	f := &Fetcher{StateDir: state, Logger: slog.New(slog.NewTextHandler(&log, nil))}
	a.Delete = del
	res, err := f.Run(context.Background(), a)
	if err != nil {
		t.Fatalf("fetch: %v\n%s", err, log.String())
	}
	return res, log.String()
}

// maildirFiles returns the messages in a Maildir's new/, by content.
func maildirFiles(t *testing.T, dir string) map[string]int {
	t.Helper()
	out := map[string]int{}
	ents, _ := os.ReadDir(filepath.Join(dir, "Maildir", "new"))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, "Maildir", "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[string(b)]++
	}
	return out
}

// subjects counts the delivered messages by Subject.
func subjects(t *testing.T, dir string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for data, n := range maildirFiles(t, dir) {
		_, rest, _ := strings.Cut(data, "\nSubject: ")
		subj, _, _ := strings.Cut(rest, "\n")
		out[subj] += n
	}
	return out
}

// TestContentDedupNewMessage: with delete = true, a message byte-identical
// to one delivered and deleted earlier but listed under a new UIDL is a new
// message, and is delivered; a message whose UIDL the server changed while
// it stayed on the server is still recognised by its content. The same
// holds on a server without UIDL and TOP, where content identifies
// messages, and two identical messages listed together are two messages.
// Over cleartext, STARTTLS and implicit TLS.
func TestContentDedupNewMessage(t *testing.T) {
	for _, sec := range []Security{SecurityNone, SecurityStartTLS, SecurityTLS} {
		t.Run(string(sec), func(t *testing.T) { testContentDedup(t, sec) })
	}
}

func testContentDedup(t *testing.T, sec Security) {
	dir, state := t.TempDir(), t.TempDir()
	s := startFakePOP(t, sec, fakeMsg{uidl: "u1", data: fakeMessage("A")})
	a := s.account(sec, dir)
	if res, log := runFetch(t, a, state, true); res.New != 1 || s.count() != 0 {
		t.Fatalf("first fetch: %+v, %d on the server\n%s", res, s.count(), log)
	}
	s.add("u2", fakeMessage("A"))
	if res, log := runFetch(t, a, state, true); res.New != 1 || res.Duplicates != 0 || s.count() != 0 {
		t.Errorf("identical message under a new UIDL after the first was deleted: %+v, %d on the server, want it delivered\n%s", res, s.count(), log)
	}
	if got := subjects(t, dir)["A"]; got != 2 {
		t.Errorf("destination holds %d copies of A, want 2", got)
	}

	// A UIDL change of a message left on the server is recognised.
	s.add("u3", fakeMessage("B"))
	if res, log := runFetch(t, a, state, false); res.New != 1 {
		t.Fatalf("fetch of B: %+v\n%s", res, log)
	}
	s.rename("u3", "u4")
	if res, log := runFetch(t, a, state, true); res.New != 0 || res.Duplicates != 1 || s.count() != 0 {
		t.Errorf("after a UIDL change: %+v, %d on the server, want B recognised and deleted\n%s", res, s.count(), log)
	}
	if got := subjects(t, dir)["B"]; got != 1 {
		t.Errorf("destination holds %d copies of B, want 1", got)
	}

	// A server without UIDL and TOP.
	dir2, state2 := t.TempDir(), t.TempDir()
	n := startFakePOP(t, sec, fakeMsg{uidl: "", data: fakeMessage("C")})
	n.mu.Lock()
	n.noUIDL = true
	n.mu.Unlock()
	a2 := n.account(sec, dir2)
	if res, log := runFetch(t, a2, state2, true); res.New != 1 || n.count() != 0 {
		t.Fatalf("no UIDL, first fetch: %+v, %d on the server\n%s", res, n.count(), log)
	}
	n.add("", fakeMessage("C"))
	n.add("", fakeMessage("C"))
	if res, log := runFetch(t, a2, state2, false); res.New != 2 {
		t.Errorf("no UIDL, two identical messages identical to a deleted one: %+v, want both delivered\n%s", res, log)
	}
	if res, log := runFetch(t, a2, state2, false); res.New != 0 {
		t.Errorf("no UIDL, leave on server, again: %+v, want nothing new\n%s", res, log)
	}
	if res, log := runFetch(t, a2, state2, true); res.New != 0 || n.count() != 0 {
		t.Errorf("no UIDL, delete: %+v, %d on the server, want nothing new and an empty server\n%s", res, n.count(), log)
	}
	if got := subjects(t, dir2)["C"]; got != 3 {
		t.Errorf("destination holds %d copies of C, want 3", got)
	}
}

// validKey reports whether s is a marker key postino may write: a valid
// UIDL (RFC 1939 §7), or a key derived from the content.
var contentKeyRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}(-[0-9]+)?$`)

func validKey(s string) bool {
	if contentKeyRE.MatchString(s) {
		return true
	}
	if len(s) < 1 || len(s) > 70 {
		return false
	}
	for i := range len(s) {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// TestHostileUIDLs: a server whose UIDLs hold spaces, a bare CR, non-ASCII
// octets or more than 70 characters, or are duplicated, over cleartext,
// STARTTLS and implicit TLS: those messages are identified by their
// content, with a warning; every marker header is well formed; nothing is
// delivered twice, and a message listed under the UIDL of a delivered one
// is not taken for it.
func TestHostileUIDLs(t *testing.T) {
	bad := []string{"has space", "bare\rcr", strings.Repeat("x", 71), "caf\xc3\xa9", "tab\tinside", strings.Repeat("y", 4000)}
	for _, sec := range []Security{SecurityNone, SecurityStartTLS, SecurityTLS} {
		t.Run(string(sec), func(t *testing.T) {
			msgs := []fakeMsg{{uidl: "ok-1", data: fakeMessage("m1")}}
			for i, u := range bad {
				msgs = append(msgs, fakeMsg{uidl: u, data: fakeMessage(fmt.Sprintf("bad%d", i))})
			}
			msgs = append(msgs, fakeMsg{uidl: "dup", data: fakeMessage("dup1")}, fakeMsg{uidl: "dup", data: fakeMessage("dup2")}, fakeMsg{uidl: "ok-9", data: fakeMessage("m9")})
			s := startFakePOP(t, sec, msgs...)
			dir, state := t.TempDir(), t.TempDir()
			a := s.account(sec, dir)
			res, log := runFetch(t, a, state, false)
			if res.New != len(msgs) {
				t.Fatalf("first fetch delivered %d, want %d\n%s", res.New, len(msgs), log)
			}
			warned := func(num int, what string) bool {
				for line := range strings.Lines(log) {
					if strings.Contains(line, "level=WARN") && strings.Contains(line, what) && strings.Contains(line, " num="+strconv.Itoa(num)+" ") {
						return true
					}
				}
				return false
			}
			for i, u := range bad {
				if !warned(i+2, "not a valid unique-id") {
					t.Errorf("no warning about message %d's invalid UIDL %q:\n%s", i+2, u, log)
				}
			}
			if strings.Contains(log, strings.Repeat("y", 101)) {
				t.Errorf("a 4000-character UIDL (within the client's line limit) is logged in full")
			}
			if d := len(bad) + 2; !warned(d, "duplicate") || !warned(d+1, "duplicate") {
				t.Errorf("no warning about messages %d and %d's duplicate UIDL:\n%s", d, d+1, log)
			}
			for data := range maildirFiles(t, dir) {
				first, _, _ := strings.Cut(data, "\n")
				f := strings.Split(strings.TrimPrefix(first, MarkerHeader+": "), " ")
				if !strings.HasPrefix(first, MarkerHeader+": ") || len(f) != 3 || f[0] != "acct" || !validKey(f[1]) || len(f[2]) != 64 {
					t.Errorf("malformed marker header %q", first)
				}
			}
			if res, log := runFetch(t, a, state, false); res.New != 0 {
				t.Errorf("second fetch delivered %d, want 0\n%s", res.New, log)
			}
			// A new message under the UIDL of a delivered one.
			s.add("ok-1", fakeMessage("late"))
			if res, log := runFetch(t, a, state, true); res.New != 1 || s.count() != 0 {
				t.Errorf("fetch with a reused UIDL: %+v, %d left on the server; want the new message delivered and all deleted\n%s", res, s.count(), log)
			}
			got := subjects(t, dir)
			for _, m := range append(msgs, fakeMsg{uidl: "", data: fakeMessage("late")}) {
				_, rest, _ := strings.Cut(string(m.data), "Subject: ")
				subj, _, _ := strings.Cut(rest, "\r\n")
				if got[subj] != 1 {
					t.Errorf("message %s delivered %d times, want once", subj, got[subj])
				}
			}
		})
	}
}
