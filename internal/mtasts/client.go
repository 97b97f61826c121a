package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/fsutil"
)

// Resolver is what the client looks up: the _mta-sts TXT record and the
// address of the policy host. *resolver.Resolver implements it.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Dialer opens connections; *net.Dialer implements it.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Options configure a Client.
type Options struct {
	// Resolver looks up the TXT record and the policy host (required).
	Resolver Resolver
	// Dialer opens the HTTPS connections (default: net.Dialer).
	Dialer Dialer
	// Roots verify the policy host's certificate (nil: the system's
	// roots).
	Roots *x509.CertPool
	// Port is the HTTPS port of policy hosts (default 443; tests use the
	// port of a loopback server).
	Port int
	// Timeout bounds one policy fetch (default 1 minute; RFC 8461 §3.3
	// suggests at least one minute).
	Timeout time.Duration
	// CacheDir holds the cached policies (DATA/mta-sts); "" keeps them in
	// memory only.
	CacheDir string
	// Now tells the time (default time.Now).
	Now func() time.Time
	// Logger receives fetch events (default: discard).
	Logger *slog.Logger
}

// Client finds the MTA-STS policies of recipient domains. It is safe for
// concurrent use.
type Client struct {
	opts Options
	http *http.Client

	mu    sync.Mutex
	cache map[string]*cached
}

// cached is a policy in the cache (and its file).
type cached struct {
	ID      string    `json:"id"`
	Fetched time.Time `json:"fetched"`
	Policy  *Policy   `json:"policy"`
}

func (c *cached) expired(now time.Time) bool {
	return !now.Before(c.Fetched.Add(c.Policy.MaxAge))
}

// FetchError is a policy that could not be fetched or used, with its
// TLS-RPT result type (RFC 8460 §4.3.2.3).
type FetchError struct {
	// Domain is the policy domain.
	Domain string
	// ResultType is sts-policy-fetch-error, sts-policy-invalid or
	// sts-webpki-invalid.
	ResultType string
	// Err is the cause.
	Err error
}

// Error implements error.
func (e *FetchError) Error() string {
	return fmt.Sprintf("mta-sts policy of %s: %s: %v", e.Domain, e.ResultType, e.Err)
}

// Unwrap returns the cause.
func (e *FetchError) Unwrap() error { return e.Err }

// The TLS-RPT result types of policy fetch failures (RFC 8460 §4.3.2.3).
const (
	ResultFetchError   = "sts-policy-fetch-error"
	ResultPolicyError  = "sts-policy-invalid"
	ResultWebPKIError  = "sts-webpki-invalid"
	defaultHTTPTimeout = time.Minute
)

// New returns a client.
func New(opts Options) (*Client, error) {
	if opts.Resolver == nil {
		return nil, errors.New("mta-sts: Options.Resolver must be set")
	}
	if opts.Dialer == nil {
		opts.Dialer = &net.Dialer{}
	}
	if opts.Port <= 0 {
		opts.Port = 443
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultHTTPTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CacheDir != "" {
		if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("mta-sts: cache folder: %w", err)
		}
	}
	c := &Client{opts: opts, cache: make(map[string]*cached)}
	tr := &http.Transport{
		// Never a proxy from the environment: the policy host is
		// reached as the resolver says.
		Proxy:                  nil,
		DialContext:            c.dial,
		TLSClientConfig:        &tls.Config{RootCAs: opts.Roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    opts.Timeout,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 16 << 10,
	}
	c.http = &http.Client{
		Transport: tr,
		Timeout:   opts.Timeout,
		// RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed".
		CheckRedirect: func(*http.Request, []*http.Request) error { return errRedirect },
	}
	return c, nil
}

var errRedirect = errors.New("redirect refused (RFC 8461 §3.3)")

// dial connects to the policy host through the client's resolver, so
// that the host's addresses come from the same DNS as everything else.
func (c *Client) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := c.opts.Resolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	var last error = fmt.Errorf("no address for %s", host)
	for _, ip := range ips {
		conn, err := c.opts.Dialer.DialContext(ctx, "tcp", net.JoinHostPort(ip.IP.String(), strconv.Itoa(c.opts.Port)))
		if err == nil {
			return conn, nil
		}
		last = err
	}
	return nil, last
}

