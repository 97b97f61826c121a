package delivery

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/srs"
)

// Aliases is what recipient resolution needs from the alias table;
// *aliases.Table and *aliases.Reloading implement it.
type Aliases interface {
	// Expand returns the final addresses of an alias and whether addr is
	// one; the addresses are nil when the alias loops or nests too deep.
	Expand(addr string) ([]string, bool)
	// CatchAll returns the catch-all address of a domain, if any.
	CatchAll(domain string) (string, bool)
}

// Resolver finds where mail for a recipient goes: local users, aliases
// (which may forward to remote addresses), plus-addresses, catch-alls,
// postmaster and SRS bounce addresses. It is the one implementation of
// these rules: SMTP (MX, submission, LMTP), `postino deliver` and fetch's
// local destination all resolve through it.
type Resolver struct {
	// Users resolves an address to an existing local user (required).
	Users Users
	// Aliases is the alias table; nil means none.
	Aliases Aliases
	// PlusSeparator, when not empty, lets "user+tag@domain" reach
	// "user@domain" (plus-addressing, also for aliases).
	PlusSeparator string
	// Postmaster receives mail for postmaster@ a local domain that has no
	// user or alias of that name; "" means none.
	Postmaster string
	// SRS, when set, routes valid SRS addresses of the local domains back
	// to the address they were made from.
	SRS *srs.Rewriter
	// IsLocalDomain reports whether mail for a domain is delivered here;
	// nil means no domain is local beyond its users.
	IsLocalDomain func(domain string) bool
}

// Target is one local copy: the mailbox and the Delivered-To address.
type Target struct {
	// Mailbox is the canonical name of the user's mailbox.
	Mailbox string
	// DeliveredTo is the address written in the Delivered-To field.
	DeliveredTo string
}

// Resolution is where mail for one recipient goes.
type Resolution struct {
	// Local are the local copies, one per mailbox.
	Local []Target
	// Remote are the addresses the message is forwarded to (through the
	// outbound queue).
	Remote []string
}

func (r *Resolution) addLocal(t Target) {
	for _, x := range r.Local {
		if x.Mailbox == t.Mailbox {
			return
		}
	}
	r.Local = append(r.Local, t)
}

func (r *Resolution) addRemote(addr string) {
	for _, x := range r.Remote {
		if x == addr {
			return
		}
	}
	r.Remote = append(r.Remote, addr)
}

// splitAddress splits local@domain at its last '@', with the domain in
// lower case (domains are case-insensitive, RFC 5321 §2.4).
func splitAddress(addr string) (local, domain string, ok bool) {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", "", false
	}
	return addr[:at], strings.ToLower(addr[at+1:]), true
}

// canonical returns the auth form of an address (domain in lower case)
// when it has one, else addr.
func canonical(addr string) string {
	if c, err := auth.CanonicalAddress(addr); err == nil {
		return c
	}
	return addr
}

func (r *Resolver) isLocalDomain(domain string) bool {
	return r.IsLocalDomain != nil && r.IsLocalDomain(domain)
}

func (r *Resolver) lookupUser(addr string) (string, bool) {
	return r.Users.LookupAddress(addr)
}

// StripTag returns the address without its plus-address tag
// (user+tag@domain -> user@domain), if it has one.
func (r *Resolver) StripTag(addr string) (string, bool) {
	if r.PlusSeparator == "" {
		return "", false
	}
	local, domain, ok := splitAddress(addr)
	if !ok {
		return "", false
	}
	base, _, found := strings.Cut(local, r.PlusSeparator)
	if !found || base == "" {
		return "", false
	}
	return base + "@" + domain, true
}

// Mailbox returns the mailbox of addr when it is a local user or, with
// plus-addressing, a plus-address of one.
func (r *Resolver) Mailbox(addr string) (string, bool) {
	if u, ok := r.lookupUser(addr); ok {
		return u, true
	}
	if base, ok := r.StripTag(addr); ok {
		return r.lookupUser(base)
	}
	return "", false
}

// Resolve returns where mail for addr goes, and false when it has no
// destination (an unknown user, a forged SRS address). It tries an exact
// local user; an alias; with plus-addressing, the user or alias without
// the tag; the domain's catch-all; then, for a local domain only,
// postmaster and SRS addresses.
func (r *Resolver) Resolve(addr string, log *slog.Logger) (Resolution, bool) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res, ok := r.resolve(addr, log)
	if ok {
		return res, true
	}
	if _, domain, valid := splitAddress(addr); valid && r.isLocalDomain(domain) {
		return r.resolveSpecial(addr, log)
	}
	return res, false
}

