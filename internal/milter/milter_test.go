package milter

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/postino-mail/postino/internal/inbound"
)

// scripted is a filter whose replies the test sets: each stage's
// response (nil: continue) and the changes made at the end of the
// message.
type scripted struct {
	gomilter.NoOpMilter
	mail, rcpt, eom *gomilter.Response
	rcptFor         string // rcpt applies only to this recipient, when set
	changes         func(m gomilter.Modifier) error
	mu              *sync.Mutex
	seen            *[]string
}

func (s *scripted) log(x string) {
	s.mu.Lock()
	*s.seen = append(*s.seen, x)
	s.mu.Unlock()
}

func (s *scripted) Helo(name string, m gomilter.Modifier) (*gomilter.Response, error) {
	s.log("helo " + name)
	return gomilter.RespContinue, nil
}

func (s *scripted) MailFrom(from, _ string, m gomilter.Modifier) (*gomilter.Response, error) {
	s.log("mail " + from)
	if s.mail != nil {
		return s.mail, nil
	}
	return gomilter.RespContinue, nil
}

func (s *scripted) RcptTo(rcpt, _ string, m gomilter.Modifier) (*gomilter.Response, error) {
	s.log("rcpt " + rcpt)
	if s.rcpt != nil && (s.rcptFor == "" || s.rcptFor == rcpt) {
		return s.rcpt, nil
	}
	return gomilter.RespContinue, nil
}

func (s *scripted) Header(name, value string, m gomilter.Modifier) (*gomilter.Response, error) {
	s.log("header " + name + ":" + value)
	return gomilter.RespContinue, nil
}

func (s *scripted) BodyChunk(chunk []byte, m gomilter.Modifier) (*gomilter.Response, error) {
	s.log("body " + string(chunk))
	return gomilter.RespContinue, nil
}

func (s *scripted) EndOfMessage(m gomilter.Modifier) (*gomilter.Response, error) {
	if s.changes != nil {
		if err := s.changes(m); err != nil {
			return nil, err
		}
	}
	if s.eom != nil {
		return s.eom, nil
	}
	return gomilter.RespAccept, nil
}

// startFilter serves f on a loopback port and returns its check.
func startFilter(t testing.TB, f scripted) (*Check, *[]string) {
	t.Helper()
	seen := &[]string{}
	f.mu, f.seen = &sync.Mutex{}, seen
	srv := gomilter.NewServer(gomilter.WithMilter(func() gomilter.Milter { c := f; return &c }),
		gomilter.WithActions(gomilter.OptAddHeader|gomilter.OptChangeHeader|gomilter.OptChangeBody|gomilter.OptQuarantine|gomilter.OptAddRcpt))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return New(Config{Name: "test", Network: "tcp", Address: ln.Addr().String(), Timeout: 5 * time.Second}), seen
}

