// Package server assembles a running postino from its configuration: the
// TLS certificates (files chosen by SNI, or ACME), the user database, the
// mail store, the POP3 server, the SMTP servers (MX, submission, LMTP), the
// HTTP(S) listeners, the outbound queue and the failed-login guard with its
// admin socket.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/aliases"
	"github.com/postino-mail/postino/internal/antispam"
	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/mailauth"
	"github.com/postino-mail/postino/internal/metrics"
	"github.com/postino-mail/postino/internal/pop3backend"
	"github.com/postino-mail/postino/internal/queue"
	"github.com/postino-mail/postino/internal/resolver"
	"github.com/postino-mail/postino/internal/smtpin"
	"github.com/postino-mail/postino/internal/srs"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/tlsutil"
	"github.com/postino-mail/postino/pop3"
)

// shutdownGrace is how long sessions get to finish their command on
// SIGTERM before their connections are closed.
const shutdownGrace = 30 * time.Second

// Server is a running postino: its listeners and the services behind them.
type Server struct {
	certs   *tlsutil.CertSet
	web     webState
	tickets *tlsutil.TicketKeys
	users   *auth.DB
	pop3    *pop3.Server
	smtp    []*smtpin.Server
	queue   *queue.Queue
	guard   *authguard.Guard
	metrics *metrics.Metrics
	// resolver answers every DNS lookup (dns.server), with one cache.
	resolver *resolver.Resolver
	// checks judge mail arriving on the MX (inboundChecks).
	checks    []inbound.Check
	greylist  *antispam.FileStore
	ctx       context.Context // cancelled at shutdown
	listeners []Listener
	starts    []func() // serve the opened listeners, once privileges are dropped
	failed    chan error
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	selfSign  bool

	// What Reload builds the services' options from.
	mu        sync.Mutex     // serializes Reload
	cfg       *config.Config // the configuration in force
	store     store.Store
	tlsCfg    *tls.Config
	aliases   *aliases.Reloading
	srs       *srs.Rewriter // loaded once smtp.srs is on
	smtpRoles []smtpRole    // of each server in smtp

	// outbound is what the queue's MTA-STS, DANE and TLS-RPT keep
	// (outbound.go).
	outbound outboundSec
}

// smtpRole is what an SMTP server serves: its role, and whether it offers
// TLS.
type smtpRole struct {
	role    smtpin.Role
	withTLS bool
}

// Listener is one open listener: its name (pop3, pop3s, smtp, submission,
// submissions, lmtp, http, https) and its address.
type Listener struct {
	Name string
	Addr string
}

// Build opens everything cfg (already validated) asks for, listeners
// included, but serves nothing yet: Start does, once the process has
// dropped its privileges. On error nothing is left listening.
func Build(cfg *config.Config, logger *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data folder: %w", err)
	}
	s := &Server{failed: make(chan error, 8), cfg: cfg, metrics: metrics.New()}
	tlsCfg, err := s.openTLS(cfg, logger)
	if err != nil {
		return nil, err
	}
	s.tlsCfg = tlsCfg
	s.guard = cfg.Guard(logger)
	if s.resolver, err = cfg.Resolver(); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	s.guard.Metrics = s.metrics
	s.users = cfg.OpenUsers(logger)
	if s.checks, err = s.inboundChecks(cfg, logger); err != nil {
		return nil, err
	}
	deliverer, st, err := openStore(cfg, s.users, logger)
	if err != nil {
		return nil, err
	}
	deliverer.Metrics = s.metrics
	s.store = st
	s.pop3 = cfg.POP3Server(s.pop3Backend(cfg, s.users, logger), tlsCfg, logger)
	var want []pending
	if cfg.POP3.Listen != "" {
		want = append(want, pending{"pop3", cfg.POP3.Listen, s.pop3.Serve})
	}
	if cfg.POP3.ListenTLS != "" {
		want = append(want, pending{"pop3s", cfg.POP3.ListenTLS, s.pop3.ServeTLS})
	}
	smtpWant, err := s.buildSMTP(cfg, logger, deliverer, tlsCfg)
	if err == nil {
		s.setLocal(cfg, logger)
		smtpWant = append(smtpWant, s.buildWeb(cfg, logger)...)
		err = s.openListeners(append(want, smtpWant...), proxyWrap(cfg, logger))
	}
	if err != nil {
		if s.queue != nil {
			s.queue.Close()
		}
		closeStore(s.store)
		return nil, err
	}
	s.startBackground()
	s.watchQueue()
	s.openAdmin(cfg, logger)
	s.startRetention(logger)
	go s.runJunk(s.ctx, logger)
	logger.Info("postino started", "data", cfg.DataDir, "hostname", cfg.Hostname)
	return s, nil
}

