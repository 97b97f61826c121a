// Package wellknown serves the documents that mail clients and sending
// servers fetch over HTTP(S) to learn about postino's domains: the
// MTA-STS policy (RFC 8461), Thunderbird's autoconfig file, Outlook's
// autodiscover answer (the POX form) and Apple's .mobileconfig profile.
// Every value comes from the configuration: the public host name and the
// ports of the POP3 and submission listeners.
package wellknown

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
)

// Limits on what clients send.
const (
	// MaxAddressLen is the longest e-mail address accepted (RFC 5321
	// §4.5.3.1.3: a path is at most 256 octets, the address 254).
	MaxAddressLen = 254
	// MaxRequestBody is the largest autodiscover request body read.
	MaxRequestBody = 16 << 10
)

// ErrBadAddress is wrapped by the errors of ParseAddress.
var ErrBadAddress = errors.New("wellknown: invalid e-mail address")

// Server describes what the documents offer: where clients connect.
type Server struct {
	// Hostname is the public name of the mail server.
	Hostname string
	// POP3TLS is the port of POP3 over implicit TLS (0: none); POP3 the
	// port of POP3 with STLS (0: none).
	POP3TLS, POP3 int
	// Submissions is the port of submission over implicit TLS (0: none);
	// Submission the port of submission with STARTTLS (0: none).
	Submissions, Submission int
}

// Options configure a Handler.
type Options struct {
	Server Server
	// IsLocal reports whether a domain is one of the local domains; the
	// documents are only served for them.
	IsLocal func(domain string) bool
	// Policy is the MTA-STS policy, served only over HTTPS; nil serves
	// none.
	Policy *Policy
	// Fallback serves the requests that are none of these documents; nil
	// answers 404.
	Fallback http.Handler
	// Logger receives refused requests at debug level; nil discards.
	Logger *slog.Logger
}

// Handler serves the documents. SetOptions changes what it serves while
// it runs (a configuration reload).
type Handler struct {
	opts atomic.Pointer[Options]
}

// NewHandler returns the handler for o.
func NewHandler(o Options) *Handler {
	h := &Handler{}
	h.SetOptions(o)
	return h
}

// SetOptions replaces the options for the requests that begin afterwards.
func (h *Handler) SetOptions(o Options) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Fallback == nil {
		o.Fallback = http.NotFoundHandler()
	}
	if o.IsLocal == nil {
		o.IsLocal = func(string) bool { return false }
	}
	h.opts.Store(&o)
}

// requestHost returns the request's host name, lower-case, without port
// or trailing dot.
func requestHost(r *http.Request) string {
	h := r.Host
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// ServeHTTP routes a request to its document.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o := h.opts.Load()
	path := strings.ToLower(r.URL.Path)
	host := requestHost(r)
	switch {
	case path == "/.well-known/mta-sts.txt":
		o.mtaSTS(w, r, host)
	case path == "/mail/config-v1.1.xml" || path == "/.well-known/autoconfig/mail/config-v1.1.xml":
		o.autoconfig(w, r, host)
	case path == "/autodiscover/autodiscover.xml":
		o.autodiscover(w, r)
	case path == "/mobileconfig":
		o.mobileconfig(w, r)
	default:
		o.Fallback.ServeHTTP(w, r)
	}
}

// refuse answers an error status with a short plain text that reveals
// nothing of the configuration.
func (o *Options) refuse(w http.ResponseWriter, r *http.Request, status int, why error) {
	o.Logger.Debug("http: request refused", "path", r.URL.Path, "host", r.Host,
		"remote", r.RemoteAddr, "status", status, "why", why)
	http.Error(w, http.StatusText(status), status)
}

// onlyGet refuses other methods than GET and HEAD; it reports whether the
// request may go on.
func (o *Options) onlyGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	o.refuse(w, r, http.StatusMethodNotAllowed, fmt.Errorf("method %s", r.Method))
	return false
}

// mtaSTS serves the MTA-STS policy of mta-sts.DOMAIN for a local DOMAIN.
func (o *Options) mtaSTS(w http.ResponseWriter, r *http.Request, host string) {
	if !o.onlyGet(w, r) {
		return
	}
	domain, ok := strings.CutPrefix(host, "mta-sts.")
	// RFC 8461 §3.3: the policy is fetched over HTTPS from
	// mta-sts.DOMAIN; plain HTTP does not count.
	if o.Policy == nil || r.TLS == nil || !ok || !o.IsLocal(domain) {
		o.refuse(w, r, http.StatusNotFound, fmt.Errorf("no policy for host %q", host))
		return
	}
	// RFC 8461 §3.3: media type text/plain; redirects are not followed,
	// so the answer is the policy itself.
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	fmt.Fprint(w, o.Policy.Text())
}

// ParseAddress checks an e-mail address a client sent and returns it with
// its domain lower-cased, and the domain. It refuses addresses longer than
// MaxAddressLen, without exactly one '@', with an empty or odd local part
// (white space, controls, quotes, angle brackets) or a domain that is not a
// host name.
func ParseAddress(s string) (addr, domain string, err error) {
	if len(s) > MaxAddressLen {
		return "", "", fmt.Errorf("%w: longer than %d octets", ErrBadAddress, MaxAddressLen)
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || strings.Contains(domain, "@") {
		return "", "", fmt.Errorf("%w: want exactly one '@'", ErrBadAddress)
	}
	if local == "" || len(local) > 64 {
		return "", "", fmt.Errorf("%w: local part must have 1 to 64 octets", ErrBadAddress)
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"<>()[]\\,;:", c) >= 0 {
			return "", "", fmt.Errorf("%w: character %q in the local part", ErrBadAddress, c)
		}
	}
	domain = strings.ToLower(domain)
	if !isHostname(domain) {
		return "", "", fmt.Errorf("%w: %q is not a domain name", ErrBadAddress, domain)
	}
	return local + "@" + domain, domain, nil
}

// isHostname reports whether d is a DNS host name of two labels or more.
func isHostname(d string) bool {
	if len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
