package testutil

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// SMTPSink is a loopback SMTP server that stands in for a remote MX in
// tests: it accepts every command and every message, and keeps each
// command line and the raw octets of each DATA phase exactly as they came
// over the wire (up to and including the CRLF.CRLF that ends them, with
// no dot-unstuffing), so a test can check what a next hop really got.
type SMTPSink struct {
	// Addr is the sink's host:port on 127.0.0.1.
	Addr string

	mu    sync.Mutex
	cmds  []string
	data  [][]byte
	rcpts []string
}

// NewSMTPSink starts an SMTPSink on a free loopback port; it stops when
// the test ends.
func NewSMTPSink(t testing.TB) *SMTPSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &SMTPSink{Addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *SMTPSink) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	fmt.Fprint(c, "220 sink.test ESMTP\r\n")
	var rcpts []string // of the transaction under way
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		s.mu.Lock()
		s.cmds = append(s.cmds, strings.TrimRight(line, "\r\n"))
		s.mu.Unlock()
		switch verb := strings.ToUpper(strings.Fields(line + " x")[0]); verb {
		case "EHLO", "HELO", "LHLO":
			fmt.Fprint(c, "250-sink.test\r\n250 8BITMIME\r\n")
		case "RCPT":
			if _, to, ok := strings.Cut(line, ":"); ok {
				rcpts = append(rcpts, strings.Trim(strings.TrimSpace(to), "<>"))
			}
			fmt.Fprint(c, "250 ok\r\n")
		case "RSET":
			rcpts = nil
			fmt.Fprint(c, "250 ok\r\n")
		case "DATA":
			fmt.Fprint(c, "354 go on\r\n")
			// RFC 5321 §4.1.1.4: the data ends at the first CRLF.CRLF
			// (the one at the very start counts too: an empty message).
			raw := []byte("\r\n")
			for !bytes.HasSuffix(raw, []byte("\r\n.\r\n")) {
				b, err := br.ReadByte()
				if err != nil {
					return
				}
				raw = append(raw, b)
			}
			s.mu.Lock()
			s.data = append(s.data, raw[2:])
			s.rcpts = append(s.rcpts, rcpts...)
			s.mu.Unlock()
			rcpts = nil
			fmt.Fprint(c, "250 2.0.0 accepted\r\n")
		case "QUIT":
			fmt.Fprint(c, "221 bye\r\n")
			return
		default:
			fmt.Fprint(c, "250 ok\r\n")
		}
	}
}

// Commands returns the command lines received so far, without their
// CRLF, over every connection.
func (s *SMTPSink) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

// Raw returns the raw DATA phases received so far, each ending in
// CRLF.CRLF.
func (s *SMTPSink) Raw() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.data...)
}

// Recipients returns the recipients (RCPT TO addresses, without the
// angle brackets) of the messages received so far, in order.
func (s *SMTPSink) Recipients() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.rcpts...)
}

// Messages returns the messages received so far as text, each without
// its final "." line (still dot-stuffed, as on the wire).
func (s *SMTPSink) Messages() []string {
	raw := s.Raw()
	out := make([]string, len(raw))
	for i, r := range raw {
		out[i] = string(bytes.TrimSuffix(r, []byte(".\r\n")))
	}
	return out
}
