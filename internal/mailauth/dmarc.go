package mailauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// dmarcOutcome is the evaluation of DMARC for one message.
type dmarcOutcome struct {
	// result is pass, fail, none, temperror or permerror (RFC 8601
	// §2.7.2 with RFC 7489 §11.2).
	result string
	// from is the author's domain (RFC5322.From).
	from string
	// policy is the policy that applies (p, or sp for a subdomain, RFC
	// 7489 §6.3), "" without a record.
	policy dmarc.Policy
	// applied is what the policy asks after pct sampling: none,
	// quarantine or reject.
	applied dmarc.Policy
	// sampledOut is whether pct sampling lowered the policy.
	sampledOut bool
	// maybeTemp is whether an aligned check failed with a temporary
	// error, so that a fail may not be real.
	maybeTemp bool
	reason    string
}

// authorDomain returns the domain of the message's author. RFC 7489
// §6.6.1: a message with no From field, several From fields or a From
// field whose addresses are not all in one domain has no single author
// domain; the error says which.
func authorDomain(h *header) (string, error) {
	froms := h.get("From")
	switch len(froms) {
	case 0:
		return "", errors.New("no From field")
	case 1:
	default:
		return "", errors.New("several From fields")
	}
	addrs, err := fromAddresses(froms[0].value())
	if err != nil {
		return "", err
	}
	var domain string
	for _, a := range addrs {
		at := strings.LastIndexByte(a, '@')
		if at < 0 || at == len(a)-1 {
			return "", errors.New("an address of the From field has no domain")
		}
		d := strings.ToLower(strings.TrimSuffix(a[at+1:], "."))
		if !validDomain(d) {
			return "", fmt.Errorf("invalid domain %q in the From field", d)
		}
		if domain != "" && d != domain {
			return "", errors.New("the From field has addresses in several domains")
		}
		domain = d
	}
	if domain == "" {
		return "", errors.New("no From address")
	}
	return domain, nil
}

// validDomain reports whether d looks like a domain name: dot-separated
// labels of letters, digits, hyphens and non-ASCII characters (IDNs),
// at most 253 octets.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r >= 0x80 && r != utf8.RuneError) {
				return false
			}
		}
	}
	return true
}

// fromAddresses reads the addresses of a From field value. What net/mail
// cannot parse is read as its last <...>, as mail readers show it.
func fromAddresses(v string) ([]string, error) {
	if list, err := (&mail.AddressParser{}).ParseList(v); err == nil {
		out := make([]string, len(list))
		for i, a := range list {
			out[i] = a.Address
		}
		return out, nil
	}
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return []string{strings.TrimSpace(v[i+1 : i+j])}, nil
		}
	}
	if a := strings.TrimSpace(v); strings.Count(a, "@") == 1 && !strings.ContainsAny(a, " \t<>,;") {
		return []string{a}, nil
	}
	return nil, errors.New("unparsable From field")
}

// orgDomain returns the organizational domain of d (RFC 7489 §3.2): the
// public suffix plus one label, from the Public Suffix List; d itself
// when it is a public suffix.
func orgDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if od, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return od
	}
	return d
}

// aligned reports whether domain a is aligned with the author domain
// from: equal in strict mode, with the same organizational domain in
// relaxed mode (RFC 7489 §3.1.1, §3.1.2).
func aligned(a, from string, mode dmarc.AlignmentMode) bool {
	a, from = strings.ToLower(a), strings.ToLower(from)
	if a == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return a == from
	}
	return orgDomain(a) == orgDomain(from)
}

// errTempDMARC is a DMARC record that could not be fetched.
var errTempDMARC = errors.New("temporary DNS error")

// lookupDMARC fetches the DMARC record of domain (RFC 7489 §6.6.3): the
// TXT records at _dmarc.domain that start with v=DMARC1; none, or more
// than one, is no policy (nil, nil). A record that does not parse is an
// error.
func lookupDMARC(ctx context.Context, res Resolver, domain string) (*dmarc.Record, error) {
	txts, err := res.LookupTXT(ctx, "_dmarc."+domain)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, nil
		}
		return nil, errTempDMARC
	}
	var found []string
	for _, t := range txts {
		// RFC 7489 §6.6.3 step 3: records that do not start with
		// "v=DMARC1" are discarded.
		first, _, _ := strings.Cut(t, ";")
		if k, v, ok := strings.Cut(first, "="); ok && strings.TrimSpace(k) == "v" && strings.TrimSpace(v) == "DMARC1" {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		// Step 4: more than one is no policy; so is none.
		return nil, nil
	}
	return dmarc.Parse(found[0])
}

// evalDMARC evaluates DMARC for a message whose author domain is from,
// given the SPF and DKIM results (RFC 7489 §6.6).
func (c *Check) evalDMARC(ctx context.Context, from string, sc *spfCheck, spfResult string, dk []dkimResult) dmarcOutcome {
	out := dmarcOutcome{from: from, applied: dmarc.PolicyNone}
	rec, err := lookupDMARC(ctx, c.o.Resolver, from)
	sub := false
	if err == nil && rec == nil {
		// RFC 7489 §6.6.3 step 2: no record at the author domain: the
		// organizational domain's, whose sp= then applies.
		if od := orgDomain(from); od != from {
			rec, err = lookupDMARC(ctx, c.o.Resolver, od)
			sub = true
		}
	}
	switch {
	case errors.Is(err, errTempDMARC):
		out.result, out.reason = "temperror", "DMARC record lookup failed"
		return out
	case err != nil:
		// RFC 7489 §6.6.3: a record that cannot be parsed is as none;
		// RFC 8601 calls it permerror.
		out.result, out.reason = "permerror", err.Error()
		return out
	case rec == nil:
		out.result = "none"
		return out
	}
	out.policy = rec.Policy
	if sub && rec.SubdomainPolicy != "" {
		out.policy = rec.SubdomainPolicy
	}
	// RFC 7489 §4.2: pass when an aligned identifier passes.
	for _, d := range dk {
		if d.result == "pass" && aligned(d.domain, from, rec.DKIMAlignment) {
			out.result = "pass"
			return out
		}
	}
	if spfResult == "pass" && aligned(sc.domain, from, rec.SPFAlignment) {
		out.result = "pass"
		return out
	}
	out.result = "fail"
	for _, d := range dk {
		if d.result == "temperror" && aligned(d.domain, from, rec.DKIMAlignment) {
			out.maybeTemp = true
		}
	}
	if spfResult == "temperror" && aligned(sc.domain, from, rec.SPFAlignment) {
		out.maybeTemp = true
	}
	out.applied = out.policy
	// RFC 7489 §6.6.4: with pct below 100, the policy applies to that
	// share of failing mail; the rest gets the next milder policy.
	if rec.Percent != nil && *rec.Percent < 100 && c.o.Rand(100) >= *rec.Percent {
		out.sampledOut = true
		switch out.applied {
		case dmarc.PolicyReject:
			out.applied = dmarc.PolicyQuarantine
		case dmarc.PolicyQuarantine:
			out.applied = dmarc.PolicyNone
		}
	}
	return out
}
