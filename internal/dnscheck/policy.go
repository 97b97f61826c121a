package dnscheck

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/postino-mail/postino/internal/mtasts"
)

// maxPolicySize bounds the policy file read (RFC 8461 §3.3: senders may
// limit it, 64 KiB is the size it suggests).
const maxPolicySize = 64 << 10

// parsePolicy parses an MTA-STS policy file (RFC 8461 §3.2): "key: value"
// lines ending in LF or CRLF; version must come first and be STSv1;
// unknown keys are ignored.
func parsePolicy(text string) (mtasts.Policy, error) {
	var p mtasts.Policy
	if len(text) > maxPolicySize {
		return p, fmt.Errorf("policy longer than %d octets", maxPolicySize)
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 1024), maxPolicySize)
	first, seen := true, map[string]bool{}
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return p, fmt.Errorf("line %q is not key: value", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if first && (k != "version" || v != "STSv1") {
			return p, errors.New(`the first line must be "version: STSv1"`)
		}
		first = false
		if k != "mx" && seen[k] {
			return p, fmt.Errorf("%s given twice", k)
		}
		seen[k] = true
		switch k {
		case "mode":
			if v != mtasts.ModeEnforce && v != mtasts.ModeTesting && v != mtasts.ModeNone {
				return p, fmt.Errorf("invalid mode %q", v)
			}
			p.Mode = v
		case "mx":
			p.MX = append(p.MX, strings.ToLower(v))
		case "max_age":
			// RFC 8461 §3.2: at most 31557600.
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 31557600 {
				return p, fmt.Errorf("invalid max_age %q", v)
			}
			p.MaxAge = n
		}
	}
	if first {
		return p, errors.New("empty policy")
	}
	if p.Mode == "" || !seen["max_age"] || (p.Mode != mtasts.ModeNone && len(p.MX) == 0) {
		return p, errors.New("mode, max_age and (unless mode is none) mx are required")
	}
	return p, sc.Err()
}

// samePolicy reports whether two policies say the same.
func samePolicy(a, b mtasts.Policy) bool {
	norm := func(mx []string) []string {
		out := make([]string, len(mx))
		for i, m := range mx {
			out[i] = strings.TrimSuffix(strings.ToLower(m), ".")
		}
		slices.Sort(out)
		return out
	}
	return a.Mode == b.Mode && a.MaxAge == b.MaxAge && slices.Equal(norm(a.MX), norm(b.MX))
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
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPolicySize+1))
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
			got.Mode, strings.Join(got.MX, " "), got.MaxAge, c.p.MTASTS.Mode, strings.Join(c.p.MTASTS.MX, " "), c.p.MTASTS.MaxAge)
		return
	}
	c.add(OK, KindMTASTS, url, "", "policy mode %s, mx %s, max_age %d", got.Mode, strings.Join(got.MX, " "), got.MaxAge)
}
