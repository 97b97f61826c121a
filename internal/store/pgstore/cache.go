package pgstore

import (
	"bytes"
	"container/list"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/postino-mail/postino/internal/fsutil"
)

// BlobCache is a node's cache of message contents on its local disk, as
// Dovecot's fscache is for its object storage: a download whose content
// is cached costs the blob store nothing, and goes out with sendfile(2)
// when the connection allows it.
//
// It holds no state of its own. Contents are immutable and named by the
// SHA-256 of their octets (the blob key), so an entry is never stale:
// whatever blob store the key came from, the octets are the same. A
// content enters the cache only after it was read whole from the blob
// store and its SHA-256 matched the key. Entries are removed least
// recently used first once the cache outgrows its limit.
//
// Files are written without fsync: a crash can leave a renamed file
// whose octets never reached the disk. So the folder holds a marker,
// written when the cache is closed after syncing the file system and
// removed when it is opened; a cache opened without the marker (the last
// process crashed) is emptied first.
//
// Layout: DIR/xx/KEY (xx: the key's first two hex digits), with the
// suffix ".dot" when some line of the content starts with "." (RFC 1939
// §3: such lines are dot-stuffed on the wire, so those contents cannot be
// sent as they are); DIR/tmp holds files being filled.
type BlobCache struct {
	dir   string
	limit int64
	log   *slog.Logger

	mu      sync.Mutex
	ents    map[string]*list.Element // key → *cacheEntry
	lru     *list.List               // front: most recently used
	used    int64
	filling map[string]bool // keys being filled
	closed  bool            // Close began: nothing enters any more
}

// cacheEntry is one cached content.
type cacheEntry struct {
	key  string
	size int64
	dot  bool // some line starts with "."
}

// cleanMarker names the file that says the cache was closed cleanly.
const cleanMarker = "clean"

