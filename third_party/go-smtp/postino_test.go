package smtp_test

// Tests of the changes made to this copy of go-smtp; POSTINO.md lists
// each change and its test.

import (
	"io"
	"strings"
	"testing"
)

// exchange writes each command and checks that the reply line starts with
// want.
func exchange(t *testing.T, c io.Writer, scanner interface {
	Scan() bool
	Text() string
}, steps [][2]string) {
	t.Helper()
	for _, st := range steps {
		io.WriteString(c, st[0]+"\r\n")
		if !scanner.Scan() {
			t.Fatalf("%q: connection closed", st[0])
		}
		if got := scanner.Text(); !strings.HasPrefix(got, st[1]) {
			t.Fatalf("%q: got %q, want %q", st[0], got, st[1])
		}
	}
}

// A command out of sequence is "503 Bad sequence of commands" (RFC 5321
// §4.3.2, RFC 4954 §4); 502 is for commands not implemented.
func TestPostinoSequenceErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ehlo  bool
		setup []string // after EHLO, each answered 250
		cmd   string
		want  string
	}{
		{"MAIL before EHLO", false, nil, "MAIL FROM:<a@example.test>", "503 5.5.1 "},
		{"AUTH before EHLO", false, nil, "AUTH PLAIN", "503 5.5.1 "},
		{"RCPT without MAIL", true, nil, "RCPT TO:<b@example.test>", "503 5.5.1 "},
		{"RCPT after RSET", true, []string{"MAIL FROM:<a@example.test>", "RSET"}, "RCPT TO:<b@example.test>", "503 5.5.1 "},
		{"DATA without MAIL", true, nil, "DATA", "503 5.5.1 "},
		{"DATA without RCPT", true, []string{"MAIL FROM:<a@example.test>"}, "DATA", "503 5.5.1 "},
		{"DATA after RSET", true, []string{"MAIL FROM:<a@example.test>", "RCPT TO:<b@example.test>", "RSET"}, "DATA", "503 5.5.1 "},
		{"AUTH during a transaction", true, []string{"MAIL FROM:<a@example.test>"}, "AUTH PLAIN", "503 5.5.1 "},
		{"AUTH without mechanism", true, nil, "AUTH", "501 5.5.4 "},
		{"command not implemented", true, nil, "EXPN staff", "502 5.5.1 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, s, c, scanner := testServerGreeted(t)
			defer s.Close()
			defer c.Close()
			var steps [][2]string
			if tc.ehlo {
				steps = append(steps, [2]string{"HELO localhost", "250 "})
			}
			for _, cmd := range tc.setup {
				steps = append(steps, [2]string{cmd, "250 "})
			}
			steps = append(steps, [2]string{tc.cmd, tc.want})
			exchange(t, c, scanner, steps)
		})
	}
}

// BDAT without a recipient is 503 too, and its chunk is still discarded.
func TestPostinoBdatWithoutRcpt(t *testing.T) {
	_, s, c, scanner, _ := testServerEhlo(t)
	defer s.Close()
	defer c.Close()
	io.WriteString(c, "BDAT 6 LAST\r\nNOOP\r\n")
	if !scanner.Scan() || !strings.HasPrefix(scanner.Text(), "503 5.5.1 ") {
		t.Fatalf("BDAT without RCPT: got %q, want 503 5.5.1", scanner.Text())
	}
	exchange(t, c, scanner, [][2]string{
		{"MAIL FROM:<a@example.test>", "250 "},
		{"BDAT 6 LAST\r\nNOOP", "503 5.5.1 "},
		{"NOOP", "250 "},
	})
}
