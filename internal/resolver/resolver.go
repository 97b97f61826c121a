// Package resolver is postino's one DNS client: every lookup the server
// makes (the queue's MX and address lookups, SPF, DKIM, DMARC, DNS
// blocklists, reverse DNS, MTA-STS and DANE) goes through a *Resolver, so
// that one setting ([dns] server) decides which server answers and tests
// point every domain at a DNS server on loopback.
//
// Implementation notes:
//   - Queries go to the configured server ("host:port"), or to the
//     nameservers of /etc/resolv.conf when none is configured, over UDP
//     with EDNS0 (RFC 6891) and the DO bit set, retried over TCP when the
//     answer is truncated (RFC 7766 §5).
//   - Answers are cached for the smallest TTL of their records (RFC 2181
//     §5.2, §8); negative answers (NXDOMAIN and NODATA) for the SOA
//     minimum of the authority section, capped by MaxNegativeTTL (RFC 2308
//     §5). Server failures are not cached. The cache has a size bound.
//   - Errors are *net.DNSError values, as the standard library's resolver
//     returns them: IsNotFound for NXDOMAIN and NODATA, IsTemporary for
//     SERVFAIL, timeouts and unreachable servers. Libraries written
//     against net.Resolver (SPF, DKIM) therefore tell "no record" from
//     "could not ask", which their RFCs treat differently (RFC 7208 §5:
//     none versus temperror).
//   - Query returns the AD bit of the answer (RFC 4035 §3.2.3): a
//     validating resolver sets it when the answer was DNSSEC-validated.
//     DANE (RFC 7672) trusts TLSA records only then; postino does not
//     validate signatures itself, so the configured server must be a
//     validating resolver on a trusted path (loopback).
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Default limits.
const (
	// DefaultTimeout is the time allowed for one query to one server.
	DefaultTimeout = 5 * time.Second
	// DefaultCacheSize is the number of answers kept in the cache.
	DefaultCacheSize = 10000
	// DefaultMaxNegativeTTL caps the time a negative answer is cached
	// (RFC 2308 §5 suggests one to three hours; mail checks want less).
	DefaultMaxNegativeTTL = 5 * time.Minute
	// DefaultMaxTTL caps the time any answer is cached.
	DefaultMaxTTL = 6 * time.Hour
)

// Options tune a Resolver. The zero value gives the defaults above.
type Options struct {
	// Timeout for one query to one server.
	Timeout time.Duration
	// CacheSize is the number of answers kept; negative disables the
	// cache.
	CacheSize int
	// MaxTTL and MaxNegativeTTL cap the time answers are cached.
	MaxTTL, MaxNegativeTTL time.Duration
	// Now returns the current time (tests: a fake clock).
	Now func() time.Time
}

// Resolver is a caching DNS client. It is safe for concurrent use.
type Resolver struct {
	servers []string
	opts    Options
	udp     *dns.Client
	tcp     *dns.Client

	mu    sync.Mutex
	cache map[cacheKey]*cacheEntry
}

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	ans     *Answer
	err     error // a *net.DNSError that is a not-found, or nil
	expires time.Time
}

// Answer is the reply to one query.
type Answer struct {
	// Records of the answer section whose type is the one asked for
	// (CNAMEs on the way are followed by the server and left out).
	Records []dns.RR
	// Authenticated is the AD bit: the server validated the answer with
	// DNSSEC (RFC 4035 §3.2.3).
	Authenticated bool
	// Rcode is the response code (dns.RcodeSuccess, dns.RcodeNameError...).
	Rcode int
}