// pending is a listener to open and the function that serves it.
type pending struct {
	name, addr string
	serve      func(net.Listener) error
}

// openTLS loads the configured certificates, or generates (once) and loads
// the self-signed one, sets up ACME when configured, and returns the server
// TLS configuration over them, choosing the certificate by SNI.
func (s *Server) openTLS(cfg *config.Config, logger *slog.Logger) (*tls.Config, error) {
	pairs, selfSigned, err := certPairs(cfg, logger)
	if err != nil {
		return nil, err
	}
	s.selfSign = selfSigned
	var issuer tlsutil.Issuer
	if s.web.acme, err = s.newACME(cfg, logger); err != nil {
		return nil, err
	} else if s.web.acme != nil {
		issuer = s.web.acme
	}
	certs, err := tlsutil.NewCertSet(cfg.Hostname, pairs, issuer, logger)
	if err != nil {
		return nil, err
	}
	s.certs = certs
	tc := tlsutil.ServerConfig(certs, cfg.TLS.MinVersion)
	// Session tickets under keys kept in the data directory: a polling
	// client resumes its session across restarts (RFC 8446 §2.2).
	if err := os.MkdirAll(cfg.TLSDir(), 0o700); err != nil {
		return nil, err
	}
	s.tickets, err = tlsutil.NewTicketKeys(filepath.Join(cfg.TLSDir(), tlsutil.TicketKeysFileName), logger)
	if err != nil {
		return nil, err
	}
	s.tickets.Apply(tc)
	return tc, nil
}

// tlsFiles returns the configured certificate files, or those of the
// self-signed certificate, generated (once) when none is configured.
func tlsFiles(cfg *config.Config, logger *slog.Logger) (certFile, keyFile string, selfSigned bool, err error) {
	certFile, keyFile = cfg.TLSFiles()
	if certFile != "" {
		return certFile, keyFile, false, nil
	}
	var created bool
	certFile, keyFile, created, err = tlsutil.EnsureSelfSigned(cfg.TLSDir(), cfg.Hostname)
	if err != nil {
		return "", "", false, fmt.Errorf("self-signed certificate: %w", err)
	}
	if created {
		logger.Info("generated a self-signed certificate", "cert", certFile)
	}
	return certFile, keyFile, true, nil
}

// pop3Backend returns the POP3 backend over the users and the store.
func (s *Server) pop3Backend(cfg *config.Config, users *auth.DB, logger *slog.Logger) *pop3backend.POP3Backend {
	return &pop3backend.POP3Backend{
		Users: users, Store: s.store, Logger: logger, Guard: s.guard,
		LoginDelay: cfg.POP3.LoginDelay.Duration, Metrics: s.metrics,
	}
}

// openStore opens the mail store and local delivery, and completes what a
// crash left unfinished.
func openStore(cfg *config.Config, users *auth.DB, logger *slog.Logger) (*delivery.Deliverer, store.Store, error) {
	if cfg.UsesPostgres() {
		return openPGStore(cfg, users, logger)
	}
	deliverer, mst, err := cfg.OpenDeliverer(users, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("opening mail store: %w", err)
	}
	st := mst.(*maildir.Store)
	// Mailboxes moved from Dovecot keep Dovecot's UIDLs (RFC 1939 §7: a
	// UIDL never changes, or clients download everything again).
	if err := st.SetDovecotUIDLFormat(cfg.POP3.DovecotUIDLFormat); err != nil {
		return nil, nil, fmt.Errorf("pop3.dovecot_uidl_format: %w", err)
	}
	delivery.CleanSpool(deliverer.SpoolDir)
	// RFC 1939 §6: complete every UPDATE a crash interrupted before
	// anything (Dovecot, mutt, a backup, our own listeners) sees the
	// mailboxes half updated.
	if n, err := st.RecoverJournals(context.Background()); err != nil {
		logger.Error("completing interrupted POP3 updates", "completed", n, "err", err)
	} else if n > 0 {
		logger.Info("completed interrupted POP3 updates", "mailboxes", n)
	}
	return deliverer, st, nil
}

