package antispam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/resolver"
)

// MaxPTRNames is the most names of a client's PTR records whose
// addresses are looked up.
const MaxPTRNames = 10

// FCrDNS is the check of forward-confirmed reverse DNS: a name of the
// client's PTR records must have the client's address among its own.
type FCrDNS struct {
	// Score is added to the spam score of mail from a client without
	// forward-confirmed reverse DNS.
	Score float64
	// Timeout bounds the lookups, from the start of the session.
	Timeout time.Duration
	// Skip are the client networks never looked up.
	Skip []netip.Prefix
	// Resolver answers the lookups.
	Resolver *resolver.Resolver
	// Logger receives the lookups' failures.
	Logger *slog.Logger
}

// Name implements inbound.Check.
func (f *FCrDNS) Name() string { return "fcrdns" }

// RDNSStatus is the outcome of a forward-confirmed reverse DNS lookup.
type RDNSStatus int

// The outcomes.
const (
	// RDNSPass: a PTR name has the client's address.
	RDNSPass RDNSStatus = iota
	// RDNSNone: the address has no PTR record.
	RDNSNone
	// RDNSMismatch: no PTR name has the client's address.
	RDNSMismatch
	// RDNSTempError: the lookups failed; nothing is known.
	RDNSTempError
)

// Confirm looks up the PTR names of ip and then the addresses of each
// (at most MaxPTRNames), and returns the first name that has ip.
func Confirm(ctx context.Context, r *resolver.Resolver, ip netip.Addr) (RDNSStatus, string, error) {
	ip = ip.Unmap()
	names, err := r.LookupAddr(ctx, ip.String())
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return RDNSNone, "", nil
		}
		return RDNSTempError, "", err
	}
	qtype := dns.TypeA
	if ip.Is6() {
		qtype = dns.TypeAAAA
	}
	var tempErr error
	for i, name := range names {
		if i == MaxPTRNames {
			break
		}
		ans, err := r.Query(ctx, name, qtype)
		if err != nil {
			var de *net.DNSError
			if !errors.As(err, &de) || !de.IsNotFound {
				tempErr = err
			}
			continue
		}
		for _, rr := range ans.Records {
			var a net.IP
			switch rr := rr.(type) {
			case *dns.A:
				a = rr.A
			case *dns.AAAA:
				a = rr.AAAA
			}
			if got, ok := netip.AddrFromSlice(a); ok && got.Unmap() == ip {
				return RDNSPass, strings.TrimSuffix(name, "."), nil
			}
		}
	}
	if tempErr != nil {
		// A name that could not be looked up may have been the one.
		return RDNSTempError, "", tempErr
	}
	return RDNSMismatch, "", nil
}

// Begin starts the lookups.
func (f *FCrDNS) Begin(ctx context.Context, c *inbound.Conn, v *inbound.Verdict) inbound.Session {
	if f.Score == 0 || skipped(c.Remote, f.Skip) {
		return nil
	}
	s := &fcrdnsSession{done: make(chan struct{})}
	lctx, cancel := context.WithTimeout(ctx, f.Timeout)
	s.cancel = cancel
	go func() {
		defer close(s.done)
		defer cancel()
		st, name, err := Confirm(lctx, f.Resolver, c.Remote)
		if err != nil {
			f.Logger.Debug("fcrdns: lookup failed", "id", c.ID, "err", err)
		}
		switch st {
		case RDNSNone:
			s.result = &inbound.Result{Check: "fcrdns", Score: f.Score, Detail: fmt.Sprintf("%s has no PTR record", c.Remote)}
		case RDNSMismatch:
			s.result = &inbound.Result{Check: "fcrdns", Score: f.Score, Detail: fmt.Sprintf("no PTR name of %s resolves back to it", c.Remote)}
		case RDNSPass:
			f.Logger.Debug("fcrdns: confirmed", "id", c.ID, "name", name)
		}
	}()
	return s
}

// fcrdnsSession is the lookups of one session.
type fcrdnsSession struct {
	done   chan struct{}
	cancel context.CancelFunc
	result *inbound.Result // written before done is closed
}

// Data adds the score once the message is received.
func (s *fcrdnsSession) Data(ctx context.Context, env *inbound.Envelope, msg inbound.Message, v *inbound.Verdict) (inbound.Message, error) {
	select {
	case <-s.done:
	case <-ctx.Done():
		return nil, nil
	}
	if s.result != nil {
		v.Add(*s.result)
	}
	return nil, nil
}

// End stops lookups still under way.
func (s *fcrdnsSession) End() { s.cancel() }
