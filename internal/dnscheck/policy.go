package dnscheck

import (
	"context"
	"crypto/tls"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/mtasts"
	"github.com/postino-mail/postino/internal/wellknown"
)

// parsePolicy parses a fetched MTA-STS policy file (RFC 8461 §3.2) with
// the parser the queue uses.
func parsePolicy(text string) (*mtasts.Policy, error) {
	return mtasts.ParsePolicy(strings.NewReader(text))
}

// samePolicy reports whether two policies say the same.
func samePolicy(a *mtasts.Policy, b wellknown.Policy) bool {
	norm := func(mx []string) []string {
		out := make([]string, len(mx))
		for i, m := range mx {
			out[i] = strings.TrimSuffix(strings.ToLower(m), ".")
		}
		slices.Sort(out)
		return out
	}
	return string(a.Mode) == b.Mode && a.MaxAge == b.MaxAge && slices.Equal(norm(a.MX), norm(b.MX))
}

// policy fetches https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461
// §3.3) from addrs and compares it with the plan's policy.
func (c *checker) policy(ctx context.Context, host string, addrs []netip.Addr) {
	port := c.o.HTTPSPort
	if port == 0 {
		port = 443
	}
	h := strings.TrimSuffix(host, ".")
	url := "https://" + h + "/.well-known/mta-sts.txt"
	fix := "serve this policy at " + url + " (HTTPS, a certificate for " + h + ", Content-Type text/plain):\n" + strings.TrimRight(strings.ReplaceAll(c.p.MTASTS.Text(), "\r\n", "\n"), "\n")
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	client := &http.Client{
		Transport: &http.Transport{
			// The name was resolved through the check's resolver; dial
			// its addresses, never the system's idea of it.
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				var last error
				for _, a := range addrs {
					conn, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(a, uint16(port)).String())
					if err == nil {
						return conn, nil
					}
					last = err
				}
				return nil, last
			},
			TLSClientConfig: &tls.Config{ServerName: h, RootCAs: c.o.Roots, Time: c.o.Now, MinVersion: tls.VersionTLS12},
		},
		// RFC 8461 §3.3: HTTP redirects must not be followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		c.add(Fail, KindMTASTS, url, fix, "%v", err)
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		c.add(Fail, KindMTASTS, url, fix, "cannot fetch the policy: %v", err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, mtasts.MaxPolicySize+1))
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode != http.StatusOK:
		// RFC 8461 §3.3: only a 200 is a policy.
		c.add(Fail, KindMTASTS, url, fix, "HTTP status %s", resp.Status)
		return
	case err != nil:
		c.add(Fail, KindMTASTS, url, fix, "reading the policy: %v", err)
		return
	case mt != "text/plain":
		// RFC 8461 §3.2: the media type is text/plain.
		c.add(Fail, KindMTASTS, url, fix, "Content-Type %q, want text/plain", resp.Header.Get("Content-Type"))
		return
	}
	got, err := parsePolicy(string(body))
	if err != nil {
		c.add(Fail, KindMTASTS, url, fix, "invalid policy: %v", err)
		return
	}
	if !samePolicy(got, c.p.MTASTS) {
		c.add(Fail, KindMTASTS, url, fix, "the policy served (mode %s, mx %s, max_age %d) is not this server's (mode %s, mx %s, max_age %d)",
			got.Mode, strings.Join(got.MX, " "), int64(got.MaxAge/time.Second), c.p.MTASTS.Mode, strings.Join(c.p.MTASTS.MX, " "), int64(c.p.MTASTS.MaxAge/time.Second))
		return
	}
	c.add(OK, KindMTASTS, url, "", "policy mode %s, mx %s, max_age %d", got.Mode, strings.Join(got.MX, " "), int64(got.MaxAge/time.Second))
}
