package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Argon2Parameters are the cost parameters HashPassword uses for new
// ARGON2ID hashes. Verification always uses the parameters written in the
// stored hash.
type Argon2Parameters struct {
	Memory  uint32 // memory in KiB (m=)
	Time    uint32 // number of passes (t=)
	Threads uint8  // degree of parallelism (p=)
	SaltLen uint32 // bytes of random salt
	KeyLen  uint32 // bytes of derived key
}

// DefaultArgon2 returns the parameters of the hashes HashPassword makes, in
// the format "doveadm pw -s ARGON2ID" writes (Dovecot verifies them as they
// are): OWASP's recommended minimum for Argon2id, 19 MiB, 2 passes, 1
// thread, with a 16-byte salt and a 32-byte key. Dovecot's own default (64
// MiB, 3 passes) costs about five times as much per login and holds 64 MiB
// per concurrent verification, for little gain against offline guessing;
// hashes with any parameters verify. Other parameters are passed to
// Argon2Parameters.Hash or set in DB.Argon2.
func DefaultArgon2() Argon2Parameters {
	return Argon2Parameters{Memory: 19 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}
}

// MaxPasswordLen is the longest password, in bytes, that HashPassword
// accepts and VerifyPassword will ever match; it bounds the work a client
// can cause with a huge password.
const MaxPasswordLen = 4096

// ErrMalformedHash is wrapped by the errors VerifyPassword returns for a
// stored hash that cannot be parsed or whose parameters are out of range.
var ErrMalformedHash = errors.New("auth: malformed password hash")

// ErrUnknownScheme is wrapped by the errors VerifyPassword returns for a
// {SCHEME} it does not support.
var ErrUnknownScheme = errors.New("auth: unknown password scheme")

// Limits on the cost parameters of stored hashes that VerifyPassword will
// compute; anything above is refused as malformed rather than letting a bad
// line in the user database tie up the server. Variables so that the fuzz
// tests can lower them.
var (
	maxArgon2Memory uint32 = 4 * 1024 * 1024 // KiB, 4 GiB
	maxArgon2Time   uint32 = 1024
	maxCryptRounds         = 999_999_999 // the SHA-crypt maximum
	maxBcryptCost          = 31
	maxSCRAMIter           = 10_000_000
)

// HashPassword hashes password for storage as
// {ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>, the format
// "doveadm pw -s ARGON2ID" writes, with the parameters DefaultArgon2
// returns.
func HashPassword(password string) (string, error) {
	return DefaultArgon2().Hash(password)
}