func mustReply(t *testing.T, code uint16, text string) *gomilter.Response {
	r, err := gomilter.RejectWithCodeAndReason(code, text)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReplies(t *testing.T) {
	msg := testMessage("hi", "body")
	for _, tc := range []struct {
		name   string
		f      scripted
		action inbound.Action
		code   int
		enh    [3]int
		reply  string
	}{
		{"accept", scripted{}, inbound.Accept, 0, [3]int{}, ""},
		{"reject at eom", scripted{eom: gomilter.RespReject}, inbound.Reject, 550, [3]int{5, 7, 1}, "Message refused"},
		{"tempfail at eom", scripted{eom: gomilter.RespTempFail}, inbound.Tempfail, 451, [3]int{4, 7, 1}, "Try again later"},
		{"custom reply", scripted{eom: mustReply(t, 554, "5.7.1 Spam message rejected")}, inbound.Reject, 554, [3]int{5, 7, 1}, "Spam message rejected"},
		{"custom 4xx", scripted{eom: mustReply(t, 452, "4.3.1 Insufficient resources")}, inbound.Tempfail, 452, [3]int{4, 3, 1}, "Insufficient resources"},
		{"custom without status", scripted{eom: mustReply(t, 550, "No thanks")}, inbound.Reject, 550, [3]int{5, 7, 1}, "No thanks"},
		{"discard is quarantine", scripted{eom: gomilter.RespDiscard}, inbound.Quarantine, 0, [3]int{}, ""},
		{"reject at mail", scripted{mail: gomilter.RespReject}, inbound.Reject, 550, [3]int{5, 7, 1}, "Message refused"},
		{"discard at rcpt", scripted{rcpt: gomilter.RespDiscard}, inbound.Quarantine, 0, [3]int{}, ""},
		{"quarantine", scripted{changes: func(m gomilter.Modifier) error { return m.Quarantine("virus found") }}, inbound.Quarantine, 0, [3]int{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := startFilter(t, tc.f)
			v, _ := runTx(t, c, "s@example.net", []string{"u@example.org"}, msg)
			r, ok := v.Strongest()
			if tc.action == inbound.Accept {
				if ok {
					t.Fatalf("got %+v, want nothing", r)
				}
				return
			}
			if !ok || r.Action != tc.action || r.Code != tc.code || r.Enhanced != tc.enh || r.Reply != tc.reply {
				t.Fatalf("got %+v, want %v %d %v %q", r, tc.action, tc.code, tc.enh, tc.reply)
			}
			if r.Check != "milter:test" {
				t.Errorf("check %q", r.Check)
			}
		})
	}
}

// TestRcptRefusal: a recipient the filter refuses is refused alone; the
// transaction goes on for the others.
func TestRcptRefusal(t *testing.T) {
	c, seen := startFilter(t, scripted{rcpt: gomilter.RespReject, rcptFor: "bad@example.org"})
	ctx := t.Context()
	conn := &inbound.Conn{ID: "S", Helo: "h.example", Hostname: "mx.example.org"}
	v := &inbound.Verdict{}
	s := c.Begin(ctx, conn, v)
	defer s.(inbound.Ender).End()
	s.(inbound.MailStage).Mail(ctx, "s@example.net", v)
	env := &inbound.Envelope{ID: "T"}
	bad, good := &inbound.Verdict{}, &inbound.Verdict{}
	s.(inbound.RcptStage).Rcpt(ctx, env, "bad@example.org", bad)
	s.(inbound.RcptStage).Rcpt(ctx, env, "good@example.org", good)
	if r, ok := bad.Strongest(); !ok || r.Action != inbound.Reject {
		t.Errorf("bad recipient: %+v %v", r, ok)
	}
	if r, ok := good.Strongest(); ok {
		t.Errorf("good recipient refused: %+v", r)
	}
	if _, err := s.(inbound.DataStage).Data(ctx, env, stringMessage(testMessage("x", "y")), good); err != nil {
		t.Fatal(err)
	}
	if r, ok := good.Strongest(); ok {
		t.Errorf("message refused: %+v", r)
	}
	if !strings.Contains(strings.Join(*seen, "\n"), "body y") {
		t.Errorf("the body was not sent: %q", *seen)
	}
}

// TestChanges: header additions, insertions, changes and deletions and a
// body replacement reach the delivered message; the filter saw the
// original message with its folded field.
func TestChanges(t *testing.T) {
	msg := "Received: from a\r\nSubject: hello\r\n world\r\nX-Old: 1\r\nX-Old: 2\r\nX-Spam: no\r\n\r\nline 1\r\nline 2\r\n"
	c, seen := startFilter(t, scripted{changes: func(m gomilter.Modifier) error {
		for _, err := range []error{
			m.AddHeader("X-Added", "yes\n folded"),
			m.InsertHeader(0, "X-First", "top"),
			m.ChangeHeader(2, "X-Old", "two"),
			m.ChangeHeader(1, "Subject", ""),
			m.ChangeHeader(1, "X-Missing", "added"),
			m.AddHeader("X-Spam-Score", "12.5"),
			m.AddHeader("X-Spam", "Yes"),
			m.AddRecipient("other@example.org", ""),
			m.ReplaceBody(strings.NewReader("new body\nsecond\n")),
		} {
			if err != nil {
				return err
			}
		}
		return nil
	}})
	v, out := runTx(t, c, "s@example.net", []string{"u@example.org"}, msg)
	want := "X-First: top\r\nReceived: from a\r\nX-Old: 1\r\nX-Old: two\r\nX-Spam: no\r\nX-Added: yes\r\n folded\r\nX-Missing: added\r\n\r\nnew body\r\nsecond\r\n"
	if out != want {
		t.Errorf("message:\n%q\nwant\n%q", out, want)
	}
	if v.Score() != 12.5 {
		t.Errorf("score %v, want 12.5", v.Score())
	}
	if r, ok := v.Strongest(); !ok || r.Action != inbound.Tag {
		t.Errorf("X-Spam: Yes: %+v %v, want Tag", r, ok)
	}
	all := strings.Join(*seen, "\n")
	if !strings.Contains(all, "header Subject:hello\n world") && !strings.Contains(all, "header Subject: hello\n world") {
		t.Errorf("folded Subject not sent as one field: %q", *seen)
	}
	if !strings.Contains(all, "helo client.example") {
		t.Errorf("HELO not sent: %q", *seen)
	}
}

// TestHeaderChangesStreamBody: without a body replacement the body is
// read from the original message, unchanged.
func TestHeaderChangesStreamBody(t *testing.T) {
	body := strings.Repeat("0123456789abcdef\r\n", 20000) // 360 kB: several chunks
	msg := "Subject: big\r\n\r\n" + body
	c, seen := startFilter(t, scripted{changes: func(m gomilter.Modifier) error { return m.AddHeader("X-Scanned", "yes") }})
	_, out := runTx(t, c, "s@example.net", []string{"u@example.org"}, msg)
	if out != "Subject: big\r\nX-Scanned: yes\r\n\r\n"+body {
		t.Errorf("message changed beyond the header (%d octets)", len(out))
	}
	n := 0
	for _, s := range *seen {
		if strings.HasPrefix(s, "body ") {
			n += len(s) - 5
		}
	}
	if n != len(body) {
		t.Errorf("filter got %d body octets, want %d", n, len(body))
	}
}

// TestFilterDown: a filter that cannot be reached tempfails by default,
// at MAIL and at every later stage of the transaction; with on_failure
// accept it adds nothing.
func TestFilterDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, accept := range []bool{false, true} {
		c := New(Config{Name: "down", Network: "tcp", Address: addr, AcceptOnFailure: accept, ConnectTimeout: time.Second})
		v, _ := runTx(t, c, "s@example.net", []string{"u@example.org"}, testMessage("x", "y"))
		r, ok := v.Strongest()
		if accept && ok {
			t.Errorf("accept on failure: %+v", r)
		}
		if !accept && (!ok || r.Action != inbound.Tempfail || r.Code != 451 || r.Enhanced != [3]int{4, 7, 1}) {
			t.Errorf("tempfail on failure: %+v %v", r, ok)
		}
	}
}