// OpenBlobCache opens (creating it if needed) the cache in dir, holding
// at most limit octets of contents.
func OpenBlobCache(dir string, limit int64, logger *slog.Logger) (*BlobCache, error) {
	if limit <= 0 {
		return nil, errors.New("pgstore: blob cache size must be positive")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	c := &BlobCache{dir: dir, limit: limit, log: logger, ents: map[string]*list.Element{}, lru: list.New(), filling: map[string]bool{}}
	marker := filepath.Join(dir, cleanMarker)
	if _, err := os.Stat(marker); err != nil {
		// Not closed cleanly (or new): nothing in it can be trusted.
		if err := c.empty(); err != nil {
			return nil, err
		}
	} else {
		if err := os.Remove(marker); err != nil {
			return nil, err
		}
		if err := fsutil.SyncDir(dir); err != nil {
			return nil, err
		}
		if err := c.load(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	c.evict()
	return c, nil
}

// empty removes the cache's contents: its own entries only (the two-hex-
// digit folders, tmp and the marker), so that a cache_dir set to a
// folder holding other files loses none of them.
func (c *BlobCache) empty() error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !ownEntry(e) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(c.dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// ownEntry reports whether e, in the cache folder, is one of the cache's
// own: a folder named by two lower-case hex digits, tmp, or the marker.
func ownEntry(e fs.DirEntry) bool {
	n := e.Name()
	switch {
	case n == cleanMarker:
		return !e.IsDir()
	case n == "tmp":
		return e.IsDir()
	}
	return e.IsDir() && len(n) == 2 && strings.Trim(n, "0123456789abcdef") == ""
}

// load indexes the files of a cache closed cleanly, the most recently
// modified first. In its two-hex-digit folders, a file that is not a
// content of the cache (a name that is not its folder's key) is removed;
// nothing outside them is touched.
func (c *BlobCache) load() error {
	os.RemoveAll(filepath.Join(c.dir, "tmp"))
	type found struct {
		e     *cacheEntry
		mtime int64
	}
	var all []found
	dirs, err := os.ReadDir(c.dir)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if !ownEntry(d) || d.Name() == "tmp" || d.Name() == cleanMarker {
			continue
		}
		sub := filepath.Join(c.dir, d.Name())
		files, err := os.ReadDir(sub)
		if err != nil {
			return err
		}
		for _, f := range files {
			key, dot := strings.CutSuffix(f.Name(), ".dot")
			fi, ierr := f.Info()
			if ierr != nil || !fi.Mode().IsRegular() || !validKey(key) || key[:2] != d.Name() {
				os.RemoveAll(filepath.Join(sub, f.Name()))
				continue
			}
			all = append(all, found{&cacheEntry{key: key, size: fi.Size(), dot: dot}, fi.ModTime().UnixNano()})
		}
	}
	slices.SortFunc(all, func(a, b found) int { return int(min(max(b.mtime-a.mtime, -1), 1)) })
	for _, f := range all {
		if _, dup := c.ents[f.e.key]; dup {
			os.Remove(c.path(f.e))
			continue
		}
		c.ents[f.e.key] = c.lru.PushBack(f.e)
		c.used += f.e.size
	}
	c.log.Info("blob cache opened", "dir", c.dir, "entries", len(c.ents), "bytes", c.used)
	return nil
}

// validKey reports whether key is a hex SHA-256.
func validKey(key string) bool {
	if len(key) != 64 {
		return false
	}
	_, err := hex.DecodeString(key)
	return err == nil && strings.ToLower(key) == key
}

func (c *BlobCache) path(e *cacheEntry) string {
	name := e.key
	if e.dot {
		name += ".dot"
	}
	return filepath.Join(c.dir, e.key[:2], name)
}

// Close syncs the cache's file system and writes the marker that lets
// the next OpenBlobCache keep the contents. Fills that end after it
// began keep nothing: what the marker vouches for is on the disk.
func (c *BlobCache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	d, err := os.Open(c.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(c.dir, cleanMarker), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return d.Sync()
}

// Len returns the number of cached contents and their total size.
func (c *BlobCache) Len() (n int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ents), c.used
}

// has reports whether key's content is cached.
func (c *BlobCache) has(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ents[key]
	return ok
}

// cachedFile is an open cached content.
type cachedFile struct {
	f    *os.File
	size int64
	dot  bool
}

// open returns the cached content of key, or ok false. A file whose size
// is not size (removed or cut short behind the cache's back) is dropped.
func (c *BlobCache) open(key string, size int64) (cf cachedFile, ok bool) {
	c.mu.Lock()
	el, ok := c.ents[key]
	var e *cacheEntry
	if ok {
		e = el.Value.(*cacheEntry)
		c.lru.MoveToFront(el)
	}
	c.mu.Unlock()
	if !ok {
		return cachedFile{}, false
	}
	f, err := os.Open(c.path(e))
	if err == nil {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil && fi.Size() != size {
			err = fmt.Errorf("size %d, want %d", fi.Size(), size)
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		c.log.Warn("blob cache entry unusable, dropped", "key", key, "err", err)
		c.drop(key)
		return cachedFile{}, false
	}
	return cachedFile{f: f, size: size, dot: e.dot}, true
}

// drop removes key's entry and file.
func (c *BlobCache) drop(key string) {
	c.mu.Lock()
	el, ok := c.ents[key]
	if ok {
		e := el.Value.(*cacheEntry)
		c.lru.Remove(el)
		delete(c.ents, key)
		c.used -= e.size
		os.Remove(c.path(e))
	}
	c.mu.Unlock()
}

// evict removes the least recently used entries until the cache is
// within its limit. A file being sent stays readable by its sender.
func (c *BlobCache) evict() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evictLocked()
}

// evictLocked is evict with c.mu held.
func (c *BlobCache) evictLocked() {
	for c.used > c.limit {
		el := c.lru.Back()
		if el == nil {
			return
		}
		e := el.Value.(*cacheEntry)
		c.lru.Remove(el)
		delete(c.ents, e.key)
		c.used -= e.size
		os.Remove(c.path(e))
	}
}

// maxEntryFraction bounds one content to this fraction of the cache, so
// that a large message does not push everything else out.
const maxEntryFraction = 8

// fill returns a writer that caches key's content as it streams by, or
// nil when the content is too large for the cache or the temporary file
// cannot be made.
func (c *BlobCache) fill(key string, size int64) *cacheFill {
	if size > c.limit/maxEntryFraction || !validKey(key) {
		return nil
	}
	c.mu.Lock()
	if c.closed || c.filling[key] {
		// Another session is filling it already (a mailing list's
		// message downloaded by many at once): one copy is enough.
		c.mu.Unlock()
		return nil
	}
	c.filling[key] = true
	c.mu.Unlock()
	var rnd [8]byte
	rand.Read(rnd[:])
	f, err := os.OpenFile(filepath.Join(c.dir, "tmp", key+"."+hex.EncodeToString(rnd[:])), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		c.log.Warn("blob cache: cannot make a file", "err", err)
		c.doneFilling(key)
		return nil
	}
	return &cacheFill{c: c, f: f, key: key, want: size, bol: true}
}

var lfDot = []byte("\n.")

// doneFilling forgets that key is being filled.
func (c *BlobCache) doneFilling(key string) {
	c.mu.Lock()
	delete(c.filling, key)
	c.mu.Unlock()
}

// cacheFill writes one content into a temporary file of the cache, and
// moves it into place once the whole content was written and found to
// match its key.
type cacheFill struct {
	c    *BlobCache
	f    *os.File
	key  string
	want int64
	n    int64
	bol  bool // the next octet starts a line
	dot  bool // some line starts with "."
	err  error
}

func (w *cacheFill) write(p []byte) {
	if w.err != nil || len(p) == 0 {
		return
	}
	if !w.dot {
		if w.bol && p[0] == '.' {
			w.dot = true
		} else if bytes.Contains(p, lfDot) {
			w.dot = true
		}
	}
	w.bol = p[len(p)-1] == '\n'
	n, err := w.f.Write(p)
	w.n += int64(n)
	w.err = err
}

// commit puts the file in place; the content was read whole and matched
// its key.
func (w *cacheFill) commit() {
	defer w.c.doneFilling(w.key)
	name := w.f.Name()
	err := w.err
	if err == nil && w.n != w.want {
		err = fmt.Errorf("wrote %d octets, want %d", w.n, w.want)
	}
	if err == nil && !w.bol {
		// A wire form always ends with CRLF; pop3.FileMessage relies on
		// it (the final "." follows the file directly).
		err = errors.New("content does not end with a line end")
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	e := &cacheEntry{key: w.key, size: w.n, dot: w.dot}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(w.c.path(e)), 0o700)
	}
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	if err == nil && w.c.closed {
		err = errors.New("cache closed")
	}
	if err == nil {
		err = os.Rename(name, w.c.path(e))
	}
	if err != nil {
		os.Remove(name)
		w.c.log.Warn("blob cache: cannot keep a content", "key", w.key, "err", err)
		return
	}
	if _, dup := w.c.ents[w.key]; !dup {
		w.c.ents[w.key] = w.c.lru.PushFront(e)
		w.c.used += e.size
	}
	w.c.evictLocked()
}

// abort removes the temporary file.
func (w *cacheFill) abort() {
	w.f.Close()
	os.Remove(w.f.Name())
	w.c.doneFilling(w.key)
}

// fillingReader passes a blob's stream on and caches it: commit once the
// stream ended without error (after the verifier under it checked the
// key), abort otherwise.
type fillingReader struct {
	r    io.Reader
	fill *cacheFill
	done bool
}

func (r *fillingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if r.done {
		return n, err
	}
	r.fill.write(p[:n])
	switch {
	case err == io.EOF:
		r.done = true
		r.fill.commit()
	case err != nil:
		r.done = true
		r.fill.abort()
	}
	return n, err
}

// close aborts a fill the reader did not finish.
func (r *fillingReader) close() {
	if !r.done {
		r.done = true
		r.fill.abort()
	}
}
