package smtpin

import (
	"errors"
	"log/slog"
	"slices"
	"strings"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/srs"
)

// target is one local copy: the mailbox and the Delivered-To address.
type target struct {
	mailbox     string
	deliveredTo string
}

// resolution is where mail for one recipient goes.
type resolution struct {
	local  []target
	remote []string
}

func (r *resolution) addLocal(t target) {
	for _, x := range r.local {
		if x.mailbox == t.mailbox {
			return
		}
	}
	r.local = append(r.local, t)
}

func (r *resolution) addRemote(addr string) {
	if !containsString(r.remote, addr) {
		r.remote = append(r.remote, addr)
	}
}

func (s *Server) lookupUser(addr string) (string, bool) {
	return s.opts.Deliverer.Users.LookupAddress(addr)
}

// stripTag returns the address without its plus-address tag
// (user+tag@domain -> user@domain), if it has one.
func (s *Server) stripTag(a address) (string, bool) {
	sep := s.opts.PlusSeparator
	if sep == "" {
		return "", false
	}
	base, _, found := strings.Cut(a.local, sep)
	if !found || base == "" {
		return "", false
	}
	return base + "@" + a.domain, true
}

// canonical returns the auth form of an address (domain in lower case)
// when it has one, else addr.
func canonical(addr string) string {
	if c, err := auth.CanonicalAddress(addr); err == nil {
		return c
	}
	return addr
}

// resolve finds where mail for a goes, in this order: an exact local user;
// an alias; with plus-addressing, the user or alias without the tag; the
// domain's catch-all. It returns false when none applies.
func (s *Server) resolve(a address, log *slog.Logger) (resolution, bool) {
	var res resolution
	addr := a.String()
	if u, ok := s.lookupUser(addr); ok {
		res.addLocal(target{mailbox: u, deliveredTo: u})
		return res, true
	}
	if s.expandAlias(addr, &res, log) {
		return res, true
	}
	if base, ok := s.stripTag(a); ok {
		if u, ok := s.lookupUser(base); ok {
			// Delivered-To keeps the tag, for the user's filters.
			res.addLocal(target{mailbox: u, deliveredTo: canonical(addr)})
			return res, true
		}
		if s.expandAlias(base, &res, log) {
			return res, true
		}
	}
	if s.opts.Aliases != nil {
		if ca, ok := s.opts.Aliases.CatchAll(a.domain); ok {
			if s.expandAlias(ca, &res, log) || s.resolveFinal(ca, &res, log) {
				return res, true
			}
		}
	}
	return res, false
}

// resolveSpecial resolves the addresses of a local domain that are
// neither users nor aliases but still have a destination: postmaster,
// when Options.Postmaster is set (RFC 5321 §4.5.1 requires every domain
// to accept it), and valid SRS addresses, which go back to the address
// they were made from. A forged or expired SRS address resolves to
// nothing (User unknown): only addresses we made, recently, are relayed.
func (s *Server) resolveSpecial(a address, log *slog.Logger) (resolution, bool) {
	var res resolution
	if strings.EqualFold(a.local, "postmaster") && s.opts.Postmaster != "" {
		pa, err := parseAddress(s.opts.Postmaster)
		if err != nil {
			log.Error("smtp: invalid postmaster address", "postmaster", s.opts.Postmaster)
			return res, false
		}
		if r, ok := s.resolve(pa, log); ok {
			return r, true
		}
		return res, s.resolveFinal(pa.String(), &res, log)
	}
	if s.opts.SRS == nil || !srs.IsSRS(a.String()) {
		return res, false
	}
	orig, err := s.opts.SRS.Reverse(a.String())
	if err != nil {
		if errors.Is(err, srs.ErrBadHash) {
			log.Warn("smtp: forged SRS address refused", "rcpt", a.String())
		} else {
			log.Info("smtp: SRS address refused", "rcpt", a.String(), "err", err)
		}
		return res, false
	}
	oa, err := parseAddress(orig)
	if err != nil {
		log.Warn("smtp: SRS address reverses to an invalid address", "rcpt", a.String(), "orig", orig)
		return res, false
	}
	log.Info("smtp: SRS address reversed", "rcpt", a.String(), "orig", oa.String())
	if s.isLocalDomain(oa.domain) {
		return s.resolve(oa, log)
	}
	res.addRemote(oa.String())
	return res, true
}

