// Package pop3check audits a POP3 server from the outside, as "postino
// check pop3://HOST" does: its greeting and capabilities (RFC 2449), STLS
// (RFC 2595), the TLS versions and TLS 1.2 cipher suites it accepts, its
// certificate, whether it offers passwords before TLS, its response codes
// (RFC 2449 §8, RFC 3206) and, with credentials, that STAT, LIST, RETR and
// UIDL agree (RFC 1939 §7: exact sizes, unique and stable unique-ids of
// 1 to 70 characters in 0x21-0x7E).
package pop3check

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/dnscheck"
	"github.com/postino-mail/postino/internal/resolver"
	"github.com/postino-mail/postino/pop3"
)

// Options say which server to audit and how.
type Options struct {
	// Addr is the server's host:port. A host name is looked up with
	// Resolver.
	Addr string
	// Resolver looks up a host name in Addr; required unless Addr holds
	// an IP address.
	Resolver *resolver.Resolver
	// Host is the name its certificate must carry (the host of Addr
	// when empty).
	Host string
	// Implicit is true for pop3s:// (TLS from the first byte, RFC 8314),
	// false for pop3:// (plain, STLS).
	Implicit bool
	// Roots verify the certificate; nil: the system's roots.
	Roots *x509.CertPool
	// Insecure goes on (and logs in) when the certificate does not verify.
	Insecure bool
	// User and Password, when User is set, log in to check the maildrop
	// listings; the password is only ever sent over TLS.
	User, Password string
	// Timeout bounds each connection and command (10 s when 0).
	Timeout time.Duration
	// MaxRetr is how many messages are downloaded to compare their size
	// with LIST (50 when 0).
	MaxRetr int
	// ExpiryWarn: a certificate expiring sooner is a WARN (14 days when 0).
	ExpiryWarn time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

type auditor struct {
	o   Options
	out []dnscheck.Finding
}

func (a *auditor) add(s dnscheck.Status, check, fix, format string, args ...any) {
	a.out = append(a.out, dnscheck.Finding{Status: s, Check: check, Subject: a.o.Addr, Detail: fmt.Sprintf(format, args...), Fix: fix})
}

// Audit runs every check and returns the findings.
func Audit(ctx context.Context, o Options) []dnscheck.Finding {
	if o.Host == "" {
		o.Host, _, _ = net.SplitHostPort(o.Addr)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxRetr <= 0 {
		o.MaxRetr = 50
	}
	if o.ExpiryWarn <= 0 {
		o.ExpiryWarn = dnscheck.DefaultExpiryWarn
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &auditor{o: o}
	if !a.resolve(ctx) || !a.plain(ctx) {
		return a.out
	}
	tlsOK := a.versions(ctx)
	if tlsOK {
		a.ciphers(ctx)
	}
	certOK := tlsOK && a.certificate(ctx)
	if certOK || (tlsOK && o.Insecure) {
		a.responseCodes(ctx)
		if o.User != "" {
			a.maildrop(ctx)
		}
	} else if o.User != "" {
		a.add(dnscheck.Warn, "LOGIN", "fix the certificate, or pass --insecure (--ca FILE for a private CA)", "credentials not sent: TLS could not be verified")
	}
	return a.out
}

// resolve replaces a host name in Addr by its first address, looked up
// through the resolver (the name stays in Host, for the certificate).
func (a *auditor) resolve(ctx context.Context) bool {
	host, port, err := net.SplitHostPort(a.o.Addr)
	if err != nil {
		a.add(dnscheck.Fail, "CONNECT", "", "%v", err)
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if a.o.Resolver == nil {
		a.add(dnscheck.Fail, "CONNECT", "", "no resolver to look up %s", host)
		return false
	}
	ips, err := a.o.Resolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		a.add(dnscheck.Fail, "CONNECT", "publish an address for "+host, "looking up %s: %v", host, err)
		return false
	}
	a.add(dnscheck.OK, "CONNECT", "", "%s is %s", host, ips[0].IP)
	a.o.Addr = net.JoinHostPort(ips[0].IP.String(), port)
	return true
}

// dial opens a session: plain (and not yet STLS) or implicit TLS with cfg.
func (a *auditor) dial(ctx context.Context, cfg *tls.Config) (*pop3.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, a.o.Timeout)
	defer cancel()
	var c *pop3.Client
	var err error
	if a.o.Implicit {
		c, err = pop3.DialTLS(ctx, a.o.Addr, cfg)
	} else {
		c, err = pop3.Dial(ctx, a.o.Addr)
	}
	if err != nil {
		return nil, err
	}
	c.Timeout = a.o.Timeout
	return c, nil
}

// secure opens a session and brings it to TLS (STLS on pop3://).
func (a *auditor) secure(ctx context.Context, cfg *tls.Config) (*pop3.Client, error) {
	c, err := a.dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if !a.o.Implicit {
		if err := c.StartTLS(cfg); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// plain checks the greeting and the capabilities before any login: on
// pop3:// that STLS is offered and no password mechanism is before it.
func (a *auditor) plain(ctx context.Context) bool {
	c, err := a.dial(ctx, a.tlsConfig(true))
	if err != nil {
		a.add(dnscheck.Fail, "CONNECT", "check the address and that the server runs", "%v", err)
		return false
	}
	defer c.Close()
	a.add(dnscheck.OK, "GREETING", "", "+OK %s", c.Greeting())
	caps, err := c.Capabilities()
	if err != nil {
		// RFC 2449 §5: CAPA lets clients find STLS, SASL and the rest.
		a.add(dnscheck.Warn, "CAPA", "support CAPA (RFC 2449)", "CAPA failed: %v", err)
		caps = map[string][]string{}
	} else {
		a.add(dnscheck.OK, "CAPA", "", "%s", capsString(caps))
	}
	if a.o.Implicit {
		return true
	}
	_, stls := caps["STLS"]
	if !stls {
		a.add(dnscheck.Fail, "STLS", "offer STLS (RFC 2595) or only POP3 over TLS on port 995", "STLS not offered: passwords and mail cross the network in the clear")
	} else {
		a.add(dnscheck.OK, "STLS", "", "offered")
	}
	// RFC 2595 §2.1, RFC 8314 §4.1: no cleartext passwords without TLS.
	var offered []string
	if _, ok := caps["USER"]; ok {
		offered = append(offered, "USER/PASS")
	}
	for _, m := range caps["SASL"] {
		if m = strings.ToUpper(m); m == "PLAIN" || m == "LOGIN" {
			offered = append(offered, "AUTH "+m)
		}
	}
	if len(offered) == 0 && stls {
		// CAPA may hide USER yet the command still work: try it.
		if _, err := c.Cmd("USER %s", probeUser()); err == nil {
			offered = append(offered, "USER (not in CAPA)")
		}
	}
	if len(offered) > 0 {
		a.add(dnscheck.Fail, "PLAINTEXT", "allow logins only after STLS (postino: pop3.plaintext_auth = \"never\"; Dovecot: disable_plaintext_auth = yes, ssl = required)", "%s offered before TLS: passwords can be read on the network", strings.Join(offered, ", "))
	} else {
		a.add(dnscheck.OK, "PLAINTEXT", "", "no password login before TLS")
	}
	return stls || len(caps) == 0
}

func capsString(caps map[string][]string) string {
	var s []string
	for k, v := range caps {
		s = append(s, strings.TrimSpace(k+" "+strings.Join(v, " ")))
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

func probeUser() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "postino-check-" + hex.EncodeToString(b)
}

// tlsConfig returns the client configuration; probe skips verification
// (for version and cipher probes that only test the protocol).
func (a *auditor) tlsConfig(probe bool) *tls.Config {
	return &tls.Config{ServerName: a.o.Host, RootCAs: a.o.Roots, Time: a.o.Now, InsecureSkipVerify: probe || a.o.Insecure}
}

// handshake opens a raw connection, starts TLS with cfg and closes it.
func (a *auditor) handshake(ctx context.Context, cfg *tls.Config) (tls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(ctx, a.o.Timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", a.o.Addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	start := "stls"
	if a.o.Implicit {
		start = "implicit"
	}
	tc, err := dnscheck.StartTLS(conn, start, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	return tc.ConnectionState(), nil
}

// versions tries each TLS version alone. RFC 8996: TLS 1.0 and 1.1 must
// not be used.
func (a *auditor) versions(ctx context.Context) bool {
	any := false
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12, tls.VersionTLS13} {
		cfg := a.tlsConfig(true)
		cfg.MinVersion, cfg.MaxVersion = v, v
		_, err := a.handshake(ctx, cfg)
		name := tls.VersionName(v)
		switch {
		case err == nil && v < tls.VersionTLS12:
			any = true
			a.add(dnscheck.Fail, "TLS", "accept only TLS 1.2 and 1.3 (postino: tls.min_version; Dovecot: ssl_min_protocol = TLSv1.2)", "%s accepted (deprecated by RFC 8996)", name)
		case err == nil:
			any = true
			a.add(dnscheck.OK, "TLS", "", "%s accepted", name)
		case v == tls.VersionTLS13:
			a.add(dnscheck.Warn, "TLS", "enable TLS 1.3", "%s refused: %v", name, err)
		case v == tls.VersionTLS12:
			a.add(dnscheck.OK, "TLS", "", "%s refused (TLS 1.3 only: very old clients cannot connect)", name)
		default:
			a.add(dnscheck.OK, "TLS", "", "%s refused", name)
		}
	}
	if !any {
		a.add(dnscheck.Fail, "TLS", "configure a certificate and TLS", "no TLS version accepted")
	}
	return any
}

// ciphers tries each TLS 1.2 cipher suite alone.
func (a *auditor) ciphers(ctx context.Context) {
	var good, weak, nofs []string
	suites := append(tls.CipherSuites(), tls.InsecureCipherSuites()...)
	for _, s := range suites {
		if !slices.Contains(s.SupportedVersions, tls.VersionTLS12) {
			continue
		}
		cfg := a.tlsConfig(true)
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		cfg.CipherSuites = []uint16{s.ID}
		if _, err := a.handshake(ctx, cfg); err != nil {
			continue
		}
		switch {
		case strings.Contains(s.Name, "RC4") || strings.Contains(s.Name, "3DES") || strings.Contains(s.Name, "NULL"):
			// RFC 7465 (RC4), RFC 9325 §4.1 (3DES, NULL): never.
			weak = append(weak, s.Name)
		case !strings.HasPrefix(s.Name, "TLS_ECDHE_"):
			nofs = append(nofs, s.Name)
		default:
			good = append(good, s.Name)
		}
	}
	switch {
	case len(weak) > 0:
		a.add(dnscheck.Fail, "CIPHERS", "disable the weak suites (RC4, 3DES, NULL)", "TLS 1.2 accepts weak suites: %s", strings.Join(weak, ", "))
	case len(nofs) > 0:
		a.add(dnscheck.Warn, "CIPHERS", "prefer ECDHE suites: RSA key exchange has no forward secrecy", "TLS 1.2 accepts suites without forward secrecy: %s", strings.Join(nofs, ", "))
	case len(good) > 0:
		a.add(dnscheck.OK, "CIPHERS", "", "TLS 1.2 suites: %s", strings.Join(good, ", "))
	}
}

// certificate verifies the chain and the name, and reports the expiry.
func (a *auditor) certificate(ctx context.Context) bool {
	cfg := a.tlsConfig(false)
	cfg.InsecureSkipVerify = false
	st, err := a.handshake(ctx, cfg)
	if err != nil {
		a.add(dnscheck.Fail, "CERT", "install a certificate for "+a.o.Host+" signed by a public CA", "%v", err)
		return false
	}
	leaf := st.PeerCertificates[0]
	left := leaf.NotAfter.Sub(a.o.Now())
	detail := fmt.Sprintf("valid for %s, issued by %q, until %s (%d days left)", a.o.Host, leaf.Issuer.CommonName, leaf.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24))
	if left < a.o.ExpiryWarn {
		a.add(dnscheck.Warn, "CERT", "renew the certificate", "%s: expires soon", detail)
	} else {
		a.add(dnscheck.OK, "CERT", "", "%s", detail)
	}
	return true
}

// responseCodes logs in with a user that does not exist, over TLS, and
// looks at the answer: RFC 3206 §5 [AUTH] (announced by RESP-CODES and
// AUTH-RESP-CODE in CAPA, RFC 2449 §6.4, RFC 3206 §6).
func (a *auditor) responseCodes(ctx context.Context) {
	c, err := a.secure(ctx, a.tlsConfig(false))
	if err != nil {
		a.add(dnscheck.Fail, "CODES", "", "cannot start TLS: %v", err)
		return
	}
	defer c.Close()
	caps, _ := c.Capabilities()
	err = c.Login(probeUser(), probeUser())
	var pe *pop3.Error
	switch {
	case err == nil:
		a.add(dnscheck.Fail, "CODES", "refuse unknown users", "a made-up user and password were accepted")
	case !errors.As(err, &pe):
		a.add(dnscheck.Warn, "CODES", "", "a failed login ended the session: %v", err)
	case pe.Code == pop3.CodeAuth:
		_, rc := caps["RESP-CODES"]
		_, arc := caps["AUTH-RESP-CODE"]
		if !rc || !arc {
			a.add(dnscheck.Warn, "CODES", "announce RESP-CODES and AUTH-RESP-CODE in CAPA", "-ERR [AUTH] sent on a wrong password, but CAPA does not announce RESP-CODES and AUTH-RESP-CODE")
		} else {
			a.add(dnscheck.OK, "CODES", "", "-ERR [AUTH] on a wrong password (RFC 3206 §5)")
		}
	default:
		a.add(dnscheck.Warn, "CODES", "answer a wrong password with -ERR [AUTH] (RFC 3206)", "a wrong password got %q: clients cannot tell it from a locked mailbox ([IN-USE]) or a server fault ([SYS/TEMP])", err.Error())
	}
	c.Cmd("QUIT")
}

// session is what one login saw.
type session struct {
	count int
	size  int64
	list  []pop3.ListEntry
	uidl  []pop3.UIDLEntry
}

func (a *auditor) login(ctx context.Context) (*pop3.Client, error) {
	c, err := a.secure(ctx, a.tlsConfig(false))
	if err != nil {
		return nil, err
	}
	if err := c.Login(a.o.User, a.o.Password); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (a *auditor) listings(c *pop3.Client) (*session, error) {
	var s session
	var err error
	if s.count, s.size, err = c.Stat(); err != nil {
		return nil, fmt.Errorf("STAT: %w", err)
	}
	if s.list, err = c.List(); err != nil {
		return nil, fmt.Errorf("LIST: %w", err)
	}
	if s.uidl, err = c.UIDL(); err != nil {
		return nil, fmt.Errorf("UIDL: %w", err)
	}
	return &s, nil
}

// maildrop logs in twice and compares STAT, LIST, RETR and UIDL.
func (a *auditor) maildrop(ctx context.Context) {
	c, err := a.login(ctx)
	if err != nil {
		a.add(dnscheck.Fail, "LOGIN", "check the user name and password", "%v", err)
		return
	}
	s1, err := a.listings(c)
	if err != nil {
		c.Close()
		a.add(dnscheck.Fail, "LISTING", "", "%v", err)
		return
	}
	a.add(dnscheck.OK, "LOGIN", "", "logged in as %s over TLS: %d messages, %d octets", a.o.User, s1.count, s1.size)
	// RFC 1939 §5 STAT: the count and the sum of the sizes of LIST.
	var sum int64
	for _, e := range s1.list {
		sum += e.Size
	}
	if sum != s1.size || len(s1.list) != s1.count {
		a.add(dnscheck.Fail, "STAT", "make STAT and LIST agree", "STAT says %d messages, %d octets; LIST lists %d messages, %d octets", s1.count, s1.size, len(s1.list), sum)
	} else {
		a.add(dnscheck.OK, "STAT", "", "matches LIST")
	}
	a.uidlFormat(s1.uidl, s1.count)
	a.sizes(c, s1.list)
	a.lock(ctx)
	c.Cmd("QUIT")
	c.Close()

	c2, err := a.login(ctx)
	if err != nil {
		a.add(dnscheck.Fail, "UIDL", "release the maildrop at QUIT", "second login failed, UIDL stability not checked: %v", err)
		return
	}
	defer c2.Close()
	s2, err := a.listings(c2)
	if err != nil {
		a.add(dnscheck.Fail, "LISTING", "", "second session: %v", err)
		return
	}
	c2.Cmd("QUIT")
	first := map[string]int64{}
	for i, u := range s1.uidl {
		if i < len(s1.list) {
			first[u.UID] = s1.list[i].Size
		}
	}
	var changed []string
	for i, u := range s2.uidl {
		if size, ok := first[u.UID]; !ok || (i < len(s2.list) && size != s2.list[i].Size) {
			changed = append(changed, fmt.Sprintf("message %d %q", u.Number, u.UID))
		}
	}
	// RFC 1939 §7 UIDL: the unique-id of a message persists across
	// sessions. (Mail delivered in between would show as new: only the
	// messages of the first session are compared.)
	if len(changed) > 0 && len(s2.uidl) <= len(s1.uidl) {
		a.add(dnscheck.Fail, "UIDL", "keep each message's unique-id forever", "unique-ids changed between two sessions: %s", strings.Join(changed, ", "))
	} else {
		a.add(dnscheck.OK, "UIDL", "", "stable across two sessions")
	}
}

// lock logs in a second time while the first session is open: RFC 1939
// §8 asks for an exclusive lock on the maildrop, refused with -ERR
// [IN-USE] (RFC 2449 §8.1.2), so that two sessions cannot delete the same
// messages or see them renumbered.
func (a *auditor) lock(ctx context.Context) {
	c, err := a.login(ctx)
	var pe *pop3.Error
	switch {
	case err == nil:
		c.Cmd("QUIT")
		c.Close()
		a.add(dnscheck.Warn, "LOCK", "lock the maildrop for the length of a session (Dovecot: pop3_lock_session = yes)", "a second session was let in while the first was open (RFC 1939 §8 asks for an exclusive lock)")
	case errors.As(err, &pe) && pe.Code == pop3.CodeInUse:
		a.add(dnscheck.OK, "LOCK", "", "a second session at once is refused with -ERR [IN-USE]")
	case errors.As(err, &pe):
		a.add(dnscheck.Warn, "LOCK", "answer a locked maildrop with -ERR [IN-USE] (RFC 2449 §8.1.2)", "a second session at once got %q: clients cannot tell it from a wrong password", err.Error())
	default:
		a.add(dnscheck.Warn, "LOCK", "", "second session at once: %v", err)
	}
}

// uidlFormat checks RFC 1939 §7: unique-ids are unique in the maildrop,
// 1 to 70 characters in 0x21-0x7E, one per message.
func (a *auditor) uidlFormat(uidl []pop3.UIDLEntry, count int) {
	seen := map[string]bool{}
	var bad []string
	for _, u := range uidl {
		switch {
		case len(u.UID) < 1 || len(u.UID) > 70:
			bad = append(bad, fmt.Sprintf("message %d: %d characters", u.Number, len(u.UID)))
		case strings.IndexFunc(u.UID, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0:
			bad = append(bad, fmt.Sprintf("message %d: %q has characters outside 0x21-0x7E", u.Number, u.UID))
		case seen[u.UID]:
			bad = append(bad, fmt.Sprintf("message %d: %q is not unique", u.Number, u.UID))
		}
		seen[u.UID] = true
	}
	if len(uidl) != count {
		bad = append(bad, fmt.Sprintf("%d unique-ids for %d messages", len(uidl), count))
	}
	if len(bad) > 0 {
		a.add(dnscheck.Fail, "UIDL", "give every message a unique-id of 1-70 printable characters (RFC 1939 §7)", "%s", strings.Join(bad, "; "))
		return
	}
	a.add(dnscheck.OK, "UIDL", "", "%d unique-ids, unique, 1-70 characters in 0x21-0x7E", len(uidl))
}

// sizes downloads messages and compares the octets received (CRLF line
// ends, byte-stuffing removed) with LIST (RFC 1939 §5: the exact size).
func (a *auditor) sizes(c *pop3.Client, list []pop3.ListEntry) {
	var bad []string
	n := 0
	for _, e := range list {
		if n >= a.o.MaxRetr {
			break
		}
		n++
		r, err := c.Retr(e.Number)
		if err != nil {
			a.add(dnscheck.Fail, "RETR", "", "RETR %d: %v", e.Number, err)
			return
		}
		got, err := io.Copy(io.Discard, r)
		var le *pop3.LimitError
		if errors.As(err, &le) {
			a.add(dnscheck.Fail, "SIZE", "LIST must give the exact size", "RETR %d sent more than LIST's %d octets allow: %v", e.Number, e.Size, err)
			return
		}
		if err != nil {
			a.add(dnscheck.Fail, "RETR", "", "RETR %d: %v", e.Number, err)
			return
		}
		if got != e.Size {
			bad = append(bad, fmt.Sprintf("message %d: LIST %d, RETR %d octets", e.Number, e.Size, got))
		}
	}
	if len(bad) > 0 {
		a.add(dnscheck.Fail, "SIZE", "LIST must give the exact size of the message as sent, with CRLF line ends (RFC 1939 §5)", "%s", strings.Join(bad, "; "))
		return
	}
	a.add(dnscheck.OK, "SIZE", "", "LIST sizes equal the octets of RETR (%d messages downloaded)", n)
}
