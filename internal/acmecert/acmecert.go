// Package acmecert obtains and renews TLS certificates from an ACME
// certificate authority (RFC 8555), such as Let's Encrypt, for postino's
// host names, over golang.org/x/crypto/acme/autocert.
//
// Domain control is proven with TLS-ALPN-01 (RFC 8737) on the HTTPS
// listener (port 443) and, when the HTTP listener (port 80) serves
// HTTPHandler, with HTTP-01 (RFC 8555 §8.3). Certificates and the account
// key are kept in a Cache; certificates are renewed in the background
// before they expire, and the new one is served at once, without a restart.
// Until a name has a certificate its handshakes fail (nothing else is
// served in its place) and the log says why.
package acmecert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// Retry bounds: after a failed order, a name is tried again after
// retryMin (more than the minute autocert itself keeps a failure), then twice as long each time, up to retryMax. Handshakes for
// it in between fail at once with the last error, so that clients cannot
// make postino hammer the CA (whose rate limits count failed orders).
const (
	retryMin = 90 * time.Second
	retryMax = time.Hour
)

// ErrNotObtained is wrapped by the handshake error of a name whose last
// order failed and whose retry is not due yet.
var ErrNotObtained = errors.New("acme: no certificate obtained yet")

// Options configure a Manager.
type Options struct {
	// Email is the contact address of the ACME account (RFC 8555 §7.3).
	Email string
	// DirectoryURL is the CA's directory (RFC 8555 §7.1.1); required.
	DirectoryURL string
	// HTTPClient talks to the CA; nil means http.DefaultClient. Use
	// HTTPClientWithCA for a private CA.
	HTTPClient *http.Client
	// Cache keeps the certificates and the account key.
	Cache Cache
	// Names are ordered as soon as Run starts and kept renewed.
	Names []string
	// Allow reports whether a further name (not in Names) may get a
	// certificate, ordered on its first handshake. Nil allows none.
	Allow func(name string) bool
	// RenewBefore is how long before expiry a certificate is renewed; 0
	// means a third of its lifetime (at most 30 days).
	RenewBefore time.Duration
	// Logger receives what happens; nil discards it.
	Logger *slog.Logger
	// Lock, when set, is held for a name while its certificate is looked
	// up and, if missing, ordered: with a Cache shared by several nodes
	// (cluster mode), one node orders a name at a time and the others
	// then find the certificate in the Cache.
	Lock func(ctx context.Context, name string) (unlock func(), err error)
}

// Manager obtains, caches and renews certificates. It implements
// tlsutil.Issuer. It is safe for concurrent use.
type Manager struct {
	m      *autocert.Manager
	names  map[string]bool
	list   []string
	allow  func(string) bool
	logger *slog.Logger
	lock   func(context.Context, string) (func(), error)

	mu     sync.Mutex
	failed map[string]failure // names whose last order failed
	now    func() time.Time
}

// failure is a name's last failed order.
type failure struct {
	err   error
	at    time.Time
	retry time.Duration // wait before the next attempt
}

// New returns a Manager for o. It fails on a name autocert cannot order
// (no dot, such as "localhost"), a missing Cache or directory URL.
func New(o Options) (*Manager, error) {
	if o.Cache == nil {
		return nil, errors.New("acme: no certificate cache")
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir := o.DirectoryURL
	if dir == "" {
		return nil, errors.New("acme: no directory URL")
	}
	mg := &Manager{
		names: map[string]bool{}, allow: o.Allow, logger: logger,
		failed: map[string]failure{}, now: time.Now, lock: o.Lock,
	}
	for _, n := range o.Names {
		n = normalize(n)
		if !strings.Contains(n, ".") {
			return nil, fmt.Errorf("acme: %q is not a public host name", n)
		}
		if !mg.names[n] {
			mg.names[n] = true
			mg.list = append(mg.list, n)
		}
	}
	mg.m = &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       loggingCache{Cache: o.Cache, logger: logger},
		HostPolicy:  func(_ context.Context, host string) error { return mg.policy(host) },
		RenewBefore: o.RenewBefore,
		Email:       o.Email,
		Client:      &acme.Client{DirectoryURL: dir, HTTPClient: o.HTTPClient, UserAgent: "postino"},
	}
	return mg, nil
}

// HTTPClientWithCA returns an HTTP client for a CA whose HTTPS certificate
// is signed by a private root in caFile (PEM), such as a test CA.
func HTTPClientWithCA(caFile string) (*http.Client, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("acme: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("acme: CA file %s: no PEM certificate", caFile)
	}
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		Proxy:           http.ProxyFromEnvironment,
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}, nil
}

