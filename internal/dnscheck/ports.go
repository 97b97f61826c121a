package dnscheck

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// tlsServices are the services whose ports and certificates are checked,
// and how TLS starts on each.
var tlsServices = []struct{ name, start string }{
	{SvcSMTP, "starttls"},
	{SvcSubmissions, "implicit"},
	{SvcSubmission, "starttls"},
	{SvcPOP3S, "implicit"},
	{SvcPOP3, "stls"},
}

func (c *checker) ports(ctx context.Context) {
	addrs := append([]netip.Addr(nil), c.p.Addrs...)
	if more, err := c.addrsOf(ctx, c.p.Host); err == nil {
		addrs = append(addrs, more...)
	}
	addrs = sortedAddrs(addrs)
	for _, s := range tlsServices {
		port := c.p.Port(s.name)
		if port == 0 {
			continue
		}
		for _, a := range addrs {
			c.probe(ctx, s.name, s.start, netip.AddrPortFrom(a, uint16(port)))
		}
	}
}

// probe connects to one service address, starts TLS and checks the
// certificate.
func (c *checker) probe(ctx context.Context, svc, start string, ap netip.AddrPort) {
	subject := svc + " " + ap.String()
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", ap.String())
	if err != nil {
		c.add(Fail, "PORT", subject, "open port "+strconv.Itoa(int(ap.Port()))+" to the Internet (firewall, listen address in the configuration)", "not reachable: %v", err)
		return
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c.add(OK, "PORT", subject, "", "reachable")
	host := strings.TrimSuffix(fqdn(c.p.Host), ".")
	tc, err := StartTLS(conn, start, &tls.Config{ServerName: host, RootCAs: c.o.Roots, Time: c.o.Now, MinVersion: tls.VersionTLS12})
	if err != nil {
		c.add(Fail, "TLS", subject, "install a certificate for "+host+" from a public CA (tls.cert, tls.key) and make sure the service offers TLS", "%v", err)
		return
	}
	st := tc.ConnectionState()
	leaf := st.PeerCertificates[0]
	left := leaf.NotAfter.Sub(c.o.Now())
	detail := fmt.Sprintf("%s, certificate for %s valid until %s (%d days left)", tls.VersionName(st.Version), host, leaf.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24))
	if left < c.o.ExpiryWarn {
		c.add(Warn, "TLS", subject, "renew the certificate (tls.cert, tls.key)", "%s: expires soon", detail)
		return
	}
	c.add(OK, "TLS", subject, "", "%s", detail)
}

// StartTLS starts TLS on conn as the service does: "implicit" at once,
// "starttls" after an SMTP greeting, EHLO and STARTTLS (RFC 3207 §4),
// "stls" after a POP3 greeting and STLS (RFC 2595 §4). It returns the
// TLS connection after a verified handshake.
func StartTLS(conn net.Conn, start string, cfg *tls.Config) (*tls.Conn, error) {
	br := bufio.NewReader(conn)
	switch start {
	case "implicit":
	case "starttls":
		if err := smtpReply(br, "220"); err != nil {
			return nil, fmt.Errorf("greeting: %w", err)
		}
		fmt.Fprintf(conn, "EHLO %s\r\n", "postino-check.invalid")
		lines, err := smtpLines(br, "250")
		if err != nil {
			return nil, fmt.Errorf("EHLO: %w", err)
		}
		offered := false
		for _, l := range lines {
			if strings.EqualFold(strings.TrimSpace(l), "STARTTLS") {
				offered = true
			}
		}
		if !offered {
			return nil, errors.New("STARTTLS not offered")
		}
		fmt.Fprintf(conn, "STARTTLS\r\n")
		if err := smtpReply(br, "220"); err != nil {
			return nil, fmt.Errorf("STARTTLS: %w", err)
		}
	case "stls":
		l, err := readLine(br)
		if err != nil || !strings.HasPrefix(l, "+OK") {
			return nil, fmt.Errorf("greeting %q: %v", l, err)
		}
		fmt.Fprintf(conn, "STLS\r\n")
		if l, err = readLine(br); err != nil || !strings.HasPrefix(l, "+OK") {
			return nil, fmt.Errorf("STLS answered %q (%v)", l, err)
		}
	default:
		return nil, fmt.Errorf("unknown way to start TLS %q", start)
	}
	if br.Buffered() > 0 {
		// RFC 3207 §4.2 / RFC 2595 §4: nothing may follow the reply
		// before the handshake (a server that injects data is broken
		// or attacked).
		return nil, errors.New("the server sent data before the TLS handshake")
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// smtpLines reads one SMTP reply and returns the text of its lines; the
// code must be want.
func smtpLines(br *bufio.Reader, want string) ([]string, error) {
	var out []string
	for range 100 {
		l, err := readLine(br)
		if err != nil {
			return out, err
		}
		if len(l) < 4 || l[:3] != want {
			return out, fmt.Errorf("unexpected reply %q", l)
		}
		out = append(out, l[4:])
		if l[3] == ' ' {
			return out, nil
		}
	}
	return out, errors.New("reply too long")
}

func smtpReply(br *bufio.Reader, want string) error {
	_, err := smtpLines(br, want)
	return err
}
