package smtpin

import (
	"log/slog"

	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/srs"
)

// newResolver returns the recipient resolver of the server: the one of
// package delivery, over the server's users, aliases and domains.
func (s *Server) newResolver(o *Options) *delivery.Resolver {
	r := &delivery.Resolver{
		Users:         o.Deliverer.Users,
		PlusSeparator: o.PlusSeparator,
		Postmaster:    o.Postmaster,
		SRS:           o.SRS,
		IsLocalDomain: s.isLocalDomain,
	}
	if o.Aliases != nil {
		r.Aliases = o.Aliases
	}
	return r
}

// forwardSender returns the envelope sender to queue mail with (see
// ForwardSender).
func (s *Server) forwardSender(from, user string, log *slog.Logger) string {
	return ForwardSender(s.options().SRS, from, user, s.primaryDomain, log)
}

// ForwardSender returns the envelope sender to queue mail with: for mail
// no user of ours submitted (user is ""), the SRS form of from in the
// primary domain when SRS is on (rw not nil), so that the next hop's SPF
// check sees our domain, and bounces still reach the sender. The null
// sender stays null.
func ForwardSender(rw *srs.Rewriter, from, user string, primaryDomain func() string, log *slog.Logger) string {
	if user != "" || from == "" || rw == nil {
		return from
	}
	d := primaryDomain()
	if d == "" {
		return from
	}
	fw, err := rw.Forward(from, d)
	if err != nil {
		log.Warn("smtp: SRS rewriting failed; forwarding with the original sender", "from", from, "err", err)
		return from
	}
	return fw
}

// primaryDomain returns the server's primary local domain (see
// envelope.PrimaryDomain).
func (s *Server) primaryDomain() string {
	o := s.options()
	return envelope.PrimaryDomain(o.Hostname, o.LocalDomains, o.Users, o.Aliases, s.isLocalDomain)
}
