package pop3

import (
	"errors"
	"time"
)

// Revocable is implemented by a Maildrop whose lock can be lost while the
// session runs, such as a lease in a database shared by several servers
// that could not be renewed. Done is closed when the session must end:
// the server then ends it without entering the UPDATE state, answering
// "-ERR [SYS/TEMP]" when it was waiting for a command (a transfer in
// progress fails, and the connection is dropped). A nil channel is never
// closed.
type Revocable interface {
	Done() <-chan struct{}
}

// errRevoked is readLine's error once the maildrop's lock is lost.
var errRevoked = errors.New("maildrop lock lost")

// watchRevocation ends the session when drop's lock is lost.
func (s *session) watchRevocation(drop Maildrop) {
	r, ok := drop.(Revocable)
	if !ok {
		return
	}
	done := r.Done()
	if done == nil {
		return
	}
	log, user := s.log, s.authUser // not read by the session's goroutine's later writes
	go func() {
		select {
		case <-done:
			s.intMu.Lock()
			s.revoked = true
			s.intMu.Unlock()
			log.Warn("maildrop lock lost, ending the session", "user", user)
			// Wake a session blocked reading its next command.
			s.conn.SetReadDeadline(time.Now())
		case <-s.ctx.Done():
		}
	}()
}

func (s *session) isRevoked() bool {
	s.intMu.Lock()
	defer s.intMu.Unlock()
	return s.revoked
}
