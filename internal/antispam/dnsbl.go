package antispam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/resolver"
)

// Limits of a DNSBL site specification.
const (
	// MaxSiteLen is the longest site specification accepted.
	MaxSiteLen = 512
	// MaxWeight bounds the absolute value of a site's weight.
	MaxWeight = 1000
	// maxZoneLen leaves room in a 253-octet name for the 64 octets of an
	// IPv6 address's nibbles and the dot before the zone.
	maxZoneLen = 253 - 64 - 1
	// maxAnswers is the most A records of one answer looked at.
	maxAnswers = 32
	// maxTXTLen bounds the TXT reason quoted in a reply.
	maxTXTLen = 200
)

// SiteError is the error of a site specification that does not parse.
type SiteError struct {
	// Spec is the specification, cut to MaxSiteLen.
	Spec string
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *SiteError) Error() string {
	return fmt.Sprintf("dnsbl site %q: %s", e.Spec, e.Reason)
}

// Site is one DNS list with its answer filter and weight, written as
// Postfix's postscreen_dnsbl_sites: "zone[=filter][*weight]", for example
// "zen.spamhaus.org=127.0.0.[2..11]*3" or "list.dnswl.org=127.0.[0..255].[1..3]*-5".
// The filter has four octet patterns, each a number, or in brackets a
// list of numbers and ranges separated by ';' ("[2;4..7]"); no filter
// matches every answer in 127.0.0.0/8. The weight (default 1) is added
// to the client's score for each site that lists it; a negative weight
// makes the site an allowlist.
type Site struct {
	// Zone is the list's DNS zone.
	Zone string
	// Filter is the octet patterns; nil: any answer.
	Filter *[4]OctetSet
	// Weight is added to the score of a listed client.
	Weight float64
}

// OctetSet is a set of octet values, as 256 bits.
type OctetSet [4]uint64

// Has reports whether b is in the set.
func (s *OctetSet) Has(b byte) bool { return s[b/64]&(1<<(b%64)) != 0 }

func (s *OctetSet) add(lo, hi int) {
	for b := lo; b <= hi; b++ {
		s[b/64] |= 1 << (b % 64)
	}
}

// String returns the site in its specification's syntax.
func (s Site) String() string {
	out := s.Zone
	if s.Filter != nil {
		parts := make([]string, 4)
		for i := range 4 {
			parts[i] = s.Filter[i].String()
		}
		out += "=" + strings.Join(parts, ".")
	}
	if s.Weight != 1 {
		out += "*" + strconv.FormatFloat(s.Weight, 'g', -1, 64)
	}
	return out
}

// String writes the set as a number or a bracketed list of ranges.
func (s *OctetSet) String() string {
	var items []string
	for b := 0; b < 256; {
		if !s.Has(byte(b)) {
			b++
			continue
		}
		e := b
		for e+1 < 256 && s.Has(byte(e+1)) {
			e++
		}
		if e == b {
			items = append(items, strconv.Itoa(b))
		} else {
			items = append(items, fmt.Sprintf("%d..%d", b, e))
		}
		b = e + 1
	}
	if len(items) == 1 && !strings.Contains(items[0], "..") {
		return items[0]
	}
	return "[" + strings.Join(items, ";") + "]"
}

