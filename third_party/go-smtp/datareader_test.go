package smtp

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

// TestDataReaderDotStuffing (postino): the data reader removes the dot of
// dot-stuffing (RFC 5321 §4.5.2) and keeps every other octet, in
// particular the CR of a line that starts with a dot and a bare CR.
func TestDataReaderDotStuffing(t *testing.T) {
	for _, c := range []struct{ wire, want string }{
		{"a\r\n..b\r\n.\r\n", "a\r\n.b\r\n"},
		{"a\r\n.\rb\r\n.\r\n", "a\r\n\rb\r\n"},
		{".\rb\r\n.\r\n", "\rb\r\n"},
		{"a\r\n.\r.\r\n.\r\n", "a\r\n\r.\r\n"},
		// The CR after ".\r" ends the line: the end-of-data line follows.
		{"a\r\n.\r\r\n.\r\n", "a\r\n\r\r\n"},
		{"a\r\n.\nb\r\n.\r\n", "a\r\n\nb\r\n"},
		{"a\n.\nb\r\n.\r\n", "a\n.\nb\r\n"},
		{"a\r.\r\nb\r\n.\r\n", "a\r.\r\nb\r\n"},
	} {
		br := bufio.NewReader(strings.NewReader(c.wire + "NEXT"))
		got, err := io.ReadAll(&dataReader{r: br})
		if err != nil || string(got) != c.want {
			t.Errorf("%q: read %q, %v; want %q", c.wire, got, err, c.want)
		}
		if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
			t.Errorf("%q: left %q after the end of data, want \"NEXT\"", c.wire, rest)
		}
	}
}
