//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package maildir

import (
	"errors"
	"os"
	"syscall"
)

// errWouldBlock is returned by tryLock when another open file description
// holds the lock.
var errWouldBlock = errors.New("lock held")

// tryLock takes an exclusive, non-blocking flock(2) on f.
func tryLock(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
			if ferr != syscall.EINTR {
				break
			}
		}
	})
	if err != nil {
		return err
	}
	if ferr == syscall.EWOULDBLOCK || ferr == syscall.EAGAIN {
		return errWouldBlock
	}
	return ferr
}

// osLocker takes cross-process maildrop locks as flock(2) on a lock file
// in each Maildir, held open for the session.
type osLocker struct{}

func (osLocker) lock(s *Store, dir string) (func() error, error) {
	lockPath := dir + "/" + lockName
	lf, err := s.root.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, filePerm)
	if err != nil {
		return nil, err
	}
	if err := tryLock(lf); err != nil {
		lf.Close()
		return nil, err
	}
	return lf.Close, nil // closing the descriptor releases the flock
}

func (osLocker) close() error { return nil }