// TestHostileFilter: a filter that answers garbage, or closes the
// connection mid-message, is a failed filter (tempfail), never an accept.
func TestHostileFilter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("\x00\x00\x00\x05Zjunk garbage garbage"))
			c.Close()
		}
	}()
	c := New(Config{Name: "hostile", Network: "tcp", Address: ln.Addr().String(), Timeout: time.Second})
	v, _ := runTx(t, c, "s@example.net", []string{"u@example.org"}, testMessage("x", "y"))
	if r, ok := v.Strongest(); !ok || r.Action != inbound.Tempfail {
		t.Errorf("hostile filter: %+v %v", r, ok)
	}
}

// TestHugeHeader: a message whose header is over the limit is refused
// with a clear reply, not sent cut.
func TestHugeHeader(t *testing.T) {
	c, _ := startFilter(t, scripted{})
	msg := strings.Repeat("X-Filler: "+strings.Repeat("a", 80)+"\r\n", MaxHeaderBytes/90+10) + "\r\nbody\r\n"
	v, _ := runTx(t, c, "s@example.net", []string{"u@example.org"}, msg)
	if r, ok := v.Strongest(); !ok || r.Action != inbound.Reject || r.Code != 552 {
		t.Errorf("huge header: %+v %v", r, ok)
	}
}

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:11332":         "tcp 127.0.0.1:11332",
		"inet:127.0.0.1:8891":     "tcp 127.0.0.1:8891",
		"unix:/run/clamav/m.sock": "unix /run/clamav/m.sock",
		"/run/m.sock":             "unix /run/m.sock",
		"[::1]:11332":             "tcp [::1]:11332",
	} {
		n, a, err := ParseAddress(in)
		if err != nil || n+" "+a != want {
			t.Errorf("ParseAddress(%q) = %q %q %v, want %q", in, n, a, err, want)
		}
	}
	for _, bad := range []string{"", "unix:", "localhost", "host:port:x"} {
		if _, _, err := ParseAddress(bad); err == nil {
			t.Errorf("ParseAddress(%q): no error", bad)
		}
	}
}

func TestParseReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code int
		enh  [3]int
		text string
		ok   bool
	}{
		{"554 5.7.1 Spam message rejected", 554, [3]int{5, 7, 1}, "Spam message rejected", true},
		{"550-5.7.1 first\r\n550 5.7.1 second", 550, [3]int{5, 7, 1}, "first second", true},
		{"451 4.7.1 later", 451, [3]int{4, 7, 1}, "later", true},
		{"550 4.7.1 class mismatch", 550, [3]int{}, "class mismatch", true},
		{"550 text\x01\x7f only", 550, [3]int{}, "text only", true},
		{"250 ok", 0, [3]int{}, "", false},
		{"55", 0, [3]int{}, "", false},
		{"550-a\r\n551 b", 0, [3]int{}, "", false},
		{"abc", 0, [3]int{}, "", false},
	} {
		code, enh, text, ok := parseReply(tc.in)
		if code != tc.code || enh != tc.enh || text != tc.text || ok != tc.ok {
			t.Errorf("parseReply(%q) = %d %v %q %v, want %d %v %q %v", tc.in, code, enh, text, ok, tc.code, tc.enh, tc.text, tc.ok)
		}
	}
}

