package maildir

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/store"
)

// The usage cache keeps, per mailbox, the number of messages and the sum
// of their stored sizes (the S= field of the file names, which is what
// Dovecot's Maildir++ quota counts), with the modification times of new/
// and cur/ at the time they were counted. Usage returns the cached figures
// while both times are unchanged, so a quota check costs two stat calls;
// Deliver adds each message it stores to the figures and records the new
// times, so a stream of deliveries never lists the directories again.
// Anything else that changes new/ or cur/ (a POP3 commit, another program
// delivering or deleting) changes a time, and the next Usage lists the
// names again (names only: no stat, no body read, except for a file whose
// name lacks S=).
//
// Within the process the figures are exact: a listing holds its mailbox's
// stripe lock exclusively while the renames of Deliver into new/ and their
// counting hold it shared, so that every message is counted exactly once,
// either by the listing or by its delivery. Changes by other programs are
// seen through the modification times, so one made within a file system
// timestamp tick of a listing, or between a delivery's rename and its stat
// of new/, can be missed until the next change. And a check is not a
// reservation: deliveries racing each other may all find room, so, as with
// Dovecot, a mailbox can exceed its quota by about one message per
// concurrent delivery.
type usageCache struct {
	mu      sync.Mutex
	m       map[string]*usageEntry
	stripes [64]sync.RWMutex
}

// stripe returns the lock that orders listings of dir against deliveries
// into it.
func (c *usageCache) stripe(dir string) *sync.RWMutex {
	h := fnv.New32a()
	h.Write([]byte(dir))
	return &c.stripes[h.Sum32()%uint32(len(c.stripes))]
}

// countRename returns the aroundRename hook of Deliver: the rename into
// new/ of dir and its counting happen together, never during a listing.
func (c *usageCache) countRename(s *Store, dir string) func(string, func() error) error {
	return func(name string, rename func() error) error {
		mu := c.stripe(dir)
		mu.RLock()
		defer mu.RUnlock()
		if err := rename(); err != nil {
			return err
		}
		s.addUsage(dir, parseName(name).size)
		return nil
	}
}

type usageEntry struct {
	newMod, curMod time.Time
	count          int
	bytes          int64
}

// usageCacheMax bounds the mailboxes whose usage is remembered.
const usageCacheMax = 4096

var _ store.UsageReporter = (*Store)(nil)

