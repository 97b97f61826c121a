package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on the length of an address, in bytes (RFC 5321 §4.5.3.1, with the
// 254 of RFC 3696 errata for a whole forward path).
const (
	// MaxAddressLen is the longest canonical address.
	MaxAddressLen = 254
	// MaxLocalLen is the longest local part.
	MaxLocalLen = 64
	maxLabelLen = 63
)

// ErrInvalidAddress is wrapped by every error CanonicalAddress returns.
var ErrInvalidAddress = errors.New("auth: invalid address")

// forbidden are the characters refused anywhere in an address: path
// separators, the passwd-file field separator, quoting and RFC 5322
// specials.
const forbidden = `/\:"(),;<>[]`

// CanonicalAddress checks that s is a user address local@domain that is
// safe to use as a passwd-file key and as a folder name, and returns its
// canonical form: the local part as given and the domain lower-cased.
//
// It refuses empty parts, a missing or repeated '@', an address longer than
// MaxAddressLen or a local part longer than MaxLocalLen bytes, invalid
// UTF-8, control characters, white space, any of / \ : " ( ) , ; < > [ ],
// a local part that starts with '#' (a comment in the file), a local part
// or domain that starts or ends with '.' or contains "..", and a domain
// whose labels are empty, start or end with '-' or contain anything other
// than letters, digits and '-'. CanonicalAddress is idempotent.
func CanonicalAddress(s string) (string, error) {
	bad := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%w %q: %s", ErrInvalidAddress, s, fmt.Sprintf(format, args...))
	}
	if s == "" {
		return bad("empty")
	}
	if !utf8.ValidString(s) {
		return bad("not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case r == 0:
			return bad("contains NUL")
		case r < 0x20 || r == 0x7f || unicode.IsControl(r):
			return bad("contains a control character")
		case unicode.IsSpace(r):
			return bad("contains white space")
		case strings.ContainsRune(forbidden, r):
			return bad("contains %q", r)
		case r == unicode.ReplacementChar:
			return bad("contains U+FFFD")
		case unicode.Is(unicode.Cf, r):
			return bad("contains an invisible formatting character")
		}
	}
	at := strings.IndexByte(s, '@')
	if at < 0 {
		return bad("no '@'")
	}
	if strings.Count(s, "@") > 1 {
		return bad("more than one '@'")
	}
	local, domain := s[:at], strings.ToLower(s[at+1:])
	if local == "" {
		return bad("empty local part")
	}
	if domain == "" {
		return bad("empty domain")
	}
	if len(local) > MaxLocalLen {
		return bad("local part longer than %d bytes", MaxLocalLen)
	}
	if local[0] == '#' {
		return bad("local part starts with '#'")
	}
	if err := checkDots(local); err != "" {
		return bad("local part %s", err)
	}
	if err := checkDots(domain); err != "" {
		return bad("domain %s", err)
	}
	for label := range strings.SplitSeq(domain, ".") {
		if len(label) > maxLabelLen {
			return bad("domain label longer than %d bytes", maxLabelLen)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("domain label %q starts or ends with '-'", label)
		}
		for _, r := range label {
			if r != '-' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
				return bad("domain contains %q", r)
			}
		}
	}
	c := local + "@" + domain
	if len(c) > MaxAddressLen {
		return bad("longer than %d bytes", MaxAddressLen)
	}
	return c, nil
}

// checkDots returns why part is refused for its dots, or "".
func checkDots(part string) string {
	switch {
	case part[0] == '.' || part[len(part)-1] == '.':
		return "starts or ends with '.'"
	case strings.Contains(part, ".."):
		return `contains ".."`
	}
	return ""
}
