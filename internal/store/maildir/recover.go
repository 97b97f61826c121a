package maildir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// RecoverJournals completes every commit journal left in the journal
// folder by a crash or by a failed unlink, so that no program reading the
// Maildirs (Dovecot, mutt, a backup) sees half of a POP3 UPDATE once this
// returns. It lists one folder, not every mailbox. Each journal is
// completed under its mailbox's lock; a mailbox locked by another process
// is skipped, since whoever holds its lock completed the journal when
// opening it. Journals from earlier versions, kept in the Maildir itself,
// are still completed by the next OpenMaildrop. It returns how many
// journals were completed; the error joins those of the mailboxes that
// failed.
func (s *Store) RecoverJournals(ctx context.Context) (int, error) {
	f, err := s.root.Open(journalDir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("maildir: opening %s: %w", journalDir, err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("maildir: listing %s: %w", journalDir, err)
	}
	done := 0
	var errs []error
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		if strings.HasSuffix(name, ".tmp") || strings.HasPrefix(name, ".") {
			continue // void, and removed under the lock by OpenMaildrop
		}
		ok, err := s.recoverOne(journalDir + "/" + name)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			done++
		}
	}
	return done, errors.Join(errs...)
}

// recoverOne completes the journal at p under its mailbox's lock. It
// reports whether the journal was completed.
func (s *Store) recoverOne(p string) (bool, error) {
	data, err := s.root.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // completed meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("maildir: reading %s: %w", p, err)
	}
	dir, _, _, ok := parseJournal(data)
	if !ok || dir == "" || journalPath(dir) != p {
		// Journals are renamed into place complete: this is damage
		// from outside, and without a valid Maildir it names no lock
		// to take. Deleting nothing is the safe outcome.
		s.logger.Error("maildir: discarding corrupt commit journal", "path", p)
		if err := s.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("maildir: removing %s: %w", p, err)
		}
		return false, s.syncDir(journalDir)
	}
	unlock, err := s.lockMailbox(dir)
	if errors.Is(err, errWouldBlock) {
		s.logger.Info("maildir: mailbox in use; its commit journal is completed by its session", "dir", dir)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("maildir: locking %s: %w", dir, err)
	}
	defer unlock()
	if _, err := s.root.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		// The mailbox was removed meanwhile: nothing is left to delete.
		s.logger.Warn("maildir: dropping the commit journal of a mailbox that no longer exists", "dir", dir)
		if err := s.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("maildir: removing %s: %w", p, err)
		}
		return true, s.syncDir(journalDir)
	}
	if err := s.recoverJournal(dir); err != nil {
		return false, err
	}
	return true, nil
}