// TestIdleConnectionClosed: a filter that closed the connection kept
// between two transactions (its idle timeout) is connected to again, and
// the second message is filtered, not tempfailed.
func TestIdleConnectionClosed(t *testing.T) {
	var mu sync.Mutex
	var conns []net.Conn
	srv := gomilter.NewServer(gomilter.WithMilter(func() gomilter.Milter { return &scripted{mu: &sync.Mutex{}, seen: &[]string{}} }))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(&trackingListener{Listener: ln, mu: &mu, conns: &conns})
	t.Cleanup(func() { srv.Close() })
	c := New(Config{Name: "idle", Network: "tcp", Address: ln.Addr().String(), Timeout: 5 * time.Second})
	ctx := t.Context()
	conn := &inbound.Conn{ID: "S", Helo: "h.example", Hostname: "mx.example.org"}
	s := c.Begin(ctx, conn, &inbound.Verdict{})
	defer s.(inbound.Ender).End()
	for i := range 2 {
		v := &inbound.Verdict{}
		s.(inbound.MailStage).Mail(ctx, "s@example.net", v)
		env := &inbound.Envelope{ID: "T"}
		s.(inbound.RcptStage).Rcpt(ctx, env, "u@example.org", v)
		if _, err := s.(inbound.DataStage).Data(ctx, env, stringMessage(testMessage("x", "y")), v); err != nil {
			t.Fatal(err)
		}
		if r, ok := v.Strongest(); ok {
			t.Fatalf("message %d: %+v", i, r)
		}
		// The filter drops the idle connection.
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 2 {
		t.Errorf("%d connections to the filter, want 2", len(conns))
	}
}

type trackingListener struct {
	net.Listener
	mu    *sync.Mutex
	conns *[]net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		*l.conns = append(*l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// startFilterB is startFilter for benchmarks: a filter that adds a
// header field.
func startFilterB(b *testing.B) (*Check, *[]string) {
	return startFilter(b, scripted{changes: func(m gomilter.Modifier) error { return m.AddHeader("X-Scanned", "yes") }})
}

// TestHeaderInjection: a value with line breaks (from a filter that copies
// text of the message into a field) stays one field: every line after the
// first is a continuation line.
func TestHeaderInjection(t *testing.T) {
	h, err := readHeader(strings.NewReader("Subject: a\r\n\r\nbody"))
	if err != nil {
		t.Fatal(err)
	}
	err = h.apply([]gomilter.ModifyAction{
		{Type: gomilter.ActionAddHeader, HeaderName: "X-Report", HeaderValue: "line one\nBcc: victim@example.net\r\nX-Spam: no\n\n"},
		{Type: gomilter.ActionAddHeader, HeaderName: "Bad Name", HeaderValue: "x"},
		{Type: gomilter.ActionAddHeader, HeaderName: "X-Nul", HeaderValue: "a\x00b"},
		{Type: gomilter.ActionChangeHeader, HeaderName: "Subject", HeaderIndex: 1, HeaderValue: "b\rc"},
	}, false)
	if err == nil {
		t.Error("no error for the invalid changes")
	}
	want := "Subject: a\r\nX-Report: line one\r\n\tBcc: victim@example.net\r\n\tX-Spam: no\r\n"
	if got := string(h.bytes()); got != want {
		t.Errorf("header:\n%q\nwant\n%q", got, want)
	}
}

// TestProtocolVersion2: with protocol = 2 (older filters) a message is
// filtered and changed as with version 6.
func TestProtocolVersion2(t *testing.T) {
	c, seen := startFilter(t, scripted{eom: mustReply(t, 550, "5.7.1 version two says no")})
	c.cfg.MaxVersion = 2
	v, _ := runTx(t, c, "s@example.net", []string{"u@example.org"}, testMessage("x", "y"))
	if r, ok := v.Strongest(); !ok || r.Code != 550 || r.Reply != "version two says no" {
		t.Fatalf("got %+v %v", r, ok)
	}
	if !strings.Contains(strings.Join(*seen, "\n"), "body y") {
		t.Errorf("body not sent: %q", *seen)
	}
	c2, _ := startFilter(t, scripted{changes: func(m gomilter.Modifier) error { return m.AddHeader("X-V2", "ok") }})
	c2.cfg.MaxVersion = 2
	_, out := runTx(t, c2, "s@example.net", []string{"u@example.org"}, testMessage("x", "y"))
	if !strings.Contains(out, "X-V2: ok\r\n") {
		t.Errorf("version 2 change not applied:\n%s", out)
	}
}
