package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/dnscheck"
	"github.com/postino-mail/postino/internal/pop3check"
	"github.com/postino-mail/postino/internal/resolver"
	"github.com/postino-mail/postino/internal/wellknown"
)

// addrList is a repeatable flag of IP addresses, also comma-separated.
type addrList []netip.Addr

func (l *addrList) String() string {
	s := make([]string, len(*l))
	for i, a := range *l {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func (l *addrList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("not an IP address: %q", f)
		}
		*l = append(*l, a.Unmap())
	}
	return nil
}

// planFlags are the flags shared by "dns" and "check DOMAIN".
type planFlags struct {
	ipv4, ipv6 addrList
	host       string
}

func (p *planFlags) register(fs *cmdFlags) {
	fs.Var(&p.ipv4, "ipv4", "public IPv4 `ADDRESS` of the server (repeatable; default: dns.public_addresses)")
	fs.Var(&p.ipv6, "ipv6", "public IPv6 `ADDRESS` of the server (repeatable; default: dns.public_addresses)")
	fs.StringVar(&p.host, "host", "", "host `NAME` of the server (default: hostname)")
}

// listenPort returns the port of a listen address, 0 when it is empty.
func listenPort(addr string) int {
	if addr == "" {
		return 0
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// plan builds the records plan of domain from the configuration and
// the flags. The public addresses are never guessed: without flags or
// dns.public_addresses it is an error.
func (p *planFlags) plan(cfg *config.Config, domain string) (*dnscheck.Plan, error) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if !dkim.ValidDomain(domain) {
		return nil, fmt.Errorf("invalid domain %q", domain)
	}
	for _, a := range p.ipv4 {
		if !a.Is4() {
			return nil, fmt.Errorf("--ipv4 %s is not an IPv4 address", a)
		}
	}
	for _, a := range p.ipv6 {
		if !a.Is6() {
			return nil, fmt.Errorf("--ipv6 %s is not an IPv6 address", a)
		}
	}
	addrs := append(append([]netip.Addr(nil), p.ipv4...), p.ipv6...)
	if len(addrs) == 0 {
		addrs = cfg.PublicAddrs()
	}
	if len(addrs) == 0 {
		return nil, errors.New("the public addresses of the server are unknown: set dns.public_addresses or give --ipv4/--ipv6")
	}
	host := cfg.Hostname
	if p.host != "" {
		host = p.host
	}
	keys, err := dkim.Records(cfg.DKIMDir(), domain)
	if err != nil {
		return nil, fmt.Errorf("DKIM keys: %w", err)
	}
	return &dnscheck.Plan{
		Domain: domain,
		Host:   strings.TrimSuffix(strings.ToLower(host), "."),
		Addrs:  addrs,
		DKIM:   keys,
		MTASTS: mtastsPolicy(cfg, p.host),
		Services: []dnscheck.Service{
			{Name: dnscheck.SvcSMTP, Port: listenPort(cfg.SMTP.Listen)},
			{Name: dnscheck.SvcSubmission, Port: listenPort(cfg.SMTP.Submission)},
			{Name: dnscheck.SvcSubmissions, Port: listenPort(cfg.SMTP.Submissions)},
			{Name: dnscheck.SvcPOP3, Port: listenPort(cfg.POP3.Listen)},
			{Name: dnscheck.SvcPOP3S, Port: listenPort(cfg.POP3.ListenTLS)},
		},
	}, nil
}

func runDNS(env *cmdEnv, args []string) int {
	fs := newFlags(env, "dns", "dns DOMAIN [--ipv4 ADDR] [--ipv6 ADDR] [--host NAME]")
	var pf planFlags
	pf.register(fs)
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	switch {
	case len(pos) == 0:
		return fs.missing("DOMAIN")
	case len(pos) > 1:
		return fs.unexpected(pos[1])
	}
	cfg, code := fs.common.loadExisting(env)
	if cfg == nil {
		return code
	}
	p, err := pf.plan(cfg, pos[0])
	if err != nil {
		errorf(env, "dns: %v", err)
		return exitConfigError
	}
	fmt.Fprint(env.stdout, p.Zone())
	if len(p.DKIM) == 0 {
		fmt.Fprintf(env.stdout, "\n; DKIM: no keys in %s: run \"postino dkim keygen %s\" and publish the records it prints\n", cfg.DKIMDir(), p.Domain)
	}
	if port := p.Port(dnscheck.SvcSMTP); port != 25 {
		fmt.Fprintf(env.stdout, "\n; warning: smtp.listen is port %d, but other servers deliver to port 25 only\n", port)
	}
	for _, l := range []struct{ key, addr string }{
		{"smtp.listen", cfg.SMTP.Listen}, {"smtp.submission", cfg.SMTP.Submission}, {"smtp.submissions", cfg.SMTP.Submissions},
		{"pop3.listen", cfg.POP3.Listen}, {"pop3.listen_tls", cfg.POP3.ListenTLS},
	} {
		host, _, err := net.SplitHostPort(l.addr)
		if a, perr := netip.ParseAddr(host); err == nil && perr == nil && a.IsLoopback() {
			fmt.Fprintf(env.stdout, "; warning: %s = %q listens on loopback only: the Internet cannot reach it\n", l.key, l.addr)
		}
	}
	return exitOK
}

func runCheck(env *cmdEnv, args []string) int {
	fs := newFlags(env, "check", "check DOMAIN | pop3://HOST[:PORT] | pop3s://HOST[:PORT] [flags]")
	var pf planFlags
	pf.register(fs)
	dnsServer := fs.String("dns", "", "DNS server `ADDR` (host:port) to ask (default: dns.server; for pop3://, /etc/resolv.conf)")
	dnsbl := fs.String("dnsbl", strings.Join(dnscheck.DefaultDNSBL, ","), "DNS blocklist `ZONES`, comma-separated (empty: none)")
	caFile := fs.String("ca", "", "verify certificates with the CA certificates in `FILE` (PEM) instead of the system's")
	insecure := fs.Bool("insecure", false, "pop3: report certificate problems but go on")
	user := fs.String("user", "", "pop3: log in as `USER` to check UIDL and LIST")
	passFile := fs.String("password-file", "", "pop3: read the password from `FILE` (first line)")
	timeout := fs.Duration("timeout", dnscheck.DefaultTimeout, "time allowed for each connection")
	httpsPort := fs.Int("https-port", 443, "`PORT` of the HTTPS server of the MTA-STS policy")
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	switch {
	case len(pos) == 0:
		return fs.missing("DOMAIN or pop3://HOST")
	case len(pos) > 1:
		return fs.unexpected(pos[1])
	}
	var roots *x509.CertPool
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			errorf(env, "check: %v", err)
			return exitUsage
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			errorf(env, "check: no certificate in %s", *caFile)
			return exitUsage
		}
	}
	ctx := context.Background()
	if strings.HasPrefix(pos[0], "pop3://") || strings.HasPrefix(pos[0], "pop3s://") {
		return runCheckPOP3(ctx, env, fs, pos[0], pop3CheckFlags{roots: roots, insecure: *insecure, user: *user, passFile: *passFile, timeout: *timeout, dns: *dnsServer})
	}
	cfg, code := fs.common.loadExisting(env)
	if cfg == nil {
		return code
	}
	p, err := pf.plan(cfg, pos[0])
	if err != nil {
		errorf(env, "check: %v", err)
		return exitConfigError
	}
	server := cfg.DNSServer()
	if *dnsServer != "" {
		server = *dnsServer
	}
	r, err := resolver.New(server, resolver.Options{})
	if err != nil {
		errorf(env, "check: %v", err)
		return exitConfigError
	}
	zones := []string{}
	for _, z := range strings.Split(*dnsbl, ",") {
		if z = strings.TrimSpace(z); z != "" {
			zones = append(zones, z)
		}
	}
	fmt.Fprintf(env.stdout, "Checking %s (server %s, %s) with DNS server %s\n\n", p.Domain, p.Host, joinAddrList(p.Addrs), strings.Join(r.Servers(), ", "))
	findings := dnscheck.Check(ctx, p, dnscheck.Options{Resolver: r, Roots: roots, DNSBL: zones, Timeout: *timeout, Now: time.Now, HTTPSPort: *httpsPort})
	return report(env, findings)
}