// buildSMTP opens the aliases and the outbound queue and builds the SMTP
// servers (MX, submission, LMTP) when any of them is enabled; it returns
// their listeners to open.
func (s *Server) buildSMTP(cfg *config.Config, logger *slog.Logger, deliverer *delivery.Deliverer, tlsCfg *tls.Config) ([]pending, error) {
	if cfg.SMTP.Listen == "" && cfg.SMTP.Submission == "" && cfg.SMTP.Submissions == "" && cfg.SMTP.LMTP == "" {
		return nil, nil
	}
	al, err := cfg.OpenAliases(logger)
	if err != nil {
		return nil, fmt.Errorf("aliases: %w", err)
	}
	s.aliases = al
	rw, err := s.srsFor(cfg)
	if err != nil {
		return nil, err
	}
	q, err := openQueue(cfg, s.store, s.queueOptions(cfg, logger, deliverer, s.users, al, rw))
	if err != nil {
		return nil, fmt.Errorf("outbound queue: %w", err)
	}
	s.queue = q
	mk := func(role smtpin.Role, withTLS bool) (*smtpin.Server, error) {
		srv, err := smtpin.New(s.smtpOptions(cfg, smtpRole{role, withTLS}, logger, deliverer, s.users, al, rw))
		if err == nil {
			s.smtp = append(s.smtp, srv)
			s.smtpRoles = append(s.smtpRoles, smtpRole{role, withTLS})
		}
		return srv, err
	}
	var want []pending
	if cfg.SMTP.Listen != "" {
		mx, err := mk(smtpin.RoleMX, true)
		if err != nil {
			return nil, err
		}
		want = append(want, pending{"smtp", cfg.SMTP.Listen, mx.Serve})
	}
	if cfg.SMTP.Submission != "" || cfg.SMTP.Submissions != "" {
		sub, err := mk(smtpin.RoleSubmission, true)
		if err != nil {
			return nil, err
		}
		if cfg.SMTP.Submission != "" {
			want = append(want, pending{"submission", cfg.SMTP.Submission, sub.Serve})
		}
		if cfg.SMTP.Submissions != "" {
			want = append(want, pending{"submissions", cfg.SMTP.Submissions, sub.ServeTLS})
		}
	}
	if cfg.SMTP.LMTP != "" {
		lmtp, err := mk(smtpin.RoleLMTP, false)
		if err != nil {
			return nil, err
		}
		want = append(want, pending{"lmtp", cfg.SMTP.LMTP, lmtp.Serve})
	}
	return want, nil
}

// smtpOptions returns the options of an SMTP server of the role.
func (s *Server) smtpOptions(cfg *config.Config, r smtpRole, logger *slog.Logger, deliverer *delivery.Deliverer, users *auth.DB, al *aliases.Reloading, rw *srs.Rewriter) smtpin.Options {
	o := smtpin.ConfigOptions(cfg, r.role)
	o.Logger = logger
	o.Deliverer = deliverer
	o.Users = users
	o.Aliases = al
	o.Guard = s.guard
	o.Resolver = s.resolver
	if r.role == smtpin.RoleMX {
		o.Checks = s.checks
		o.Junk = junkFor(cfg, users, logger)
	}
	if r.role == smtpin.RoleSubmission && cfg.MailAuth.Enabled {
		// A local user's message reaches local users without the MX:
		// Authentication-Results fields claiming our authserv-id are
		// removed from it too (RFC 8601 §5). LMTP is left alone: a
		// front-end MTA that judged the mail may write our host's name.
		o.SubmissionChecks = []inbound.Check{mailauth.NewStripper(cfg.MailAuthServID())}
	}
	o.Relay = s.queue
	o.SRS = rw
	o.Metrics = s.metrics
	if r.withTLS {
		o.TLS = s.tlsCfg
	}
	return o
}

