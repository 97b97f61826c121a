// Package srs implements the Sender Rewriting Scheme (SRS) for forwarded
// mail, in the address format of libsrs2 and postsrsd.
//
// A server that forwards mail for one of its addresses to another domain
// sends it with the original envelope sender, which the next hop's SPF
// check (RFC 7208) then fails: our address is not allowed to send for the
// sender's domain. SRS rewrites the envelope sender into an address of our
// own domain that encodes the original one and can be reversed when a
// bounce comes back:
//
//	user@example.org  ->  SRS0=HHHHHHHH=TT=example.org=user@our.domain
//
// HHHHHHHH is an HMAC over the time stamp and the original address, with a
// secret only this server knows, so that nobody else can make valid SRS
// addresses of our domain (which would make us an open relay). TT is the
// day of the rewriting (days since the Unix epoch modulo 1024, in base32);
// an address older than MaxAge (21 days by default, like postsrsd) is no
// longer reversed.
//
// An address that already is an SRS0 address of another domain is
// rewritten as SRS1 (as libsrs2 does), so that the address does not grow
// with each hop and the bounce goes back through the first forwarder:
//
//	SRS0=HHH=TT=orig.domain=user@first.fwd  ->  SRS1=HHHHHHHH=first.fwd==HHH=TT=orig.domain=user@our.domain
//
// The hash and the time stamp use base32, whose alphabet has one letter
// case only, and are compared case-insensitively (the SRS specification
// allows it; relays that lower-case addresses keep them valid). The hash
// covers the lower-cased address for the same reason.
package srs

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/fsutil"
)

// DefaultMaxAge is how long an SRS address can be reversed (postsrsd's
// default of 21 days).
const DefaultMaxAge = 21 * 24 * time.Hour

// hashLen is the number of base32 characters of the hash kept (40 bits).
const hashLen = 8

// keyLen is the size of a generated secret in octets.
const keyLen = 32

// The errors of Reverse.
var (
	// ErrNotSRS: the address is not an SRS address.
	ErrNotSRS = errors.New("srs: not an SRS address")
	// ErrMalformed: the address starts like an SRS address but is not one.
	ErrMalformed = errors.New("srs: malformed SRS address")
	// ErrBadHash: the hash does not match (a forged address).
	ErrBadHash = errors.New("srs: hash does not match")
	// ErrExpired: the time stamp is older than MaxAge, or in the future.
	ErrExpired = errors.New("srs: address expired")
)

// Rewriter rewrites envelope senders and reverses SRS addresses. The zero
// value is not usable: make one with New.
type Rewriter struct {
	key []byte
	// MaxAge is how long an address stays valid (DefaultMaxAge when 0).
	MaxAge time.Duration
	// Now tells the time (time.Now when nil); tests move it.
	Now func() time.Time
}

// New returns a Rewriter that signs with key (at least 16 octets).
func New(key []byte) (*Rewriter, error) {
	if len(key) < 16 {
		return nil, errors.New("srs: secret shorter than 16 octets")
	}
	return &Rewriter{key: append([]byte(nil), key...)}, nil
}

// LoadKey reads the secret kept in the file path, creating it with a new
// random secret (mode 0600, synced to disk with its folder) when it does
// not exist yet. The file holds the secret in hexadecimal on one line.
func LoadKey(path string) ([]byte, error) {
	if data, err := os.ReadFile(path); err == nil {
		return decodeKey(path, data)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("srs: %w", err)
	}
	secret := make([]byte, keyLen)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("srs: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another process made it first: use theirs.
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("srs: %w", err)
		}
		return decodeKey(path, data)
	}
	if err != nil {
		return nil, fmt.Errorf("srs: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(secret) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsutil.SyncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("srs: writing %s: %w", path, err)
	}
	return secret, nil
}

func decodeKey(path string, data []byte) ([]byte, error) {
	k, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(k) < 16 {
		return nil, fmt.Errorf("srs: %s does not hold a secret of at least 16 octets in hexadecimal", path)
	}
	return k, nil
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

const b32Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

func (r *Rewriter) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Rewriter) maxAge() time.Duration {
	if r.MaxAge > 0 {
		return r.MaxAge
	}
	return DefaultMaxAge
}

// hash returns the SRS hash of the parts, which are joined and lower-cased.
func (r *Rewriter) hash(parts ...string) string {
	m := hmac.New(sha256.New, r.key)
	for _, p := range parts {
		m.Write([]byte(strings.ToLower(p)))
		m.Write([]byte{0})
	}
	return strings.ToLower(b32.EncodeToString(m.Sum(nil))[:hashLen])
}

// checkHash compares a hash from an address with the expected one,
// case-insensitively and in constant time.
func checkHash(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(got)), []byte(want)) == 1
}