// ParseSite parses a site specification (see Site).
func ParseSite(spec string) (Site, error) {
	bad := func(format string, args ...any) (Site, error) {
		s := spec
		if len(s) > MaxSiteLen {
			s = s[:MaxSiteLen]
		}
		return Site{}, &SiteError{Spec: s, Reason: fmt.Sprintf(format, args...)}
	}
	if len(spec) > MaxSiteLen {
		return bad("longer than %d octets", MaxSiteLen)
	}
	site := Site{Weight: 1}
	rest := strings.TrimSpace(spec)
	if i := strings.LastIndexByte(rest, '*'); i >= 0 {
		w, err := strconv.ParseFloat(rest[i+1:], 64)
		if err != nil || math.IsNaN(w) || math.IsInf(w, 0) || math.Abs(w) > MaxWeight {
			return bad("weight %q is not a number from -%d to %d", rest[i+1:], MaxWeight, MaxWeight)
		}
		site.Weight, rest = w, rest[:i]
	}
	zone, filter, hasFilter := strings.Cut(rest, "=")
	zone = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(zone), "."))
	filter = strings.TrimSpace(filter)
	if zone == "" || len(zone) > maxZoneLen {
		return bad("zone must be a domain name of 1 to %d octets", maxZoneLen)
	}
	if !validZone(zone) {
		return bad("invalid zone %q", zone)
	}
	site.Zone = zone
	if hasFilter {
		f, err := parseFilter(filter)
		if err != "" {
			return bad("filter %q: %s", filter, err)
		}
		site.Filter = f
	}
	return site, nil
}