// queueOptions returns the options of the outbound queue, with DKIM
// signing (the key folder is read again by each new signer) and, when
// smtp.srs is on, SRS.
func (s *Server) queueOptions(cfg *config.Config, logger *slog.Logger, deliverer *delivery.Deliverer, users *auth.DB, al *aliases.Reloading, rw *srs.Rewriter) queue.Options {
	qo := queue.ConfigOptions(cfg, logger.With("component", "queue"))
	qo.IsLocalDomain = envelope.LocalDomainFunc(cfg.SMTP.LocalDomains, users, al, logger)
	qo.Local = deliverer
	qo.Resolver = s.resolver
	qo.Signer = cfg.DKIMSigner()
	qo.DSNDomain = dsnDomain(cfg)
	s.outboundSecurity(cfg, logger.With("component", "queue"), &qo)
	qo.Owns = senderOwns(cfg, deliverer, al, qo.IsLocalDomain)
	qo.Metrics = s.metrics
	if rw != nil {
		qo.SRS = rw
	}
	return qo
}

// srsFor returns the SRS rewriter when smtp.srs is on (loading its secret
// the first time), else nil.
func (s *Server) srsFor(cfg *config.Config) (*srs.Rewriter, error) {
	if !cfg.SMTP.SRS {
		return nil, nil
	}
	if s.srs != nil {
		return s.srs, nil
	}
	key, err := srs.LoadKey(cfg.SRSKeyFile())
	if err != nil {
		return nil, err
	}
	rw, err := srs.New(key)
	if err != nil {
		return nil, err
	}
	s.srs = rw
	return rw, nil
}

// openListeners opens every listener in want, or none: on error those
// already open are closed. Each is served by a start function, through
// wrap (the PROXY protocol).
func (s *Server) openListeners(want []pending, wrap func(net.Listener) net.Listener) error {
	var opened []net.Listener
	for _, p := range want {
		l, err := listen(p.addr)
		if err != nil {
			for _, o := range opened {
				o.Close()
			}
			return fmt.Errorf("%s: cannot listen on %s: %w", p.name, p.addr, err)
		}
		l = wrap(l)
		opened = append(opened, l)
		s.listeners = append(s.listeners, Listener{p.name, l.Addr().String()})
		l = s.metrics.CountingListener(l, p.name)
		s.starts = append(s.starts, func() {
			defer s.wg.Done()
			if err := p.serve(l); err != nil && !errors.Is(err, pop3.ErrServerClosed) && !errors.Is(err, smtpin.ErrServerClosed) && !errors.Is(err, http.ErrServerClosed) {
				s.failed <- fmt.Errorf("%s on %s: %w", p.name, p.addr, err)
			}
		})
	}
	s.wg.Add(len(opened))
	return nil
}

// startBackground starts the certificate watcher and the guard sweeper, and
// adds the queue worker to the start functions.
func (s *Server) startBackground() {
	ctx, cancel := context.WithCancel(context.Background())
	s.ctx, s.cancel = ctx, cancel
	go s.certs.Watch(ctx, tlsutil.DefaultWatchInterval)
	if s.tickets != nil {
		go s.tickets.Watch(ctx, time.Hour)
	}
	go sweepGuard(ctx, s.guard)
	if s.queue != nil {
		// Started with the listeners, once privileges are dropped; it
		// stops when ctx is cancelled, after its attempts are recorded.
		s.wg.Add(1)
		s.starts = append(s.starts, func() {
			defer s.wg.Done()
			s.queue.Run(ctx)
		})
		go s.runTLSReports(ctx)
	}
	s.startACME(ctx)
}

// guardSweepInterval is how often expired login blocks are noticed (and
// their end logged) when the address does not come back.
const guardSweepInterval = time.Minute

// sweepGuard sweeps the guard until ctx ends.
func sweepGuard(ctx context.Context, g *authguard.Guard) {
	t := time.NewTicker(guardSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			g.Sweep()
		case <-ctx.Done():
			return
		}
	}
}

