package wellknown

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// MTA-STS policy modes (RFC 8461 §5).
const (
	ModeEnforce = "enforce"
	ModeTesting = "testing"
	ModeNone    = "none"
)

// MaxPolicyAge is the largest max_age RFC 8461 §3.2 allows: 31557600
// seconds (a year).
const MaxPolicyAge = 31557600 * time.Second

// Policy is the MTA-STS policy of the local domains (RFC 8461 §3.2).
type Policy struct {
	// Mode is enforce, testing or none.
	Mode string
	// MX are the host names (or "*.domain" patterns) senders may deliver
	// to: those this server answers MX for.
	MX []string
	// MaxAge is how long senders cache the policy (whole seconds).
	MaxAge time.Duration
}

// Text returns the policy file as served at
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt.
func (p Policy) Text() string {
	// RFC 8461 §3.2: "key: value" lines, CRLF-terminated, version first.
	var b strings.Builder
	b.WriteString("version: STSv1\r\n")
	b.WriteString("mode: " + p.Mode + "\r\n")
	for _, mx := range p.MX {
		b.WriteString("mx: " + strings.ToLower(mx) + "\r\n")
	}
	b.WriteString("max_age: " + strconv.FormatInt(int64(p.MaxAge/time.Second), 10) + "\r\n")
	return b.String()
}

// ID returns the policy id to publish in the _mta-sts.DOMAIN TXT record
// ("v=STSv1; id=ID;"): the first 32 hexadecimal digits of the SHA-256 of
// Text. RFC 8461 §3.1: senders fetch the policy again when the id
// changes, and an id is 1 to 32 letters or digits; deriving it from the
// text changes it exactly when the policy changes.
func (p Policy) ID() string {
	sum := sha256.Sum256([]byte(p.Text()))
	return hex.EncodeToString(sum[:16])
}
