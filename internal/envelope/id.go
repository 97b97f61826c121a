package envelope

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// NewMessageID returns a new message id: the time in microseconds and 24
// random bits, in upper-case hex (19 digits), so that ids sort by age.
// The intake names a transaction with it (the id of "250 ... queued as
// ID", of the Received header and of its log lines) and the queue keeps
// it as the message's id (see DSNParams.ID), so that one id follows a
// message from the SMTP reply to `postino queue show` and every log line.
func NewMessageID(now time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	return fmt.Sprintf("%013X%s", now.UnixMicro(), strings.ToUpper(hex.EncodeToString(b[:])))
}

// ValidMessageID reports whether s has the form NewMessageID gives: 19
// upper-case hex digits.
func ValidMessageID(s string) bool {
	if len(s) != 19 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
