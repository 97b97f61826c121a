package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/postino-mail/postino/internal/acmecert"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/tlsutil"
	"github.com/postino-mail/postino/internal/wellknown"
)

// HTTP server limits: the documents are small and requests smaller.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpTimeout           = 30 * time.Second
	httpIdleTimeout       = time.Minute
	httpMaxHeaderBytes    = 16 << 10
)

// webState is the ACME manager and the HTTP(S) servers of a Server.
type webState struct {
	acme    *acmecert.Manager // nil without tls.acme
	docs    *wellknown.Handler
	servers []*http.Server
	isLocal atomic.Pointer[func(string) bool]
}

// localDomain reports whether d is a local domain, by the configuration
// and users in force (set by setLocal).
func (w *webState) localDomain(d string) bool {
	f := w.isLocal.Load()
	return f != nil && (*f)(d)
}

// setLocal makes the local domains those of cfg and the users and aliases
// of s.
func (s *Server) setLocal(cfg *config.Config, logger *slog.Logger) {
	var f func(string) bool
	if s.aliases != nil {
		f = envelope.LocalDomainFunc(cfg.SMTP.LocalDomains, s.users, s.aliases, logger)
	} else {
		f = envelope.LocalDomainFunc(cfg.SMTP.LocalDomains, s.users, nil, logger)
	}
	s.web.isLocal.Store(&f)
}

// certPairs returns the certificate files of cfg, or those of the
// self-signed certificate, generated (once) when there are none and ACME
// is off: with ACME nothing self-signed is ever served for a public name.
func certPairs(cfg *config.Config, logger *slog.Logger) (pairs []tlsutil.Pair, selfSigned bool, err error) {
	certs, keys := cfg.CertificatePairs()
	for i := range certs {
		pairs = append(pairs, tlsutil.Pair{Cert: certs[i], Key: keys[i]})
	}
	if len(pairs) > 0 || cfg.TLS.ACME {
		return pairs, false, nil
	}
	certFile, keyFile, selfSigned, err := tlsFiles(cfg, logger)
	if err != nil {
		return nil, false, err
	}
	return []tlsutil.Pair{{Cert: certFile, Key: keyFile}}, selfSigned, nil
}

// wellKnownPrefixes are the host names under a local domain that the HTTPS
// listener answers for, with ACME certificates.
var wellKnownPrefixes = []string{"mta-sts.", "autoconfig.", "autodiscover."}

// newACME returns the ACME manager of cfg, or nil without tls.acme. It
// orders certificates for hostname and tls.names and, with https.listen
// and an MTA-STS policy, mta-sts.D of each of smtp.local_domains; the
// other well-known names of local domains are ordered on their first
// handshake.
func (s *Server) newACME(cfg *config.Config, logger *slog.Logger) (*acmecert.Manager, error) {
	if !cfg.TLS.ACME {
		return nil, nil
	}
	var client *http.Client
	if cfg.TLS.ACMECAFile != "" {
		var err error
		if client, err = acmecert.HTTPClientWithCA(cfg.ResolvePath(cfg.TLS.ACMECAFile)); err != nil {
			return nil, fmt.Errorf("tls.acme_ca_file: %w", err)
		}
	}
	names := cfg.HostNames()
	https := cfg.HTTPS.Listen != ""
	if https && cfg.MTASTS.Mode != "none" {
		for _, d := range cfg.SMTP.LocalDomains {
			names = append(names, "mta-sts."+strings.ToLower(d))
		}
	}
	cache, lock := cfg.ACMEStorage()
	m, err := acmecert.New(acmecert.Options{
		Email:        cfg.TLS.ACMEEmail,
		DirectoryURL: cfg.TLS.ACMEDirectory,
		HTTPClient:   client,
		Cache:        cache,
		Lock:         lock,
		Names:        names,
		Allow: func(name string) bool {
			if !https {
				return false
			}
			for _, p := range wellKnownPrefixes {
				if d, ok := strings.CutPrefix(name, p); ok {
					return s.web.localDomain(d)
				}
			}
			return false
		},
		Logger: logger.With("component", "acme"),
	})
	if err != nil {
		return nil, err
	}
	if len(cfg.TLS.Certificates) == 0 && cfg.TLS.Cert == "" {
		logger.Info("acme: certificates come from the CA; TLS handshakes fail until the first is obtained",
			"directory", cfg.TLS.ACMEDirectory, "names", m.Names())
	}
	return m, nil
}