// stamp returns the time stamp of t: days since the epoch modulo 1024, two
// base32 characters.
func stamp(t time.Time) string {
	d := t.Unix() / 86400 % 1024
	return strings.ToLower(string([]byte{b32Alphabet[d>>5], b32Alphabet[d&31]}))
}

// checkStamp reports whether the time stamp ts is at most maxAge old.
func (r *Rewriter) checkStamp(ts string) error {
	if len(ts) != 2 {
		return ErrMalformed
	}
	hi := strings.IndexByte(b32Alphabet, upper(ts[0]))
	lo := strings.IndexByte(b32Alphabet, upper(ts[1]))
	if hi < 0 || lo < 0 {
		return ErrMalformed
	}
	then := int64(hi<<5 | lo)
	today := r.now().Unix() / 86400
	age := (today%1024 - then + 1024) % 1024
	if time.Duration(age)*24*time.Hour > r.maxAge() {
		return ErrExpired
	}
	return nil
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// split returns the local part and domain of addr.
func split(addr string) (string, string, bool) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return "", "", false
	}
	return addr[:i], addr[i+1:], true
}

// hasPrefixFold reports whether s starts with prefix, ignoring case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// IsSRS reports whether the local part of addr says it is an SRS address
// (SRS0= or SRS1=, in any case).
func IsSRS(addr string) bool {
	local, _, ok := split(addr)
	return ok && (hasPrefixFold(local, "SRS0=") || hasPrefixFold(local, "SRS1="))
}

// Forward returns the envelope sender to use when forwarding mail from
// sender to another domain, as an address of domain (ours). The null
// sender stays null (RFC 5321 §4.5.5: bounces are never answered).
func (r *Rewriter) Forward(sender, domain string) (string, error) {
	if sender == "" {
		return "", nil
	}
	local, host, ok := split(sender)
	if !ok {
		return "", fmt.Errorf("srs: cannot rewrite %q", sender)
	}
	switch {
	case hasPrefixFold(local, "SRS0="):
		// libsrs2's SRS1: SRS1=HHH=first.fwd==<rest of the SRS0 local
		// part>, hashed over the first forwarder and that rest.
		rest := local[len("SRS0="):]
		h := r.hash(host, rest)
		return "SRS1=" + h + "=" + host + "==" + rest + "@" + domain, nil
	case hasPrefixFold(local, "SRS1="):
		// Already SRS1: keep the first forwarder and the rest, new hash.
		f := strings.SplitN(local[len("SRS1="):], "=", 3)
		if len(f) == 3 && f[1] != "" && strings.HasPrefix(f[2], "=") {
			first, rest := f[1], f[2][1:]
			h := r.hash(first, rest)
			return "SRS1=" + h + "=" + first + "==" + rest + "@" + domain, nil
		}
	}
	ts := stamp(r.now())
	h := r.hash(ts, host, local)
	return "SRS0=" + h + "=" + ts + "=" + host + "=" + local + "@" + domain, nil
}

// Reverse returns the address that the SRS address addr was made from: the
// original sender for SRS0, the first forwarder's SRS0 address for SRS1.
// The domain of addr is not checked: the caller knows its domains. It
// returns ErrNotSRS for an address that is not SRS, ErrMalformed,
// ErrBadHash (forged) or ErrExpired.
func (r *Rewriter) Reverse(addr string) (string, error) {
	local, _, ok := split(addr)
	if !ok {
		return "", ErrNotSRS
	}
	switch {
	case hasPrefixFold(local, "SRS0="):
		// SRS0=HASH=TT=domain=local
		f := strings.SplitN(local[len("SRS0="):], "=", 4)
		if len(f) != 4 || f[0] == "" || f[2] == "" || f[3] == "" {
			return "", ErrMalformed
		}
		if !checkHash(f[0], r.hash(f[1], f[2], f[3])) {
			return "", ErrBadHash
		}
		if err := r.checkStamp(f[1]); err != nil {
			return "", err
		}
		return f[3] + "@" + f[2], nil
	case hasPrefixFold(local, "SRS1="):
		// SRS1=HASH=first.fwd==rest
		f := strings.SplitN(local[len("SRS1="):], "=", 3)
		if len(f) != 3 || f[0] == "" || f[1] == "" || !strings.HasPrefix(f[2], "=") || len(f[2]) < 2 {
			return "", ErrMalformed
		}
		first, rest := f[1], f[2][1:]
		if !checkHash(f[0], r.hash(first, rest)) {
			return "", ErrBadHash
		}
		return "SRS0=" + rest + "@" + first, nil
	}
	return "", ErrNotSRS
}
