package queue

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/postino-mail/postino/internal/tlsrpt"
)

// failure is why an attempt could not reach or use a server: permanent
// (bounce the recipients) or temporary (retry).
type failure struct {
	perm     bool
	code     int    // SMTP code, or 0
	enhanced string // RFC 3463 status
	text     string
	host     string
}

func (f *failure) Error() string { return f.text }

func tempFail(status, format string, args ...any) *failure {
	return &failure{enhanced: status, text: fmt.Sprintf(format, args...)}
}

func permFail(status, format string, args ...any) *failure {
	return &failure{perm: true, enhanced: status, text: fmt.Sprintf(format, args...)}
}

// mxHost is one host to try, in order.
type mxHost struct {
	name string
	pref uint16
}

// lookupMX returns the hosts to try for domain in RFC 5321 §5.1 order:
// MX records by preference, equal preferences shuffled; the domain itself
// (implicit MX) when it has no MX records; a failure for a null MX (RFC
// 7505), a domain that does not exist, or a temporary DNS error.
func (q *Queue) lookupMX(ctx context.Context, domain string) ([]mxHost, *failure) {
	if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
		// An address literal (RFC 5321 §4.1.3): that host, no MX.
		lit := strings.TrimPrefix(domain[1:len(domain)-1], "IPv6:")
		if _, err := netip.ParseAddr(lit); err != nil {
			return nil, permFail("5.1.2", "bad address literal %s", domain)
		}
		return []mxHost{{name: lit}}, nil
	}
	if !validDomain(domain) {
		return nil, permFail("5.1.2", "bad destination domain %q", domain)
	}
	mxs, err := q.options().Resolver.LookupMX(ctx, domain)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			// RFC 5321 §5.1: no MX records: the domain itself is the
			// implicit MX (its A/AAAA records are looked up when
			// connecting, and a missing name is a bounce there).
			return []mxHost{{name: domain}}, nil
		}
		if len(mxs) == 0 {
			return nil, tempFail("4.4.3", "MX lookup for %s failed: %v", domain, err)
		}
		// net.Resolver returns the valid records with an error for the
		// invalid ones: use what is usable.
	}
	if len(mxs) == 0 {
		return []mxHost{{name: domain}}, nil
	}
	// RFC 7505 §3: a single MX with preference 0 and the root as host:
	// the domain accepts no mail.
	for _, mx := range mxs {
		if mx.Host == "." || mx.Host == "" {
			return nil, &failure{perm: true, code: 556, enhanced: "5.1.10", text: fmt.Sprintf("domain %s does not accept mail (null MX)", domain)}
		}
	}
	// Equal preferences in random order (RFC 5321 §5.1: "randomize").
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
	hosts := make([]mxHost, 0, len(mxs))
	for _, mx := range mxs {
		name := strings.ToLower(strings.TrimSuffix(mx.Host, "."))
		if strings.EqualFold(name, q.options().Hostname) {
			// RFC 5321 §5.1: we are an MX of the domain: only hosts with
			// a better preference may be used, or we would loop.
			if len(hosts) == 0 {
				return nil, permFail("5.4.6", "mail for %s loops back to myself", domain)
			}
			break
		}
		hosts = append(hosts, mxHost{name: name, pref: mx.Pref})
	}
	return hosts, nil
}

// validDomain checks the syntax of a domain name (RFC 5321 §4.1.2, with
// U-labels allowed).
func validDomain(d string) bool {
	if d == "" || len(d) > 253 || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c > 0x7f) {
				return false
			}
		}
	}
	return true
}

// hostAddrs resolves a host to the addresses to dial.
func (q *Queue) hostAddrs(ctx context.Context, host string) ([]string, *failure) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []string{ip.String()}, nil
	}
	ips, err := q.options().Resolver.LookupIPAddr(ctx, host)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, permFail("5.4.4", "host or domain name not found: %s", host)
		}
		return nil, tempFail("4.4.3", "address lookup for %s failed: %v", host, err)
	}
	if len(ips) == 0 {
		return nil, permFail("5.4.4", "host %s has no address", host)
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.IP.String())
	}
	return out, nil
}

