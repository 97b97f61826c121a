package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"sync"
	"time"
)

const (
	// DefaultCacheTTL is the default of DB.CacheTTL.
	DefaultCacheTTL = 60 * time.Second
	// DefaultCacheSize is the default of DB.CacheSize.
	DefaultCacheSize = 10_000
)

// cacheKey is an HMAC, under a per-process random key, of a canonical user,
// the stored hash and the password: neither the password nor anything that
// helps guessing it is kept in memory, and a changed stored hash never hits.
type cacheKey [sha256.Size]byte

var cacheSecret = func() []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("auth: no randomness: " + err.Error())
	}
	return b
}()

func writeField(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

func makeCacheKey(user, stored, password string) cacheKey {
	mac := hmac.New(sha256.New, cacheSecret)
	writeField(mac, user)
	writeField(mac, stored)
	writeField(mac, password)
	var k cacheKey
	mac.Sum(k[:0])
	return k
}

type cacheEntry struct {
	key    cacheKey
	expiry time.Time
}

// verifiedCache remembers successful verifications until they expire. It
// holds at most max entries, evicting the oldest first.
type verifiedCache struct {
	mu      sync.Mutex
	entries map[cacheKey]time.Time
	order   []cacheEntry // by insertion, hence by expiry for a fixed TTL
}

// hit reports whether k was verified and has not expired at now.
func (c *verifiedCache) hit(k cacheKey, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.entries[k]
	if !ok {
		return false
	}
	if !now.Before(exp) {
		delete(c.entries, k)
		return false
	}
	return true
}

// add records k as verified until now+ttl, keeping at most max entries.
func (c *verifiedCache) add(k cacheKey, now time.Time, ttl time.Duration, max int) {
	if ttl <= 0 || max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[cacheKey]time.Time)
	}
	// Drop expired and evict the oldest, skipping queue entries that are
	// stale (deleted or re-added since).
	for len(c.order) > 0 {
		e := c.order[0]
		exp, ok := c.entries[e.key]
		live := ok && exp.Equal(e.expiry)
		if live && now.Before(e.expiry) && len(c.entries) < max {
			break
		}
		if live {
			delete(c.entries, e.key)
		}
		c.order[0] = cacheEntry{}
		c.order = c.order[1:]
	}
	exp := now.Add(ttl)
	c.entries[k] = exp
	c.order = append(c.order, cacheEntry{k, exp})
}

// len returns the number of entries, expired or not.
func (c *verifiedCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