// Usage returns the number of messages in mailbox and the sum of their
// stored sizes in octets (the S= fields of their names; a file without one
// is stat'ed). A mailbox that does not exist yet is empty. It never reads
// a message body, and returns cached figures while the mailbox is
// unchanged (see usageCache for the accuracy).
func (s *Store) Usage(ctx context.Context, mailbox string) (count int, bytes int64, err error) {
	dir, err := mailboxDir(mailbox)
	if err != nil {
		return 0, 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	n, c, ok, err := s.subdirTimes(dir)
	if err != nil || !ok {
		return 0, 0, err
	}
	s.usage.mu.Lock()
	if e := s.usage.m[dir]; e != nil && e.newMod.Equal(n) && e.curMod.Equal(c) {
		count, bytes = e.count, e.bytes
		s.usage.mu.Unlock()
		return count, bytes, nil
	}
	s.usage.mu.Unlock()
	// No delivery of this process renames into new/ while it is listed.
	mu := s.usage.stripe(dir)
	mu.Lock()
	defer mu.Unlock()
	if n, c, ok, err = s.subdirTimes(dir); err != nil || !ok {
		return 0, 0, err
	}
	e := &usageEntry{newMod: n, curMod: c}
	for _, sub := range [...]string{"new", "cur"} {
		names, err := s.readNames(dir + "/" + sub)
		if err != nil {
			return 0, 0, err
		}
		for i, name := range names {
			if i%1024 == 1023 {
				if err := ctx.Err(); err != nil {
					return 0, 0, err
				}
			}
			if name == "" || name[0] == '.' {
				continue
			}
			size := parseName(name).size
			if size < 0 {
				fi, err := s.root.Lstat(dir + "/" + sub + "/" + name)
				if err != nil || !fi.Mode().IsRegular() {
					continue // gone meanwhile, or not a message
				}
				size = fi.Size()
			}
			e.count++
			e.bytes += size
		}
	}
	s.usage.mu.Lock()
	defer s.usage.mu.Unlock()
	if s.usage.m == nil {
		s.usage.m = make(map[string]*usageEntry)
	}
	for k := range s.usage.m {
		if len(s.usage.m) < usageCacheMax {
			break
		}
		delete(s.usage.m, k)
	}
	s.usage.m[dir] = e
	return e.count, e.bytes, nil
}

// subdirTimes returns the modification times of dir/new and dir/cur; ok is
// false when the Maildir does not exist.
func (s *Store) subdirTimes(dir string) (newMod, curMod time.Time, ok bool, err error) {
	n, err := s.root.Stat(dir + "/new")
	if err == nil {
		var c fs.FileInfo
		if c, err = s.root.Stat(dir + "/cur"); err == nil {
			return n.ModTime(), c.ModTime(), true, nil
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, time.Time{}, false, nil
	}
	return time.Time{}, time.Time{}, false, fmt.Errorf("maildir: %w", err)
}

// addUsage counts a message of stored size that Deliver has just put into
// new/ of dir, when the usage of dir is cached.
func (s *Store) addUsage(dir string, size int64) {
	s.usage.mu.Lock()
	defer s.usage.mu.Unlock()
	e := s.usage.m[dir]
	if e == nil {
		return
	}
	n, c, ok, err := s.subdirTimes(dir)
	if err != nil || !ok {
		delete(s.usage.m, dir)
		return
	}
	if !c.Equal(e.curMod) {
		// Something else changed cur/: count again next time.
		delete(s.usage.m, dir)
		return
	}
	e.newMod = n
	e.count++
	e.bytes += size
}

// forgetUsage drops the cached usage of dir.
func (s *Store) forgetUsage(dir string) {
	s.usage.mu.Lock()
	delete(s.usage.m, dir)
	s.usage.mu.Unlock()
}

// RemoveMailbox deletes the mailbox and the user's directory that holds it
// (ROOT/domain/local), under the maildrop lock: it returns store.ErrLocked
// while a POP3 session has the mailbox open. Every path stays inside the
// root (os.Root), and mailbox names that could reach outside their user's
// directory are store.ErrNoMailbox. A mailbox that does not exist is not
// an error.
func (s *Store) RemoveMailbox(ctx context.Context, mailbox string) error {
	return s.RemoveMailboxWith(ctx, mailbox, nil)
}

// RemoveMailboxWith is RemoveMailbox that first runs before (when not nil)
// while it holds the maildrop lock: the mailbox is removed only if before
// succeeds, and no POP3 session can open it in between (RFC 1939 §8: the
// lock is exclusive), so the two happen together or not at all. With the
// lock held by a session it returns store.ErrLocked without running
// before. A mailbox that does not exist is not an error; before runs.
func (s *Store) RemoveMailboxWith(ctx context.Context, mailbox string, before func(context.Context) error) error {
	dir, err := mailboxDir(mailbox)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if before == nil {
		before = func(context.Context) error { return nil }
	}
	userDir := path.Dir(dir)
	if _, err := s.root.Lstat(userDir); errors.Is(err, fs.ErrNotExist) {
		// No mailbox: nothing to lock (the lock file of other systems
		// than Linux lives in the Maildir) and nothing to remove.
		return before(ctx)
	}
	unlock, err := s.lockMailbox(dir)
	if err != nil {
		if errors.Is(err, errWouldBlock) {
			return store.ErrLocked
		}
		return fmt.Errorf("maildir: locking %s: %w", dir, err)
	}
	defer unlock()
	if err := before(ctx); err != nil {
		return err
	}
	s.forgetUsage(dir)
	s.scans.mu.Lock()
	delete(s.scans.m, dir)
	s.scans.mu.Unlock()
	if err := s.root.RemoveAll(userDir); err != nil {
		return fmt.Errorf("maildir: removing %s: %w", userDir, err)
	}
	// A journal of this mailbox would name a folder that is gone.
	if err := s.root.Remove(journalPath(dir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.logger.Warn("maildir: removing the journal of a removed mailbox", "dir", dir, "err", err)
	}
	if err := s.syncDir(path.Dir(userDir)); err != nil {
		return err
	}
	s.logger.Info("maildir: mailbox removed", "mailbox", mailbox, "dir", userDir)
	return nil
}
