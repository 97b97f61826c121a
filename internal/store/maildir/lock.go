package maildir

import (
	"sync"
)

// processLocks records the mailboxes locked by sessions of this Store, so
// that a second session in the same process is refused without asking the
// kernel (whose locks are per open file description, not per session).
type processLocks struct {
	mu   sync.Mutex
	held map[string]bool
	osLocker
}

// lockMailbox takes the exclusive maildrop lock of the Maildir dir, in
// this process and across processes, and returns the function that
// releases it. It returns errWouldBlock when the lock is held.
func (s *Store) lockMailbox(dir string) (func() error, error) {
	l := &s.locks
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[dir] {
		return nil, errWouldBlock
	}
	release, err := l.lock(s, dir)
	if err != nil {
		return nil, err
	}
	if l.held == nil {
		l.held = make(map[string]bool)
	}
	l.held[dir] = true
	return func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.held, dir)
		return release()
	}, nil
}