// Hash hashes password for storage as HashPassword does, with the
// parameters p.
func (p Argon2Parameters) Hash(password string) (string, error) {
	if len(password) > MaxPasswordLen {
		return "", fmt.Errorf("auth: password longer than %d bytes", MaxPasswordLen)
	}
	if p.Time < 1 || p.Threads < 1 || p.Memory < 8*uint32(p.Threads) || p.SaltLen < 8 || p.KeyLen < 16 {
		return "", fmt.Errorf("auth: invalid Argon2 parameters %+v", p)
	}
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return fmt.Sprintf("{ARGON2ID}$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// VerifyPassword reports whether password matches stored, a {SCHEME}hash
// string (see the package documentation for the schemes). It returns an
// error wrapping ErrUnknownScheme or ErrMalformedHash, and false, when
// stored cannot be used; a wrong password is (false, nil).
func VerifyPassword(stored, password string) (bool, error) {
	v, err := parseStored(stored)
	if err != nil {
		return false, err
	}
	if len(password) > MaxPasswordLen {
		return false, nil
	}
	return v.verify(password)
}

// ValidateHash reports whether stored is a hash VerifyPassword can use,
// without computing it, and whether it can be written to the user database
// (no ':' and no control characters).
func ValidateHash(stored string) error {
	for i := 0; i < len(stored); i++ {
		if c := stored[i]; c < 0x20 || c == 0x7f || c == ':' {
			return fmt.Errorf("%w: contains %q", ErrMalformedHash, c)
		}
	}
	_, err := parseStored(stored)
	return err
}

// verifier is a parsed stored hash.
type verifier interface {
	verify(password string) (bool, error)
}

// splitScheme splits "{SCHEME}rest" into the upper-cased scheme and rest.
// ok is false when stored has no {SCHEME} prefix.
func splitScheme(stored string) (scheme, rest string, ok bool) {
	if !strings.HasPrefix(stored, "{") {
		return "", stored, false
	}
	end := strings.IndexByte(stored, '}')
	if end < 0 {
		return "", stored, false
	}
	return strings.ToUpper(stored[1:end]), stored[end+1:], true
}

func malformed(scheme, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformedHash, scheme, fmt.Sprintf(format, args...))
}

// parseStored parses a stored password of any supported scheme.
func parseStored(stored string) (verifier, error) {
	scheme, rest, ok := splitScheme(stored)
	if !ok {
		if strings.HasPrefix(stored, "{") {
			return nil, fmt.Errorf("%w: unterminated {SCHEME}", ErrMalformedHash)
		}
		return parseCrypt(stored)
	}
	switch scheme {
	case "ARGON2ID":
		return parseArgon2(rest, "argon2id")
	case "ARGON2I":
		return parseArgon2(rest, "argon2i")
	case "BLF-CRYPT":
		return parseBcrypt(rest)
	case "SHA512-CRYPT":
		return parseSHACrypt(rest, sha512Crypt)
	case "SHA256-CRYPT":
		return parseSHACrypt(rest, sha256Crypt)
	case "CRYPT":
		return parseCrypt(rest)
	case "PLAIN", "CLEAR":
		return plainVerifier(rest), nil
	case "SCRAM-SHA-256":
		return parseSCRAM(rest)
	}
	if len(scheme) > 40 {
		scheme = scheme[:40] + "..."
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownScheme, scheme)
}

// parseCrypt parses a crypt(3)-style string by its $id$ prefix.
func parseCrypt(s string) (verifier, error) {
	switch {
	case strings.HasPrefix(s, "$6$"):
		return parseSHACrypt(s, sha512Crypt)
	case strings.HasPrefix(s, "$5$"):
		return parseSHACrypt(s, sha256Crypt)
	case strings.HasPrefix(s, "$2y$"), strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"):
		return parseBcrypt(s)
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2(s, "argon2id")
	case strings.HasPrefix(s, "$argon2i$"):
		return parseArgon2(s, "argon2i")
	}
	return nil, fmt.Errorf("%w: no {SCHEME} and no known crypt $id$ prefix", ErrUnknownScheme)
}

// plainVerifier is a {PLAIN} or {CLEAR} cleartext password.
type plainVerifier string

func (p plainVerifier) verify(password string) (bool, error) {
	// Comparing digests keeps the comparison constant-time whatever the
	// lengths.
	a, b := sha256.Sum256([]byte(p)), sha256.Sum256([]byte(password))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1, nil
}

// argon2Verifier is a parsed $argon2id$ or $argon2i$ PHC string.
type argon2Verifier struct {
	id      bool
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

// decodeB64 decodes standard base64 with or without padding.
func decodeB64(s string) ([]byte, error) {
	return base64.RawStdEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
}

func parseArgon2(s, variant string) (verifier, error) {
	scheme := strings.ToUpper(variant)
	// "", variant, "v=19", "m=..,t=..,p=..", salt, key
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" || f[1] != variant {
		return nil, malformed(scheme, "want $%s$v=19$m=M,t=T,p=P$salt$key", variant)
	}
	if f[2] != "v=19" {
		return nil, malformed(scheme, "unsupported version %q (only v=19)", f[2])
	}
	v := &argon2Verifier{id: variant == "argon2id"}
	params := strings.Split(f[3], ",")
	if len(params) != 3 {
		return nil, malformed(scheme, "want m=M,t=T,p=P, got %q", f[3])
	}
	for i, name := range []string{"m=", "t=", "p="} {
		val, ok := strings.CutPrefix(params[i], name)
		if !ok {
			return nil, malformed(scheme, "want m=M,t=T,p=P, got %q", f[3])
		}
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil || n == 0 {
			return nil, malformed(scheme, "bad parameter %q", params[i])
		}
		switch i {
		case 0:
			v.memory = uint32(n)
		case 1:
			v.time = uint32(n)
		case 2:
			if n > 255 {
				return nil, malformed(scheme, "parallelism %d out of range", n)
			}
			v.threads = uint8(n)
		}
	}
	if v.memory < 8*uint32(v.threads) || v.memory > maxArgon2Memory {
		return nil, malformed(scheme, "memory m=%d out of range", v.memory)
	}
	if v.time > maxArgon2Time {
		return nil, malformed(scheme, "time t=%d out of range", v.time)
	}
	var err error
	if v.salt, err = decodeB64(f[4]); err != nil || len(v.salt) < 8 {
		return nil, malformed(scheme, "bad salt")
	}
	if v.key, err = decodeB64(f[5]); err != nil || len(v.key) < 4 || len(v.key) > 1024 {
		return nil, malformed(scheme, "bad key")
	}
	return v, nil
}

func (v *argon2Verifier) verify(password string) (bool, error) {
	derive := argon2.Key
	if v.id {
		derive = argon2.IDKey
	}
	got := derive([]byte(password), v.salt, v.time, v.memory, v.threads, uint32(len(v.key)))
	return subtle.ConstantTimeCompare(got, v.key) == 1, nil
}

// bcryptVerifier is a $2y$, $2a$ or $2b$ bcrypt string.
type bcryptVerifier []byte

func parseBcrypt(s string) (verifier, error) {
	if len(s) < 4 || s[0] != '$' || s[1] != '2' || !strings.ContainsRune("yab", rune(s[2])) || s[3] != '$' {
		return nil, malformed("BLF-CRYPT", "want $2y$, $2a$ or $2b$")
	}
	cost, err := bcrypt.Cost([]byte(s))
	if err != nil || len(s) != 60 {
		return nil, malformed("BLF-CRYPT", "not a bcrypt string")
	}
	for _, c := range s[7:] {
		if !strings.ContainsRune(cryptAlphabet, c) {
			return nil, malformed("BLF-CRYPT", "bad character %q", c)
		}
	}
	if cost > maxBcryptCost {
		return nil, malformed("BLF-CRYPT", "cost %d out of range", cost)
	}
	return bcryptVerifier(s), nil
}

func (v bcryptVerifier) verify(password string) (bool, error) {
	err := bcrypt.CompareHashAndPassword(v, []byte(password))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return false, nil
	}
	return false, malformed("BLF-CRYPT", "%v", err)
}
