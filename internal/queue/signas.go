package queue

import (
	"bufio"
	"io"
	"net/mail"
	"net/textproto"
	"strings"
)

// maxSignHeader bounds the header read to find a message's author.
const maxSignHeader = 1 << 20

// signingDomain returns the domain a message submitted by user is signed
// as, hdr being the message (only its header is read).
//
// RFC 7489 §3.1.1: DMARC at the receiver passes on DKIM only when the
// signing domain (d=) aligns with the domain of the header From, so
// postino signs as the author's domain when it holds that domain's keys.
// RFC 6376 §1.1: the signer takes responsibility for the message, so it
// does so only for an author address the user may send as: the user's
// own address, a plus-address of it, or an alias that reaches the user
// (Options.Owns). Owning some address in a domain is not enough: alice
// owning alice@second.example does not make ceo@second.example hers.
// Otherwise (a From of another domain, several authors, a header we
// cannot read) the message is signed as the user's own domain, as
// before: that statement is true whatever the From field says.
func (q *Queue) signingDomain(user string, hdr io.Reader) string {
	own := domainOf(user)
	owns := q.options().Owns
	if owns == nil {
		return own
	}
	author, ok := headerAuthor(hdr)
	if !ok {
		return own
	}
	d := domainOf(author)
	if d == "" || d == own || !q.options().IsLocalDomain(d) || !owns(user, author) {
		return own
	}
	return d
}

// headerAuthor returns the one address of the message's one From field
// (RFC 5322 §3.6.2), and false when there is not exactly one.
func headerAuthor(r io.Reader) (string, bool) {
	hdr, err := textproto.NewReader(bufio.NewReader(io.LimitReader(r, maxSignHeader))).ReadMIMEHeader()
	if err != nil && err != io.EOF {
		return "", false
	}
	froms := hdr["From"]
	if len(froms) != 1 {
		return "", false
	}
	list, err := mail.ParseAddressList(froms[0])
	if err != nil || len(list) != 1 {
		return "", false
	}
	return strings.ToLower(list[0].Address), true
}
