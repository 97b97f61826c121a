// Package mtasts implements the sending side of SMTP MTA Strict Transport
// Security (RFC 8461): it discovers a recipient domain's policy (the
// _mta-sts TXT record), fetches it over HTTPS with a verified certificate,
// parses it, caches it on disk across restarts, and tells whether an MX
// host matches it.
//
// The queue asks Client.Get for the policy of each destination domain
// before delivering: in "enforce" mode it delivers only to MX hosts that
// match the policy and whose certificates verify (WebPKI); in "testing"
// mode it delivers anyway and reports the failures (TLS-RPT, RFC 8460).
package mtasts

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Mode is a policy's mode (RFC 8461 §5).
type Mode string

// The modes of RFC 8461 §5.
const (
	ModeEnforce Mode = "enforce"
	ModeTesting Mode = "testing"
	ModeNone    Mode = "none"
)

// Limits of the parsers.
const (
	// MaxPolicySize is the largest policy body read (RFC 8461 §3.3
	// suggests 64 KiB).
	MaxPolicySize = 64 << 10
	// MaxMaxAge is the largest max_age (RFC 8461 §3.2: up to 31557600).
	MaxMaxAge = 31557600
	// maxMX bounds the number of mx lines of a policy.
	maxMX = 100
	// maxLine bounds one policy line.
	maxLine = 1000
)

// Policy is a parsed MTA-STS policy (RFC 8461 §3.2).
type Policy struct {
	// Mode is enforce, testing or none.
	Mode Mode `json:"mode"`
	// MX are the allowed MX host patterns, lower case ("mx.example.com",
	// "*.example.net").
	MX []string `json:"mx"`
	// MaxAge is how long the policy may be cached.
	MaxAge time.Duration `json:"max_age"`
	// Text is the policy as fetched (for TLS-RPT's policy-string).
	Text string `json:"text"`
}

// ParseError is a policy or TXT record that does not parse.
type ParseError struct {
	// What is "policy" or "record".
	What string
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *ParseError) Error() string { return "mta-sts: invalid " + e.What + ": " + e.Reason }

func policyErr(format string, args ...any) error {
	return &ParseError{What: "policy", Reason: fmt.Sprintf(format, args...)}
}

// ParsePolicy parses a policy body (RFC 8461 §3.2): "key: value" lines
// separated by LF or CRLF, with version STSv1, a mode, max_age, and mx
// patterns (at least one unless the mode is none). Unknown keys are
// ignored (§3.2: "extension"); a repeated key other than mx is an error.
func ParsePolicy(r io.Reader) (*Policy, error) {
	var text strings.Builder
	lr := io.LimitReader(r, MaxPolicySize+1)
	sc := bufio.NewScanner(io.TeeReader(lr, &text))
	sc.Buffer(make([]byte, 0, 1024), maxLine)
	p := &Policy{}
	seen := map[string]bool{}
	for n := 0; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, policyErr("line %d has no ':'", n+1)
		}
		// RFC 8461 §3.2: sts-field-delim is ":" *WSP; keys are
		// case-sensitive, values too except where said.
		k = strings.TrimSpace(k)
		v = strings.Trim(v, " \t")
		if k != "mx" && seen[k] {
			return nil, policyErr("%q repeated", k)
		}
		seen[k] = true
		switch k {
		case "version":
			if v != "STSv1" {
				return nil, policyErr("version %q is not STSv1", v)
			}
		case "mode":
			switch Mode(v) {
			case ModeEnforce, ModeTesting, ModeNone:
				p.Mode = Mode(v)
			default:
				return nil, policyErr("unknown mode %q", v)
			}
		case "max_age":
			// RFC 8461 §3.2: 1*10DIGIT, at most 31557600.
			if v == "" || len(v) > 10 || strings.Trim(v, "0123456789") != "" {
				return nil, policyErr("bad max_age %q", v)
			}
			secs, err := strconv.ParseInt(v, 10, 64)
			if err != nil || secs > MaxMaxAge {
				return nil, policyErr("max_age %q out of range", v)
			}
			p.MaxAge = time.Duration(secs) * time.Second
		case "mx":
			pat := strings.ToLower(strings.TrimSuffix(v, "."))
			if !validPattern(pat) {
				return nil, policyErr("bad mx pattern %q", v)
			}
			if len(p.MX) >= maxMX {
				return nil, policyErr("more than %d mx lines", maxMX)
			}
			p.MX = append(p.MX, pat)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, policyErr("line longer than %d octets", maxLine)
		}
		return nil, policyErr("%v", err)
	}
	if text.Len() > MaxPolicySize {
		return nil, policyErr("larger than %d octets", MaxPolicySize)
	}
	switch {
	case !seen["version"]:
		return nil, policyErr("no version")
	case p.Mode == "":
		return nil, policyErr("no mode")
	case !seen["max_age"]:
		return nil, policyErr("no max_age")
	case len(p.MX) == 0 && p.Mode != ModeNone:
		return nil, policyErr("no mx in mode %s", p.Mode)
	}
	p.Text = text.String()
	return p, nil
}

// validPattern checks an mx pattern: a domain name, or "*." and one.
func validPattern(p string) bool {
	p = strings.TrimPrefix(p, "*.")
	if p == "" || len(p) > 253 {
		return false
	}
	for _, label := range strings.Split(p, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Matches reports whether host (an MX host name) is allowed by the
// policy's mx patterns.
func (p *Policy) Matches(host string) bool {
	for _, pat := range p.MX {
		if MatchMX(pat, host) {
			return true
		}
	}
	return false
}

// MatchMX reports whether host matches one mx pattern. RFC 8461 §4.1: a
// pattern "*.example.com" matches exactly one leftmost label
// ("mx.example.com", not "example.com" nor "a.b.example.com"); others
// match the name itself, case-insensitively, ignoring a final dot.
func MatchMX(pattern, host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	pattern = strings.ToLower(strings.TrimSuffix(pattern, "."))
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		label, parent, found := strings.Cut(host, ".")
		return found && label != "" && parent == rest
	}
	return host == pattern
}

// ParseRecord parses the _mta-sts TXT record (RFC 8461 §3.1) and returns
// its id: "v=STSv1; id=20160831085700Z;" with the version first, fields
// separated by ';', unknown fields ignored.
func ParseRecord(txt string) (string, error) {
	if len(txt) > 1000 {
		return "", &ParseError{What: "record", Reason: "too long"}
	}
	fields := strings.Split(txt, ";")
	id := ""
	for i, f := range fields {
		f = strings.Trim(f, " \t")
		if f == "" && i == len(fields)-1 {
			break
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return "", &ParseError{What: "record", Reason: fmt.Sprintf("field %q has no '='", f)}
		}
		k, v = strings.Trim(k, " \t"), strings.Trim(v, " \t")
		if i == 0 {
			if k != "v" || v != "STSv1" {
				return "", &ParseError{What: "record", Reason: "does not start with v=STSv1"}
			}
			continue
		}
		if k == "id" {
			// RFC 8461 §3.1: sts-id = 1*32(ALPHA / DIGIT).
			if v == "" || len(v) > 32 || strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
				return "", &ParseError{What: "record", Reason: fmt.Sprintf("bad id %q", v)}
			}
			if id != "" {
				return "", &ParseError{What: "record", Reason: "id repeated"}
			}
			id = v
		}
	}
	if id == "" {
		return "", &ParseError{What: "record", Reason: "no id"}
	}
	return id, nil
}