// StartAdmin opens the admin socket "postino block" talks to, once the
// server runs as its final user so that the socket belongs to it. Without
// it the server still serves mail; blocks then only expire.
func (s *Server) StartAdmin(cfg *config.Config, logger *slog.Logger) {
	l, err := authguard.ListenAdmin(cfg.AdminSocket())
	if err != nil {
		logger.Error("postino block will not reach this server", "err", err)
		return
	}
	s.wg.Add(1) // shutdown waits for the socket to be closed and removed
	go func() {
		defer s.wg.Done()
		if err := s.guard.ServeAdmin(s.ctx, l, logger); err != nil {
			logger.Error("admin socket failed", "err", err)
		}
	}()
}

// listen opens a TCP listener, or a unix socket for an address that is a
// path ("/run/postino/lmtp" or "unix:/run/postino/lmtp"); a stale socket
// file left by a crash is replaced.
func listen(addr string) (net.Listener, error) {
	path, isUnix := strings.CutPrefix(addr, "unix:")
	if isUnix || strings.HasPrefix(addr, "/") {
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(path)
		}
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", addr)
}

// dsnDomain is the domain bounces are signed as when the host name is
// not in (or under) a configured local domain: the first of them. ""
// lets the queue use the host name's local domain.
func dsnDomain(cfg *config.Config) string {
	ld := cfg.SMTP.LocalDomains
	if len(ld) == 0 {
		return ""
	}
	h := strings.ToLower(cfg.Hostname)
	for _, d := range ld {
		if d = strings.ToLower(d); h == d || strings.HasSuffix(h, "."+d) {
			return ""
		}
	}
	return ld[0]
}

// Reload applies SIGHUP with next, the configuration file read again
// (already validated): every key that can change live is applied to the
// running services, for the sessions, transactions and deliveries that
// begin afterwards; those under way keep their settings. A key that needs
// a restart (see config.NeedsRestart) keeps its old value and is logged.
// When something next asks for cannot be opened (the aliases file, the
// certificate, the SRS secret) nothing is applied and the error says why.
// In every case the certificate and the user database are read again.
// It logs the changed keys in one line and returns them.
func (s *Server) Reload(next *config.Config, logger *slog.Logger) (config.Changes, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, err := s.apply(next, logger)
	s.reloadFiles(logger)
	if err != nil {
		logger.Error("reload: configuration refused, keeping the old one", "err", err)
		return ch, err
	}
	for _, k := range ch.Restart {
		logger.Warn("reload: key needs a restart, keeping the old value", "key", k,
			"old", s.cfg.Value(k), "new", next.Value(k))
	}
	logger.Info("reload: applied", "keys", ch.Applied, "restart_needed", ch.Restart)
	return ch, nil
}

// apply makes eff, next with the restart-only keys of the configuration
// in force, the configuration of the running services.
func (s *Server) apply(next *config.Config, logger *slog.Logger) (config.Changes, error) {
	old := s.cfg
	ch := config.Diff(old, next)
	eff := config.KeepRestart(old, next)
	if err := eff.Validate(); err != nil {
		return ch, fmt.Errorf("with the old values of %v: %w", ch.Restart, err)
	}
	// First everything that can fail, so that a failure changes nothing.
	users := s.users
	if eff.UsersFile() != old.UsersFile() || eff.Users.CacheTTL != old.Users.CacheTTL {
		users = eff.OpenUsers(logger)
		if _, err := users.List(); err != nil {
			return ch, fmt.Errorf("users: %w", err)
		}
	}
	al := s.aliases
	if al != nil && eff.AliasesFile() != old.AliasesFile() {
		var err error
		if al, err = eff.OpenAliases(logger); err != nil {
			return ch, fmt.Errorf("aliases: %w", err)
		}
	}
	var rw *srs.Rewriter
	if s.queue != nil {
		var err error
		if rw, err = s.srsFor(eff); err != nil {
			return ch, err
		}
	}
	checks, err := s.inboundChecks(eff, logger)
	if err != nil {
		return ch, err
	}
	pairs, selfSigned, err := certPairs(eff, logger)
	if err == nil {
		err = s.certs.SetPairs(pairs)
	}
	if err != nil {
		return ch, err
	}
	s.selfSign = selfSigned
	// Then the swaps, which cannot fail on a validated configuration.
	s.users, s.aliases, s.checks = users, al, checks
	s.guard.SetLimits(eff.Guard(logger))
	s.setVault(eff.POP3.VaultDays > 0)
	deliverer := eff.Deliverer(s.store, users, logger)
	deliverer.Metrics = s.metrics
	s.pop3.Update(eff.POP3Server(s.pop3Backend(eff, users, logger), s.tlsCfg, logger))
	s.setLocal(eff, logger)
	if s.web.docs != nil {
		s.web.docs.SetOptions(s.docsOptions(eff, logger))
	}
	var errs []error
	if s.queue != nil {
		errs = append(errs, s.queue.SetOptions(s.queueOptions(eff, logger, deliverer, users, al, rw)))
	}
	for i, srv := range s.smtp {
		errs = append(errs, srv.SetOptions(s.smtpOptions(eff, s.smtpRoles[i], logger, deliverer, users, al, rw)))
	}
	s.cfg = eff
	if err := errors.Join(errs...); err != nil {
		return ch, err
	}
	return ch, nil
}

