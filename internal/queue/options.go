package queue

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/metrics"
)

// DefaultPollInterval is how often the worker looks for changes made by
// other processes (the `postino queue` commands) when
// Options.PollInterval is 0.
const DefaultPollInterval = 2 * time.Second

// Resolver looks up DNS records; *net.Resolver implements it. Tests point
// every name at loopback addresses.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Dialer opens connections; *net.Dialer implements it.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Clock tells the time. The worker's schedule, backoff and expiry all go
// through it, so that tests can move time forward.
type Clock interface {
	Now() time.Time
	// After is time.After.
	After(d time.Duration) <-chan time.Time
}

// LocalDeliverer stores messages in local mailboxes: DSNs for local
// senders and queued mail for local domains. *delivery.Deliverer
// implements it.
type LocalDeliverer interface {
	Deliver(ctx context.Context, from string, rcpts []string, msg io.Reader) ([]delivery.Result, error)
}

// Signer adds signatures (DKIM) to the messages postino originates when
// they are queued. Sign reads the whole message and returns the header fields to
// prepend (CRLF-terminated), or "" when it has nothing to sign with for
// domain. *dkim.Signer implements it.
type Signer interface {
	Sign(ctx context.Context, domain string, msg io.Reader) (string, error)
}

// SRSReverser returns the address an SRS address was made from;
// *srs.Rewriter implements it.
type SRSReverser interface {
	Reverse(addr string) (string, error)
}

// Smarthost is a relay host that receives all mail for remote domains
// (Postfix relayhost), instead of the domains' MX hosts.
type Smarthost struct {
	// Addr is "host:port"; without a port, 587 (submission) is used. The
	// host is looked up by address (A/AAAA), not MX.
	Addr string
	// Username and Password, when Username is not empty, authenticate
	// with AUTH PLAIN (or LOGIN when PLAIN is not offered). Credentials are
	// sent only over TLS, or to a loopback address.
	Username string
	Password string
	// RequireTLS makes STARTTLS mandatory: a smarthost that does not offer
	// it, or whose certificate does not verify, gets no mail (the
	// messages are deferred).
	RequireTLS bool
	// TLS is the client TLS configuration for the smarthost; nil verifies
	// the certificate against the system roots and the host name.
	TLS *tls.Config
}

