package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The transports every hostile-server test runs over.
var transports = []string{"plain", "starttls", "tls"}

// hostileCap is the most a hostile server sends in one response before it
// gives up and closes: far more than any limit of the client, so that a
// client without limits buffers all of it.
const hostileCap = 48 << 20

// hostile is a POP3 server on loopback that answers each command with
// whatever its script writes. It serves one connection.
type hostile struct {
	addr string
	// done receives, once the connection is over, how many octets the
	// server wrote and whether a write failed because the client went away.
	done chan hostileResult
}

type hostileResult struct {
	written  int64
	cutShort bool
}

// countWriter counts octets and remembers the first write error.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (cw *countWriter) Write(p []byte) (int, error) {
	if cw.err != nil {
		return 0, cw.err
	}
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	cw.err = err
	return n, err
}

// script answers one command; greeting is called with cmd "".
type script func(cmd string, w io.Writer) error

// endless writes prefix, then chunk over and over until the client stops
// reading (a write fails) or hostileCap octets are written (errGaveUp).
func endless(w io.Writer, prefix, chunk string) error {
	if _, err := io.WriteString(w, prefix); err != nil {
		return err
	}
	buf := []byte(strings.Repeat(chunk, max(1, 64*1024/len(chunk))))
	for sent := 0; sent < hostileCap; sent += len(buf) {
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return errGaveUp
}

// errGaveUp ends a hostile server's connection once it sent hostileCap
// octets in one response: a client without limits then sees it close.
var errGaveUp = errors.New("hostile server: client still reading")

// startHostile starts a hostile server for the transport. STLS is
// answered by the server itself; every other command, and the greeting,
// by the script.
func startHostile(t *testing.T, transport string, s script) *hostile {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	cert, _ := testCert(t)
	tcfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	h := &hostile{addr: l.Addr().String(), done: make(chan hostileResult, 1)}
	go func() {
		conn, err := l.Accept()
		if err != nil {
			h.done <- hostileResult{}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		if transport == "tls" {
			conn = tls.Server(conn, tcfg)
		}
		cw := &countWriter{w: conn}
		r := bufio.NewReader(conn)
		defer func() { h.done <- hostileResult{written: cw.n, cutShort: cw.err != nil} }()
		if s("", cw) != nil {
			return
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.TrimRight(line, "\r\n")
			if cmd == "STLS" && transport == "starttls" {
				io.WriteString(cw, "+OK Begin TLS.\r\n")
				conn = tls.Server(conn, tcfg)
				cw.w, r = conn, bufio.NewReader(conn)
				continue
			}
			if s(cmd, cw) != nil {
				return
			}
		}
	}()
	return h
}

// dialHostile connects to h over the transport.
func dialHostile(t *testing.T, transport string, h *hostile) (*Client, error) {
	t.Helper()
	_, pool := testCert(t)
	ccfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c *Client
	var err error
	if transport == "tls" {
		c, err = DialTLS(ctx, h.addr, ccfg)
	} else {
		c, err = Dial(ctx, h.addr)
	}
	if err != nil {
		return nil, err
	}
	c.Timeout = 30 * time.Second
	t.Cleanup(func() { c.Close() })
	if transport == "starttls" {
		if err := c.StartTLS(ccfg); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// greeter sends a greeting, then runs answer for the commands.
func greeter(answer map[string]func(w io.Writer) error) script {
	return func(cmd string, w io.Writer) error {
		if cmd == "" {
			_, err := io.WriteString(w, "+OK hostile POP3 server ready\r\n")
			return err
		}
		if f := answer[cmd]; f != nil {
			return f(w)
		}
		_, err := io.WriteString(w, "-ERR unknown\r\n")
		return err
	}
}

func reply(s string) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := io.WriteString(w, s)
		return err
	}
}

// allocated runs f and returns the octets the process allocated meanwhile
// (the server's goroutine included).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// checkLimitError asserts the typed error, that the client closed its
// connection and keeps failing, and that the server could not send its
// whole response.
func checkLimitError(t *testing.T, c *Client, h *hostile, err, sentinel error, limit int64) {
	t.Helper()
	var le *LimitError
	if !errors.Is(err, sentinel) || !errors.As(err, &le) {
		t.Fatalf("err = %v, want a *LimitError for %v", err, sentinel)
	}
	if limit > 0 && le.Limit != limit {
		t.Errorf("Limit = %d, want %d", le.Limit, limit)
	}
	if c != nil {
		checkClosed(t, c)
		if nerr := c.Noop(); nerr != err {
			t.Errorf("NOOP after the error = %v, want the same *LimitError", nerr)
		}
	}
	select {
	case res := <-h.done:
		if !res.cutShort || res.written >= hostileCap {
			t.Errorf("server wrote %d octets (cut short: %v): the client did not stop reading", res.written, res.cutShort)
		}
	case <-time.After(30 * time.Second):
		t.Error("the hostile server is still writing")
	}
}

// checkClosed asserts that the client closed its connection (under TLS,
// the TCP connection: a tls.Conn still returns what it decrypted).
func checkClosed(t *testing.T, c *Client) {
	t.Helper()
	conn := c.Conn()
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("reading the client's connection after the error: %v, want net.ErrClosed", err)
	}
}

// maxGrowth is the most a limited client may allocate while a hostile
// server pours hostileCap octets at it.
const maxGrowth = 8 << 20

func TestClientEndlessGreeting(t *testing.T) {
	for _, tr := range transports {
		if tr == "starttls" {
			continue // the greeting comes before STLS: same as plain
		}
		t.Run(tr, func(t *testing.T) {
			h := startHostile(t, tr, func(cmd string, w io.Writer) error {
				return endless(w, "+OK ", "hostile ")
			})
			var err error
			grew := allocated(func() { _, err = dialHostile(t, tr, h) })
			t.Logf("the client allocated %d octets", grew)
			if grew > maxGrowth {
				t.Errorf("the client allocated %d octets on an endless greeting", grew)
			}
			checkLimitError(t, nil, h, err, ErrLineTooLong, DefaultResponseLine)
		})
	}
}

func TestClientEndlessStatusLine(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			h := startHostile(t, tr, greeter(map[string]func(io.Writer) error{
				"STAT": func(w io.Writer) error { return endless(w, "+OK 1 ", "9") },
			}))
			c, err := dialHostile(t, tr, h)
			if err != nil {
				t.Fatal(err)
			}
			grew := allocated(func() { _, _, err = c.Stat() })
			t.Logf("the client allocated %d octets", grew)
			if grew > maxGrowth {
				t.Errorf("the client allocated %d octets on an endless status line", grew)
			}
			checkLimitError(t, c, h, err, ErrLineTooLong, DefaultResponseLine)
		})
	}
}

