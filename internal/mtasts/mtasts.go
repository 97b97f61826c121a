// Package mtasts holds postino's own MTA-STS policy (RFC 8461): the policy
// text served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt and the id
// published in the _mta-sts.DOMAIN TXT record, computed from that text so
// that the record changes whenever the policy does.
package mtasts

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Policy modes (RFC 8461 §3.2).
const (
	ModeEnforce = "enforce"
	ModeTesting = "testing"
	ModeNone    = "none"
)

// DefaultMaxAge is the max_age published by default, one week in seconds
// (RFC 8461 §3.2: "weeks or greater" is advised; the maximum is 31557600).
const DefaultMaxAge = 604800

// Policy is an MTA-STS policy.
type Policy struct {
	// Mode is ModeEnforce, ModeTesting or ModeNone.
	Mode string
	// MX lists the host names (or "*.example.org" patterns) allowed as MX.
	MX []string
	// MaxAge is the lifetime of the policy in seconds.
	MaxAge int
}

// Text returns the policy file: "key: value" lines ending in CRLF (RFC
// 8461 §3.2 allows LF or CRLF; CRLF is the form its examples use).
func (p Policy) Text() string {
	var b strings.Builder
	// RFC 8461 §3.2: "version" must be the first field.
	b.WriteString("version: STSv1\r\n")
	fmt.Fprintf(&b, "mode: %s\r\n", p.Mode)
	for _, mx := range p.MX {
		fmt.Fprintf(&b, "mx: %s\r\n", strings.TrimSuffix(strings.ToLower(mx), "."))
	}
	fmt.Fprintf(&b, "max_age: %d\r\n", p.MaxAge)
	return b.String()
}

// ID returns the policy id published in the TXT record: the first 32 hex
// digits of the SHA-256 of Text (RFC 8461 §3.1: 1 to 32 alphanumeric
// characters, to change whenever the policy changes).
func (p Policy) ID() string {
	sum := sha256.Sum256([]byte(p.Text()))
	return hex.EncodeToString(sum[:])[:32]
}

// Record returns the text of the _mta-sts TXT record (RFC 8461 §3.1).
func (p Policy) Record() string { return "v=STSv1; id=" + p.ID() }
