package queue

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/envelope"
)

func fold(t *testing.T, in string) string {
	t.Helper()
	out, err := io.ReadAll(newFolder(strings.NewReader(in)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// unfold undoes folder: it removes each CRLF SP that follows a line of
// exactly maxLineLength octets (the test inputs have no line starting with
// a space).
func unfold(s string) string {
	lines := strings.SplitAfter(s, "\r\n")
	var b strings.Builder
	for i, l := range lines {
		if i > 0 && len(lines[i-1]) == maxLineLength+2 && strings.HasPrefix(l, " ") {
			cur := b.String()
			b.Reset()
			b.WriteString(strings.TrimSuffix(cur, "\r\n"))
			l = l[1:]
		}
		b.WriteString(l)
	}
	return b.String()
}

// checkLines fails when a line of s is longer than 998 octets without
// its CRLF.
func checkLines(t *testing.T, s string) {
	t.Helper()
	for i, l := range strings.Split(s, "\n") {
		if n := len(strings.TrimSuffix(l, "\r")); n > maxLineLength {
			t.Fatalf("line %d has %d octets", i+1, n)
		}
	}
}

func TestFolder(t *testing.T) {
	x := func(n int) string { return strings.Repeat("x", n) }
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"short lines untouched", "Subject: hi\r\n\r\nbody\r\n", "Subject: hi\r\n\r\nbody\r\n"},
		{"998 octets untouched", x(998) + "\r\n", x(998) + "\r\n"},
		{"998 octets, no final CRLF", x(998), x(998)},
		{"999 octets", x(999) + "\r\n", x(998) + "\r\n x\r\n"},
		{"header continued with a space", "Subject: " + x(1000) + "\r\n\r\nb\r\n", "Subject: " + x(989) + "\r\n " + x(11) + "\r\n\r\nb\r\n"},
		{"a bare CR counts as content", x(998) + "\ry\r\n", x(998) + "\r\n \ry\r\n"},
		{"a final CR alone", x(998) + "\r", x(998) + "\r\n \r"},
		{"a bare LF ends a line", x(998) + "\n" + x(998) + "\n", x(998) + "\n" + x(998) + "\n"},
		{"every piece is at most 998", x(2000) + "\r\n", x(998) + "\r\n " + x(997) + "\r\n " + x(5) + "\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fold(t, tc.in); got != tc.want {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}

	// Random messages: whatever the reads' sizes, every line fits, and
	// unfolding gives the message back.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		var b strings.Builder
		for range 1 + rng.IntN(20) {
			b.WriteString("a" + strings.Repeat("yz", rng.IntN(3000)) + "\r\n")
		}
		in := b.String()
		whole := fold(t, in)
		checkLines(t, whole)
		if unfold(whole) != in {
			t.Fatal("unfolding does not give the message back")
		}
		var small bytes.Buffer
		if _, err := io.CopyBuffer(&small, iotest.OneByteReader(newFolder(iotest.HalfReader(strings.NewReader(in)))), make([]byte, 7)); err != nil {
			t.Fatal(err)
		}
		if small.String() != whole {
			t.Fatal("the output depends on the size of the reads")
		}
	}
}

// longMsg is a message with a long header field and long body lines, as
// unwrapped HTML and one-line base64 make them.
func longMsg() string {
	return "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: long lines\r\n" +
		"X-Long: " + strings.Repeat("h", 1500) + "\r\nMessage-ID: <long@example.test>\r\n\r\n<p>" +
		strings.Repeat("unwrapped html ", 5000/15) + "</p>\r\n" +
		strings.Repeat("QUJD", 100000/4) + "\r\n.a dot\r\nend\r\n"
}

// TestLongLinesFolded: a message with lines over 998 octets, relayed to a
// server that refuses them (as RFC 5321 §4.5.3.1.6 allows), is delivered
// folded the way Postfix folds it, and its DKIM signature, made after the
// folding, verifies at the receiver.
func TestLongLinesFolded(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "dkim")
	recs, err := dkim.KeygenAll(keys, localDomain)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *Options) { o.Signer = dkim.NewSigner(keys) })
	srv := newServer(t, srvConfig{dataDone: func(n int, msg string) string {
		for _, l := range strings.SplitAfter(msg, "\r\n") {
			if len(l) > 1000 {
				return "500 5.5.2 line too long"
			}
		}
		return ""
	}})
	e.route("remote.test", srv)
	msg := longMsg()
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{AuthUser: "alice@example.test"}, msg)
	e.runOnce()
	m := srv.messages()
	if len(m) != 1 {
		t.Fatalf("not delivered: %+v", e.entries())
	}
	got := m[0].data
	checkLines(t, got)
	// The signature fields come first; the rest is the message, folded.
	i := strings.Index(got, "From: alice@example.test\r\n")
	if i < 0 || unfold(got[i:]) != msg {
		t.Fatal("the delivered message is not the original folded")
	}
	vs, err := msgdkim.VerifyWithOptions(strings.NewReader(got), &msgdkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		for _, r := range recs {
			if strings.TrimSuffix(name, ".") == r.Name {
				return []string{r.Value}, nil
			}
		}
		return nil, errors.New("no such record")
	}})
	if err != nil || len(vs) == 0 {
		t.Fatalf("%d verifications, %v", len(vs), err)
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("DKIM verification failed: %v", v.Err)
		}
	}
}

// TestLongLinesLocalIntact: a queued message for local recipients only is
// not folded: the mailbox gets it byte for byte.
func TestLongLinesLocalIntact(t *testing.T) {
	e := newEnv(t, nil)
	msg := longMsg()
	e.enqueue("someone@remote.test", []string{"alice@example.test"}, envelope.DSNParams{}, msg)
	e.runOnce()
	got := e.mailbox("alice@example.test")
	if len(got) != 1 || !strings.HasSuffix(got[0], "\r\n"+msg) {
		t.Fatal("the local copy is not the message as it came")
	}
}

// TestWriteDataFolds: the SMTP client folds long lines of whatever it
// sends (a message queued without folding, such as one queued by an
// earlier version), after dot-stuffing has been decided on the original
// lines.
func TestWriteDataFolds(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := newClient(context.Background(), a, "mx.test", 5*time.Second)
	in := ".dot " + strings.Repeat("x", 2000) + "\r\nend\r\n"
	done := make(chan error, 1)
	go func() { done <- c.writeData(strings.NewReader(in)) }()
	var got strings.Builder
	br := bufio.NewReader(b)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == ".\r\n" {
			break
		}
		got.WriteString(l)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := ".." + "dot " + strings.Repeat("x", 993) + "\r\n " + strings.Repeat("x", 997) + "\r\n " + strings.Repeat("x", 10) + "\r\nend\r\n"
	if got.String() != want {
		t.Fatalf("got %q\nwant %q", got.String(), want)
	}
}

// BenchmarkFolder measures the folding pass on a 1 MiB message of
// ordinary 76-octet lines (nothing to fold, the common case) and on one
// 1 MiB line.
func BenchmarkFolder(b *testing.B) {
	for name, msg := range map[string]string{
		"short-lines": strings.Repeat(strings.Repeat("q", 76)+"\r\n", 1<<20/78),
		"one-line":    strings.Repeat("q", 1<<20) + "\r\n",
	} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				io.Copy(io.Discard, newFolder(strings.NewReader(msg)))
			}
		})
	}
}
