package pop3

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// deleScript answers CAPA (with PIPELINING when pipelining is set) and
// holds the answers to DELE until batch of them have arrived, so that a
// client that waits for each answer before the next DELE is stuck. A DELE
// of a number in refuse gets -ERR. The DELE numbers received are sent to
// got.
func deleScript(pipelining bool, batch int, refuse map[string]bool, got chan<- string) script {
	var held []string
	return func(cmd string, w io.Writer) error {
		switch {
		case cmd == "":
			_, err := io.WriteString(w, "+OK hostile POP3 server ready\r\n")
			return err
		case cmd == "CAPA":
			caps := "+OK\r\nUIDL\r\n"
			if pipelining {
				caps += "PIPELINING\r\n"
			}
			_, err := io.WriteString(w, caps+".\r\n")
			return err
		case strings.HasPrefix(cmd, "DELE "):
			n := strings.TrimPrefix(cmd, "DELE ")
			got <- n
			held = append(held, n)
			if len(held) < batch {
				return nil
			}
			for _, n := range held {
				ans := "+OK message " + n + " deleted\r\n"
				if refuse[n] {
					ans = "-ERR no such message\r\n"
				}
				if _, err := io.WriteString(w, ans); err != nil {
					return err
				}
			}
			held = nil
			return nil
		case cmd == "NOOP":
			_, err := io.WriteString(w, "+OK noop\r\n")
			return err
		}
		_, err := io.WriteString(w, "-ERR unknown\r\n")
		return err
	}
}

// TestClientDeleAllPipelined: with PIPELINING announced (RFC 2449 §6.6),
// DeleAll sends every DELE before reading an answer (the server answers
// only once it has them all), and reports the answers in order; over
// plain TCP, STARTTLS and implicit TLS.
func TestClientDeleAllPipelined(t *testing.T) {
	for _, transport := range []string{"plain", "starttls", "tls"} {
		t.Run(transport, func(t *testing.T) {
			got := make(chan string, 100)
			h := startHostile(t, transport, deleScript(true, 5, nil, got))
			c, err := dialHostile(t, transport, h)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Capabilities(); err != nil {
				t.Fatal(err)
			}
			// Stuck for good without pipelining: fail fast.
			c.Timeout = 5 * time.Second
			var answered []int
			err = c.DeleAll([]int{1, 2, 3, 4, 5}, func(n int) error {
				answered = append(answered, n)
				return nil
			})
			if err != nil {
				t.Fatalf("DeleAll: %v", err)
			}
			if fmt.Sprint(answered) != "[1 2 3 4 5]" {
				t.Fatalf("answers reported for %v, want [1 2 3 4 5]", answered)
			}
			if err := c.Noop(); err != nil {
				t.Fatalf("NOOP after DeleAll: %v", err)
			}
		})
	}
}

// TestClientDeleAllWithoutPipelining: a server that does not announce
// PIPELINING gets one DELE at a time: the client waits for each answer.
func TestClientDeleAllWithoutPipelining(t *testing.T) {
	got := make(chan string, 100)
	h := startHostile(t, "plain", deleScript(false, 1, nil, got))
	c, err := dialHostile(t, "plain", h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Capabilities(); err != nil {
		t.Fatal(err)
	}
	err = c.DeleAll([]int{1, 2, 3}, func(n int) error {
		// The answer to DELE n is read: the server has seen no later DELE.
		if len(got) != n {
			return fmt.Errorf("after the answer to DELE %d the server has %d commands, want %d", n, len(got), n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestClientDeleAllRefused: a hostile server refuses one DELE of a
// pipelined batch. DeleAll returns the *Error, reports no answer after it,
// reads the answers of the commands already sent, and the session stays
// in step: the next command gets its own answer.
func TestClientDeleAllRefused(t *testing.T) {
	got := make(chan string, 100)
	h := startHostile(t, "plain", deleScript(true, 4, map[string]bool{"2": true}, got))
	c, err := dialHostile(t, "plain", h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Capabilities(); err != nil {
		t.Fatal(err)
	}
	c.Timeout = 5 * time.Second
	var answered []int
	err = c.DeleAll([]int{1, 2, 3, 4}, func(n int) error {
		answered = append(answered, n)
		return nil
	})
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("DeleAll: %v, want a *pop3.Error", err)
	}
	if fmt.Sprint(answered) != "[1]" {
		t.Fatalf("answers reported for %v, want [1]", answered)
	}
	if err := c.Noop(); err != nil {
		t.Fatalf("NOOP after the refused DELE: %v (client and server out of step)", err)
	}
}
