package dnscheck

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/postino-mail/postino/internal/resolver"
)

// Status is the outcome of one check.
type Status int

// The statuses, from best to worst.
const (
	OK Status = iota
	Warn
	Fail
)

// String returns "OK", "WARN" or "FAIL".
func (s Status) String() string {
	switch s {
	case OK:
		return "OK"
	case Warn:
		return "WARN"
	}
	return "FAIL"
}

// Finding is the result of one check.
type Finding struct {
	Status Status
	// Check names what was checked (KindMX..., "PORT", "TLS", "DNSBL").
	Check string
	// Subject is the name or address checked.
	Subject string
	// Detail says what was found.
	Detail string
	// Fix says what to do, with the exact record to publish; empty when
	// Status is OK.
	Fix string
}

// String returns the finding as printed: status, check, subject and
// detail on one line, the fix on the next.
func (f Finding) String() string {
	s := fmt.Sprintf("%-4s %-10s %s: %s", f.Status, f.Check, f.Subject, f.Detail)
	if f.Fix != "" {
		s += "\n     fix: " + strings.ReplaceAll(f.Fix, "\n", "\n          ")
	}
	return s
}

// Failed reports whether any finding is a FAIL.
func Failed(fs []Finding) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Status == Fail })
}

// DefaultDNSBL are the blocklists checked when Options.DNSBL is nil.
var DefaultDNSBL = []string{"zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"}

// DefaultExpiryWarn is how close to its expiry a certificate is reported
// as a WARN.
const DefaultExpiryWarn = 14 * 24 * time.Hour

// DefaultTimeout bounds each connection of the port and certificate
// checks.
const DefaultTimeout = 10 * time.Second

// Options tune Check.
type Options struct {
	// Resolver does every lookup; required.
	Resolver *resolver.Resolver
	// Roots verify certificates; nil means the system's roots.
	Roots *x509.CertPool
	// DNSBL are the blocklist zones queried for the public addresses;
	// nil means DefaultDNSBL, an empty non-nil slice none.
	DNSBL []string
	// Timeout bounds each connection (DefaultTimeout when 0).
	Timeout time.Duration
	// ExpiryWarn: a certificate expiring sooner is a WARN
	// (DefaultExpiryWarn when 0).
	ExpiryWarn time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// SkipPorts leaves out the port and certificate checks and the
	// fetch of the MTA-STS policy (only DNS is consulted).
	SkipPorts bool
	// HTTPSPort is the port the MTA-STS policy is fetched from (443 when
	// 0; another only in tests).
	HTTPSPort int
}

