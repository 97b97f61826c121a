// Package dnscheck says which DNS records a postino domain needs and
// checks what is published against them.
//
// A Plan describes the domain: its name, the server's host name and
// public addresses, its DKIM keys, its MTA-STS policy and the mail
// services it offers on which ports. Plan.Records lists every record to
// publish ("postino dns"), each with a comment; Check looks each of them
// up through a resolver, and also checks reverse DNS, the certificates
// and reachability of the ports and DNS blocklists ("postino check"),
// and returns one Finding per item: OK, WARN or FAIL with the fix.
package dnscheck

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/wellknown"
)

// Service names of the mail services a Plan can offer.
const (
	SvcSMTP        = "smtp"        // MX, port 25, STARTTLS
	SvcPOP3        = "pop3"        // port 110, STLS
	SvcPOP3S       = "pop3s"       // port 995, implicit TLS
	SvcSubmission  = "submission"  // port 587, STARTTLS
	SvcSubmissions = "submissions" // port 465, implicit TLS
)

// Service is a mail service of the server and the port it is reached on
// from the Internet; Port 0 means not offered.
type Service struct {
	Name string
	Port int
}

// Plan is what a domain served by postino should publish.
type Plan struct {
	// Domain is the mail domain (the right of the @).
	Domain string
	// Host is the server's host name: the MX target, the SRV targets,
	// the name certificates must carry and PTR records must give.
	Host string
	// Addrs are the server's public addresses.
	Addrs []netip.Addr
	// DKIM are the records of the domain's DKIM keys.
	DKIM []dkim.Record
	// MTASTS is the domain's MTA-STS policy.
	MTASTS wellknown.Policy
	// Services are the mail services offered (and those not offered,
	// with Port 0); SRV records are published for pop3, pop3s,
	// submission and submissions.
	Services []Service
}

// Kinds of records, which group the checks.
const (
	KindMX       = "MX"
	KindHost     = "HOST"
	KindSPF      = "SPF"
	KindDKIM     = "DKIM"
	KindDMARC    = "DMARC"
	KindMTASTS   = "MTA-STS"
	KindTLSRPT   = "TLS-RPT"
	KindSRV      = "SRV"
	KindAutoconf = "AUTOCONFIG"
	KindPTR      = "PTR"
)

// Record is one DNS record to publish.
type Record struct {
	// Kind groups the record (KindMX...).
	Kind string
	// Name is the owner name, fully qualified with a final dot.
	Name string
	// Type is the record type: MX, TXT, A, AAAA, SRV, CNAME, PTR.
	Type string
	// Value is the record data in zone-file syntax (TXT: the text,
	// unquoted, see Data).
	Value string
	// Comment says what the record is for.
	Comment string
}

// Data returns the record data in zone-file syntax: TXT text is quoted
// and split into strings of at most 255 octets (RFC 1035 §3.3.14).
func (r Record) Data() string {
	if r.Type != "TXT" {
		return r.Value
	}
	var parts []string
	for v := r.Value; ; {
		n := min(len(v), 255)
		parts = append(parts, strconv.Quote(v[:n]))
		v = v[n:]
		if v == "" {
			break
		}
	}
	return strings.Join(parts, " ")
}

// String returns the record as a zone-file line.
func (r Record) String() string {
	return fmt.Sprintf("%s 3600 IN %s %s", r.Name, r.Type, r.Data())
}

// Port returns the port of the named service, 0 when it is not offered.
func (p *Plan) Port(name string) int {
	for _, s := range p.Services {
		if s.Name == name {
			return s.Port
		}
	}
	return 0
}

func fqdn(s string) string { return dns.Fqdn(strings.ToLower(s)) }

// SPF returns the SPF record text: the MX hosts may send, nothing else
// (RFC 7208 §5.4 "mx", §5.1 "-all").
func (p *Plan) SPF() string { return "v=spf1 mx -all" }

// DMARC returns the DMARC record text: quarantine what fails, with
// aggregate reports to dmarc-reports@DOMAIN (RFC 7489 §6.3). Mail postino
// sends passes both SPF and DKIM, so quarantine is safe from the start.
func (p *Plan) DMARC() string {
	return "v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:dmarc-reports@" + strings.ToLower(p.Domain)
}

// TLSRPT returns the TLS-RPT record text (RFC 8460 §3).
func (p *Plan) TLSRPT() string {
	return "v=TLSRPTv1; rua=mailto:tlsrpt@" + strings.ToLower(p.Domain)
}

