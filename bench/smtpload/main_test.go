package main

import "testing"

// TestWireMessage: a message file is sent with CRLF line ends, a final
// line end and leading dots doubled, whatever its line ends were.
func TestWireMessage(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"From: a\n\nbody\n", "From: a\r\n\r\nbody\r\n"},
		{"From: a\r\n\r\nbody", "From: a\r\n\r\nbody\r\n"},
		{"Subject: x\n\n.\n..two\nend.\n", "Subject: x\r\n\r\n..\r\n...two\r\nend.\r\n"},
		{"A: b\r\n\r\n.hidden\r\n", "A: b\r\n\r\n..hidden\r\n"},
	} {
		if got := string(wireMessage([]byte(tc.in))); got != tc.want {
			t.Errorf("wireMessage(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
