package mailauth

import (
	"errors"
	"fmt"
	"strings"
)

// MaxAuthResLen is the longest Authentication-Results field value
// ParseAuthservID reads.
const MaxAuthResLen = 64 << 10

// maxCommentDepth bounds the nesting of comments (RFC 5322 §3.2.2
// allows any depth; real fields have one level).
const maxCommentDepth = 16

// AuthResError is an Authentication-Results field whose authserv-id
// cannot be read.
type AuthResError struct {
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *AuthResError) Error() string { return "authentication-results: " + e.Reason }

// ParseAuthservID returns the authserv-id of an Authentication-Results
// field value (the text after the colon, unfolded or not).
//
// RFC 8601 §2.2:
//
//	authres-payload = [CFWS] authserv-id
//	                  [ CFWS authserv-id-version ]
//	                  *( [CFWS] ";" [CFWS] resinfo ) [CFWS] CRLF
//	authserv-id = value
//
// where value is an RFC 2045 token or an RFC 5322 quoted-string, and CFWS
// is white space and (nested) comments. The id is returned without its
// quotes; comparisons with ours are case-insensitive (§2.5).
func ParseAuthservID(v string) (string, error) {
	if len(v) > MaxAuthResLen {
		return "", &AuthResError{Reason: fmt.Sprintf("longer than %d octets", MaxAuthResLen)}
	}
	p := &arParser{s: v}
	if err := p.cfws(); err != nil {
		return "", err
	}
	id, err := p.value()
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(id) == "" {
		return "", &AuthResError{Reason: "empty authserv-id"}
	}
	// What follows is a version, a ";" or the end.
	if err := p.cfws(); err != nil {
		return "", err
	}
	if p.i < len(p.s) && p.s[p.i] != ';' && !isTokenChar(p.s[p.i]) {
		return "", &AuthResError{Reason: fmt.Sprintf("unexpected %q after the authserv-id", p.s[p.i])}
	}
	return id, nil
}

// arParser reads an Authentication-Results value.
type arParser struct {
	s string
	i int
}

var errUnterminated = errors.New("unterminated")

// cfws skips white space, line ends and comments (RFC 5322 §3.2.2).
func (p *arParser) cfws() error {
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			p.i++
		case c == '(':
			if err := p.comment(); err != nil {
				return err
			}
		default:
			return nil
		}
	}
	return nil
}

// comment skips one comment, nested ones and quoted-pairs included.
func (p *arParser) comment() error {
	depth := 0
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch c {
		case '\\':
			if p.i == len(p.s) {
				return &AuthResError{Reason: "comment ends in a backslash"}
			}
			p.i++
		case '(':
			depth++
			if depth > maxCommentDepth {
				return &AuthResError{Reason: fmt.Sprintf("comments nested deeper than %d", maxCommentDepth)}
			}
		case ')':
			depth--
			if depth == 0 {
				return nil
			}
		}
	}
	return &AuthResError{Reason: "comment " + errUnterminated.Error()}
}

// value reads a token or a quoted-string.
func (p *arParser) value() (string, error) {
	if p.i == len(p.s) {
		return "", &AuthResError{Reason: "no authserv-id"}
	}
	if p.s[p.i] == '"' {
		p.i++
		var b strings.Builder
		for p.i < len(p.s) {
			c := p.s[p.i]
			p.i++
			switch c {
			case '\\':
				if p.i == len(p.s) {
					return "", &AuthResError{Reason: "quoted-string ends in a backslash"}
				}
				b.WriteByte(p.s[p.i])
				p.i++
			case '"':
				return b.String(), nil
			case '\r', '\n':
				// folding inside the quoted-string
			default:
				b.WriteByte(c)
			}
		}
		return "", &AuthResError{Reason: "quoted-string " + errUnterminated.Error()}
	}
	start := p.i
	for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return "", &AuthResError{Reason: fmt.Sprintf("authserv-id starts with %q", p.s[p.i])}
	}
	return p.s[start:p.i], nil
}

// isTokenChar reports whether c may be in an RFC 2045 §5.1 token: any
// printable ASCII but space and tspecials.
func isTokenChar(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	return !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}

// isToken reports whether s is a non-empty token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// pvalue formats a property value (RFC 8601 §2.2: pvalue is a value, an
// addr-spec or a domain name): as it is when it is a token or a plain
// local-part@domain, else as a quoted-string.
func pvalue(s string) string {
	if isToken(s) {
		return s
	}
	if at := strings.LastIndexByte(s, '@'); at >= 0 && isDotAtom(s[:at], true) && isDotAtom(s[at+1:], false) {
		return s
	}
	return value(s)
}

// value formats an RFC 2045 value: a token as it is, anything else as a
// quoted-string (control characters dropped).
func value(s string) string {
	if isToken(s) {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		if c < ' ' || c == 0x7f {
			continue
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// isDotAtom reports whether s is a dot-atom of atext (RFC 5322 §3.2.3), or
// for a domain, of letters, digits and hyphens; an empty local part is
// allowed (the null sender is never formatted).
func isDotAtom(s string, local bool) bool {
	if s == "" {
		return local
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
			if local && !ok {
				ok = strings.IndexByte("!#$%&'*+/=?^_`{|}~", c) >= 0
			}
			if !ok {
				return false
			}
		}
	}
	return true
}

// resinfo is one result of an Authentication-Results field (RFC 8601
// §2.2): method=result, an optional reason or comment, and properties.
type resinfo struct {
	method, result, comment string
	props                   [][2]string // ptype.property, pvalue
}

// formatAuthRes formats an Authentication-Results field (RFC 8601 §2.2),
// one resinfo per folded line; "none" when there is none (§2.2: no
// authentication was done).
func formatAuthRes(authservID string, infos []resinfo) string {
	var b strings.Builder
	b.WriteString("Authentication-Results: ")
	b.WriteString(value(authservID))
	if len(infos) == 0 {
		b.WriteString("; none")
		return b.String()
	}
	for _, r := range infos {
		b.WriteString(";\r\n\t")
		b.WriteString(r.method)
		b.WriteByte('=')
		b.WriteString(r.result)
		if r.comment != "" {
			b.WriteString(" (")
			b.WriteString(commentText(r.comment))
			b.WriteByte(')')
		}
		for _, pv := range r.props {
			b.WriteByte(' ')
			b.WriteString(pv[0])
			b.WriteByte('=')
			b.WriteString(pvalue(pv[1]))
		}
	}
	return b.String()
}

// commentText makes s safe inside a comment: parentheses and backslashes
// are escaped, control characters dropped.
func commentText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c == 0x7f {
			continue
		}
		if c == '(' || c == ')' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}
