package crlf

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestNormalizer(t *testing.T) {
	tests := []struct {
		in, want  string
		bare      int
		rejectNUL bool
		err       error
	}{
		{"a\r\nb\r\n", "a\r\nb\r\n", 0, true, nil},
		{"a\nb\n", "a\r\nb\r\n", 2, true, nil},
		{"a\rb\r", "a\r\nb\r\n", 2, true, nil},
		{"a\r\r\nb", "a\r\n\r\nb", 1, true, nil},
		{"hello\r.\r\nMAIL", "hello\r\n.\r\nMAIL", 1, true, nil},
		{"", "", 0, true, nil},
		{"ok\r\nbad\x00", "", 0, true, ErrNUL},
		{"ok\nbad\x00\r", "ok\r\nbad\x00\r\n", 2, false, nil},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tt.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			n := NewNormalizer(r, tt.rejectNUL)
			got, err := io.ReadAll(n)
			if !errors.Is(err, tt.err) || (tt.err == nil && (string(got) != tt.want || n.Bare() != tt.bare)) {
				t.Errorf("normalize(%q, oneByte=%v) = %q, %d, %v; want %q, %d, %v", tt.in, oneByte, got, n.Bare(), err, tt.want, tt.bare, tt.err)
			}
		}
	}
}

// BenchmarkNormalizer measures the pass every queued message now makes
// through the normaliser: 1 MiB of 76-octet CRLF lines (nothing to
// rewrite, the common case) and of bare-LF lines.
func BenchmarkNormalizer(b *testing.B) {
	for name, msg := range map[string]string{
		"crlf":    strings.Repeat(strings.Repeat("q", 76)+"\r\n", 1<<20/78),
		"bare-lf": strings.Repeat(strings.Repeat("q", 76)+"\n", 1<<20/77),
	} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				io.Copy(io.Discard, NewNormalizer(strings.NewReader(msg), false))
			}
		})
	}
}
