package pop3

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// multiLineStart matches the first line of the server's multi-line
// responses (LIST, RETR, and the "... follow(s)." family).
var multiLineStart = regexp.MustCompile(`^\+OK (\d+ messages \(\d+ octets\)|\d+ octets|.*follows?\.|No mechanisms available.*)$`)

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"USER alice", "PASS a b c", "RETR 1", "TOP 1 99999999", "LIST", "AUTH PLAIN =",
		"", " ", "\x00", "\xff\xfe", "CAPA x y z w v", "uidl " + strings.Repeat("9", 50)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		kw, args, err := ParseCommand(line, restArg)
		if err != nil {
			return
		}
		if kw == "" || len(kw) > maxKeywordLen || kw != strings.ToUpper(kw) {
			t.Fatalf("bad keyword %q from %q", kw, line)
		}
		if !utf8.ValidString(line) {
			t.Fatalf("invalid UTF-8 accepted: %q", line)
		}
		if len(args) > 4 {
			t.Fatalf("%d args", len(args))
		}
		for _, a := range args {
			if strings.ContainsAny(a, "\x00\r\n") {
				t.Fatalf("control char in arg %q", a)
			}
		}
	})
}

// FuzzSession replays seed commands, in the AUTHORIZATION and the
// TRANSACTION state, followed by fuzzed input, and checks that every
// reply is well formed and that a session without QUIT deletes nothing.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"CAPA\r\nSTAT\r\n", "USER alice@example.test\r\nPASS secret pass\r\nRETR 1\r\nDELE 1\r\n",
		"AUTH PLAIN\r\n*\r\n", "AUTH LOGIN\r\n=====\r\n", "TOP 1 0\r\nTOP 2 99999999\r\nLIST\r\nUIDL\r\n",
		"DELE 1\r\nRSET\r\nDELE 2\r\n", "STLS\r\n\x16\x03\x01", "\x00\x00\r\n\xff\r\n", strings.Repeat("A", 3000) + "\r\n",
		"UTF8\r\nLANG\r\nLANG de\r\n", "RETR 1\nRETR 2\nRETR 3\n",
	} {
		f.Add(false, []byte(s))
		f.Add(true, []byte(s))
	}
	f.Fuzz(func(t *testing.T, loggedIn bool, input []byte) {
		be := newMemBackend()
		be.add("alice@example.test", "uid-1", msgPlain)
		be.add("alice@example.test", "uid-2", msgDots)
		be.add("alice@example.test", "uid-3", msgNoBody)
		srv := &Server{Backend: be, MaxBadCommands: 1000, Autologout: 2 * time.Second}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(l)
		defer srv.Close()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var in bytes.Buffer
		if loggedIn {
			in.WriteString("USER alice@example.test\r\nPASS secret pass\r\n")
		}
		in.Write(bytes.ReplaceAll(input, []byte("QUIT"), []byte("NOOP")))
		go func() {
			c.Write(in.Bytes())
			c.(*net.TCPConn).CloseWrite()
		}()
		r := bufio.NewReader(c)
		inBody := false
		for {
			line, err := r.ReadString('\n')
			if err == io.EOF && line == "" {
				break
			}
			if err != nil {
				t.Fatalf("reading: %v", err)
			}
			if !strings.HasSuffix(line, "\r\n") {
				t.Fatalf("line without CRLF: %q", line)
			}
			if inBody {
				if line == ".\r\n" {
					inBody = false
				}
				continue
			}
			switch {
			case strings.HasPrefix(line, "+OK"):
				inBody = multiLineStart.MatchString(strings.TrimSuffix(line, "\r\n"))
			case strings.HasPrefix(line, "-ERR"), strings.HasPrefix(line, "+ "):
			default:
				t.Fatalf("malformed reply %q", line)
			}
		}
		waitUnlock := time.Now().Add(5 * time.Second)
		for be.isLocked("alice@example.test") && time.Now().Before(waitUnlock) {
			time.Sleep(time.Millisecond)
		}
		if be.isLocked("alice@example.test") {
			t.Fatal("lock left held")
		}
		if len(be.boxes["alice@example.test"]) != 3 {
			t.Fatal("messages deleted without QUIT")
		}
	})
}