// listenerPort returns the port of a host:port listen address, 0 for none.
func listenerPort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// docsOptions returns what the well-known documents say under cfg.
func (s *Server) docsOptions(cfg *config.Config, logger *slog.Logger) wellknown.Options {
	return wellknown.Options{
		Server: wellknown.Server{
			Hostname:    cfg.Hostname,
			POP3TLS:     listenerPort(cfg.POP3.ListenTLS),
			POP3:        listenerPort(cfg.POP3.Listen),
			Submissions: listenerPort(cfg.SMTP.Submissions),
			Submission:  listenerPort(cfg.SMTP.Submission),
		},
		IsLocal: s.web.localDomain,
		Policy: &wellknown.Policy{
			Mode: cfg.MTASTS.Mode, MX: cfg.MTASTSHosts(), MaxAge: cfg.MTASTS.MaxAge.Duration,
		},
		Logger: logger,
	}
}

// buildWeb builds the HTTP and HTTPS servers cfg asks for and returns
// their listeners to open.
func (s *Server) buildWeb(cfg *config.Config, logger *slog.Logger) []pending {
	if cfg.HTTP.Listen == "" && cfg.HTTPS.Listen == "" {
		return nil
	}
	s.web.docs = wellknown.NewHandler(s.docsOptions(cfg, logger))
	mk := func(h http.Handler) *http.Server {
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: httpReadHeaderTimeout,
			ReadTimeout:       httpTimeout,
			WriteTimeout:      httpTimeout,
			IdleTimeout:       httpIdleTimeout,
			MaxHeaderBytes:    httpMaxHeaderBytes,
			// Failed handshakes and bad requests from the Internet are
			// routine: debug level.
			ErrorLog: slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelDebug),
		}
		s.web.servers = append(s.web.servers, srv)
		return srv
	}
	var want []pending
	if cfg.HTTP.Listen != "" {
		var h http.Handler = s.web.docs
		if s.web.acme != nil {
			// RFC 8555 §8.3: HTTP-01 answers on port 80.
			h = s.web.acme.HTTPHandler(h)
		}
		want = append(want, pending{"http", cfg.HTTP.Listen, mk(h).Serve})
	}
	if cfg.HTTPS.Listen != "" {
		tc := s.tlsCfg.Clone()
		tc.NextProtos = []string{"http/1.1"}
		if s.web.acme != nil {
			// RFC 8737 §6.2: TLS-ALPN-01 validation offers "acme-tls/1".
			tc.NextProtos = append(tc.NextProtos, "acme-tls/1")
		}
		if s.tickets != nil {
			s.tickets.Apply(tc)
		}
		srv := mk(s.web.docs)
		want = append(want, pending{"https", cfg.HTTPS.Listen, func(l net.Listener) error {
			return srv.Serve(tls.NewListener(l, tc))
		}})
	}
	return want
}

// startACME adds the ordering of the ACME certificates to the start
// functions: the CA validates through the listeners, so it starts with
// them.
func (s *Server) startACME(ctx context.Context) {
	if s.web.acme == nil {
		return
	}
	s.wg.Add(1)
	s.starts = append(s.starts, func() {
		defer s.wg.Done()
		// Not waited for at shutdown: an order under way cannot be
		// interrupted, and the process exit ends it.
		go s.web.acme.Run(ctx)
	})
}

// shutdownWeb stops the HTTP(S) servers within ctx.
func (s *Server) shutdownWeb(ctx context.Context) error {
	var err error
	for _, srv := range s.web.servers {
		if e := srv.Shutdown(ctx); e != nil {
			srv.Close()
			err = e
		}
	}
	return err
}