// normalize lower-cases a host name and removes a trailing dot.
func normalize(name string) string {
	return strings.TrimSuffix(strings.ToLower(name), ".")
}

// policy refuses names the Manager does not handle: nobody can make it
// order certificates for names of their choosing.
func (mg *Manager) policy(host string) error {
	// An HTTP-01 request's Host has the port when it is not 80 (RFC 9110
	// §7.2), as in tests.
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !mg.Handles(normalize(host)) {
		return fmt.Errorf("acme: host name %q not configured", host)
	}
	return nil
}

// Handles reports whether name is one of Names or allowed by Allow.
func (mg *Manager) Handles(name string) bool {
	name = normalize(name)
	if mg.names[name] {
		return true
	}
	return mg.allow != nil && strings.Contains(name, ".") && mg.allow(name)
}

// Names returns the names ordered at start, normalized.
func (mg *Manager) Names() []string { return append([]string(nil), mg.list...) }

// GetCertificate returns the certificate of hello.ServerName, ordering it
// if there is none yet (the handshake waits), and answers TLS-ALPN-01
// validation handshakes (RFC 8737 §3). It has the signature of
// tls.Config.GetCertificate.
func (mg *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := normalize(hello.ServerName)
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto {
		return mg.m.GetCertificate(hello)
	}
	if !mg.Handles(name) {
		return nil, fmt.Errorf("acme: host name %q not configured", name)
	}
	mg.mu.Lock()
	f, ok := mg.failed[name]
	mg.mu.Unlock()
	if ok && mg.now().Sub(f.at) < f.retry {
		return nil, fmt.Errorf("%w for %s (last attempt %s ago: %v)", ErrNotObtained, name,
			mg.now().Sub(f.at).Round(time.Second), f.err)
	}
	return mg.obtain(hello, name)
}

// obtain asks autocert for the certificate of name and keeps track of
// failures, logging each.
func (mg *Manager) obtain(hello *tls.ClientHelloInfo, name string) (*tls.Certificate, error) {
	c, err := mg.lockedGet(hello, name)
	mg.mu.Lock()
	defer mg.mu.Unlock()
	if err == nil {
		delete(mg.failed, name)
		return c, nil
	}
	f := mg.failed[name]
	f.retry = min(max(2*f.retry, retryMin), retryMax)
	f.err, f.at = err, mg.now()
	mg.failed[name] = f
	mg.logger.Error("acme: no certificate for this name yet; its TLS handshakes fail until one is obtained",
		"name", name, "err", err, "retry_in", f.retry)
	return nil, err
}

// lockTimeout bounds the wait for another node's order of a name.
const lockTimeout = 5 * time.Minute

// lockedGet is autocert's GetCertificate under the name's Lock, if any.
func (mg *Manager) lockedGet(hello *tls.ClientHelloInfo, name string) (*tls.Certificate, error) {
	if mg.lock == nil {
		return mg.m.GetCertificate(hello)
	}
	ctx := hello.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	unlock, err := mg.lock(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("acme: waiting for the order of %s on another node: %w", name, err)
	}
	defer unlock()
	return mg.m.GetCertificate(hello)
}

// ecdsaHello is the handshake Run orders certificates as: a client that
// accepts ECDSA P-256 certificates, as all current mail clients do.
func ecdsaHello(name string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		ServerName:       name,
		SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:  []tls.CurveID{tls.CurveP256},
		CipherSuites:     []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	}
}

// Run orders a certificate for each of Names that has none in the cache,
// one at a time, retrying failures (retryMin doubling to retryMax), until
// every name has one or ctx ends. From then on autocert renews each in the
// background. Start it once the listeners serve, since the CA validates
// through them.
func (mg *Manager) Run(ctx context.Context) {
	pending := mg.Names()
	wait := retryMin
	for len(pending) > 0 {
		var again []string
		for _, name := range pending {
			if ctx.Err() != nil {
				return
			}
			if _, err := mg.obtain(ecdsaHello(name), name); err != nil {
				again = append(again, name)
				continue
			}
			mg.logger.Info("acme: certificate ready", "name", name)
		}
		if pending = again; len(pending) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

// HTTPHandler answers HTTP-01 challenges (RFC 8555 §8.3) under
// /.well-known/acme-challenge/ and passes every other request to next.
// Serving it on port 80 lets the CA use HTTP-01.
func (mg *Manager) HTTPHandler(next http.Handler) http.Handler {
	if next == nil {
		next = http.NotFoundHandler()
	}
	return mg.m.HTTPHandler(next)
}
