package testutil

import (
	"bufio"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
)

// TestSMTPSink: the sink keeps the commands, the raw data (still
// dot-stuffed, up to CRLF.CRLF) and the recipients of completed
// messages only.
func TestSMTPSink(t *testing.T) {
	s := NewSMTPSink(t)
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	expect := func(code string) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, code) {
				t.Fatalf("want %s, got %q, %v", code, line, err)
			}
			if len(line) < 4 || line[3] != '-' {
				return
			}
		}
	}
	expect("220")
	for _, step := range []struct{ send, want string }{
		{"EHLO me\r\n", "250"},
		{"MAIL FROM:<a@x.test>\r\n", "250"},
		{"RCPT TO:<dropped@y.test>\r\n", "250"},
		{"RSET\r\n", "250"},
		{"MAIL FROM:<a@x.test>\r\n", "250"},
		{"RCPT TO:<b@y.test>\r\n", "250"},
		{"DATA\r\n", "354"},
		{"Subject: s\r\n\r\n..dot\r\n.\r\n", "250"},
		{"QUIT\r\n", "221"},
	} {
		fmt.Fprint(c, step.send)
		expect(step.want)
	}
	if raw := s.Raw(); len(raw) != 1 || string(raw[0]) != "Subject: s\r\n\r\n..dot\r\n.\r\n" {
		t.Errorf("raw %q", raw)
	}
	if m := s.Messages(); len(m) != 1 || m[0] != "Subject: s\r\n\r\n..dot\r\n" {
		t.Errorf("messages %q", m)
	}
	if got := s.Recipients(); !slices.Equal(got, []string{"b@y.test"}) {
		t.Errorf("recipients %q", got)
	}
	if cmds := s.Commands(); len(cmds) != 8 || cmds[0] != "EHLO me" || cmds[len(cmds)-1] != "QUIT" {
		t.Errorf("commands %q", cmds)
	}
}
