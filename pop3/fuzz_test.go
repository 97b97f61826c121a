package pop3

import (
	"bufio"
	"bytes"
	"context"
	"io"
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
		s := &session{srv: srv, ctx: context.Background(), conn: fakeConn{}}
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
