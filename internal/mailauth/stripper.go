package mailauth

import (
	"context"
	"errors"

	"github.com/postino-mail/postino/internal/inbound"
)

// Stripper is the part of the check that submission and LMTP need: it
// verifies nothing and adds nothing, and only removes the
// Authentication-Results fields that claim our authserv-id (RFC 8601 §5).
// Mail a local user submits reaches other local users without passing the
// MX, so a forged field naming us would otherwise be trusted by their
// mail readers as much as the ones the MX writes.
type Stripper struct{ c *Check }

// NewStripper returns the Stripper for authservID.
func NewStripper(authservID string) *Stripper {
	return &Stripper{c: &Check{o: Options{AuthservID: authservID}}}
}

// Name implements inbound.Check.
func (s *Stripper) Name() string { return "authres-strip" }

// Begin implements inbound.Check.
func (s *Stripper) Begin(ctx context.Context, conn *inbound.Conn, v *inbound.Verdict) inbound.Session {
	return &stripSession{s: &session{c: s.c, conn: *conn}}
}

// stripSession has only the DATA stage.
type stripSession struct{ s *session }

// Data implements inbound.DataStage: msg without our forged fields, or
// nil when it has none.
func (ss *stripSession) Data(ctx context.Context, env *inbound.Envelope, msg inbound.Message, v *inbound.Verdict) (inbound.Message, error) {
	h, err := readHeader(msg.Reader())
	if err != nil {
		var he *HeaderError
		if errors.As(err, &he) {
			// As on the MX: a forged field could hide past what was read.
			v.Add(inbound.Result{Check: "authres-strip", Action: inbound.Reject, Code: 552, Enhanced: [3]int{5, 6, 0},
				Reply: "Message header too large or malformed", Detail: he.Reason})
			return nil, nil
		}
		return nil, err
	}
	return ss.s.strip(msg, h)
}