// FuzzSASL feeds arbitrary client responses to each SASL mechanism's
// server side: no panic, and success only with the right credentials.
func FuzzSASL(f *testing.F) {
	for _, s := range [][]byte{[]byte("\x00alice@example.test\x00secret pass"), []byte("a\x00b"), {}, []byte("n,,n=alice@example.test,r=abc"),
		[]byte("p=tls-unique,,n=a,r=b"), []byte("y,a=x,n=u,r=r"), []byte("n,,n=,r="), []byte("c=biws,r=x,p=AAAA")} {
		f.Add("PLAIN", s, s)
		f.Add("LOGIN", s, s)
		f.Add("SCRAM-SHA-256", s, s)
	}
	f.Fuzz(func(t *testing.T, mechName string, first, second []byte) {
		be := newMemBackend()
		srv := &Server{Backend: scramBackend{be}, SCRAM: true}
		s := &session{srv: srv, cfg: srv, ctx: context.Background(), conn: fakeConn{}}
		mech := s.newMechanism(mechName)
		if mech == nil {
			return
		}
		for _, resp := range [][]byte{first, second, {}} {
			_, res, err := mech.next(resp)
			if err != nil {
				return
			}
			if res != nil {
				if res.verified && res.user == "" {
					t.Fatal("verified without a user")
				}
				return
			}
		}
	})
}

// fakeConn is a net.Conn with addresses only, for mechanism tests.
type fakeConn struct{ net.Conn }

func (fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (fakeConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 110} }

// FuzzDotWriter compares the byte-stuffing writer, fed in arbitrary
// pieces, with a line-by-line reference.
func FuzzDotWriter(f *testing.F) {
	f.Add([]byte("a\r\n.b\r\n..\r\n.\r\n"), uint8(3))
	f.Add([]byte(".start\r\nno end"), uint8(1))
	f.Add([]byte("\n.\n.\n"), uint8(2))
	f.Fuzz(func(t *testing.T, msg []byte, piece uint8) {
		var want bytes.Buffer
		for i, line := range bytes.SplitAfter(msg, []byte("\n")) {
			if len(line) > 0 && line[0] == '.' {
				want.WriteByte('.')
			}
			want.Write(line)
			_ = i
		}
		if len(msg) > 0 && msg[len(msg)-1] != '\n' {
			want.WriteString("\r\n")
		}
		want.WriteString(".\r\n")
		var got bytes.Buffer
		bw := bufio.NewWriter(&got)
		dw := newDotWriter(bw)
		step := int(piece)%7 + 1
		for rest := msg; len(rest) > 0; {
			k := min(step, len(rest))
			dw.Write(rest[:k])
			rest = rest[k:]
		}
		dw.Close()
		bw.Flush()
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("stuffing %q in pieces of %d:\n got %q\nwant %q", msg, step, got.Bytes(), want.Bytes())
		}
	})
}

// scriptConn is a net.Conn that replays a server's bytes and discards what
// the client writes.
type scriptConn struct {
	fakeConn
	r *bytes.Reader
}

