package auth

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"hash"
	"strconv"
	"strings"
)

// This file implements the SHA-crypt algorithms of glibc's crypt(3), $5$
// (SHA-256) and $6$ (SHA-512), as specified by Ulrich Drepper in "Unix
// crypt using SHA-256 and SHA-512".

// cryptAlphabet is the base-64 alphabet of crypt(3).
const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

const (
	shaCryptSaltMax       = 16
	shaCryptRoundsMin     = 1000
	shaCryptRoundsMax     = 999_999_999
	shaCryptRoundsDefault = 5000
)

// shaCryptAlgo describes one of the two SHA-crypt variants.
type shaCryptAlgo struct {
	scheme string
	magic  string
	newH   func() hash.Hash
	// perm lists the digest bytes in the order they are encoded, in
	// groups of three (the last group may be shorter).
	perm []int
}

var sha256Crypt = &shaCryptAlgo{
	scheme: "SHA256-CRYPT",
	magic:  "$5$",
	newH:   sha256.New,
	perm: []int{
		0, 10, 20, 21, 1, 11, 12, 22, 2, 3, 13, 23, 24, 4, 14,
		15, 25, 5, 6, 16, 26, 27, 7, 17, 18, 28, 8, 9, 19, 29,
		31, 30, // with a leading zero byte: 3 characters
	},
}

var sha512Crypt = &shaCryptAlgo{
	scheme: "SHA512-CRYPT",
	magic:  "$6$",
	newH:   sha512.New,
	perm: []int{
		0, 21, 42, 22, 43, 1, 44, 2, 23, 3, 24, 45, 25, 46, 4,
		47, 5, 26, 6, 27, 48, 28, 49, 7, 50, 8, 29, 9, 30, 51,
		31, 52, 10, 53, 11, 32, 12, 33, 54, 34, 55, 13, 56, 14, 35,
		15, 36, 57, 37, 58, 16, 59, 17, 38, 18, 39, 60, 40, 61, 19,
		62, 20, 41,
		63, // with two leading zero bytes: 2 characters
	},
}

// shaCryptSetting is a parsed "$5$[rounds=N$]salt" prefix.
type shaCryptSetting struct {
	algo         *shaCryptAlgo
	salt         string
	rounds       int
	customRounds bool
}

// parseSHACryptSetting parses the setting at the start of s (which may be
// a whole hash) as crypt(3) does: the salt ends at the next '$' and is cut
// to 16 characters, rounds are clamped to 1000..999999999.
func parseSHACryptSetting(s string, algo *shaCryptAlgo) (shaCryptSetting, bool) {
	rest, ok := strings.CutPrefix(s, algo.magic)
	if !ok {
		return shaCryptSetting{}, false
	}
	st := shaCryptSetting{algo: algo, rounds: shaCryptRoundsDefault}
	if r, ok := strings.CutPrefix(rest, "rounds="); ok {
		end := strings.IndexByte(r, '$')
		if end < 0 {
			return shaCryptSetting{}, false
		}
		n, err := strconv.ParseUint(r[:end], 10, 64)
		if err != nil {
			return shaCryptSetting{}, false
		}
		st.rounds = int(min(max(n, shaCryptRoundsMin), shaCryptRoundsMax))
		st.customRounds = true
		rest = r[end+1:]
	}
	if end := strings.IndexByte(rest, '$'); end >= 0 {
		rest = rest[:end]
	}
	if len(rest) > shaCryptSaltMax {
		rest = rest[:shaCryptSaltMax]
	}
	st.salt = rest
	return st, true
}

// shaCrypt computes the full crypt(3) string for password and setting.
func shaCrypt(password string, st shaCryptSetting) string {
	newH, p, s := st.algo.newH, []byte(password), []byte(st.salt)

	// Digest B = H(password salt password).
	h := newH()
	h.Write(p)
	h.Write(s)
	h.Write(p)
	b := h.Sum(nil)
	size := len(b)

	// Digest A = H(password salt B-repeated-to-len(password) bits...).
	h = newH()
	h.Write(p)
	h.Write(s)
	i := len(p)
	for ; i > size; i -= size {
		h.Write(b)
	}
	h.Write(b[:i])
	for i = len(p); i > 0; i >>= 1 {
		if i&1 != 0 {
			h.Write(b)
		} else {
			h.Write(p)
		}
	}
	a := h.Sum(nil)

	// P sequence: digest DP = H(password repeated len(password) times),
	// repeated to the length of the password.
	h = newH()
	for range len(p) {
		h.Write(p)
	}
	dp := h.Sum(nil)
	pseq := make([]byte, 0, len(p))
	for len(pseq)+size < len(p) {
		pseq = append(pseq, dp...)
	}
	pseq = append(pseq, dp[:len(p)-len(pseq)]...)

	// S sequence: digest DS = H(salt repeated 16+A[0] times), cut to the
	// length of the salt.
	h = newH()
	for range 16 + int(a[0]) {
		h.Write(s)
	}
	sseq := h.Sum(nil)[:len(s)]

	c := a
	for r := range st.rounds {
		h.Reset()
		if r&1 != 0 {
			h.Write(pseq)
		} else {
			h.Write(c)
		}
		if r%3 != 0 {
			h.Write(sseq)
		}
		if r%7 != 0 {
			h.Write(pseq)
		}
		if r&1 != 0 {
			h.Write(c)
		} else {
			h.Write(pseq)
		}
		c = h.Sum(c[:0])
	}

	var out strings.Builder
	out.WriteString(st.algo.magic)
	if st.customRounds {
		out.WriteString("rounds=")
		out.WriteString(strconv.Itoa(st.rounds))
		out.WriteByte('$')
	}
	out.WriteString(st.salt)
	out.WriteByte('$')
	perm := st.algo.perm
	for len(perm) > 0 {
		var w uint32
		n := 4
		switch len(perm) {
		case 1:
			w, n, perm = uint32(c[perm[0]]), 2, nil
		case 2:
			w, n, perm = uint32(c[perm[0]])<<8|uint32(c[perm[1]]), 3, nil
		default:
			w, perm = uint32(c[perm[0]])<<16|uint32(c[perm[1]])<<8|uint32(c[perm[2]]), perm[3:]
		}
		for range n {
			out.WriteByte(cryptAlphabet[w&0x3f])
			w >>= 6
		}
	}
	return out.String()
}

// shaCryptVerifier is a parsed $5$ or $6$ hash.
type shaCryptVerifier struct {
	setting shaCryptSetting
	stored  string
}

func parseSHACrypt(s string, algo *shaCryptAlgo) (verifier, error) {
	st, ok := parseSHACryptSetting(s, algo)
	if !ok {
		return nil, malformed(algo.scheme, "want %s[rounds=N$]salt$hash", algo.magic)
	}
	if st.rounds > maxCryptRounds {
		return nil, malformed(algo.scheme, "rounds=%d out of range", st.rounds)
	}
	want := len(algo.magic) + len(st.salt) + 1 + (len(algo.perm)*4+2)/3
	if st.customRounds {
		want += len("rounds=$") + len(strconv.Itoa(st.rounds))
	}
	if len(s) != want {
		return nil, malformed(algo.scheme, "wrong length")
	}
	return &shaCryptVerifier{setting: st, stored: s}, nil
}

func (v *shaCryptVerifier) verify(password string) (bool, error) {
	got := shaCrypt(password, v.setting)
	return subtle.ConstantTimeCompare([]byte(got), []byte(v.stored)) == 1, nil
}