func (r *Resolver) resolve(addr string, log *slog.Logger) (Resolution, bool) {
	var res Resolution
	if u, ok := r.lookupUser(addr); ok {
		res.addLocal(Target{Mailbox: u, DeliveredTo: u})
		return res, true
	}
	if r.expandAlias(addr, &res, log) {
		return res, true
	}
	if base, ok := r.StripTag(addr); ok {
		if u, ok := r.lookupUser(base); ok {
			// Delivered-To keeps the tag, for the user's filters.
			res.addLocal(Target{Mailbox: u, DeliveredTo: canonical(addr)})
			return res, true
		}
		if r.expandAlias(base, &res, log) {
			return res, true
		}
	}
	if r.Aliases != nil {
		if _, domain, ok := splitAddress(addr); ok {
			if ca, ok := r.Aliases.CatchAll(domain); ok {
				if r.expandAlias(ca, &res, log) || r.resolveFinal(ca, &res, log) {
					return res, true
				}
			}
		}
	}
	return res, false
}

// resolveSpecial resolves the addresses of a local domain that are
// neither users nor aliases but still have a destination: postmaster,
// when Postmaster is set (RFC 5321 §4.5.1 requires every domain to accept
// it), and valid SRS addresses, which go back to the address they were
// made from. A forged or expired SRS address resolves to nothing (User
// unknown): only addresses we made, recently, are relayed.
func (r *Resolver) resolveSpecial(addr string, log *slog.Logger) (Resolution, bool) {
	var res Resolution
	local, _, _ := splitAddress(addr)
	if strings.EqualFold(local, "postmaster") && r.Postmaster != "" {
		if _, _, ok := splitAddress(r.Postmaster); !ok {
			log.Error("invalid postmaster address", "postmaster", r.Postmaster)
			return res, false
		}
		if x, ok := r.resolve(r.Postmaster, log); ok {
			return x, true
		}
		return res, r.resolveFinal(r.Postmaster, &res, log)
	}
	if r.SRS == nil || !srs.IsSRS(addr) {
		return res, false
	}
	orig, err := r.SRS.Reverse(addr)
	if err != nil {
		if errors.Is(err, srs.ErrBadHash) {
			log.Warn("forged SRS address refused", "rcpt", addr)
		} else {
			log.Info("SRS address refused", "rcpt", addr, "err", err)
		}
		return res, false
	}
	ol, od, ok := splitAddress(orig)
	if !ok {
		log.Warn("SRS address reverses to an invalid address", "rcpt", addr, "orig", orig)
		return res, false
	}
	orig = ol + "@" + od
	log.Info("SRS address reversed", "rcpt", addr, "orig", orig)
	if r.isLocalDomain(od) {
		return r.resolve(orig, log)
	}
	res.addRemote(orig)
	return res, true
}

// expandAlias adds the destinations of alias addr to res and reports
// whether addr is an alias with at least one usable destination.
func (r *Resolver) expandAlias(addr string, res *Resolution, log *slog.Logger) bool {
	if r.Aliases == nil {
		return false
	}
	targets, ok := r.Aliases.Expand(addr)
	if !ok {
		return false
	}
	if targets == nil {
		log.Error("alias loops or nests too deep", "alias", addr)
		return false
	}
	usable := false
	for _, t := range targets {
		if r.resolveFinal(t, res, log) {
			usable = true
		}
	}
	return usable
}

// resolveFinal adds an address reached through an alias: a local user
// (possibly through plus-addressing) or a remote address. A missing user
// of a local domain is logged and skipped.
func (r *Resolver) resolveFinal(addr string, res *Resolution, log *slog.Logger) bool {
	if u, ok := r.lookupUser(addr); ok {
		res.addLocal(Target{Mailbox: u, DeliveredTo: addr})
		return true
	}
	local, domain, ok := splitAddress(addr)
	if !ok {
		log.Error("alias target is not a valid address", "target", addr)
		return false
	}
	if base, ok := r.StripTag(addr); ok {
		if u, ok := r.lookupUser(base); ok {
			res.addLocal(Target{Mailbox: u, DeliveredTo: addr})
			return true
		}
	}
	if r.isLocalDomain(domain) {
		log.Warn("alias target is not a local user", "target", addr)
		return false
	}
	res.addRemote(local + "@" + domain)
	return true
}

// Owns reports whether user may send as addr: addr is the user's address,
// one of its plus-addresses, or an alias (or a plus-address of an alias)
// that expands to the user.
func (r *Resolver) Owns(user, addr string) bool {
	owns := func(addr string) bool {
		if u, ok := r.lookupUser(addr); ok && u == user {
			return true
		}
		if r.Aliases == nil {
			return false
		}
		targets, _ := r.Aliases.Expand(addr)
		for _, t := range targets {
			if u, ok := r.lookupUser(t); ok && u == user {
				return true
			}
			if base, ok := r.StripTag(t); ok {
				if u, ok := r.lookupUser(base); ok && u == user {
					return true
				}
			}
		}
		return false
	}
	if owns(addr) {
		return true
	}
	if base, ok := r.StripTag(addr); ok && owns(base) {
		return true
	}
	return false
}