func (c *scriptConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzClient feeds arbitrary server output to a client session (greeting,
// CAPA, STAT, LIST, UIDL, TOP, RETR and QUIT) and checks the client's
// promises: no panic, no listing longer than STAT's count, no line over
// the limit accepted, and no message over its limit returned.
func FuzzClient(f *testing.F) {
	for _, s := range []string{
		"+OK ready\r\n+OK\r\nUIDL\r\nPIPELINING\r\n.\r\n+OK 2 30\r\n+OK\r\n1 10\r\n2 20\r\n.\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n" +
			"+OK\r\nSubject: x\r\n\r\n.\r\n+OK 10 octets\r\n..dot\r\nabc\r\n.\r\n+OK bye\r\n",
		"+OK\r\n-ERR [SYS/TEMP] no\r\n+OK 1 5\r\n+OK\r\n1 5\r\n1 5\r\n.\r\n",
		"+OK\r\n+OK\r\n" + strings.Repeat("X\r\n", 1200) + ".\r\n",
		"+OK " + strings.Repeat("a", 5000) + "\r\n",
		"+OK\r\n+OK\r\n.\r\n+OK 99999999999999999999 1\r\n",
		"+OK\r\n+OK\r\n.\r\n+OK -1 -1\r\n+OK\r\n-3 -4\r\n.\r\n",
		"+OK\r\n+OK\r\n.\r\n+OK 1 1\r\n+OK\r\n1 1\r\n.\r\n+OK\r\n1 u\r\n.\r\n+OK\r\n" + strings.Repeat("y", 2000) + "\r\n.\r\n",
		"+OK\n+OK\n.\n+OK 1 1\n+OK\n1 1\n.\n+OK\n1 u\n.\n+OK\n\n.\n+OK\nbody\n.\n",
		"garbage\r\n",
		"+OK\r\n+OK\r\n.\r\n+OK 3 3\r\n+OK\r\n1 9223372036854775807\r\n.\r\n+OK\r\n.\r\n+OK\r\n.\r\n+OK 9223372036854775807 octets\r\n" + strings.Repeat("z", 3000),
	} {
		f.Add([]byte(s), uint16(0), uint16(0))
		f.Add([]byte(s), uint16(200), uint16(500))
	}
	f.Fuzz(func(t *testing.T, server []byte, maxLine, maxSize uint16) {
		c, err := NewClient(&scriptConn{r: bytes.NewReader(server)})
		if err != nil {
			return
		}
		if len(c.Greeting()) > DefaultResponseLine {
			t.Fatalf("greeting of %d octets over the %d limit", len(c.Greeting()), DefaultResponseLine)
		}
		c.MaxLine = int(maxLine)
		c.MaxMessageSize = int64(maxSize)
		limit := c.maxLine()
		caps, err := c.Capabilities()
		if err == nil && len(caps) > MaxListLines {
			t.Fatalf("%d capabilities", len(caps))
		}
		count, _, err := c.Stat()
		if err != nil {
			return
		}
		list, err := c.List()
		if err == nil && len(list) > count {
			t.Fatalf("LIST of %d entries after STAT said %d", len(list), count)
		}
		for _, e := range list {
			if e.Number < 1 || e.Size < 0 {
				t.Fatalf("bad entry %+v", e)
			}
		}
		uidl, err := c.UIDL()
		if err == nil && len(uidl) > count {
			t.Fatalf("UIDL of %d entries after STAT said %d", len(uidl), count)
		}
		for _, u := range uidl {
			if len(u.UID) > limit {
				t.Fatalf("UID of %d octets over the %d line limit", len(u.UID), limit)
			}
		}
		msgLimit := func(n int) int64 {
			l := int64(math.MaxInt64)
			if s, ok := c.sizes[n]; ok && s < math.MaxInt64/2 {
				l = s + SizeSlack(s)
			}
			if maxSize > 0 {
				l = min(l, int64(maxSize))
			}
			return l
		}
		if r, err := c.Top(1, 0); err == nil {
			if n, _ := io.Copy(io.Discard, r); n > msgLimit(1) {
				t.Fatalf("TOP returned %d octets over the limit %d", n, msgLimit(1))
			}
		}
		err = c.RetrAll([]int{1, 2}, func(num int, msg io.Reader, err error) error {
			if err != nil {
				return nil
			}
			n, err := io.Copy(io.Discard, msg)
			if n > msgLimit(num) {
				t.Fatalf("RETR %d returned %d octets over the limit %d", num, n, msgLimit(num))
			}
			return err
		})
		var le *LimitError
		if errors.As(err, &le) && c.Noop() != err {
			t.Fatal("the client went on after a broken limit")
		}
		c.Quit()
	})
}
