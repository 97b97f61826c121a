package smtpin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"net/textproto"
)

// errFromNotOwned refuses a submitted message whose header From or Sender
// names an address the authenticated user does not own.
var errFromNotOwned = smtpErr(550, 5, 7, 1, "Header From or Sender address not owned by user")

// fromNotOwnedError is the reason a message's header failed the sender
// check: the field and the address (or why the field could not be read).
type fromNotOwnedError struct {
	field, addr, user string
}

func (e *fromNotOwnedError) Error() string {
	return fmt.Sprintf("header %s %s not owned by user %s", e.field, e.addr, e.user)
}

// checkHeaderFrom reads the header of msg (only the header: the body is
// never read) and returns a *fromNotOwnedError unless user owns every
// address of every From field (RFC 5322 §3.6.2: a mailbox-list, the
// authors) and of the Sender field. The queue signs what a user submits
// with the user's domain (RFC 6376), so without this check a user could
// have a message that claims to be from anyone at that domain pass DMARC,
// which judges the header From (RFC 7489 §3.1). A header that cannot be
// parsed is refused too: no field may escape the check by being
// malformed for us and readable for a mail reader.
func (s *session) checkHeaderFrom(user string, msg io.Reader) error {
	tp := textproto.NewReader(bufio.NewReader(msg))
	hdr, err := tp.ReadMIMEHeader()
	// A message that is all header (no empty line) ends at EOF.
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return &fromNotOwnedError{field: "header", addr: "(malformed: " + err.Error() + ")", user: user}
	}
	for _, field := range []string{"From", "Sender"} {
		for _, v := range hdr[field] {
			list, err := mail.ParseAddressList(v)
			if err != nil {
				return &fromNotOwnedError{field: field, addr: "(unparsable: " + err.Error() + ")", user: user}
			}
			for _, a := range list {
				pa, err := parseAddress(a.Address)
				if err != nil || !s.resolver.Owns(user, pa.String()) {
					return &fromNotOwnedError{field: field, addr: a.Address, user: user}
				}
			}
		}
	}
	return nil
}