// forwardSender returns the envelope sender to queue mail with: for mail
// no user of ours submitted (user is ""), the SRS form of from in the
// primary domain when SRS is on, so that the next hop's SPF check sees our
// domain, and bounces still reach the sender. The null sender stays null.
func (s *Server) forwardSender(from, user string, log *slog.Logger) string {
	if user != "" || from == "" || s.opts.SRS == nil {
		return from
	}
	d := s.primaryDomain()
	if d == "" {
		return from
	}
	rw, err := s.opts.SRS.Forward(from, d)
	if err != nil {
		log.Warn("smtp: SRS rewriting failed; forwarding with the original sender", "from", from, "err", err)
		return from
	}
	return rw
}

// primaryDomain returns the primary local domain: the first of
// Options.LocalDomains; else the host name or its nearest parent domain
// that is local; else the first, in sorted order, of the domains of the
// users and aliases. "" when there is no local domain.
func (s *Server) primaryDomain() string {
	if len(s.opts.LocalDomains) > 0 {
		return strings.ToLower(s.opts.LocalDomains[0])
	}
	for d := strings.ToLower(s.opts.Hostname); strings.Contains(d, "."); _, d, _ = strings.Cut(d, ".") {
		if s.isLocalDomain(d) {
			return d
		}
	}
	var domains []string
	if s.opts.Aliases != nil {
		domains = append(domains, s.opts.Aliases.Domains()...)
	}
	if list, err := s.opts.Users.List(); err == nil {
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

// expandAlias adds the destinations of alias addr to res and reports
// whether addr is an alias with at least one usable destination.
func (s *Server) expandAlias(addr string, res *resolution, log *slog.Logger) bool {
	if s.opts.Aliases == nil {
		return false
	}
	targets, ok := s.opts.Aliases.Expand(addr)
	if !ok {
		return false
	}
	if targets == nil {
		log.Error("smtp: alias loops or nests too deep", "alias", addr)
		return false
	}
	usable := false
	for _, t := range targets {
		if s.resolveFinal(t, res, log) {
			usable = true
		}
	}
	return usable
}

// resolveFinal adds an address reached through an alias: a local user
// (possibly through plus-addressing) or a remote address. A missing user
// of a local domain is logged and skipped.
func (s *Server) resolveFinal(addr string, res *resolution, log *slog.Logger) bool {
	if u, ok := s.lookupUser(addr); ok {
		res.addLocal(target{mailbox: u, deliveredTo: addr})
		return true
	}
	a, err := parseAddress(addr)
	if err != nil {
		log.Error("smtp: alias target is not a valid address", "target", addr)
		return false
	}
	if base, ok := s.stripTag(a); ok {
		if u, ok := s.lookupUser(base); ok {
			res.addLocal(target{mailbox: u, deliveredTo: addr})
			return true
		}
	}
	if s.isLocalDomain(a.domain) {
		log.Warn("smtp: alias target is not a local user", "target", addr)
		return false
	}
	res.addRemote(a.String())
	return true
}

// ownsSender reports whether user may send as a: a is the user's address,
// one of its plus-addresses, or an alias (or a plus-address of an alias)
// that expands to the user.
func (s *Server) ownsSender(user string, a address) bool {
	owns := func(addr string) bool {
		if u, ok := s.lookupUser(addr); ok && u == user {
			return true
		}
		if s.opts.Aliases == nil {
			return false
		}
		targets, _ := s.opts.Aliases.Expand(addr)
		for _, t := range targets {
			if u, ok := s.lookupUser(t); ok && u == user {
				return true
			}
			if ta, err := parseAddress(t); err == nil {
				if base, ok := s.stripTag(ta); ok {
					if u, ok := s.lookupUser(base); ok && u == user {
						return true
					}
				}
			}
		}
		return false
	}
	if owns(a.String()) {
		return true
	}
	if base, ok := s.stripTag(a); ok && owns(base) {
		return true
	}
	return false
}