// validZone reports whether zone is a domain name of letters, digits,
// '-' and '_' in labels of 1 to 63 octets.
func validZone(zone string) bool {
	for l := range strings.SplitSeq(zone, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// parseFilter parses four octet patterns; it returns a reason on error.
func parseFilter(s string) (*[4]OctetSet, string) {
	var f [4]OctetSet
	i := 0
	for n := range 4 {
		if n > 0 {
			if i >= len(s) || s[i] != '.' {
				return nil, "want four octet patterns separated by dots"
			}
			i++
		}
		if i < len(s) && s[i] == '[' {
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, "unclosed '['"
			}
			for item := range strings.SplitSeq(s[i+1:i+end], ";") {
				lo, hi, isRange := strings.Cut(item, "..")
				a, ok1 := parseOctet(lo)
				b, ok2 := a, true
				if isRange {
					b, ok2 = parseOctet(hi)
				}
				if !ok1 || !ok2 || b < a {
					return nil, fmt.Sprintf("bad octet list item %q", item)
				}
				f[n].add(a, b)
			}
			i += end + 1
			continue
		}
		j := i
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		a, ok := parseOctet(s[i:j])
		if !ok {
			return nil, fmt.Sprintf("bad octet %q", s[i:j])
		}
		f[n].add(a, a)
		i = j
	}
	if i != len(s) {
		return nil, fmt.Sprintf("unexpected %q after the fourth octet", s[i:])
	}
	return &f, ""
}

func parseOctet(s string) (int, bool) {
	if s == "" || len(s) > 3 {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	return n, true
}

// Matches reports whether the answer a (an address in 127.0.0.0/8) is
// one the site counts.
func (s *Site) Matches(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	if s.Filter == nil {
		return true
	}
	b := a.As4()
	for i := range 4 {
		if !s.Filter[i].Has(b[i]) {
			return false
		}
	}
	return true
}

// QueryName returns the name to look up in zone for ip: RFC 5782 §2.1
// reversed octets for IPv4, §2.4 reversed nibbles for IPv6.
func QueryName(ip netip.Addr, zone string) string {
	ip = ip.Unmap()
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		// RFC 5782 §2.1: the octets in reverse order.
		fmt.Fprintf(&b, "%d.%d.%d.%d.", a[3], a[2], a[1], a[0])
	} else {
		a := ip.As16()
		// RFC 5782 §2.4: the 32 nibbles in reverse order, low nibble
		// first.
		const hex = "0123456789abcdef"
		for i := 15; i >= 0; i-- {
			b.WriteByte(hex[a[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(zone)
	return b.String()
}

// Answers is what a list answered for a client, sorted out.
type Answers struct {
	// Listed are the answers that say the client is listed: addresses
	// in 127.0.0.0/8 (RFC 5782 §2.1), but for the refusal codes.
	Listed []netip.Addr
	// Refused is set when the list answered a code that means it refused
	// the query (Spamhaus's 127.255.255.0/24: 252 a typing error in the
	// zone, 254 a query through a public resolver, 255 too many
	// queries).
	Refused netip.Addr
	// Ignored counts answers outside 127.0.0.0/8.
	Ignored int
}

// refusalCodes are the answers that say the query was refused, not that
// the client is listed.
var refusalCodes = netip.MustParsePrefix("127.255.255.0/24")

var loopback8 = netip.MustParsePrefix("127.0.0.0/8")

// ClassifyAnswers sorts a list's answers (at most maxAnswers are looked
// at).
func ClassifyAnswers(addrs []netip.Addr) Answers {
	var a Answers
	for i, ip := range addrs {
		if i == maxAnswers {
			break
		}
		ip = ip.Unmap()
		switch {
		case refusalCodes.Contains(ip):
			// Spamhaus's "query refused" codes: the list did not look
			// the client up; never block on them.
			a.Refused = ip
		case loopback8.Contains(ip):
			a.Listed = append(a.Listed, ip)
		default:
			// RFC 5782 §2.1: an answer outside 127.0.0.0/8 is not a
			// listing (a wildcard or a hijacked NXDOMAIN).
			a.Ignored++
		}
	}
	return a
}

// DNSBL is the check of DNS blocklists and allowlists.
type DNSBL struct {
	// Sites are the lists and their weights.
	Sites []Site
	// Threshold is the score from which the client is refused (or its
	// mail scored: Action).
	Threshold float64
	// Action is what a score of Threshold or more demands: Reject and
	// Tempfail refuse every RCPT; Quarantine, Tag and Accept add the
	// score to the message's spam score.
	Action inbound.Action
	// Timeout bounds the lookups, from the start of the session.
	Timeout time.Duration
	// TXT quotes the blocking list's TXT record in the reply.
	TXT bool
	// Skip are the client networks never looked up.
	Skip []netip.Prefix
	// Resolver asks the lists.
	Resolver *resolver.Resolver
	// Logger receives warnings about refused queries.
	Logger *slog.Logger
}

// Name implements inbound.Check.
func (d *DNSBL) Name() string { return "dnsbl" }

// skipped reports whether ip is not to be checked.
func skipped(ip netip.Addr, skip []netip.Prefix) bool {
	if !ip.IsValid() {
		return true
	}
	ip = ip.Unmap()
	for _, p := range skip {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Begin starts the lookups of every zone at once.
func (d *DNSBL) Begin(ctx context.Context, c *inbound.Conn, v *inbound.Verdict) inbound.Session {
	if len(d.Sites) == 0 || skipped(c.Remote, d.Skip) {
		return nil
	}
	s := &dnsblSession{d: d, ip: c.Remote.Unmap(), id: c.ID, done: make(chan struct{}), scored: map[string]bool{}}
	lctx, cancel := context.WithTimeout(ctx, d.Timeout)
	s.cancel = cancel
	var zones []string
	for _, site := range d.Sites {
		if !slices.Contains(zones, site.Zone) {
			zones = append(zones, site.Zone)
		}
	}
	s.answers = make(map[string]Answers, len(zones))
	var wg sync.WaitGroup
	for _, z := range zones {
		wg.Go(func() {
			a, err := d.lookup(lctx, s.ip, z)
			if err != nil {
				d.Logger.Debug("dnsbl: lookup failed", "id", c.ID, "zone", z, "err", err)
				return
			}
			if a.Refused.IsValid() {
				d.Logger.Warn("dnsbl: the list refused the query; the client counts as not listed", "id", c.ID, "zone", z, "answer", a.Refused.String())
			}
			s.mu.Lock()
			s.answers[z] = a
			s.mu.Unlock()
		})
	}
	go func() {
		wg.Wait()
		cancel()
		close(s.done)
	}()
	return s
}

// lookup asks zone about ip.
func (d *DNSBL) lookup(ctx context.Context, ip netip.Addr, zone string) (Answers, error) {
	ans, err := d.Resolver.Query(ctx, QueryName(ip, zone), dns.TypeA)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return Answers{}, nil // not listed
		}
		return Answers{}, err
	}
	var addrs []netip.Addr
	for _, rr := range ans.Records {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A); ok {
				addrs = append(addrs, ip)
			}
		}
	}
	return ClassifyAnswers(addrs), nil
}

// dnsblSession is the lookups of one session.
type dnsblSession struct {
	d      *DNSBL
	ip     netip.Addr
	id     string
	done   chan struct{}
	cancel context.CancelFunc

	mu      sync.Mutex
	answers map[string]Answers // by zone, when answered

	result *inbound.Result // the outcome, once computed
	scored map[string]bool // transactions whose score was added
}

// outcome waits for the lookups and computes the session's result.
func (s *dnsblSession) outcome(ctx context.Context) inbound.Result {
	select {
	case <-s.done:
	case <-ctx.Done():
		// Unanswered zones count as not listing the client.
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.result != nil {
		return *s.result
	}
	var score, top float64
	var hits []string
	blocker := ""
	for _, site := range s.d.Sites {
		a, ok := s.answers[site.Zone]
		if !ok {
			continue
		}
		if slices.ContainsFunc(a.Listed, site.Matches) {
			score += site.Weight
			hits = append(hits, site.Zone+"*"+strconv.FormatFloat(site.Weight, 'g', -1, 64))
			if site.Weight > top {
				top, blocker = site.Weight, site.Zone
			}
		}
	}
	r := inbound.Result{Check: "dnsbl", Score: score, Detail: "listed by " + strings.Join(hits, ", ")}
	if len(hits) > 0 && score >= s.d.Threshold && blocker != "" {
		r.Action = s.d.Action
		r.Code, r.Enhanced = 554, [3]int{5, 7, 1}
		if r.Action == inbound.Tempfail {
			r.Code, r.Enhanced = 450, [3]int{4, 7, 1}
		}
		// As Postfix's reject_rbl_client.
		r.Reply = fmt.Sprintf("Service unavailable; client [%s] blocked using %s", s.ip, blocker)
		if s.d.TXT && (r.Action == inbound.Reject || r.Action == inbound.Tempfail) {
			if txt := s.reason(ctx, blocker); txt != "" {
				r.Reply += "; " + txt
			}
		}
	}
	s.result = &r
	return r
}

// reason returns the TXT record of the client's listing in zone, cut to
// printable ASCII, or "".
func (s *dnsblSession) reason(ctx context.Context, zone string) string {
	ctx, cancel := context.WithTimeout(ctx, s.d.Timeout)
	defer cancel()
	txts, err := s.d.Resolver.LookupTXT(ctx, QueryName(s.ip, zone))
	if err != nil || len(txts) == 0 {
		return ""
	}
	return sanitizeReason(txts[0])
}

// sanitizeReason keeps the printable ASCII of a TXT reason, at most
// maxTXTLen octets: it goes into an SMTP reply line.
func sanitizeReason(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < maxTXTLen; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}

// Rcpt refuses the recipient when the lists demand it.
func (s *dnsblSession) Rcpt(ctx context.Context, env *inbound.Envelope, rcpt string, v *inbound.Verdict) {
	r := s.outcome(ctx)
	if r.Action == inbound.Reject || r.Action == inbound.Tempfail {
		v.Add(r)
	}
}

// Data adds the score of the lists (allowlists lower it) to the
// message's.
func (s *dnsblSession) Data(ctx context.Context, env *inbound.Envelope, msg inbound.Message, v *inbound.Verdict) (inbound.Message, error) {
	r := s.outcome(ctx)
	if r.Score == 0 || r.Action == inbound.Reject || r.Action == inbound.Tempfail {
		return nil, nil
	}
	s.mu.Lock()
	first := !s.scored[env.ID]
	s.scored[env.ID] = true
	s.mu.Unlock()
	if first {
		v.Add(r)
	}
	return nil, nil
}

// End stops lookups still under way.
func (s *dnsblSession) End() { s.cancel() }
