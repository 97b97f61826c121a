// Package envelope is the vocabulary that postino's mail intake
// (internal/smtpin) and its outbound queue (internal/queue) share, so that
// neither depends on the other:
//
//   - DSNParams and RecipientDSN carry the Delivery Status Notification
//     parameters of a message (RFC 3461) and the authenticated submitter
//     from the SMTP transaction to the queue, which keeps them with the
//     message and honours them when it reports delivery or failure;
//   - Relay is the one operation the intake needs from the queue: store a
//     message durably for remote recipients;
//   - LocalDomainFunc is the one rule, used on both sides, that decides
//     whether mail for a domain is delivered here or relayed, and
//     PrimaryDomain the one that names the domain SRS addresses are made
//     in.
//
// The package holds data types and that rule only: no I/O, no protocol
// state. Whatever the intake accepts with these types, the queue takes as
// it is.
package envelope

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/postino-mail/postino/internal/auth"
)

// DSNParams are the Delivery Status Notification parameters of a message
// (RFC 3461), kept for the Relay.
type DSNParams struct {
	// Return is the RET= value of MAIL: "FULL", "HDRS" or "".
	Return string
	// EnvelopeID is the ENVID= value of MAIL, xtext-decoded, or "".
	EnvelopeID string
	// Recipients holds the RCPT parameters, one per recipient passed to
	// Relay.Enqueue, in the same order.
	Recipients []RecipientDSN
	// AuthUser is the user who submitted the message, authenticated with
	// SMTP AUTH (RFC 4954), or "" for mail that was not submitted by one
	// of our users (received on the MX port or over LMTP, forwarded by an
	// alias). It decides whether the message is ours to DKIM-sign: never
	// the envelope or a header, which anyone can forge.
	AuthUser string
	// ID is the id the intake gave the message (NewMessageID), which its
	// reply and log lines show; the queue keeps it as the message's id
	// when it is valid (ValidMessageID), else makes one of its own.
	ID string
}

// RecipientDSN are the DSN parameters of one recipient (RFC 3461 §4).
type RecipientDSN struct {
	// Notify is the NOTIFY= list ("NEVER", or some of "SUCCESS",
	// "FAILURE", "DELAY"); nil when not given.
	Notify []string
	// OriginalRecipientType is the address type of ORCPT= ("RFC822" or
	// "UTF-8"), and OriginalRecipient its decoded address. For a remote
	// address reached through an alias without ORCPT=, they are "RFC822"
	// (or "UTF-8") and the address the client gave.
	OriginalRecipientType string
	OriginalRecipient     string
}

// Relay accepts messages for remote recipients: the outbound queue.
type Relay interface {
	// Enqueue stores the message durably for later delivery to rcpts and
	// returns its queue id. msg starts with our Received header.
	Enqueue(ctx context.Context, from string, rcpts []string, params DSNParams, msg io.Reader) (id string, err error)
}

// UserLister lists the users whose domains are local when no local
// domains are configured; *auth.DB implements it.
type UserLister interface {
	// List returns all users.
	List() ([]auth.User, error)
}

// AliasDomains gives the domains that have aliases; *aliases.Table and
// *aliases.Reloading implement it.
type AliasDomains interface {
	// Domains returns the domains that have aliases.
	Domains() []string
}

// LocalDomainFunc returns the test for "mail for this domain is delivered
// here" that the SMTP servers and the outbound queue share: the configured
// local domains, or when there are none the domains of the users and
// aliases. al may be nil; logger may be nil.
func LocalDomainFunc(local []string, users UserLister, al AliasDomains, logger *slog.Logger) func(string) bool {
	return func(domain string) bool {
		domain = strings.ToLower(domain)
		if len(local) > 0 {
			return slices.ContainsFunc(local, func(d string) bool { return strings.EqualFold(d, domain) })
		}
		if al != nil && slices.Contains(al.Domains(), domain) {
			return true
		}
		list, err := users.List()
		if err != nil {
			if logger != nil {
				logger.Error("smtp: listing users", "err", err)
			}
			return false
		}
		for _, u := range list {
			if _, d, _ := strings.Cut(u.Address, "@"); d == domain {
				return true
			}
		}
		return false
	}
}

// PrimaryDomain returns the primary local domain, as the SMTP servers and
// `postino deliver` use it for postmaster and SRS: the first of local;
// else the host name or its nearest parent domain that is local; else the
// first, in sorted order, of the domains of the users and aliases. "" when
// there is no local domain. al may be nil.
func PrimaryDomain(hostname string, local []string, users UserLister, al AliasDomains, isLocal func(string) bool) string {
	if len(local) > 0 {
		return strings.ToLower(local[0])
	}
	for d := strings.ToLower(hostname); strings.Contains(d, "."); _, d, _ = strings.Cut(d, ".") {
		if isLocal(d) {
			return d
		}
	}
	var domains []string
	if al != nil {
		domains = append(domains, al.Domains()...)
	}
	if list, err := users.List(); err == nil {
		for _, u := range list {
			if _, d, ok := strings.Cut(u.Address, "@"); ok {
				domains = append(domains, d)
			}
		}
	}
	if len(domains) == 0 {
		return ""
	}
	return strings.ToLower(slices.Min(domains))
}