// Options configure a Queue. Zero values take the defaults given.
type Options struct {
	// Hostname is our name: the EHLO argument, the Reporting-MTA of DSNs
	// and the domain of MAILER-DAEMON (required).
	Hostname string
	// Logger receives queue and delivery events (default: discard).
	Logger *slog.Logger
	// Metrics counts delivery attempts and remote deliveries; nil: none.
	Metrics *metrics.Metrics

	// Resolver looks up MX and address records (default: net.Resolver).
	Resolver Resolver
	// Dialer opens SMTP connections (default: net.Dialer).
	Dialer Dialer
	// Clock tells the time (default: the system clock).
	Clock Clock
	// Port is the SMTP port of MX hosts (default 25).
	Port int

	// IsLocalDomain tells the domains delivered locally: recipients there
	// are stored through Local without leaving the machine, and senders
	// there get their DSNs the same way. nil: no domain is local.
	IsLocalDomain func(domain string) bool
	// Local delivers to local mailboxes (required when IsLocalDomain says
	// yes to anything; otherwise such entries are retried until it is
	// set).
	Local LocalDeliverer
	// Signer signs, at enqueue time, the mail that postino originates:
	// messages submitted by an authenticated user of a local domain (as
	// the From domain when Owns allows it, else the user's domain) and
	// the DSNs the queue generates (as DSNDomain). nil: none.
	Signer Signer
	// Owns reports whether user may send as addr (own address, its
	// plus-addresses, an alias reaching the user): a submitted message
	// whose From address the user owns in another local domain is signed
	// as that domain. nil: always as the user's domain.
	Owns func(user, addr string) bool
	// DSNDomain is the domain DSNs are signed as. Default: Hostname or
	// its nearest parent domain that is local at the time (mail.example.org
	// signs as example.org); unsigned when there is no such domain.
	DSNDomain string
	// SRS reverses Sender Rewriting Scheme addresses: a DSN about a
	// forwarded message, whose envelope sender was rewritten, goes to the
	// original sender. nil: DSNs go to the envelope sender as it is.
	SRS SRSReverser

	// TLS is the client configuration of opportunistic STARTTLS. nil:
	// certificates are not verified, like Postfix's default
	// smtp_tls_security_level=may (RFC 7435: opportunistic security
	// encrypts against passive eavesdroppers; a failed verification would
	// only push the message into cleartext). A handshake failure falls
	// back to a cleartext connection.
	TLS *tls.Config
	// DisableSTARTTLS never uses STARTTLS with MX hosts (and so neither
	// DANE nor MTA-STS).
	DisableSTARTTLS bool
	// DANE authenticates MX hosts that publish DNSSEC-validated TLSA
	// records (RFC 7672): STARTTLS is then mandatory and the certificate
	// must match a record. It takes effect only when Resolver is a
	// SecureResolver asking a DNSSEC-validating server.
	DANE bool
	// MTASTS finds the MTA-STS policies of destination domains (RFC
	// 8461): under "enforce" mail goes only to MX hosts the policy lists,
	// over TLS with a certificate that verifies (TLSRoots); under
	// "testing" failures are only reported. nil: MTA-STS is off. DANE
	// takes precedence for hosts with TLSA records.
	MTASTS STSPolicies
	// TLSRoots verify MX certificates under MTA-STS (nil: the system's
	// roots).
	TLSRoots *x509.CertPool
	// TLSReports records the result of each TLS session with an MX host
	// for TLS-RPT (RFC 8460); nil: nothing is recorded.
	TLSReports TLSRecorder
	// Smarthost, when set, receives all remote mail.
	Smarthost *Smarthost
	// Routes send the mail of some domains (lower case) to a fixed
	// "host:port" instead of their MX hosts, like Postfix's transport
	// map; they take precedence over Smarthost.
	Routes map[string]string

	// MinBackoff is the delay before the first retry; each further retry
	// doubles it, up to MaxBackoff (required; config holds the defaults,
	// Postfix's minimal_backoff_time and maximal_backoff_time).
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxLifetime is how long a message is retried before the remaining
	// recipients are bounced (required).
	MaxLifetime time.Duration
	// DelayWarning, when positive, sends a "delayed" DSN once a message
	// has waited that long (Postfix delay_warning_time; default 0: off).
	DelayWarning time.Duration

	// ConnectTimeout, CommandTimeout and DataDoneTimeout bound connection
	// set-up, each command reply or data write, and the reply to the final
	// dot (required).
	ConnectTimeout  time.Duration
	CommandTimeout  time.Duration
	DataDoneTimeout time.Duration

	// MaxPerDomain and MaxConcurrent limit simultaneous deliveries per
	// destination and in all (required).
	MaxPerDomain  int
	MaxConcurrent int

	// MaxMessageSize is the largest message Enqueue accepts (0: no limit).
	MaxMessageSize int64
	// BounceSizeLimit is the largest message returned whole by a RET=FULL
	// DSN (required).
	BounceSizeLimit int64
	// PollInterval is how often Run checks for changes made by other
	// processes (0: DefaultPollInterval).
	PollInterval time.Duration
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// withDefaults checks o: the limits that are settings must be set (the
// configuration holds their defaults; ConfigOptions builds them), the
// others take the zero meanings documented on Options.
func (o Options) withDefaults() (Options, error) {
	if o.Hostname == "" {
		return o, &OptionError{Field: "Hostname"}
	}
	for _, l := range []struct {
		name string
		v    int64
	}{
		{"MinBackoff", int64(o.MinBackoff)},
		{"MaxBackoff", int64(o.MaxBackoff)},
		{"MaxLifetime", int64(o.MaxLifetime)},
		{"ConnectTimeout", int64(o.ConnectTimeout)},
		{"CommandTimeout", int64(o.CommandTimeout)},
		{"DataDoneTimeout", int64(o.DataDoneTimeout)},
		{"MaxPerDomain", int64(o.MaxPerDomain)},
		{"MaxConcurrent", int64(o.MaxConcurrent)},
		{"BounceSizeLimit", o.BounceSizeLimit},
	} {
		if l.v <= 0 {
			return o, &OptionError{Field: l.name}
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Dialer == nil {
		o.Dialer = &net.Dialer{}
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Port <= 0 {
		o.Port = 25
	}
	if o.IsLocalDomain == nil {
		o.IsLocalDomain = func(string) bool { return false }
	}
	if o.TLS == nil {
		// Opportunistic TLS, see Options.TLS.
		o.TLS = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.Smarthost != nil && o.Smarthost.Addr == "" {
		return o, errors.New("queue: Smarthost.Addr is empty")
	}
	return o, nil
}

// OptionError is returned by Open for a required field of Options that is
// not set: the configuration always sets it, so a zero value is a
// programming error.
type OptionError struct {
	// Field is the name of the Options field.
	Field string
}

// Error implements error.
func (e *OptionError) Error() string {
	return "queue: Options." + e.Field + " must be set"
}