// ReloadFiles reads the certificate again now, and the user database on
// its next use (it also notices file changes by itself): SIGHUP when the
// configuration file is refused.
func (s *Server) ReloadFiles(logger *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reloadFiles(logger)
}

func (s *Server) reloadFiles(logger *slog.Logger) {
	if err := s.certs.Reload(); err != nil {
		logger.Error("reloading TLS certificate failed, keeping the old one", "err", err)
	} else {
		logger.Info("TLS certificate reloaded", "fingerprint", s.certs.Fingerprint())
	}
	if _, err := s.users.List(); err != nil {
		logger.Error("reloading users failed", "err", err)
	} else {
		logger.Info("user database reloaded")
	}
}

// Config returns the configuration in force: the one Build was given,
// with the keys the last Reload applied.
func (s *Server) Config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Abort undoes Build when serving cannot begin (privileges could not
// be dropped): it balances the WaitGroup for the start functions that will
// never run, closes the POP3 and SMTP servers (which hold no listener yet)
// and cancels the context of the certificate watcher and the queue. The
// listeners Build opened are held only by those start functions;
// they are closed by the process exit that follows.
func (s *Server) Abort() {
	for range s.starts {
		s.wg.Done()
	}
	s.pop3.Close()
	for _, srv := range s.smtp {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		srv.Shutdown(ctx)
	}
	s.cancel()
}

// Shutdown stops every listener and lets sessions finish their current
// command. It reports whether all ended within the grace period.
func (s *Server) Shutdown(logger *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	errs := make(chan error, len(s.smtp)+1)
	go func() { errs <- s.pop3.Shutdown(ctx) }()
	for _, srv := range s.smtp {
		go func() { errs <- srv.Shutdown(ctx) }()
	}
	var err error
	for range len(s.smtp) + 1 {
		err = errors.Join(err, <-errs)
	}
	err = errors.Join(err, s.shutdownWeb(ctx))
	s.cancel() // no more mail can arrive: stop the queue worker and the watcher
	s.wg.Wait()
	if s.queue != nil {
		s.queue.Close()
	}
	closeStore(s.store)
	if err != nil {
		logger.Warn("sessions did not end in time; connections closed", "err", err)
		return false
	}
	logger.Info("stopped")
	return true
}

// Start serves the opened listeners and runs the outbound queue.
func (s *Server) Start() {
	for _, start := range s.starts {
		go start()
	}
}

// Failed delivers the error of a listener that stopped serving.
func (s *Server) Failed() <-chan error { return s.failed }

// Listeners returns the open listeners, in the order they were opened.
func (s *Server) Listeners() []Listener { return s.listeners }

// SelfSigned reports whether the server uses the generated self-signed
// certificate, and its SHA-256 fingerprint.
func (s *Server) SelfSigned() (fingerprint string, ok bool) {
	if !s.selfSign {
		return "", false
	}
	return s.certs.Fingerprint(), true
}

// Users returns the user database.
func (s *Server) Users() *auth.DB { return s.users }
