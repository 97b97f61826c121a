package tlsutil

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Pair is a certificate chain file and the file of its private key.
type Pair struct {
	Cert, Key string
}

// Issuer provides certificates obtained on demand, such as an ACME client.
type Issuer interface {
	// Handles reports whether the issuer provides the certificate of
	// name (a lower-case host name without a trailing dot).
	Handles(name string) bool
	// GetCertificate returns the certificate for hello.ServerName; it has
	// the signature of tls.Config.GetCertificate and answers TLS-ALPN-01
	// challenge handshakes (RFC 8737) too.
	GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
}

// CertificateSource is what a server tls.Config takes its certificates
// from: a Reloader (one certificate) or a CertSet (one per host name).
type CertificateSource interface {
	GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
}

// ErrNoCertificate is returned to a handshake for which no certificate is
// available (with ACME: none obtained yet).
var ErrNoCertificate = errors.New("tls: no certificate available")

// acmeALPN is the ALPN protocol of TLS-ALPN-01 challenge handshakes
// (RFC 8737 §6.2).
const acmeALPN = "acme-tls/1"

// CertSet chooses the certificate of each TLS handshake by the name the
// client asked for (SNI, RFC 6066 §3) among several certificate files and,
// optionally, an Issuer (ACME). Files come first: a file certificate whose
// names cover the requested name is served even when the Issuer handles it
// too. A client that sends no name, or a name nothing covers, gets the
// certificate of the primary host name. Each file pair is reloaded when it
// changes (see Reloader). A CertSet is safe for concurrent use.
type CertSet struct {
	logger  *slog.Logger
	primary string

	mu        sync.RWMutex
	reloaders []*Reloader // the file pairs, in configuration order
	issuer    Issuer
}

// NewCertSet loads every pair (there may be none when issuer is set) and
// returns the set serving them for primary, the server's host name. An
// unreadable or mismatched pair is an error naming its files.
func NewCertSet(primary string, pairs []Pair, issuer Issuer, logger *slog.Logger) (*CertSet, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &CertSet{logger: logger, primary: normalizeName(primary), issuer: issuer}
	rs, err := s.load(pairs)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 && issuer == nil {
		return nil, errors.New("tls: no certificate configured")
	}
	s.reloaders = rs
	return s, nil
}

// load returns a Reloader for each pair, reusing those of s for the pairs
// it already has.
func (s *CertSet) load(pairs []Pair) ([]*Reloader, error) {
	s.mu.RLock()
	old := s.reloaders
	s.mu.RUnlock()
	rs := make([]*Reloader, 0, len(pairs))
next:
	for _, p := range pairs {
		for _, r := range old {
			if c, k := r.Files(); c == p.Cert && k == p.Key {
				rs = append(rs, r)
				continue next
			}
		}
		r, err := NewReloader(p.Cert, p.Key, s.logger)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// SetPairs replaces the certificate files (a configuration reload); pairs
// already loaded are kept as they are. On error nothing changes.
func (s *CertSet) SetPairs(pairs []Pair) error {
	rs, err := s.load(pairs)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(rs) == 0 && s.issuer == nil {
		return errors.New("tls: no certificate configured")
	}
	s.reloaders = rs
	return nil
}

// normalizeName lower-cases a host name and removes a trailing dot.
func normalizeName(name string) string {
	return strings.TrimSuffix(strings.ToLower(name), ".")
}

// GetCertificate returns the certificate for the handshake; it has the
// signature of tls.Config.GetCertificate.
func (s *CertSet) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	rs, issuer := s.reloaders, s.issuer
	s.mu.RUnlock()
	name := normalizeName(hello.ServerName)
	// RFC 8737 §3: the validation handshake offers only "acme-tls/1" and
	// must get the challenge certificate, whatever else is configured.
	if issuer != nil && len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmeALPN {
		return issuer.GetCertificate(hello)
	}
	if name != "" {
		if c := covering(rs, name); c != nil {
			return c, nil
		}
		if issuer != nil && issuer.Handles(name) {
			return issuer.GetCertificate(hello)
		}
	}
	// RFC 6066 §3: without a (known) name the server picks its default:
	// the primary host name's certificate.
	if c := covering(rs, s.primary); c != nil {
		return c, nil
	}
	if issuer != nil && issuer.Handles(s.primary) {
		h := *hello
		h.ServerName = s.primary
		return issuer.GetCertificate(&h)
	}
	if len(rs) > 0 {
		return rs[0].cert.Load(), nil
	}
	return nil, ErrNoCertificate
}

// covering returns the certificate of the first reloader whose leaf is
// valid for name (a lower-case host name), or nil.
func covering(rs []*Reloader, name string) *tls.Certificate {
	for _, r := range rs {
		c := r.cert.Load()
		if c != nil && c.Leaf != nil && covers(c.Leaf.DNSNames, name) {
			return c
		}
	}
	return nil
}

// covers reports whether one of a certificate's DNS names matches name,
// without allocating: equal ignoring case, or a wildcard "*.rest" that
// stands for exactly the left-most label (RFC 6125 §6.4.3).
func covers(dnsNames []string, name string) bool {
	_, parent, hasDot := strings.Cut(name, ".")
	for _, n := range dnsNames {
		n = strings.TrimSuffix(n, ".")
		if strings.EqualFold(n, name) {
			return true
		}
		if rest, ok := strings.CutPrefix(n, "*."); ok && hasDot && parent != "" &&
			strings.Contains(rest, ".") && strings.EqualFold(rest, parent) {
			return true
		}
	}
	return false
}

// Primary returns the first certificate file pair's Reloader, or nil when
// there is none (ACME only).
func (s *CertSet) Primary() *Reloader {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.reloaders) == 0 {
		return nil
	}
	return s.reloaders[0]
}

// Fingerprint returns the fingerprint of the first certificate file (see
// Reloader.Fingerprint), or "" when there is none.
func (s *CertSet) Fingerprint() string {
	if r := s.Primary(); r != nil {
		return r.Fingerprint()
	}
	return ""
}

// Reload reads every certificate file pair again; see Reloader.Reload.
// Pairs that fail keep their previous certificate; the errors are joined.
func (s *CertSet) Reload() error {
	s.mu.RLock()
	rs := s.reloaders
	s.mu.RUnlock()
	var errs []error
	for _, r := range rs {
		errs = append(errs, r.Reload())
	}
	return errors.Join(errs...)
}

// Watch polls every certificate file pair every interval
// (DefaultWatchInterval if not positive) and reloads those that changed,
// as Reloader.Watch does, until ctx is done.
func (s *CertSet) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.RLock()
		rs := s.reloaders
		s.mu.RUnlock()
		for _, r := range rs {
			r.poll()
		}
	}
}
