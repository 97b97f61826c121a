package pop3backend

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/auth"
)

// TestStoredBareCRNoEarlyEnd: a message stored with bare CRs (local
// delivery keeps a bare CR as data) next to "." lines goes out in RETR
// and TOP as CRLF lines, dot-stuffed, and its multi-line response has no
// "CRLF.CRLF" before its own end (RFC 1939 §3): the stored text cannot
// end the response early and have the rest read as responses.
func TestStoredBareCRNoEarlyEnd(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	h, err := auth.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.Add(ctx, "alice@example.test", h); err != nil {
		t.Fatal(err)
	}
	msgs := []string{
		"Subject: a\r\n\r\nhello\r.\r\n+OK fake\r\n",
		"Subject: b\n\nhello\r\r\n.\r\n+OK fake\n",
		"Subject: c\r\n\r\n\r.\r\r\n.\r\r.\n.\r",
		".\r\r\n\r\n.\r",
	}
	for _, m := range msgs {
		if _, err := e.st.Deliver(ctx, "alice@example.test", strings.NewReader(m)); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	line := func() string {
		t.Helper()
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	if l := line(); !strings.HasPrefix(l, "+OK") {
		t.Fatal(l)
	}
	for _, cmd := range []string{"USER alice@example.test", "PASS pw"} {
		io.WriteString(conn, cmd+"\r\n")
		if l := line(); !strings.HasPrefix(l, "+OK") {
			t.Fatalf("%s: %s", cmd, l)
		}
	}
	// multi reads a multi-line response up to the first CRLF.CRLF (or a
	// "." first line), as a client does, and returns its body.
	multi := func(cmd string) []byte {
		t.Helper()
		io.WriteString(conn, cmd+"\r\n")
		if l := line(); !strings.HasPrefix(l, "+OK") {
			t.Fatalf("%s: %s", cmd, l)
		}
		var body []byte
		for !bytes.HasSuffix(body, []byte("\r\n.\r\n")) && !bytes.Equal(body, []byte(".\r\n")) {
			b, err := br.ReadByte()
			if err != nil {
				t.Fatal(err)
			}
			body = append(body, b)
		}
		return body
	}
	for i := range msgs {
		for _, cmd := range []string{"RETR", "TOP"} {
			full := cmd + " " + string(rune('1'+i))
			if cmd == "TOP" {
				full += " 100"
			}
			body := multi(full)
			for j, c := range body {
				if c == '\n' && (j == 0 || body[j-1] != '\r') {
					t.Errorf("%s: bare LF at %d: %q", full, j, body)
				}
			}
			// Every line starting with "." is stuffed: removing the
			// stuffing gives back a message with no "." line.
			for _, l := range strings.SplitAfter(string(body[:len(body)-3]), "\r\n") {
				if strings.HasPrefix(l, ".") && !strings.HasPrefix(l, "..") {
					t.Errorf("%s: unstuffed line %q in %q", full, l, body)
				}
			}
		}
	}
	// The session is in step: the next response is the NOOP's.
	io.WriteString(conn, "NOOP\r\n")
	if l := line(); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("after the messages: %q", l)
	}
}