// connect opens a session with the first usable host of the route for
// domain: the smarthost, or the MX hosts in order, each of their
// addresses in turn. A host that cannot be reached, or that refuses the
// session (greeting or EHLO not 2xx), makes us try the next (RFC 5321
// §5.1). The failure returned is the last one when every host failed.
func (q *Queue) connect(ctx context.Context, domain string) (*client, *failure) {
	port := strconv.Itoa(q.options().Port)
	var hosts []mxHost
	var ds *domainSec // the MX hosts' security; nil for fixed routes
	sh := q.options().Smarthost
	if route, ok := q.options().Routes[strings.ToLower(domain)]; ok {
		// A static route (Postfix transport map): this host instead of
		// the domain's MX hosts, treated like an MX host.
		host, p, err := net.SplitHostPort(route)
		if err != nil {
			host, p = strings.Trim(route, "[]"), port
		}
		hosts, port = []mxHost{{name: host}}, p
	} else if sh != nil {
		host, p, err := net.SplitHostPort(sh.Addr)
		if err != nil {
			host, p = strings.Trim(sh.Addr, "[]"), "587"
		}
		hosts, port = []mxHost{{name: host}}, p
	} else {
		var f *failure
		if hosts, f = q.lookupMX(ctx, domain); f != nil {
			return nil, f
		}
		if !strings.HasPrefix(domain, "[") {
			ds = q.lookupDomainSec(ctx, domain) // no policy for address literals
		}
	}
	var last *failure
	allNotFound := true
	for _, h := range hosts {
		var hs *hostSec
		if ds != nil {
			// DANE or MTA-STS may forbid this host, or demand TLS.
			hs = q.hostSecurity(ctx, ds, h.name)
			if hs.skip != nil {
				q.options().Logger.Warn("queue: MX host refused by policy", "domain", domain, "host", h.name, "reason", hs.skip.text)
				last, allNotFound = hs.skip, false
				continue
			}
		}
		addrs, f := q.hostAddrs(ctx, h.name)
		if f != nil {
			last = f
			if !f.perm {
				allNotFound = false
			}
			continue
		}
		allNotFound = false
		for _, a := range addrs {
			c, f := q.dialHost(ctx, h.name, net.JoinHostPort(a, port), true, hs)
			if f == nil {
				return c, nil
			}
			last = f
			if f.perm {
				return nil, f
			}
			if err := ctx.Err(); err != nil {
				return nil, tempFail("4.4.2", "interrupted: %v", err)
			}
		}
	}
	if last == nil {
		return nil, tempFail("4.4.4", "no usable host for %s", domain)
	}
	if last.perm && !allNotFound {
		last.perm = false // some host exists but failed for now
	}
	return nil, last
}

