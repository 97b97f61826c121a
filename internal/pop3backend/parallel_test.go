package pop3backend

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postino-mail/postino/pop3"
)

// slowCheckBackend counts the password checks and makes each one slow,
// as a costly password hash is, so that guesses sent in parallel are all
// in progress at once.
type slowCheckBackend struct {
	*POP3Backend
	checks atomic.Int32 // Authenticate calls
	failed atomic.Int32 // LoginFailed calls: every check that failed, SCRAM proofs included
}

func (b *slowCheckBackend) Authenticate(ctx context.Context, ci *pop3.ConnInfo, username, password string) (string, error) {
	b.checks.Add(1)
	time.Sleep(100 * time.Millisecond)
	return b.POP3Backend.Authenticate(ctx, ci, username, password)
}

func (b *slowCheckBackend) LoginFailed(ctx context.Context, ci *pop3.ConnInfo, username string) {
	b.failed.Add(1)
	b.POP3Backend.LoginFailed(ctx, ci, username)
}

// TestGuardParallelGuesses: an attacker opening 40 connections at once
// and guessing one password on each, with any mechanism and transport,
// gets at most MaxFailures passwords checked; every other guess is
// refused with [LOGIN-DELAY] without a check, and nothing stays counted
// as in progress afterwards.
func TestGuardParallelGuesses(t *testing.T) {
	const maxFailures, guesses = 3, 40
	for _, mech := range mechanisms {
		for _, tr := range transports {
			t.Run(mech.name+"/"+tr, func(t *testing.T) {
				var b *slowCheckBackend
				e := startGuardedWrap(t, maxFailures, nil, func(pb *POP3Backend) pop3.Backend {
					b = &slowCheckBackend{POP3Backend: pb}
					return b
				})
				clients := make([]*pop3.Client, guesses)
				for i := range clients {
					clients[i] = e.dial(t, tr)
				}
				var refused, failedAuth atomic.Int32
				errs := make(chan error, guesses)
				var wg sync.WaitGroup
				start := make(chan struct{})
				for _, c := range clients {
					wg.Go(func() {
						<-start
						err := mech.login(c, "alice@example.test", "wrong pw")
						switch {
						case isLoginDelay(err):
							refused.Add(1)
						case errors.Is(err, pop3.ErrAuthFailed):
							failedAuth.Add(1)
						default:
							errs <- err
						}
					})
				}
				close(start)
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Errorf("guess answered %v, want [AUTH] or [LOGIN-DELAY]", err)
				}
				if n := b.failed.Load(); n > maxFailures || n != failedAuth.Load() {
					t.Errorf("%d credentials checked and failed (%d answered [AUTH]), want at most %d", n, failedAuth.Load(), maxFailures)
				}
				if n := b.checks.Load(); n > maxFailures {
					t.Errorf("%d passwords checked, want at most %d", n, maxFailures)
				}
				if n := refused.Load(); n < guesses-maxFailures {
					t.Errorf("%d guesses refused, want at least %d", n, guesses-maxFailures)
				}
				if n := e.guard.InFlight(); n != 0 {
					t.Errorf("%d attempts left in progress", n)
				}
			})
		}
	}
}

// TestGuardAttemptsEndWithoutOutcome: a login that ends without an
// outcome (a SCRAM exchange cancelled or dropped after its proof was
// checked, a PLAIN exchange cancelled, a USER/PASS exchange whose
// connection drops) leaves no attempt counted in progress: with
// MaxFailures 1, the right password still logs in afterwards.
func TestGuardAttemptsEndWithoutOutcome(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, c net.Conn, r *bufio.Reader)
	}{
		{"SCRAM cancelled after the server signature", func(t *testing.T, c net.Conn, r *bufio.Reader) {
			scramToServerFinal(t, c, r)
			fmt.Fprint(c, "*\r\n")
			expectLine(t, r, "-ERR")
		}},
		{"SCRAM dropped after the server signature", func(t *testing.T, c net.Conn, r *bufio.Reader) {
			scramToServerFinal(t, c, r)
		}},
		{"PLAIN cancelled", func(t *testing.T, c net.Conn, r *bufio.Reader) {
			fmt.Fprint(c, "AUTH PLAIN\r\n")
			expectLine(t, r, "+ ")
			fmt.Fprint(c, "*\r\n")
			expectLine(t, r, "-ERR")
		}},
		{"LOGIN dropped at the password prompt", func(t *testing.T, c net.Conn, r *bufio.Reader) {
			fmt.Fprintf(c, "AUTH LOGIN %s\r\n", b64([]byte("alice@example.test")))
			expectLine(t, r, "+ ")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startGuarded(t, 1)
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			expectLine(t, r, "+OK")
			tc.run(t, c, r)
			c.Close()
			deadline := time.Now().Add(5 * time.Second)
			for e.guard.InFlight() != 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if n := e.guard.InFlight(); n != 0 {
				t.Fatalf("%d attempts left in progress", n)
			}
			for _, m := range mechanisms {
				cl := e.dial(t, "plain")
				if err := m.login(cl, "alice@example.test", "right pw"); err != nil {
					t.Fatalf("%s with the right password afterwards: %v", m.name, err)
				}
				cl.Quit()
			}
		})
	}
}

// scramToServerFinal runs AUTH SCRAM-SHA-256 with the right password up
// to the server's signature, which it reads.
func scramToServerFinal(t *testing.T, c net.Conn, r *bufio.Reader) {
	t.Helper()
	b64 := base64.StdEncoding
	sc := pop3.NewSCRAMClient("alice@example.test", "right pw")
	_, ir, err := sc.Start()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "AUTH SCRAM-SHA-256 %s\r\n", b64.EncodeToString(ir))
	for range 2 {
		line := expectLine(t, r, "+ ")
		ch, err := b64.DecodeString(strings.TrimPrefix(line, "+ "))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(string(ch), "v=") {
			return
		}
		resp, err := sc.Next(ch)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "%s\r\n", b64.EncodeToString(resp))
	}
	t.Fatal("no server signature")
}

// expectLine reads a line and checks its start.
func expectLine(t *testing.T, r *bufio.Reader, prefix string) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, prefix) {
		t.Fatalf("read %q, %v; want %q...", line, err, prefix)
	}
	return strings.TrimRight(line, "\r\n")
}
