//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package maildir

import (
	"errors"
	"os"
)

var errWouldBlock = errors.New("lock held")

// tryLock is not supported on this platform.
func tryLock(*os.File) error {
	return errors.New("maildir: flock is not supported on this platform")
}

type osLocker struct{}

func (osLocker) lock(*Store, string) (func() error, error) { return nil, tryLock(nil) }

func (osLocker) close() error { return nil }