// report prints findings and a summary, and returns the exit status:
// 1 when any failed.
func report(env *cmdEnv, findings []dnscheck.Finding) int {
	var n [3]int
	for _, f := range findings {
		fmt.Fprintln(env.stdout, f)
		n[f.Status]++
	}
	fmt.Fprintf(env.stdout, "\n%d OK, %d WARN, %d FAIL\n", n[dnscheck.OK], n[dnscheck.Warn], n[dnscheck.Fail])
	if dnscheck.Failed(findings) {
		return exitError
	}
	return exitOK
}

func joinAddrList(as []netip.Addr) string {
	l := addrList(as)
	return l.String()
}

// pop3CheckFlags are the flags of "check pop3://HOST".
type pop3CheckFlags struct {
	roots    *x509.CertPool
	insecure bool
	user     string
	passFile string
	timeout  time.Duration
	dns      string // --dns; empty: /etc/resolv.conf
}

// runCheckPOP3 audits the POP3 server of a pop3:// or pop3s:// URL.
func runCheckPOP3(ctx context.Context, env *cmdEnv, fs *cmdFlags, target string, f pop3CheckFlags) int {
	u, err := url.Parse(target)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" {
		return fs.usageError("want pop3://HOST[:PORT] or pop3s://HOST[:PORT], got %q", target)
	}
	implicit := u.Scheme == "pop3s"
	addr := u.Host
	if u.Port() == "" {
		port := "110"
		if implicit {
			port = "995"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	o := pop3check.Options{Addr: addr, Host: u.Hostname(), Implicit: implicit, Roots: f.roots, Insecure: f.insecure, User: f.user, Timeout: f.timeout}
	if _, err := netip.ParseAddr(u.Hostname()); err != nil {
		r, err := resolver.New(f.dns, resolver.Options{})
		if err != nil {
			errorf(env, "check: %v", err)
			return exitConfigError
		}
		o.Resolver = r
	}
	if f.user != "" {
		if f.passFile == "" {
			return fs.usageError("--user needs --password-file")
		}
		b, err := os.ReadFile(f.passFile)
		if err != nil {
			errorf(env, "check: %v", err)
			return exitUsage
		}
		o.Password, _, _ = strings.Cut(strings.TrimRight(string(b), "\r\n"), "\n")
		o.Password = strings.TrimRight(o.Password, "\r")
	}
	fmt.Fprintf(env.stdout, "Auditing the POP3 server %s\n\n", target)
	return report(env, pop3check.Audit(ctx, o))
}

// mtastsPolicy is the MTA-STS policy the HTTPS listener serves under cfg
// ([mta_sts]); with --host, that host is the one MX.
func mtastsPolicy(cfg *config.Config, host string) wellknown.Policy {
	mx := cfg.MTASTSHosts()
	if host != "" {
		mx = []string{host}
	}
	return wellknown.Policy{Mode: cfg.MTASTS.Mode, MX: mx, MaxAge: cfg.MTASTS.MaxAge.Duration}
}