// New returns a resolver that asks server ("host:port"), or the
// nameservers of /etc/resolv.conf when server is empty.
func New(server string, opts Options) (*Resolver, error) {
	var servers []string
	if server != "" {
		if _, _, err := net.SplitHostPort(server); err != nil {
			return nil, fmt.Errorf("dns server %q: %w", server, err)
		}
		servers = []string{server}
	} else {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("reading the system's resolver configuration: %w", err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			return nil, errors.New("no nameserver in /etc/resolv.conf")
		}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.MaxTTL <= 0 {
		opts.MaxTTL = DefaultMaxTTL
	}
	if opts.MaxNegativeTTL <= 0 {
		opts.MaxNegativeTTL = DefaultMaxNegativeTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Resolver{
		servers: servers,
		opts:    opts,
		udp:     &dns.Client{Net: "udp", Timeout: opts.Timeout, UDPSize: dns.DefaultMsgSize},
		tcp:     &dns.Client{Net: "tcp", Timeout: opts.Timeout},
		cache:   make(map[cacheKey]*cacheEntry),
	}, nil
}

// Servers returns the servers the resolver asks, in order.
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

// Query asks for the records of type qtype (dns.TypeA, dns.TypeTXT...) of
// name. A name that does not exist, or has no record of that type, gives
// a *net.DNSError with IsNotFound set; the Answer is then still returned
// (with Rcode), so that callers that need to tell NXDOMAIN from NODATA
// can.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	fqdn := dns.Fqdn(strings.ToLower(name))
	if _, ok := dns.IsDomainName(fqdn); !ok || len(fqdn) > 254 {
		return nil, &net.DNSError{Err: "invalid domain name", Name: name, IsNotFound: true}
	}
	key := cacheKey{fqdn, qtype}
	if e := r.cached(key); e != nil {
		return e.ans, e.err
	}
	msg := new(dns.Msg)
	msg.SetQuestion(fqdn, qtype)
	msg.RecursionDesired = true
	// RFC 6840 §5.7: ask for the AD bit; RFC 3225: DO for DNSSEC data.
	msg.AuthenticatedData = true
	msg.SetEdns0(dns.DefaultMsgSize, true)

	var lastErr error
	for _, server := range r.servers {
		resp, err := r.exchange(ctx, msg, server)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		ans, ttl, qerr := r.interpret(name, server, qtype, resp)
		if qerr != nil {
			var de *net.DNSError
			if errors.As(qerr, &de) && de.IsTemporary {
				lastErr = qerr
				continue // another server may answer
			}
		}
		r.store(key, ans, qerr, ttl)
		return ans, qerr
	}
	if lastErr == nil {
		lastErr = errors.New("no server answered")
	}
	var de *net.DNSError
	if errors.As(lastErr, &de) {
		return nil, de
	}
	return nil, &net.DNSError{Err: lastErr.Error(), Name: name, IsTemporary: true,
		IsTimeout: errors.Is(lastErr, context.DeadlineExceeded) || isTimeout(lastErr)}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// exchange sends msg to server over UDP, and again over TCP when the
// answer is truncated (RFC 7766 §5).
func (r *Resolver) exchange(ctx context.Context, msg *dns.Msg, server string) (*dns.Msg, error) {
	resp, _, err := r.udp.ExchangeContext(ctx, msg, server)
	if err == nil && resp.Truncated {
		resp, _, err = r.tcp.ExchangeContext(ctx, msg, server)
	}
	if err != nil {
		return nil, err
	}
	if resp.Id != msg.Id {
		return nil, errors.New("answer id does not match the query")
	}
	return resp, nil
}

// interpret turns a response into an Answer, an error and a cache time.
func (r *Resolver) interpret(name, server string, qtype uint16, resp *dns.Msg) (*Answer, time.Duration, error) {
	ans := &Answer{Authenticated: resp.AuthenticatedData, Rcode: resp.Rcode}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return ans, r.negativeTTL(resp), &net.DNSError{Err: "no such host", Name: name, Server: server, IsNotFound: true}
	default:
		// SERVFAIL, REFUSED and the others: the name could not be
		// looked up, which says nothing about it.
		return nil, 0, &net.DNSError{Err: "server answered " + dns.RcodeToString[resp.Rcode], Name: name, Server: server, IsTemporary: true}
	}
	ttl := r.opts.MaxTTL
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype != qtype {
			continue
		}
		ans.Records = append(ans.Records, rr)
		if t := time.Duration(rr.Header().Ttl) * time.Second; t < ttl {
			ttl = t
		}
	}
	if len(ans.Records) == 0 {
		// RFC 2308 §2.2: NODATA.
		return ans, r.negativeTTL(resp), &net.DNSError{Err: "no such host", Name: name, Server: server, IsNotFound: true}
	}
	return ans, ttl, nil
}

