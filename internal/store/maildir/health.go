package maildir

import (
	"context"
	"fmt"
	"os"
	"strconv"
)

// probeName is the file Check writes in the root; a domain cannot start
// with '.', so it cannot collide with a mailbox.
const probeName = ".postino-probe-"

// Check reports whether the store can take mail now: the root's path
// still names the folder the store opened (not one moved away, nor a
// mount point whose file system is gone), and a small file can be
// created, written, fsync'd and removed in it, as a delivery would.
func (s *Store) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	held, err := s.root.Stat(".")
	if err != nil {
		return fmt.Errorf("mail folder unreachable: %w", err)
	}
	named, err := os.Stat(s.root.Name())
	if err != nil {
		return fmt.Errorf("mail folder unreachable: %w", err)
	}
	if !os.SameFile(held, named) {
		return fmt.Errorf("mail folder unreachable: %s is no longer the folder opened at start", s.root.Name())
	}
	p := probeName + strconv.Itoa(s.pid) + "-" + strconv.FormatUint(s.counter.Add(1), 10)
	f, err := s.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return fmt.Errorf("mail folder not writable: %w", err)
	}
	_, err = f.Write([]byte("probe\n"))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := s.root.Remove(p); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("mail folder not writable: %w", err)
	}
	return nil
}