// Check compares what is published for the plan's domain with what
// Records says should be, and checks reverse DNS, ports, certificates
// and blocklists. It returns one Finding per item, in a stable order.
func Check(ctx context.Context, p *Plan, opts Options) []Finding {
	if opts.DNSBL == nil {
		opts.DNSBL = DefaultDNSBL
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.ExpiryWarn <= 0 {
		opts.ExpiryWarn = DefaultExpiryWarn
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &checker{p: p, o: opts, r: opts.Resolver, recs: p.Records()}
	c.mx(ctx)
	c.host(ctx)
	c.spf(ctx)
	c.dkim(ctx)
	c.dmarc(ctx)
	c.mtasts(ctx)
	c.tlsrpt(ctx)
	c.srv(ctx)
	c.autoconf(ctx)
	c.ptr(ctx)
	if !opts.SkipPorts {
		c.ports(ctx)
	}
	c.dnsbl(ctx)
	return c.out
}

type checker struct {
	p    *Plan
	o    Options
	r    *resolver.Resolver
	recs []Record
	out  []Finding
}

func (c *checker) add(s Status, check, subject, fix, format string, a ...any) {
	c.out = append(c.out, Finding{Status: s, Check: check, Subject: strings.TrimSuffix(subject, "."), Detail: fmt.Sprintf(format, a...), Fix: fix})
}

// fix returns the fix for the records of kind named name: publish them.
func (c *checker) fix(kind, name string) string {
	var lines []string
	for _, r := range c.recs {
		if r.Kind == kind && (name == "" || r.Name == name) {
			lines = append(lines, r.String())
		}
	}
	return "publish " + strings.Join(lines, "\n")
}

// lookupErr describes a failed lookup, and says whether the name simply
// has no such record.
func lookupErr(err error) (detail string, notFound bool) {
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return "no record published", true
	}
	return "lookup failed: " + err.Error(), false
}

func (c *checker) mx(ctx context.Context) {
	d, h := fqdn(c.p.Domain), fqdn(c.p.Host)
	mxs, err := c.r.LookupMX(ctx, d)
	if err != nil {
		msg, _ := lookupErr(err)
		c.add(Fail, KindMX, d, c.fix(KindMX, ""), "%s", msg)
		return
	}
	var names []string
	found := false
	for _, mx := range mxs {
		names = append(names, fmt.Sprintf("%d %s", mx.Pref, mx.Host))
		if fqdn(mx.Host) == h {
			found = true
		}
	}
	if !found {
		c.add(Fail, KindMX, d, c.fix(KindMX, ""), "MX is %s, not %s", strings.Join(names, ", "), h)
		return
	}
	c.add(OK, KindMX, d, "", "MX %s", strings.Join(names, ", "))
}

// addrsOf returns the addresses of name, sorted.
func (c *checker) addrsOf(ctx context.Context, name string) ([]netip.Addr, error) {
	ips, err := c.r.LookupIPAddr(ctx, name)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return sortedAddrs(out), nil
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func (c *checker) host(ctx context.Context) {
	h := fqdn(c.p.Host)
	got, err := c.addrsOf(ctx, h)
	if err != nil {
		msg, _ := lookupErr(err)
		c.add(Fail, KindHost, h, c.fix(KindHost, ""), "%s", msg)
		return
	}
	var missing []netip.Addr
	for _, a := range c.p.Addrs {
		if !slices.Contains(got, a) {
			missing = append(missing, a)
		}
	}
	switch {
	case len(missing) > 0:
		c.add(Fail, KindHost, h, c.fix(KindHost, ""), "resolves to %s, without %s", joinAddrs(got), joinAddrs(missing))
	case len(got) > len(sortedAddrs(c.p.Addrs)):
		c.add(Warn, KindHost, h, "remove the addresses that are not this server's, or add them to the public addresses", "resolves to %s, more than the public addresses %s", joinAddrs(got), joinAddrs(c.p.Addrs))
	default:
		c.add(OK, KindHost, h, "", "resolves to %s", joinAddrs(got))
	}
}

// txtWith returns the TXT records of name that start with prefix (case
// insensitive, followed by ";", a space or the end).
func (c *checker) txtWith(ctx context.Context, name, prefix string) ([]string, error) {
	txts, err := c.r.LookupTXT(ctx, name)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range txts {
		if len(t) >= len(prefix) && strings.EqualFold(t[:len(prefix)], prefix) &&
			(len(t) == len(prefix) || t[len(prefix)] == ' ' || t[len(prefix)] == ';') {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no " + prefix + " record", Name: name, IsNotFound: true}
	}
	return out, nil
}

func (c *checker) spf(ctx context.Context) {
	d := fqdn(c.p.Domain)
	recs, err := c.txtWith(ctx, d, "v=spf1")
	if err != nil {
		msg, _ := lookupErr(err)
		c.add(Fail, KindSPF, d, c.fix(KindSPF, ""), "%s", msg)
		return
	}
	if len(recs) > 1 {
		// RFC 7208 §4.5: more than one record is a permerror.
		c.add(Fail, KindSPF, d, "keep a single SPF record: "+c.fix(KindSPF, ""), "%d SPF records (a permanent error for receivers, RFC 7208 §4.5): %q", len(recs), recs)
		return
	}
	rec := recs[0]
	if rec == c.p.SPF() {
		c.add(OK, KindSPF, d, "", "%q", rec)
		return
	}
	st, why := c.spfCovers(ctx, rec)
	if st == OK {
		c.add(OK, KindSPF, d, "", "%q authorizes %s", rec, joinAddrs(c.p.Addrs))
		return
	}
	c.add(st, KindSPF, d, c.fix(KindSPF, ""), "%q %s", rec, why)
}

// spfTerm is one term of an SPF record (RFC 7208 §4.6.1): a qualifier,
// a mechanism or modifier name and its argument.
type spfTerm struct {
	qual byte   // '+', '-', '~' or '?'
	name string // lower case: "ip4", "mx", "include", "redirect="...
	arg  string // after ':' (or after '=' for a modifier), CIDR suffix cut
}

// Limits on SPF records read from DNS.
const (
	maxSPFLen   = 4096
	maxSPFTerms = 64
)

// parseSPF splits an SPF record into terms (RFC 7208 §4.6.1). It accepts
// only records starting with "v=spf1" and within maxSPFLen octets and
// maxSPFTerms terms.
func parseSPF(rec string) ([]spfTerm, error) {
	if len(rec) > maxSPFLen {
		return nil, fmt.Errorf("record longer than %d octets", maxSPFLen)
	}
	f := strings.Fields(rec)
	if len(f) == 0 || !strings.EqualFold(f[0], "v=spf1") {
		return nil, errors.New(`record does not start with "v=spf1"`)
	}
	if len(f)-1 > maxSPFTerms {
		return nil, fmt.Errorf("more than %d terms", maxSPFTerms)
	}
	out := make([]spfTerm, 0, len(f)-1)
	for _, t := range f[1:] {
		term := spfTerm{qual: '+'}
		// RFC 7208 §4.6.2: the qualifier defaults to "+".
		if strings.IndexByte("+-~?", t[0]) >= 0 {
			term.qual, t = t[0], t[1:]
		}
		t = strings.ToLower(t)
		if name, arg, ok := strings.Cut(t, "="); ok && !strings.Contains(name, ":") {
			term.name, term.arg = name+"=", arg
			out = append(out, term)
			continue
		}
		name, arg, _ := strings.Cut(t, ":")
		if name == "a" || name == "mx" {
			// RFC 7208 §5.3, §5.4: a dual-cidr-length may follow.
			if i := strings.IndexByte(arg, '/'); i >= 0 {
				arg = arg[:i]
			}
			if i := strings.IndexByte(name, '/'); i >= 0 {
				name = name[:i]
			}
		}
		if n, _, ok := strings.Cut(name, "/"); ok {
			name = n
		}
		term.name, term.arg = name, arg
		out = append(out, term)
	}
	return out, nil
}

// spfCovers evaluates the mechanisms of an SPF record that can be decided
// without recursion (ip4, ip6, a, mx, all) for each public address.
func (c *checker) spfCovers(ctx context.Context, rec string) (Status, string) {
	authorized := map[netip.Addr]bool{}
	unsure := false
	var all string
	terms, err := parseSPF(rec)
	if err != nil {
		return Fail, "is invalid: " + err.Error()
	}
	for _, t := range terms {
		var match func(netip.Addr) bool
		switch t.name {
		case "all":
			all = string(t.qual)
			match = func(netip.Addr) bool { return true }
		case "ip4", "ip6":
			// RFC 7208 §5.6: an address or a network.
			pfx, err := netip.ParsePrefix(t.arg)
			if err != nil {
				a, err2 := netip.ParseAddr(t.arg)
				if err2 != nil {
					return Fail, "has an invalid " + t.name + " term " + strconv.Quote(t.arg)
				}
				pfx = netip.PrefixFrom(a, a.BitLen())
			}
			match = pfx.Contains
		case "a", "mx":
			// RFC 7208 §5.3, §5.4: the domain's (or arg's) A/AAAA, or
			// those of its MX hosts.
			target := c.p.Domain
			if t.arg != "" {
				target = t.arg
			}
			var addrs []netip.Addr
			if t.name == "a" {
				addrs, _ = c.addrsOf(ctx, target)
			} else if mxs, err := c.r.LookupMX(ctx, target); err == nil {
				for _, mx := range mxs[:min(len(mxs), 10)] { // RFC 7208 §4.6.4: at most 10 MX names
					as, _ := c.addrsOf(ctx, mx.Host)
					addrs = append(addrs, as...)
				}
			}
			match = func(a netip.Addr) bool { return slices.Contains(addrs, a) }
		case "include", "exists", "ptr", "redirect=":
			unsure = true
			continue
		default:
			continue
		}
		for _, a := range c.p.Addrs {
			if _, done := authorized[a]; !done && match(a) {
				authorized[a] = t.qual == '+'
			}
		}
	}
	var bad []netip.Addr
	for _, a := range c.p.Addrs {
		if !authorized[a] {
			bad = append(bad, a)
		}
	}
	switch {
	case all == "+" || all == "?":
		return Fail, "lets any host send mail as the domain (" + all + "all)"
	case len(bad) > 0 && unsure:
		return Warn, "may not authorize " + joinAddrs(bad) + " (it depends on include/redirect terms this check does not follow)"
	case len(bad) > 0:
		return Fail, "does not authorize " + joinAddrs(bad)
	}
	return OK, ""
}

// dkimTag returns the value of tag in a tag=value list (RFC 6376 §3.2),
// whitespace removed.
func dkimTag(rec, tag string) string {
	for _, kv := range strings.Split(rec, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == tag {
			return strings.Join(strings.Fields(v), "")
		}
	}
	return ""
}

func (c *checker) dkim(ctx context.Context) {
	if len(c.p.DKIM) == 0 {
		c.add(Fail, KindDKIM, c.p.Domain, "run: postino dkim keygen "+c.p.Domain+", then publish the records it prints", "no DKIM key for the domain: its mail is sent unsigned")
		return
	}
	for _, k := range c.p.DKIM {
		name := fqdn(k.Name)
		txts, err := c.r.LookupTXT(ctx, name)
		if err != nil {
			msg, _ := lookupErr(err)
			c.add(Fail, KindDKIM, name, c.fix(KindDKIM, name), "%s", msg)
			continue
		}
		want := dkimTag(k.Value, "p")
		var got []string
		ok := false
		for _, t := range txts {
			p := dkimTag(t, "p")
			got = append(got, p)
			if p == want {
				ok = true
			}
		}
		if !ok {
			c.add(Fail, KindDKIM, name, c.fix(KindDKIM, name), "the published key (p=%s) is not the key in the DKIM folder", abbrev(strings.Join(got, ", ")))
			continue
		}
		c.add(OK, KindDKIM, name, "", "%s key matches", k.Algo)
	}
}

func abbrev(s string) string {
	if len(s) > 24 {
		return s[:20] + "..."
	}
	return s
}

func (c *checker) dmarc(ctx context.Context) {
	name := "_dmarc." + fqdn(c.p.Domain)
	recs, err := c.txtWith(ctx, name, "v=DMARC1")
	if err != nil {
		msg, _ := lookupErr(err)
		c.add(Fail, KindDMARC, name, c.fix(KindDMARC, ""), "%s", msg)
		return
	}
	if len(recs) > 1 {
		// RFC 7489 §6.6.3: more than one record: no DMARC at all.
		c.add(Fail, KindDMARC, name, "keep a single DMARC record: "+c.fix(KindDMARC, ""), "%d DMARC records: receivers ignore them all (RFC 7489 §6.6.3)", len(recs))
		return
	}
	rec := recs[0]
	p := strings.ToLower(dkimTag(rec, "p"))
	switch {
	case p == "none":
		c.add(Warn, KindDMARC, name, "once the aggregate reports show your mail passing, "+c.fix(KindDMARC, ""), "%q: p=none only monitors, forged mail is still delivered", rec)
	case p != "quarantine" && p != "reject":
		c.add(Fail, KindDMARC, name, c.fix(KindDMARC, ""), "%q: invalid policy p=%q (RFC 7489 §6.3)", rec, p)
	case dkimTag(rec, "rua") == "":
		c.add(Warn, KindDMARC, name, "add a reporting address: "+c.fix(KindDMARC, ""), "%q: no rua=, so you receive no aggregate reports", rec)
	default:
		c.add(OK, KindDMARC, name, "", "%q", rec)
	}
}

func (c *checker) mtasts(ctx context.Context) {
	d := fqdn(c.p.Domain)
	name := "_mta-sts." + d
	recs, err := c.txtWith(ctx, name, "v=STSv1")
	switch {
	case err != nil:
		msg, _ := lookupErr(err)
		c.add(Fail, KindMTASTS, name, c.fix(KindMTASTS, name), "%s", msg)
	case len(recs) > 1:
		// RFC 8461 §3.1: more than one record: no MTA-STS.
		c.add(Fail, KindMTASTS, name, "keep one record: "+c.fix(KindMTASTS, name), "%d STSv1 records: senders ignore them (RFC 8461 §3.1)", len(recs))
	case dkimTag(recs[0], "id") != c.p.MTASTS.ID():
		c.add(Fail, KindMTASTS, name, c.fix(KindMTASTS, name), "%q: id is not that of the current policy (%s): senders keep a stale policy", recs[0], c.p.MTASTS.ID())
	default:
		c.add(OK, KindMTASTS, name, "", "%q", recs[0])
	}
	host := "mta-sts." + d
	addrs, err := c.addrsOf(ctx, host)
	if err != nil {
		msg, _ := lookupErr(err)
		c.add(Fail, KindMTASTS, host, c.fix(KindMTASTS, host), "%s: senders cannot fetch the policy", msg)
		return
	}
	c.add(OK, KindMTASTS, host, "", "resolves")
	if !c.o.SkipPorts {
		c.policy(ctx, host, addrs)
	}
}

func (c *checker) tlsrpt(ctx context.Context) {
	name := "_smtp._tls." + fqdn(c.p.Domain)
	recs, err := c.txtWith(ctx, name, "v=TLSRPTv1")
	switch {
	case err != nil:
		msg, _ := lookupErr(err)
		c.add(Warn, KindTLSRPT, name, c.fix(KindTLSRPT, ""), "%s: you get no reports of TLS failures", msg)
	case len(recs) > 1 || dkimTag(recs[0], "rua") == "":
		// RFC 8460 §3: exactly one record, with rua.
		c.add(Fail, KindTLSRPT, name, c.fix(KindTLSRPT, ""), "%q: want one record with rua= (RFC 8460 §3)", recs)
	default:
		c.add(OK, KindTLSRPT, name, "", "%q", recs[0])
	}
}

func (c *checker) srv(ctx context.Context) {
	h := fqdn(c.p.Host)
	for _, s := range srvServices {
		name := "_" + s.name + "._tcp." + fqdn(c.p.Domain)
		port := c.p.Port(s.name)
		ans, err := c.r.Query(ctx, name, dns.TypeSRV)
		var got []string
		offered, notOffered, right := false, false, false
		if err == nil {
			for _, rr := range ans.Records {
				srv, ok := rr.(*dns.SRV)
				if !ok {
					continue
				}
				got = append(got, fmt.Sprintf("%d %d %d %s", srv.Priority, srv.Weight, srv.Port, srv.Target))
				if srv.Target == "." {
					notOffered = true
					continue
				}
				offered = true
				if int(srv.Port) == port && fqdn(srv.Target) == h {
					right = true
				}
			}
		}
		fix := c.fix(KindSRV, name)
		switch {
		case err != nil && port != 0:
			msg, _ := lookupErr(err)
			c.add(Fail, KindSRV, name, fix, "%s", msg)
		case err != nil:
			c.add(Warn, KindSRV, name, fix, "%s: clients may guess and try the service", func() string { m, _ := lookupErr(err); return m }())
		case port != 0 && !right:
			c.add(Fail, KindSRV, name, fix, "SRV %s, want port %d on %s", strings.Join(got, ", "), port, h)
		case port == 0 && offered:
			c.add(Warn, KindSRV, name, fix, "SRV %s points to a service this server does not offer", strings.Join(got, ", "))
		case port == 0 && notOffered:
			c.add(OK, KindSRV, name, "", "not offered")
		default:
			c.add(OK, KindSRV, name, "", "SRV %s", strings.Join(got, ", "))
		}
	}
}

func (c *checker) autoconf(ctx context.Context) {
	for _, n := range []string{"autoconfig.", "autodiscover."} {
		name := n + fqdn(c.p.Domain)
		got, err := c.addrsOf(ctx, name)
		switch {
		case err != nil:
			msg, _ := lookupErr(err)
			c.add(Warn, KindAutoconf, name, c.fix(KindAutoconf, name), "%s: mail clients cannot configure themselves", msg)
		case !slices.ContainsFunc(got, func(a netip.Addr) bool { return slices.Contains(c.p.Addrs, a) }):
			c.add(Fail, KindAutoconf, name, c.fix(KindAutoconf, name), "resolves to %s, not to this server", joinAddrs(got))
		default:
			c.add(OK, KindAutoconf, name, "", "resolves to %s", joinAddrs(got))
		}
	}
}

func (c *checker) ptr(ctx context.Context) {
	h := fqdn(c.p.Host)
	for _, a := range c.p.Addrs {
		rev, _ := dns.ReverseAddr(a.String())
		fix := "ask the owner of " + a.String() + " (your hosting provider) to set: " + Record{Name: rev, Type: "PTR", Value: h}.String()
		names, err := c.r.LookupAddr(ctx, a.String())
		if err != nil {
			msg, _ := lookupErr(err)
			c.add(Fail, KindPTR, a.String(), fix, "%s: many receivers refuse mail from addresses without reverse DNS", msg)
			continue
		}
		if !slices.ContainsFunc(names, func(n string) bool { return fqdn(n) == h }) {
			c.add(Fail, KindPTR, a.String(), fix, "PTR %s, not %s", strings.Join(names, ", "), h)
		} else {
			c.add(OK, KindPTR, a.String(), "", "PTR %s", h)
		}
		// FCrDNS: every name the PTR gives must resolve back to the address.
		for _, n := range names {
			back, err := c.addrsOf(ctx, n)
			if err != nil || !slices.Contains(back, a) {
				c.add(Fail, "FCrDNS", a.String(), "make "+n+" resolve to "+a.String()+", or the PTR name the host that does", "%s does not resolve back to %s (forward-confirmed reverse DNS fails)", n, a)
				continue
			}
			c.add(OK, "FCrDNS", a.String(), "", "%s resolves back to %s", n, a)
		}
	}
}

func (c *checker) dnsbl(ctx context.Context) {
	for _, a := range c.p.Addrs {
		for _, zone := range c.o.DNSBL {
			q := dnsblName(a, zone)
			ans, err := c.r.Query(ctx, q, dns.TypeA)
			if err != nil {
				if _, nf := lookupErr(err); nf {
					c.add(OK, "DNSBL", a.String(), "", "not listed in %s", zone)
				} else {
					c.add(Warn, "DNSBL", a.String(), "query the list from a resolver it answers (not a large public one)", "%s could not be asked: %v", zone, err)
				}
				continue
			}
			var codes []string
			refused := false
			for _, rr := range ans.Records {
				if ar, ok := rr.(*dns.A); ok {
					codes = append(codes, ar.A.String())
					// Spamhaus: 127.255.255.x means the query was refused.
					if ar.A[0] == 127 && ar.A[1] == 255 && ar.A[2] == 255 {
						refused = true
					}
				}
			}
			if refused {
				c.add(Warn, "DNSBL", a.String(), "query the list from a resolver it answers (not a large public one)", "%s refused the query (%s)", zone, strings.Join(codes, ", "))
				continue
			}
			reason := ""
			if txts, err := c.r.LookupTXT(ctx, q); err == nil {
				reason = ": " + strings.Join(txts, " ")
			}
			c.add(Fail, "DNSBL", a.String(), "follow the delisting procedure of "+zone+" (and find out why: an open relay, a compromised account?)", "listed in %s (%s)%s", zone, strings.Join(codes, ", "), reason)
		}
	}
}

// dnsblName returns the name queried for addr in a DNS blocklist zone
// (RFC 5782 §2.1: IPv4 octets reversed; §2.4: IPv6 nibbles reversed).
func dnsblName(a netip.Addr, zone string) string {
	rev, _ := dns.ReverseAddr(a.String())
	rev = strings.TrimSuffix(strings.TrimSuffix(rev, "in-addr.arpa."), "ip6.arpa.")
	return rev + fqdn(zone)
}

// readLine reads one CRLF-terminated line of at most 1000 octets.
func readLine(r io.ByteReader) (string, error) {
	var b []byte
	for len(b) < 1000 {
		c, err := r.ReadByte()
		if err != nil {
			return string(b), err
		}
		if c == '\n' {
			return strings.TrimSuffix(string(b), "\r"), nil
		}
		b = append(b, c)
	}
	return string(b), errors.New("line too long")
}