// negativeTTL is the time a negative answer may be cached: the SOA's
// minimum or TTL, whichever is smaller (RFC 2308 §5), capped.
func (r *Resolver) negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			t := min(soa.Minttl, soa.Hdr.Ttl)
			return min(time.Duration(t)*time.Second, r.opts.MaxNegativeTTL)
		}
	}
	return 0 // no SOA: do not cache (RFC 2308 §5)
}

func (r *Resolver) cached(key cacheKey) *cacheEntry {
	if r.opts.CacheSize < 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.cache[key]
	if e == nil {
		return nil
	}
	if !r.opts.Now().Before(e.expires) {
		delete(r.cache, key)
		return nil
	}
	return e
}

func (r *Resolver) store(key cacheKey, ans *Answer, err error, ttl time.Duration) {
	if r.opts.CacheSize < 0 || ttl <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= r.opts.CacheSize {
		// Drop expired entries, then, if still full, an arbitrary half.
		now := r.opts.Now()
		for k, e := range r.cache {
			if !now.Before(e.expires) {
				delete(r.cache, k)
			}
		}
		for k := range r.cache {
			if len(r.cache) < r.opts.CacheSize/2 {
				break
			}
			delete(r.cache, k)
		}
	}
	r.cache[key] = &cacheEntry{ans: ans, err: err, expires: r.opts.Now().Add(ttl)}
}

// LookupTXT returns the TXT records of name, each one's strings joined
// (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	ans, err := r.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range ans.Records {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupMX returns the MX records of name, sorted by preference as
// net.Resolver sorts them.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	ans, err := r.Query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	var out []*net.MX
	for _, rr := range ans.Records {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	sortMX(out)
	return out, nil
}

func sortMX(mx []*net.MX) {
	for i := 1; i < len(mx); i++ {
		for j := i; j > 0 && mx[j].Pref < mx[j-1].Pref; j-- {
			mx[j], mx[j-1] = mx[j-1], mx[j]
		}
	}
}

// LookupIPAddr returns the IPv4 and IPv6 addresses of host. An IP
// literal is returned as it is. It fails with IsNotFound only when
// neither family has an address.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []net.IPAddr{{IP: ip.AsSlice(), Zone: ip.Zone()}}, nil
	}
	var out []net.IPAddr
	var firstErr error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		ans, err := r.Query(ctx, host, qt)
		if err != nil {
			var de *net.DNSError
			if !errors.As(err, &de) || !de.IsNotFound {
				if firstErr == nil || isNotFound(firstErr) {
					firstErr = err
				}
			} else if firstErr == nil {
				firstErr = err
			}
			continue
		}
		for _, rr := range ans.Records {
			switch a := rr.(type) {
			case *dns.A:
				out = append(out, net.IPAddr{IP: a.A})
			case *dns.AAAA:
				out = append(out, net.IPAddr{IP: a.AAAA})
			}
		}
	}
	if len(out) == 0 {
		return nil, firstErr
	}
	return out, nil
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// LookupHost returns the addresses of host as strings.
func (r *Resolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	ips, err := r.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.IP.String()
	}
	return out, nil
}

// LookupAddr returns the names of the PTR records of addr (reverse DNS).
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	ans, err := r.Query(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range ans.Records {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// LookupTLSA returns the TLSA records for a service (RFC 6698 §3:
// _port._proto.host) and whether the answer was DNSSEC-validated (the
// AD bit). Callers must ignore the records unless it was (RFC 7672 §2.2).
func (r *Resolver) LookupTLSA(ctx context.Context, port int, proto, host string) ([]*dns.TLSA, bool, error) {
	name := fmt.Sprintf("_%d._%s.%s", port, proto, host)
	ans, err := r.Query(ctx, name, dns.TypeTLSA)
	if err != nil {
		if ans != nil {
			return nil, ans.Authenticated, err
		}
		return nil, false, err
	}
	var out []*dns.TLSA
	for _, rr := range ans.Records {
		out = append(out, rr.(*dns.TLSA))
	}
	return out, ans.Authenticated, nil
}
