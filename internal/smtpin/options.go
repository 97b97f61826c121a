package smtpin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/metrics"
	"github.com/postino-mail/postino/internal/resolver"
	"github.com/postino-mail/postino/pop3"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/srs"
)

// Role selects what a Server is for.
type Role int

// The roles of a Server.
const (
	// RoleMX receives mail for local recipients from anyone, without AUTH
	// (port 25).
	RoleMX Role = iota + 1
	// RoleSubmission receives mail from authenticated users, for local and
	// remote recipients (ports 587 and 465, RFC 6409 and RFC 8314).
	RoleSubmission
	// RoleLMTP is final delivery over LMTP (RFC 2033).
	RoleLMTP
)

// String returns "mx", "submission" or "lmtp".
func (r Role) String() string {
	switch r {
	case RoleMX:
		return "mx"
	case RoleSubmission:
		return "submission"
	case RoleLMTP:
		return "lmtp"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// UserDB is what the server needs from the user database; *auth.DB
// implements it.
type UserDB interface {
	// Authenticate checks a password and returns the canonical user
	// address, or an error wrapping auth.ErrInvalidCredentials.
	Authenticate(ctx context.Context, username, password string) (string, error)
	// List returns all users (for the local domains when
	// Options.LocalDomains is empty).
	List() ([]auth.User, error)
}

// Aliases is what the server needs from the alias table;
// *aliases.Table and *aliases.Reloading implement it.
type Aliases interface {
	// Expand returns the final addresses of an alias and whether addr is
	// one.
	Expand(addr string) ([]string, bool)
	// CatchAll returns the catch-all address of a domain, if any.
	CatchAll(domain string) (string, bool)
	// Domains returns the domains that have aliases.
	Domains() []string
}

// Zero-value meanings of the Options that are not settings of the
// configuration file.
const (
	// DefaultMaxLineLength is the command line limit when
	// Options.MaxLineLength is 0 (go-smtp's default).
	DefaultMaxLineLength = 2000
	// DefaultWriteTimeout bounds each reply write when
	// Options.WriteTimeout is 0.
	DefaultWriteTimeout = 5 * time.Minute
)

// Options configure a Server. ConfigOptions builds them from
// the configuration, which holds the defaults of every limit that is a
// setting: New refuses a zero MaxMessageBytes, MaxRecipients,
// ReadTimeout, DataTimeout or MaxErrors.
type Options struct {
	// Hostname is our name in the greeting and in Received headers
	// (required).
	Hostname string
	// Role is what the server is for (required).
	Role Role
	// TLS enables STARTTLS (and is required by ServeTLS). nil: no TLS.
	TLS *tls.Config

	// MaxMessageBytes is the largest message accepted and advertised with
	// SIZE (RFC 1870); required.
	MaxMessageBytes int64
	// MaxRecipients is the most recipients per message; required (RFC
	// 5321 §4.5.3.1.8 requires accepting at least 100).
	MaxRecipients int
	// MaxLineLength is the longest command line in octets, CRLF included
	// (0: DefaultMaxLineLength). Lines of a message are not
	// limited but by MaxMessageBytes (RFC 5321 §4.5.3.1: as few limits
	// as possible; real mail has longer lines than §4.5.3.1.6's 1000).
	MaxLineLength int
	// ReadTimeout is how long to wait for a command (required; RFC 5321
	// §4.5.3.2.7 suggests 5m).
	ReadTimeout time.Duration
	// DataTimeout is how long the message after DATA may take (required;
	// RFC 5321 §4.5.3.2.6 suggests 10m).
	DataTimeout time.Duration
	// WriteTimeout bounds each reply write (0: DefaultWriteTimeout).
	WriteTimeout time.Duration
	// MaxErrors is the number of failed commands (errors returned by this
	// package's session methods) after which the connection is closed
	// with a 421 reply (required).
	MaxErrors int
	// MaxConnections and MaxConnectionsPerIP bound simultaneous
	// connections (0: no limit). Connections over a limit are answered
	// "421 4.7.0 Too many connections" and closed; one over only
	// MaxConnectionsPerIP first waits up to a second for one of its
	// address's connections to end.
	MaxConnections      int
	MaxConnectionsPerIP int
	// TrustedNetworks are exempt from MaxConnectionsPerIP, as Postfix's
	// mynetworks is from its per-client limits: a relaying MTA on them may
	// open as many connections as it likes. They grant nothing else: no
	// relaying, no AUTH bypass, and their failed AUTH attempts count in
	// Guard like any other. nil: none.
	TrustedNetworks []netip.Prefix
	// PregreetWait is how long the MX (Serve, RoleMX) waits before its
	// greeting; a client that sends anything meanwhile is refused with
	// 554 5.5.1 (Postfix's postscreen greet test). TrustedNetworks are
	// greeted at once. 0: no wait.
	PregreetWait time.Duration
	// PregreetPassTTL is how long a client (ipKey) that waited is
	// greeted at once afterwards. 0: every connection waits.
	PregreetPassTTL time.Duration

	// LocalDomains are the domains delivered locally; empty means the
	// domains of the existing users and aliases.
	LocalDomains []string
	// PlusSeparator enables plus-addressing: user+tag@domain is delivered
	// to user@domain. Empty disables it.
	PlusSeparator string
	// PlaintextAuth says whether AUTH is offered without TLS (submission):
	// pop3.PlaintextNever, pop3.PlaintextLoopback (the zero value: also to
	// clients connecting from a loopback address or a unix socket) or
	// pop3.PlaintextAlways. It is the same policy type as the POP3
	// server's.
	PlaintextAuth pop3.PlaintextPolicy
	// AllowAnySender lifts the submission sender check. By default
	// (RestrictSender) an authenticated user may use as MAIL FROM only
	// their own address, its plus-addresses, an alias that expands to
	// them, or the null sender <>, and every address of the message's
	// header From and Sender fields must be one of theirs too.
	AllowAnySender bool

	// Logger receives connection and delivery events (default: discard).
	Logger *slog.Logger
	// Metrics counts logins, messages received and refusals; nil: none.
	Metrics *metrics.Metrics
	// Deliverer stores local copies (required). Its Users resolves
	// recipient addresses to mailboxes.
	Deliverer *delivery.Deliverer
	// Users authenticates submission clients and, when LocalDomains is
	// empty, tells the local domains (required).
	Users UserDB
	// Aliases is the alias table; nil means none.
	Aliases Aliases
	// Guard delays and refuses password guessing; nil: no protection
	// beyond the error limit. Share one Guard with the POP3 server.
	Guard *authguard.Guard
	// Checks judge mail arriving on the MX (RoleMX only): sender
	// authentication, blocklists, filters (package inbound). nil: none,
	// and single-recipient messages are streamed straight into the
	// mailbox.
	Checks []inbound.Check
	// SubmissionChecks run on submission and LMTP, where mail is not
	// judged but may still need cleaning: Authentication-Results fields
	// claiming our authserv-id are removed (mailauth.Stripper). nil: none.
	SubmissionChecks []inbound.Check
	// Junk handles what the checks find to be spam (tag, quarantine,
	// refuse: junk.go); nil delivers it as accepted.
	Junk *Junk
	// Resolver answers the checks' DNS lookups (one resolver and cache
	// for the server: config.Config.Resolver). nil when no check needs
	// DNS.
	Resolver *resolver.Resolver
	// Relay takes messages for remote recipients from authenticated
	// submission and for aliases that forward to remote addresses. nil:
	// such recipients are refused with a temporary error.
	Relay envelope.Relay
	// SRS, when set, rewrites the envelope sender of mail forwarded to
	// remote addresses (received without AUTH: MX, LMTP) into an SRS
	// address of the primary domain, and routes mail for valid SRS
	// addresses of the local domains (bounces of forwarded mail) back to
	// the original sender. nil: forwarded mail keeps its sender and SRS
	// addresses are unknown users.
	SRS *srs.Rewriter
	// Postmaster receives mail for "postmaster" (RFC 5321 §4.5.1: without
	// a domain, in any case) and for postmaster@ a local domain, when the
	// primary domain (or that domain) has no user or alias of that name.
	// It is a local user, an alias or a remote address. "": no fallback.
	Postmaster string
}

// withDefaults checks o and fills in the zero meanings documented on
// Options.
func (o Options) withDefaults() (Options, error) {
	if o.Hostname == "" {
		return o, errors.New("smtpin: Options.Hostname is required")
	}
	switch o.Role {
	case RoleMX, RoleSubmission, RoleLMTP:
	default:
		return o, fmt.Errorf("smtpin: invalid role %v", o.Role)
	}
	if o.Deliverer == nil {
		return o, errors.New("smtpin: Options.Deliverer is required")
	}
	if o.Deliverer.Users == nil {
		return o, errors.New("smtpin: Options.Deliverer.Users is required")
	}
	if o.Users == nil {
		return o, errors.New("smtpin: Options.Users is required")
	}
	if !o.PlaintextAuth.Valid() {
		return o, fmt.Errorf("smtpin: invalid PlaintextAuth %v", o.PlaintextAuth)
	}
	for _, l := range []struct {
		name string
		v    int64
	}{
		{"MaxMessageBytes", o.MaxMessageBytes},
		{"MaxRecipients", int64(o.MaxRecipients)},
		{"ReadTimeout", int64(o.ReadTimeout)},
		{"DataTimeout", int64(o.DataTimeout)},
		{"MaxErrors", int64(o.MaxErrors)},
	} {
		if l.v <= 0 {
			return o, &OptionError{Field: l.name}
		}
	}
	if o.MaxLineLength <= 0 {
		o.MaxLineLength = DefaultMaxLineLength
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Postmaster != "" {
		if _, err := parseAddress(o.Postmaster); err != nil {
			return o, fmt.Errorf("smtpin: invalid Postmaster address %q", o.Postmaster)
		}
	}
	return o, nil
}

// OptionError is returned by New for a limit of Options that must be
// positive and is not: the configuration always sets it, so a zero value
// is a programming error.
type OptionError struct {
	// Field is the name of the Options field.
	Field string
}

// Error implements error.
func (e *OptionError) Error() string {
	return "smtpin: Options." + e.Field + " must be positive"
}

// FixedOptionError is returned by SetOptions for a field that cannot
// change while the server runs.
type FixedOptionError struct {
	// Field is the name of the Options field.
	Field string
}

// Error implements error.
func (e *FixedOptionError) Error() string {
	return "smtpin: Options." + e.Field + " cannot change while serving"
}
