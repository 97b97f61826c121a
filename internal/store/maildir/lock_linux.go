package maildir

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// errWouldBlock is returned when another session holds the lock.
var errWouldBlock = errors.New("lock held")

// locksName is the file, at the top of the mail root, whose byte ranges
// stand for the mailboxes' maildrop locks.
const locksName = ".postino-locks"

// osLocker takes cross-process maildrop locks on Linux as open file
// description (OFD) locks on one byte per mailbox of one shared file. One
// descriptor serves every session of the process (a per-mailbox lock file
// would cost a descriptor per idle session), and the kernel drops the
// locks when the process dies, so a crash never leaves one held.
type osLocker struct {
	f *os.File
}

// lockOffset maps a mailbox to its byte in the lock file. With 62-bit
// offsets, two mailboxes sharing one (which would make each refuse the
// other as in use) is vanishingly unlikely.
func lockOffset(dir string) int64 {
	h := fnv.New64a()
	io.WriteString(h, dir)
	return int64(h.Sum64() & (1<<62 - 1))
}

func (o *osLocker) lock(s *Store, dir string) (func() error, error) {
	if o.f == nil {
		f, err := s.root.OpenFile(locksName, os.O_RDWR|os.O_CREATE, filePerm)
		if err != nil {
			return nil, fmt.Errorf("maildir: opening %s: %w", locksName, err)
		}
		o.f = f
	}
	off := lockOffset(dir)
	if err := o.fcntl(unix.F_WRLCK, off); err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, errWouldBlock
		}
		return nil, fmt.Errorf("maildir: locking %s: %w", dir, err)
	}
	return func() error { return o.fcntl(unix.F_UNLCK, off) }, nil
}

func (o *osLocker) fcntl(typ int16, off int64) error {
	lk := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: off, Len: 1}
	rc, err := o.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		for {
			ferr = unix.FcntlFlock(fd, unix.F_OFD_SETLK, &lk)
			if ferr != unix.EINTR {
				break
			}
		}
	})
	if err != nil {
		return err
	}
	return ferr
}

// close releases every lock of this Store.
func (o *osLocker) close() error {
	if o.f == nil {
		return nil
	}
	err := o.f.Close()
	o.f = nil
	return err
}
