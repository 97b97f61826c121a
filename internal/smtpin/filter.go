package smtpin

import (
	"io"

	"github.com/postino-mail/postino/internal/crlf"
)

// errNUL rejects a message containing a NUL octet.
var errNUL = crlf.ErrNUL

// newNormalizer returns the intake's filter over message data: bare CR
// and bare LF become CRLF (RFC 5321 §2.3.8) and a NUL octet is errNUL.
// The queue normalises with the same code (crlf.Normalizer).
func newNormalizer(r io.Reader) *crlf.Normalizer {
	return crlf.NewNormalizer(r, true)
}
