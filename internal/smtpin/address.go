package smtpin

import (
	"errors"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/postino-mail/postino/internal/srs"
)

// address is an envelope address (RFC 5321 §4.1.2 Mailbox) as go-smtp hands
// it to us: a quoted local part is already unquoted.
type address struct {
	local, domain string // domain in lower case
}

// maxPathLen bounds a whole address (RFC 5321 §4.5.3.1.3: 256 octets for
// the path with its angle brackets).
const maxPathLen = 254

var errAddress = errors.New("invalid address")

// specials are refused in a local part: they would need quoting, which
// local delivery does not support and which could break a header line.
const specials = `"(),:;<>@[\]`

// parseAddress checks an envelope address and returns it with the domain
// in lower case. It accepts UTF-8 (RFC 6531) but refuses control
// characters, white space, specials in the local part, empty or
// dot-misplaced parts, and domains that are neither a host name nor an
// address literal.
func parseAddress(s string) (address, error) {
	if s == "" || len(s) > maxPathLen || !utf8.ValidString(s) {
		return address{}, errAddress
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return address{}, errAddress
	}
	local, domain := s[:at], s[at+1:]
	// RFC 5321 §4.5.3.1.1: 64 octets, but "implementation techniques that
	// impose no limits ... should be used": an SRS address (ours, made
	// from a long sender) may be longer and its bounces must come back.
	if len(local) > 64 && !srs.IsSRS(s) || !validDotString(local) {
		return address{}, errAddress
	}
	if domain[0] == '[' {
		lit, ok := parseLiteral(domain)
		if !ok {
			return address{}, errAddress
		}
		return address{local: local, domain: lit}, nil
	}
	domain = strings.ToLower(domain)
	if !validDomain(domain) {
		return address{}, errAddress
	}
	return address{local: local, domain: domain}, nil
}

// String returns local@domain.
func (a address) String() string { return a.local + "@" + a.domain }

// ascii reports whether the address is all ASCII (else it needs SMTPUTF8).
func (a address) ascii() bool { return isASCII(a.local) && isASCII(a.domain) }

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func validDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || unicode.IsControl(r) || unicode.IsSpace(r) ||
			unicode.Is(unicode.Cf, r) || r == utf8.RuneError || strings.ContainsRune(specials, r) {
			return false
		}
	}
	return true
}

// validDomain checks a host name: dot-separated labels of letters, digits
// and '-' (letters may be Unicode, RFC 6531 U-labels), 1-63 octets each,
// not starting or ending with '-', 253 octets at most.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if r != '-' && !(r < 0x80 && (r >= 'a' && r <= 'z' || r >= '0' && r <= '9')) &&
				!(r >= 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r))) {
				return false
			}
		}
	}
	return true
}

// parseLiteral checks an address literal (RFC 5321 §4.1.3), "[192.0.2.1]"
// or "[IPv6:2001:db8::1]", and returns it in canonical form.
func parseLiteral(d string) (string, bool) {
	if len(d) < 3 || d[len(d)-1] != ']' {
		return "", false
	}
	inner := d[1 : len(d)-1]
	if v6, ok := cutPrefixFold(inner, "IPv6:"); ok {
		ip, err := netip.ParseAddr(v6)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", false
		}
		return "[IPv6:" + ip.String() + "]", true
	}
	ip, err := netip.ParseAddr(inner)
	if err != nil || !ip.Is4() {
		return "", false
	}
	return "[" + ip.String() + "]", true
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}