// srvServices are the RFC 6186 / RFC 8314 services with SRV records, in
// the order they are printed. IMAP is always "not offered".
var srvServices = []struct{ name, desc string }{
	{SvcSubmissions, "message submission over implicit TLS (RFC 8314 §5.1)"},
	{SvcSubmission, "message submission with STARTTLS (RFC 6186 §3.1)"},
	{SvcPOP3S, "POP3 over implicit TLS (RFC 8314 §5.1)"},
	{SvcPOP3, "POP3 with STLS (RFC 6186 §3.1)"},
	{"imaps", "IMAP over implicit TLS: not offered"},
	{"imap", "IMAP: not offered"},
}

// Records returns every record the domain should publish, in the order
// "postino dns" prints them.
func (p *Plan) Records() []Record {
	d, h := fqdn(p.Domain), fqdn(p.Host)
	var out []Record
	add := func(kind, name, typ, value, comment string) {
		out = append(out, Record{Kind: kind, Name: name, Type: typ, Value: value, Comment: comment})
	}
	add(KindMX, d, "MX", "10 "+h, "incoming mail for "+strings.TrimSuffix(d, ".")+" goes to "+strings.TrimSuffix(h, ".")+" (RFC 5321 §5.1)")
	for _, a := range p.Addrs {
		typ := "A"
		if a.Is6() {
			typ = "AAAA"
		}
		add(KindHost, h, typ, a.String(), "public address of the mail server (publish it in the zone of "+strings.TrimSuffix(h, ".")+")")
	}
	add(KindSPF, d, "TXT", p.SPF(), "SPF: only the MX hosts send mail for the domain (RFC 7208)")
	for _, k := range p.DKIM {
		add(KindDKIM, fqdn(k.Name), "TXT", k.Value, "DKIM public key "+k.Algo+", selector "+k.Selector+" (RFC 6376 §3.6.2)")
	}
	add(KindDMARC, "_dmarc."+d, "TXT", p.DMARC(), "DMARC: quarantine mail failing SPF and DKIM alignment; aggregate reports by mail (RFC 7489)")
	add(KindMTASTS, "_mta-sts."+d, "TXT", "v=STSv1; id="+p.MTASTS.ID(), "MTA-STS: senders must use TLS; the id changes with the policy at https://mta-sts."+strings.TrimSuffix(d, ".")+"/.well-known/mta-sts.txt (RFC 8461 §3.1)")
	add(KindMTASTS, "mta-sts."+d, "CNAME", h, "the HTTPS server of the MTA-STS policy (RFC 8461 §3.3)")
	add(KindTLSRPT, "_smtp._tls."+d, "TXT", p.TLSRPT(), "TLS-RPT: where senders report TLS failures (RFC 8460 §3)")
	for _, s := range srvServices {
		port := p.Port(s.name)
		name := "_" + s.name + "._tcp." + d
		if port == 0 {
			// RFC 6186 §3.1, RFC 2782: target "." means the service is
			// decidedly not available at this domain.
			add(KindSRV, name, "SRV", "0 0 0 .", strings.TrimSuffix(s.desc, ": not offered")+": not offered")
			continue
		}
		add(KindSRV, name, "SRV", fmt.Sprintf("0 1 %d %s", port, h), s.desc)
	}
	add(KindAutoconf, "autoconfig."+d, "CNAME", h, "Thunderbird autoconfiguration (served over HTTPS)")
	add(KindAutoconf, "autodiscover."+d, "CNAME", h, "Outlook autodiscover (served over HTTPS)")
	for _, a := range p.Addrs {
		rev, _ := dns.ReverseAddr(a.String())
		add(KindPTR, rev, "PTR", h, "reverse DNS of "+a.String()+": ask the owner of the address (your hosting provider) to set it; receivers check that it names the host and that the host has this address")
	}
	return out
}

// Zone returns the records as zone-file text, each preceded by a comment.
func (p *Plan) Zone() string {
	var b strings.Builder
	fmt.Fprintf(&b, "; DNS records for the mail domain %s served by %s\n", p.Domain, p.Host)
	last := ""
	for _, r := range p.Records() {
		if r.Kind != last && last != "" {
			b.WriteString("\n")
		}
		last = r.Kind
		fmt.Fprintf(&b, "; %s: %s\n%s\n", r.Kind, r.Comment, r)
		if r.Kind == KindMTASTS && r.Type == "TXT" {
			fmt.Fprintf(&b, "; the policy that id stands for, to serve at https://mta-sts.%s/.well-known/mta-sts.txt:\n", p.Domain)
			for _, l := range strings.Split(strings.TrimRight(p.MTASTS.Text(), "\r\n"), "\r\n") {
				fmt.Fprintf(&b, ";   %s\n", l)
			}
		}
	}
	return b.String()
}

// sortedAddrs returns addrs sorted, without duplicates.
func sortedAddrs(addrs []netip.Addr) []netip.Addr {
	out := slices.Clone(addrs)
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}