// TestClientEndlessUIDLLine is the reported attack: a UIDL listing line
// that never ends.
func TestClientEndlessUIDLLine(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			h := startHostile(t, tr, greeter(map[string]func(io.Writer) error{
				"STAT": reply("+OK 2 200\r\n"),
				"UIDL": func(w io.Writer) error { return endless(w, "+OK\r\n1 ", "abcdefgh") },
			}))
			c, err := dialHostile(t, tr, h)
			if err != nil {
				t.Fatal(err)
			}
			c.MaxLine = 1000
			grew := allocated(func() { _, err = c.UIDL() })
			t.Logf("the client allocated %d octets", grew)
			if grew > maxGrowth {
				t.Errorf("the client allocated %d octets on an endless UIDL line", grew)
			}
			checkLimitError(t, c, h, err, ErrLineTooLong, 1000)
		})
	}
}

// TestClientEndlessListing sends LIST and UIDL listings that never end:
// they are cut at the message count of STAT (sent by the client itself
// when it was not asked), and CAPA at MaxListLines.
func TestClientEndlessListing(t *testing.T) {
	for _, tr := range transports {
		for _, cmd := range []string{"UIDL", "LIST", "CAPA"} {
			t.Run(tr+"/"+cmd, func(t *testing.T) {
				line := "7 uid-7-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
				if cmd == "LIST" {
					line = "7 120\r\n"
				}
				if cmd == "CAPA" {
					line = "X-HOSTILE a b c d e f g h i j k l m n o p q r s t u v w x y z\r\n"
				}
				h := startHostile(t, tr, greeter(map[string]func(io.Writer) error{
					"STAT": reply("+OK 3 360\r\n"),
					cmd:    func(w io.Writer) error { return endless(w, "+OK\r\n", line) },
				}))
				c, err := dialHostile(t, tr, h)
				if err != nil {
					t.Fatal(err)
				}
				var n int
				grew := allocated(func() {
					switch cmd {
					case "UIDL":
						var l []UIDLEntry
						l, err = c.UIDL()
						n = len(l)
					case "LIST":
						var l []ListEntry
						l, err = c.List()
						n = len(l)
					case "CAPA":
						var m map[string][]string
						m, err = c.Capabilities()
						n = len(m)
					}
				})
				want := int64(3)
				if cmd == "CAPA" {
					want = MaxListLines
				}
				if n != 0 {
					t.Errorf("%d entries returned with the error", n)
				}
				t.Logf("the client allocated %d octets", grew)
				if grew > maxGrowth {
					t.Errorf("the client allocated %d octets on an endless %s listing", grew, cmd)
				}
				checkLimitError(t, c, h, err, ErrListingTooLong, want)
			})
		}
	}
}

// oversized is a server whose message 1 is listed at 100 octets but whose
// RETR and TOP send far more.
func oversized() script {
	endlessBody := func(w io.Writer) error { return endless(w, "+OK\r\n", "Subject: more and more\r\n") }
	return greeter(map[string]func(io.Writer) error{
		"STAT":    reply("+OK 2 200\r\n"),
		"LIST":    reply("+OK 2 messages\r\n1 100\r\n2 100\r\n.\r\n"),
		"LIST 1":  reply("+OK 1 100\r\n"),
		"RETR 1":  endlessBody,
		"TOP 1 0": endlessBody,
		"RETR 2":  reply("+OK\r\n" + strings.Repeat("x", 98+SizeSlackFor100) + "\r\n.\r\n"),
	})
}