// dialHost connects to one address, reads the greeting, says EHLO, and
// negotiates TLS: opportunistic with MX hosts (a failed handshake retries
// in cleartext once), mandatory with a smarthost that RequireTLS, and
// authenticates with the smarthost.
//
// hs, for an MX host, is its security policy (DANE, MTA-STS): STARTTLS
// is then mandatory (or its failures reported, in MTA-STS testing mode)
// and the certificate is checked under the policy before any mail is
// sent.
func (q *Queue) dialHost(ctx context.Context, host, addr string, tryTLS bool, hs *hostSec) (*client, *failure) {
	dctx, cancel := context.WithTimeout(ctx, q.options().ConnectTimeout)
	conn, err := q.options().Dialer.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, tempFail("4.4.1", "connect to %s[%s]: %v", host, addr, shortErr(err))
	}
	c := newClient(ctx, conn, host, q.options().CommandTimeout)
	fail := func(stage string, err error) (*client, *failure) {
		c.broken = true
		c.close()
		var r *reply
		if errors.As(err, &r) {
			return nil, &failure{code: r.Code, enhanced: r.Enhanced, text: fmt.Sprintf("host %s[%s] refused to talk to me (%s): %s", host, addr, stage, r), host: host}
		}
		return nil, &failure{enhanced: "4.4.2", text: fmt.Sprintf("host %s[%s] %s: %v", host, addr, stage, shortErr(err)), host: host}
	}
	if err := c.greet(q.options().Hostname); err != nil {
		return fail("greeting", err)
	}
	sh := q.options().Smarthost
	switch {
	case sh != nil:
		if c.has("STARTTLS") {
			cfg := sh.TLS
			if cfg == nil {
				cfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
			}
			if err := c.startTLS(ctx, cfg, q.options().Hostname); err != nil {
				return fail("STARTTLS", err)
			}
		} else if sh.RequireTLS {
			c.close()
			return nil, &failure{enhanced: "4.7.4", text: fmt.Sprintf("TLS is required, but host %s[%s] does not offer STARTTLS", host, addr), host: host}
		}
		if sh.Username != "" {
			if !c.tls && !isLoopback(addr) {
				c.close()
				return nil, &failure{enhanced: "4.7.4", text: fmt.Sprintf("not sending credentials to %s[%s] without TLS", host, addr), host: host}
			}
			if err := c.auth(sh.Username, sh.Password); err != nil {
				return fail("AUTH", err)
			}
		}
	case tryTLS && hs != nil && hs.mode != secNone && !q.options().DisableSTARTTLS:
		if !c.has("STARTTLS") {
			if f := q.tlsFailed(hs, host, addr, localIP(conn), tlsrpt.ResultSTARTTLSNotSupported, "STARTTLS not offered"); f != nil {
				c.close()
				return nil, f
			}
			break // MTA-STS testing: on in cleartext
		}
		// The certificate is checked by checkPeer, under the policy
		// (RFC 7672 §8.1: SNI names the MX host).
		cfg := &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
		if err := c.startTLS(ctx, cfg, q.options().Hostname); err != nil {
			c.broken = true
			c.close()
			if f := q.tlsFailed(hs, host, addr, localIP(conn), tlsrpt.ResultValidationFailure, "STARTTLS: "+shortErr(err)); f != nil {
				return nil, f
			}
			q.options().Logger.Info("queue: STARTTLS failed, retrying without TLS (MTA-STS testing)", "host", host, "addr", addr, "err", err)
			return q.dialHost(ctx, host, addr, false, hs)
		}
		tc, _ := c.conn.(*tls.Conn)
		if tc == nil {
			c.close()
			return nil, &failure{enhanced: "4.7.5", text: "no TLS connection after STARTTLS", host: host}
		}
		if f := q.checkPeer(hs, host, addr, localIP(conn), tc.ConnectionState()); f != nil {
			c.close()
			return nil, f
		}
	case tryTLS && !q.options().DisableSTARTTLS && c.has("STARTTLS"):
		cfg := q.options().TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		if err := c.startTLS(ctx, cfg, q.options().Hostname); err != nil {
			// Opportunistic TLS: retry in cleartext (Postfix does the
			// same at security level "may").
			c.broken = true
			c.close()
			q.options().Logger.Info("queue: STARTTLS failed, retrying without TLS", "host", host, "addr", addr, "err", err)
			if hs != nil {
				q.tlsFailed(hs, host, addr, localIP(conn), tlsrpt.ResultValidationFailure, "STARTTLS: "+shortErr(err))
			}
			return q.dialHost(ctx, host, addr, false, nil)
		}
		if hs != nil {
			q.recordTLS(tlsrpt.Result{Policy: hs.policy}) // no policy: a success (no details kept)
		}
	}
	return c, nil
}

func isLoopback(addr string) bool {
	h, _, _ := net.SplitHostPort(addr)
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
}

// shortErr drops the repetition in net.OpError texts.
func shortErr(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}
