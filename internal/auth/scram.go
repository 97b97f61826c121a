package auth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

const (
	// SCRAMIterations is the PBKDF2 iteration count of the hashes
	// HashSCRAMSHA256 makes, Dovecot's default.
	SCRAMIterations = 4096
	// SCRAMSaltLen is the salt length, in bytes, of the hashes
	// HashSCRAMSHA256 makes, Dovecot's default.
	SCRAMSaltLen = 16
)

// scramVerifier is a parsed Dovecot {SCRAM-SHA-256} value.
type scramVerifier struct {
	iter                 int
	salt                 []byte
	storedKey, serverKey []byte
}

// parseSCRAM parses Dovecot's "iter,salt,storedkey,serverkey" with the
// three binary fields in standard base64.
func parseSCRAM(s string) (verifier, error) {
	f := strings.Split(s, ",")
	if len(f) != 4 {
		return nil, malformed("SCRAM-SHA-256", "want iter,salt,storedkey,serverkey")
	}
	iter, err := strconv.Atoi(f[0])
	if err != nil || iter < 1 || iter > maxSCRAMIter || f[0][0] == '+' {
		return nil, malformed("SCRAM-SHA-256", "bad iteration count %q", f[0])
	}
	v := &scramVerifier{iter: iter}
	if v.salt, err = base64.StdEncoding.Strict().DecodeString(f[1]); err != nil || len(v.salt) == 0 {
		return nil, malformed("SCRAM-SHA-256", "bad salt")
	}
	if v.storedKey, err = base64.StdEncoding.Strict().DecodeString(f[2]); err != nil || len(v.storedKey) != sha256.Size {
		return nil, malformed("SCRAM-SHA-256", "bad stored key")
	}
	if v.serverKey, err = base64.StdEncoding.Strict().DecodeString(f[3]); err != nil || len(v.serverKey) != sha256.Size {
		return nil, malformed("SCRAM-SHA-256", "bad server key")
	}
	return v, nil
}

// scramKeys derives StoredKey and ServerKey (RFC 5802 §3) from password.
func scramKeys(password string, salt []byte, iter int) (storedKey, serverKey []byte, err error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		return nil, nil, err
	}
	mac := hmac.New(sha256.New, salted)
	mac.Write([]byte("Client Key"))
	clientKey := mac.Sum(nil)
	sk := sha256.Sum256(clientKey)
	mac = hmac.New(sha256.New, salted)
	mac.Write([]byte("Server Key"))
	return sk[:], mac.Sum(nil), nil
}

func (v *scramVerifier) verify(password string) (bool, error) {
	storedKey, _, err := scramKeys(password, v.salt, v.iter)
	if err != nil {
		return false, malformed("SCRAM-SHA-256", "%v", err)
	}
	return subtle.ConstantTimeCompare(storedKey, v.storedKey) == 1, nil
}

// HashSCRAMSHA256 hashes password in Dovecot's {SCRAM-SHA-256} format,
// "{SCRAM-SHA-256}4096,<salt>,<StoredKey>,<ServerKey>" in standard base64,
// with SCRAMIterations iterations and a random SCRAMSaltLen-byte salt. Such a
// hash serves both password logins and SASL SCRAM-SHA-256.
func HashSCRAMSHA256(password string) (string, error) {
	if len(password) > MaxPasswordLen {
		return "", fmt.Errorf("auth: password longer than %d bytes", MaxPasswordLen)
	}
	salt := make([]byte, SCRAMSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	storedKey, serverKey, err := scramKeys(password, salt, SCRAMIterations)
	if err != nil {
		return "", err
	}
	enc := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("{SCRAM-SHA-256}%d,%s,%s,%s", SCRAMIterations, enc(salt), enc(storedKey), enc(serverKey)), nil
}

// SCRAMCredentials returns the iteration count, salt, StoredKey and
// ServerKey of a {SCRAM-SHA-256} stored password (the prefix may be
// omitted), which is what a SASL SCRAM-SHA-256 server needs. ok is false
// when stored is not a valid SCRAM-SHA-256 value.
func SCRAMCredentials(stored string) (iter int, salt, storedKey, serverKey []byte, ok bool) {
	scheme, rest, prefixed := splitScheme(stored)
	if prefixed && scheme != "SCRAM-SHA-256" {
		return 0, nil, nil, nil, false
	}
	v, err := parseSCRAM(rest)
	if err != nil {
		return 0, nil, nil, nil, false
	}
	sv := v.(*scramVerifier)
	return sv.iter, sv.salt, sv.storedKey, sv.serverKey, true
}
