package mailauth

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"

	"github.com/postino-mail/postino/internal/inbound"
)

// Resolver is the DNS client of the checks: net.Resolver's methods that
// SPF, DKIM and DMARC use. *resolver.Resolver implements it. Errors are
// *net.DNSError values telling "no such record" (IsNotFound) from "could
// not ask" (IsTemporary).
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// SPFPolicy is what happens to mail whose SPF result is fail.
type SPFPolicy string

// The SPF policies.
const (
	// SPFFailDMARC leaves the decision to DMARC: an SPF fail alone does
	// not refuse mail (RFC 7489 §10.1: rejecting on SPF before DMARC is
	// evaluated defeats DKIM-aligned mail, e.g. forwarded mail).
	SPFFailDMARC SPFPolicy = "dmarc"
	// SPFFailMail refuses MAIL FROM (the check runs before the reply).
	SPFFailMail SPFPolicy = "mail"
	// SPFFailRcpt refuses each RCPT TO (the check runs in the meantime).
	SPFFailRcpt SPFPolicy = "rcpt"
	// SPFFailTag delivers the message marked as spam.
	SPFFailTag SPFPolicy = "tag"
)

// Options configure a Check.
type Options struct {
	// Resolver answers every lookup (required).
	Resolver Resolver
	// AuthservID names us in Authentication-Results (RFC 8601 §2.5):
	// usually the MX's host name (required).
	AuthservID string
	// SPFFail is what an SPF fail does (default SPFFailDMARC).
	SPFFail SPFPolicy
	// DMARC enforces the DMARC policies of the authors' domains; false
	// still reports dmarc= in Authentication-Results but refuses nothing.
	DMARC bool
	// Timeout bounds the DNS work of each of SPF, DKIM and DMARC
	// (required; RFC 7208 §4.6.4 asks for at least 20 s for SPF).
	Timeout time.Duration
	// Logger receives the per-message line (required).
	Logger *slog.Logger
	// Rand returns a number in [0, n) for the pct sampling of DMARC
	// (RFC 7489 §6.6.4); nil: math/rand/v2.
	Rand func(n int) int
}

// Check is the SPF, DKIM, DMARC and Authentication-Results check.
type Check struct {
	o Options
}

// New returns the check.
func New(o Options) *Check {
	if o.SPFFail == "" {
		o.SPFFail = SPFFailDMARC
	}
	if o.Rand == nil {
		o.Rand = rand.IntN
	}
	return &Check{o: o}
}

// Name implements inbound.Check.
func (c *Check) Name() string { return "mailauth" }

// Begin implements inbound.Check.
func (c *Check) Begin(ctx context.Context, conn *inbound.Conn, v *inbound.Verdict) inbound.Session {
	return &session{c: c, conn: *conn}
}

// session is the check's state for one SMTP session.
type session struct {
	c    *Check
	conn inbound.Conn
	// spf is the current transaction's SPF check.
	spf *spfCheck
}

// spfCheck is one SPF evaluation, running or done.
type spfCheck struct {
	// identity is the checked identity: the MAIL FROM address, or
	// postmaster@HELO for the null sender (RFC 7208 §2.4).
	identity string
	// domain is its domain, the one DMARC aligns (RFC 7489 §3.1.2).
	domain string
	// helo is whether the identity is the HELO name.
	helo   bool
	done   chan struct{}
	result spf.Result
	err    error
	cancel context.CancelFunc
}

// wait returns the result once the check is done.
func (s *spfCheck) wait(ctx context.Context) (spf.Result, error) {
	select {
	case <-s.done:
		return s.result, s.err
	case <-ctx.Done():
		return spf.TempError, ctx.Err()
	}
}

// Mail implements inbound.MailStage: it starts the SPF check of the
// transaction, and waits for it when a fail is refused at MAIL.
func (s *session) Mail(ctx context.Context, from string, v *inbound.Verdict) {
	s.stopSPF()
	s.spf = s.startSPF(ctx, from)
	if s.c.o.SPFFail == SPFFailMail {
		if r, _ := s.spf.wait(ctx); r == spf.Fail {
			v.Add(s.spfRefusal())
		}
	}
}

// Rcpt implements inbound.RcptStage: with SPFFailRcpt, an SPF fail
// refuses the recipient.
func (s *session) Rcpt(ctx context.Context, env *inbound.Envelope, rcpt string, v *inbound.Verdict) {
	if s.c.o.SPFFail != SPFFailRcpt || s.spf == nil {
		return
	}
	if r, _ := s.spf.wait(ctx); r == spf.Fail {
		v.Add(s.spfRefusal())
	}
}

// spfRefusal is the result refusing an SPF fail. RFC 7208 §8.4: a
// receiver that rejects a fail should reply 550 with the 5.7.23 enhanced
// status of RFC 7372 §3.2.
func (s *session) spfRefusal() inbound.Result {
	return inbound.Result{
		Check: "spf", Action: inbound.Reject, Code: 550, Enhanced: [3]int{5, 7, 23},
		Reply:  "SPF check failed: " + s.spf.domain + " does not authorize this client to send its mail",
		Detail: "spf=fail for " + s.spf.identity,
	}
}

// End implements inbound.Ender.
func (s *session) End() { s.stopSPF() }

// stopSPF cancels a running SPF check of an earlier transaction.
func (s *session) stopSPF() {
	if s.spf != nil {
		s.spf.cancel()
		<-s.spf.done
		s.spf = nil
	}
}

// startSPF starts the SPF check of a transaction in a goroutine.
func (s *session) startSPF(ctx context.Context, from string) *spfCheck {
	sc := &spfCheck{done: make(chan struct{})}
	helo := strings.TrimSuffix(strings.ToLower(s.conn.Helo), ".")
	if from == "" {
		// RFC 7208 §2.4: for the null sender, check the HELO identity,
		// as the mailbox postmaster@HELO.
		sc.identity, sc.domain, sc.helo = "postmaster@"+helo, helo, true
	} else {
		sc.identity = from
		if at := strings.LastIndexByte(from, '@'); at >= 0 {
			sc.domain = strings.ToLower(strings.TrimSuffix(from[at+1:], "."))
		}
	}
	ctx, sc.cancel = context.WithTimeout(ctx, s.c.o.Timeout)
	ip := s.conn.Remote.Unmap()
	go func() {
		defer close(sc.done)
		switch {
		case !ip.IsValid():
			sc.result, sc.err = spf.None, nil
		case sc.domain == "" || strings.HasPrefix(sc.domain, "[") || net.ParseIP(sc.domain) != nil:
			// RFC 7208 §4.3: no domain to check (an address literal
			// HELO, a sender without a domain): none.
			sc.result = spf.None
		default:
			// RFC 7208 §4.6.4: blitiri.com.ar/go/spf enforces the limits
			// of 10 DNS-querying terms and 2 void lookups (permerror
			// beyond); the timeout bounds the whole evaluation.
			sc.result, sc.err = spf.CheckHostWithSender(net.IP(ip.AsSlice()), helo, sc.identity,
				spf.WithContext(ctx), spf.WithResolver(s.c.o.Resolver))
		}
	}()
	return sc
}