// SizeSlackFor100 is SizeSlack(100), as a constant for the scripts.
const SizeSlackFor100 = 100/8 + 1024

func TestClientOversizedRetr(t *testing.T) {
	for _, tr := range transports {
		for _, how := range []string{"Retr", "Top", "RetrAll", "unread"} {
			t.Run(tr+"/"+how, func(t *testing.T) {
				h := startHostile(t, tr, oversized())
				c, err := dialHostile(t, tr, h)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.List(); err != nil {
					t.Fatal(err)
				}
				limit := 100 + SizeSlack(100)
				var got int64
				grew := allocated(func() {
					switch how {
					case "Retr", "Top":
						var r io.Reader
						if how == "Retr" {
							r, err = c.Retr(1)
						} else {
							r, err = c.Top(1, 0)
						}
						if err != nil {
							t.Fatal(err)
						}
						got, err = io.Copy(io.Discard, r)
					case "RetrAll":
						err = c.RetrAll([]int{1}, func(n int, msg io.Reader, err error) error {
							if err != nil {
								return err
							}
							got, err = io.Copy(io.Discard, msg)
							return err
						})
					case "unread":
						// A body left unread is drained before the next
						// command, within the same limit.
						if _, err = c.Retr(1); err != nil {
							t.Fatal(err)
						}
						err = c.Noop()
					}
				})
				if got > limit {
					t.Errorf("%d octets returned, limit %d", got, limit)
				}
				t.Logf("the client allocated %d octets", grew)
				if grew > maxGrowth {
					t.Errorf("the client allocated %d octets on an oversized message", grew)
				}
				checkLimitError(t, c, h, err, ErrMessageTooLarge, limit)
			})
		}
	}
}

// TestClientSizeSlack: a message a little over its listed size, within the
// slack, is accepted whole.
func TestClientSizeSlack(t *testing.T) {
	h := startHostile(t, "plain", oversized())
	c, err := dialHostile(t, "plain", h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(); err != nil {
		t.Fatal(err)
	}
	r, err := c.Retr(2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil || int64(len(b)) != 100+SizeSlack(100) {
		t.Fatalf("read %d octets, %v; want %d", len(b), err, 100+SizeSlack(100))
	}
}

// TestClientMaxMessageSize: a caller's limit stops a message that is
// within its listed size, and also one with no listed size at all.
func TestClientMaxMessageSize(t *testing.T) {
	body := strings.Repeat("0123456789abcdef\r\n", 4000) // 72000 octets
	for _, tr := range transports {
		for _, listed := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/listed=%v", tr, listed), func(t *testing.T) {
				h := startHostile(t, tr, greeter(map[string]func(io.Writer) error{
					"STAT":   reply("+OK 1 72000\r\n"),
					"LIST":   reply("+OK\r\n1 72000\r\n.\r\n"),
					"RETR 1": reply("+OK\r\n" + body + ".\r\n"),
				}))
				c, err := dialHostile(t, tr, h)
				if err != nil {
					t.Fatal(err)
				}
				if listed {
					if _, err := c.List(); err != nil {
						t.Fatal(err)
					}
				}
				c.MaxMessageSize = 10000
				var got int64
				err = c.RetrAll([]int{1}, func(n int, msg io.Reader, err error) error {
					if err != nil {
						return err
					}
					got, err = io.Copy(io.Discard, msg)
					return err
				})
				if got > 10000 {
					t.Errorf("%d octets returned over a 10000 limit", got)
				}
				var le *LimitError
				if !errors.Is(err, ErrMessageTooLarge) || !errors.As(err, &le) || le.Limit != 10000 || le.Command != "RETR" {
					t.Fatalf("err = %v, want ErrMessageTooLarge at 10000", err)
				}
				checkClosed(t, c)
			})
		}
	}
}

// TestClientListingAfterRSET: RSET brings deleted messages back, so the
// count of a STAT sent after DELE no longer bounds the listing.
func TestClientListingAfterRSET(t *testing.T) {
	ts := startServer(t, nil)
	for i := range 5 {
		ts.be.add("bob@example.test", fmt.Sprintf("u%d", i), "Subject: x\r\n\r\nx\r\n")
	}
	c := ts.client(t)
	if err := c.Login("bob@example.test", "hunter2"); err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 3; n++ {
		if err := c.Dele(n); err != nil {
			t.Fatal(err)
		}
	}
	if l, err := c.UIDL(); err != nil || len(l) != 2 {
		t.Fatalf("UIDL after DELE = %v, %v", l, err)
	}
	if err := c.Rset(); err != nil {
		t.Fatal(err)
	}
	if l, err := c.List(); err != nil || len(l) != 5 {
		t.Fatalf("LIST after RSET = %v, %v", l, err)
	}
}
