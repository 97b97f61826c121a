package maildir

import (
	"bytes"
	"strconv"
	"strings"
)

// sizeCache remembers the wire sizes of messages delivered by other
// programs without a W= field, in the file Maildir/postino-sizes. Each
// line after the header is
//
//	<quoted base> <file size> <wire size>
//
// An entry is used only when the file size still matches, and entries of
// messages no longer present are dropped when the cache is rewritten. The
// cache is only an optimisation: a missing or damaged file just means the
// messages are read again.
type sizeCache struct {
	old     map[string][2]int64 // loaded entries
	cur     map[string][2]int64 // entries used by this snapshot
	changed bool
}

const sizesHeader = "postino-sizes v1"

func (c *sizeCache) lookup(base string, fileSize int64) (int64, bool) {
	e, ok := c.old[base]
	if !ok || e[0] != fileSize {
		return 0, false
	}
	c.cur[base] = e
	return e[1], true
}

func (c *sizeCache) store(base string, fileSize, wire int64) {
	c.cur[base] = [2]int64{fileSize, wire}
	c.changed = true
}

// loadSizes reads the size cache of a Maildir; problems give an empty
// cache.
func (s *Store) loadSizes(dir string) *sizeCache {
	c := &sizeCache{old: map[string][2]int64{}, cur: map[string][2]int64{}}
	data, err := s.root.ReadFile(dir + "/" + sizesName)
	if err != nil {
		return c
	}
	lines := strings.Split(string(data), "\n")
	if lines[0] != sizesHeader {
		return c
	}
	for _, l := range lines[1:] {
		// The quoted base may contain spaces: split on the last two.
		j := strings.LastIndexByte(l, ' ')
		if j < 0 {
			continue
		}
		i := strings.LastIndexByte(l[:j], ' ')
		if i < 0 {
			continue
		}
		base, err := strconv.Unquote(l[:i])
		if err != nil {
			continue
		}
		fsz, ok1 := parseSize(l[i+1 : j])
		ws, ok2 := parseSize(l[j+1:])
		if !ok1 || !ok2 {
			continue
		}
		c.old[base] = [2]int64{fsz, ws}
	}
	return c
}

// saveSizes rewrites the size cache when it changed or holds stale
// entries. Errors are only logged.
func (s *Store) saveSizes(dir string, c *sizeCache) {
	if !c.changed && len(c.cur) == len(c.old) {
		return
	}
	p := dir + "/" + sizesName
	if len(c.cur) == 0 {
		if err := s.root.Remove(p); err != nil {
			s.logger.Debug("maildir: removing size cache", "path", p, "err", err)
		}
		return
	}
	var b bytes.Buffer
	b.WriteString(sizesHeader + "\n")
	for base, e := range c.cur {
		b.WriteString(strconv.Quote(base))
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(e[0], 10))
		b.WriteByte(' ')
		b.WriteString(strconv.FormatInt(e[1], 10))
		b.WriteByte('\n')
	}
	tmp := p + ".tmp"
	if err := s.root.WriteFile(tmp, b.Bytes(), filePerm); err != nil {
		s.logger.Warn("maildir: writing size cache", "path", tmp, "err", err)
		return
	}
	if err := s.root.Rename(tmp, p); err != nil {
		s.logger.Warn("maildir: renaming size cache", "path", p, "err", err)
	}
}
