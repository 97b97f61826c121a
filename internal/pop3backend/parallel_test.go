package pop3backend

import (
	"context"
	"errors"
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
