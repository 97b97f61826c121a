package maildir

import (
	"errors"
	"io/fs"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/store"
)

// The scan cache makes a login to a large, unchanged mailbox cost two
// stat calls instead of a directory listing: a snapshot of new/ and cur/ is
// reused while both directories keep the modification times they had when
// it was taken. A snapshot is kept only when both times were older than
// scanCacheMargin at the moment of listing, so that a change made within
// the file system's timestamp granularity after the listing cannot leave
// the time unchanged (the "racy timestamp" rule).
const (
	scanCacheMin    = 1000 // smaller mailboxes are listed every time
	scanCacheMax    = 64   // mailboxes kept
	scanCacheMargin = 2 * time.Second
)

// scanKey also covers dovecot-uidlist (zero time and size -1 when absent),
// from which UIDLs are taken.
type scanKey struct {
	newMod, curMod time.Time
	listMod        time.Time
	listSize       int64
}

type scanEntry struct {
	key   scanKey
	msgs  []message
	infos []store.MessageInfo
}

type scanCache struct {
	mu sync.Mutex
	m  map[string]*scanEntry
}

// dirTimes returns the modification times of dir/new and dir/cur, and
// those of dir/dovecot-uidlist when UIDLs are imported from it.
func (s *Store) dirTimes(dir string) (scanKey, bool) {
	n, err1 := s.root.Stat(dir + "/new")
	c, err2 := s.root.Stat(dir + "/cur")
	if err1 != nil || err2 != nil {
		return scanKey{}, false
	}
	k := scanKey{newMod: n.ModTime(), curMod: c.ModTime(), listSize: -1}
	if s.importUIDLs {
		l, err := s.root.Stat(dir + "/" + uidlistName)
		switch {
		case err == nil:
			k.listMod, k.listSize = l.ModTime(), l.Size()
		case !errors.Is(err, fs.ErrNotExist):
			return scanKey{}, false
		}
	}
	return k, true
}

// cachedScan fills md from the cache when the mailbox is unchanged.
func (md *Maildrop) cachedScan(key scanKey) bool {
	c := &md.s.scans
	c.mu.Lock()
	e := c.m[md.dir]
	c.mu.Unlock()
	if e == nil || e.key != key {
		return false
	}
	// Shared read-only; Open copies the messages before recording that
	// one has moved.
	md.msgs, md.shared = e.msgs, true
	md.infos = e.infos
	return true
}

// rememberScan keeps md's snapshot when it is large and was taken of
// directories that had been quiet for scanCacheMargin.
func (md *Maildrop) rememberScan(key scanKey, listedAt time.Time) {
	c := &md.s.scans
	if len(md.msgs) < scanCacheMin || listedAt.Sub(key.newMod) < scanCacheMargin || listedAt.Sub(key.curMod) < scanCacheMargin ||
		key.listSize >= 0 && listedAt.Sub(key.listMod) < scanCacheMargin {
		c.mu.Lock()
		delete(c.m, md.dir)
		c.mu.Unlock()
		return
	}
	e := &scanEntry{key: key, msgs: md.msgs, infos: md.infos}
	md.shared = true
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]*scanEntry)
	}
	for k := range c.m {
		if len(c.m) < scanCacheMax {
			break
		}
		delete(c.m, k)
	}
	c.m[md.dir] = e
}