// Get returns the policy of domain in force now: nil (and no error)
// when the domain has none. It follows RFC 8461 §5.1: a cached policy is
// used while its max_age lasts and the TXT record's id has not changed;
// a new id, or an expired policy, fetches the policy again; when that
// fetch fails, a cached policy that has not expired is still used. An
// error (a *FetchError) means the domain announces a policy that could
// not be had: the caller delivers as if there were none, and reports it.
func (c *Client) Get(ctx context.Context, domain string) (*Policy, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	now := c.opts.Now()
	old := c.load(domain)
	if old != nil && old.expired(now) {
		old = nil
	}
	id, recErr := c.lookupID(ctx, domain)
	if recErr != nil {
		if old != nil {
			return old.Policy, nil // §5.1: keep using the cached policy
		}
		var de *net.DNSError
		if errors.As(recErr, &de) && de.IsNotFound {
			return nil, nil // no policy announced
		}
		var pe *ParseError
		if errors.As(recErr, &pe) {
			return nil, nil // §3.1: an invalid record is no record
		}
		return nil, &FetchError{Domain: domain, ResultType: ResultFetchError, Err: recErr}
	}
	if old != nil && old.ID == id {
		return old.Policy, nil
	}
	p, err := c.fetch(ctx, domain)
	if err != nil {
		c.opts.Logger.Warn("mta-sts: policy fetch failed", "domain", domain, "err", err)
		if old != nil {
			return old.Policy, nil
		}
		return nil, err
	}
	c.opts.Logger.Info("mta-sts: policy fetched", "domain", domain, "id", id, "mode", p.Mode, "max_age", p.MaxAge)
	c.save(domain, &cached{ID: id, Fetched: now, Policy: p})
	return p, nil
}

// lookupID reads the _mta-sts TXT record (RFC 8461 §3.1): exactly one
// record starting with v=STSv1 must be there.
func (c *Client) lookupID(ctx context.Context, domain string) (string, error) {
	txts, err := c.opts.Resolver.LookupTXT(ctx, "_mta-sts."+domain)
	if err != nil {
		return "", err
	}
	var ids []string
	var perr error
	for _, t := range txts {
		if !strings.HasPrefix(t, "v=STSv1") {
			continue // §3.1: other records are ignored
		}
		id, err := ParseRecord(t)
		if err != nil {
			perr = err
			continue
		}
		ids = append(ids, id)
	}
	switch {
	case len(ids) == 1:
		return ids[0], nil
	case len(ids) > 1:
		// §3.1: more than one record: as if there were none.
		return "", &ParseError{What: "record", Reason: "more than one STSv1 record"}
	case perr != nil:
		return "", perr
	}
	return "", &net.DNSError{Err: "no STSv1 record", Name: "_mta-sts." + domain, IsNotFound: true}
}

// fetch gets the policy over HTTPS (RFC 8461 §3.3).
func (c *Client) fetch(ctx context.Context, domain string) (*Policy, error) {
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, &FetchError{Domain: domain, ResultType: ResultFetchError, Err: err}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ce *tls.CertificateVerificationError
		var he x509.HostnameError
		var ue x509.UnknownAuthorityError
		var ie x509.CertificateInvalidError
		if errors.As(err, &ce) || errors.As(err, &he) || errors.As(err, &ue) || errors.As(err, &ie) {
			return nil, &FetchError{Domain: domain, ResultType: ResultWebPKIError, Err: err}
		}
		return nil, &FetchError{Domain: domain, ResultType: ResultFetchError, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// §3.3: only 200 is a policy.
		return nil, &FetchError{Domain: domain, ResultType: ResultFetchError, Err: fmt.Errorf("HTTP status %s", resp.Status)}
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "text/plain" {
		// §3.2: the media type is text/plain.
		return nil, &FetchError{Domain: domain, ResultType: ResultPolicyError, Err: fmt.Errorf("content type %q is not text/plain", resp.Header.Get("Content-Type"))}
	}
	p, err := ParsePolicy(resp.Body)
	if err != nil {
		return nil, &FetchError{Domain: domain, ResultType: ResultPolicyError, Err: err}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1024))
	return p, nil
}

// load returns the cached policy of domain (memory, then disk), or nil.
func (c *Client) load(domain string) *cached {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.cache[domain]; e != nil {
		return e
	}
	if c.opts.CacheDir == "" || !safeName(domain) {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(c.opts.CacheDir, domain+".json"))
	if err != nil {
		return nil
	}
	var e cached
	if err := json.Unmarshal(b, &e); err != nil || e.Policy == nil {
		c.opts.Logger.Warn("mta-sts: unreadable cached policy", "domain", domain, "err", err)
		return nil
	}
	c.cache[domain] = &e
	return &e
}

// save caches a policy in memory and on disk.
func (c *Client) save(domain string, e *cached) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cache[domain] = e
	if c.opts.CacheDir == "" || !safeName(domain) {
		return
	}
	b, err := json.Marshal(e)
	if err == nil {
		err = fsutil.WriteFile(filepath.Join(c.opts.CacheDir, domain+".json"), b, 0o600)
	}
	if err != nil {
		c.opts.Logger.Error("mta-sts: caching policy", "domain", domain, "err", err)
	}
}

// safeName reports whether a domain can name a cache file.
func safeName(d string) bool {
	return d != "" && len(d) <= 253 && !strings.ContainsAny(d, "/\\\x00") && !strings.HasPrefix(d, ".")
}
