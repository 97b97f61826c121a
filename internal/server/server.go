// Package server assembles a running postino from its configuration: the
// TLS certificates, the user database, the mail store, the POP3 server,
// the SMTP servers (MX, submission, LMTP), the outbound queue and the
// failed-login guard with its admin socket.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/aliases"
	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/pop3backend"
	"github.com/postino-mail/postino/internal/queue"
	"github.com/postino-mail/postino/internal/smtpin"
	"github.com/postino-mail/postino/internal/srs"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/tlsutil"
	"github.com/postino-mail/postino/pop3"
)

// shutdownGrace is how long sessions get to finish their command on
// SIGTERM before their connections are closed.
const shutdownGrace = 30 * time.Second

// Server is a running postino: its listeners and the services behind them.
type Server struct {
	certs     *tlsutil.Reloader
	users     *auth.DB
	pop3      *pop3.Server
	smtp      []*smtpin.Server
	queue     *queue.Queue
	guard     *authguard.Guard
	ctx       context.Context // cancelled at shutdown
	listeners []Listener
	starts    []func() // serve the opened listeners, once privileges are dropped
	failed    chan error
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	selfSign  bool
}

// Listener is one open listener: its name (pop3, pop3s, smtp, submission,
// submissions, lmtp) and its address.
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
	s := &Server{failed: make(chan error, 8)}
	tlsCfg, err := s.openTLS(cfg, logger)
	if err != nil {
		return nil, err
	}
	s.guard = cfg.Guard(logger)
	s.users = cfg.OpenUsers(logger)
	deliverer, st, err := openStore(cfg, s.users, logger)
	if err != nil {
		return nil, err
	}
	s.pop3 = cfg.POP3Server(&pop3backend.POP3Backend{
		Users: s.users, Store: st, Logger: logger, Guard: s.guard,
		LoginDelay: cfg.POP3.LoginDelay.Duration,
	}, tlsCfg, logger)
	var want []pending
	if cfg.POP3.Listen != "" {
		want = append(want, pending{"pop3", cfg.POP3.Listen, s.pop3.Serve})
	}
	if cfg.POP3.ListenTLS != "" {
		want = append(want, pending{"pop3s", cfg.POP3.ListenTLS, s.pop3.ServeTLS})
	}
	smtpWant, err := s.buildSMTP(cfg, logger, deliverer, tlsCfg)
	if err == nil {
		err = s.openListeners(append(want, smtpWant...))
	}
	if err != nil {
		if s.queue != nil {
			s.queue.Close()
		}
		return nil, err
	}
	s.startBackground()
	logger.Info("postino started", "data", cfg.DataDir, "hostname", cfg.Hostname)
	return s, nil
}

// pending is a listener to open and the function that serves it.
type pending struct {
	name, addr string
	serve      func(net.Listener) error
}

// openTLS loads the configured certificate, or generates (once) and loads
// the self-signed one, and returns the server TLS configuration over it.
func (s *Server) openTLS(cfg *config.Config, logger *slog.Logger) (*tls.Config, error) {
	certFile, keyFile := cfg.TLSFiles()
	if certFile == "" {
		var created bool
		var err error
		certFile, keyFile, created, err = tlsutil.EnsureSelfSigned(cfg.TLSDir(), cfg.Hostname)
		if err != nil {
			return nil, fmt.Errorf("self-signed certificate: %w", err)
		}
		s.selfSign = true
		if created {
			logger.Info("generated a self-signed certificate", "cert", certFile)
		}
	}
	certs, err := tlsutil.NewReloader(certFile, keyFile, logger)
	if err != nil {
		return nil, err
	}
	s.certs = certs
	return tlsutil.ServerConfig(certs, cfg.TLS.MinVersion), nil
}

// openStore opens the mail store and local delivery, and completes what a
// crash left unfinished.
func openStore(cfg *config.Config, users *auth.DB, logger *slog.Logger) (*delivery.Deliverer, *maildir.Store, error) {
	deliverer, st, err := cfg.OpenDeliverer(users, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("opening mail store: %w", err)
	}
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
	al, err := aliases.NewReloading(cfg.AliasesFile(), logger)
	if err != nil {
		return nil, fmt.Errorf("aliases: %w", err)
	}
	rw, err := s.openQueue(cfg, logger, deliverer, al)
	if err != nil {
		return nil, err
	}
	mk := func(role smtpin.Role, withTLS bool) (*smtpin.Server, error) {
		o := smtpin.ConfigOptions(cfg, role)
		o.Logger = logger
		o.Deliverer = deliverer
		o.Users = s.users
		o.Aliases = al
		o.Guard = s.guard
		o.Relay = s.queue
		o.SRS = rw
		if withTLS {
			o.TLS = tlsCfg
		}
		srv, err := smtpin.New(o)
		if err == nil {
			s.smtp = append(s.smtp, srv)
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

// openQueue opens the outbound queue, with DKIM signing and, when
// smtp.srs is on, the SRS rewriter it returns.
func (s *Server) openQueue(cfg *config.Config, logger *slog.Logger, deliverer *delivery.Deliverer, al *aliases.Reloading) (*srs.Rewriter, error) {
	qo := queue.ConfigOptions(cfg, logger.With("component", "queue"))
	qo.IsLocalDomain = envelope.LocalDomainFunc(cfg.SMTP.LocalDomains, s.users, al, logger)
	qo.Local = deliverer
	qo.Signer = dkim.NewSigner(cfg.DKIMDir())
	qo.DSNDomain = dsnDomain(cfg)
	var rw *srs.Rewriter
	if cfg.SMTP.SRS {
		key, err := srs.LoadKey(cfg.SRSKeyFile())
		if err == nil {
			rw, err = srs.New(key)
		}
		if err != nil {
			return nil, err
		}
		qo.SRS = rw
	}
	q, err := queue.Open(cfg.QueueDir(), qo)
	if err != nil {
		return nil, fmt.Errorf("outbound queue: %w", err)
	}
	s.queue = q
	return rw, nil
}

// openListeners opens every listener in want, or none: on error those
// already open are closed. Each is served by a start function.
func (s *Server) openListeners(want []pending) error {
	var opened []net.Listener
	for _, p := range want {
		l, err := listen(p.addr)
		if err != nil {
			for _, o := range opened {
				o.Close()
			}
			return fmt.Errorf("%s: cannot listen on %s: %w", p.name, p.addr, err)
		}
		opened = append(opened, l)
		s.listeners = append(s.listeners, Listener{p.name, l.Addr().String()})
		s.starts = append(s.starts, func() {
			defer s.wg.Done()
			if err := p.serve(l); err != nil && !errors.Is(err, pop3.ErrServerClosed) && !errors.Is(err, smtpin.ErrServerClosed) {
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
	go sweepGuard(ctx, s.guard)
	if s.queue != nil {
		// Started with the listeners, once privileges are dropped; it
		// stops when ctx is cancelled, after its attempts are recorded.
		s.wg.Add(1)
		s.starts = append(s.starts, func() {
			defer s.wg.Done()
			s.queue.Run(ctx)
		})
	}
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

// Reload applies SIGHUP: certificates are read again now, and the user
// database on its next use (it also notices file changes by itself).
func (s *Server) Reload(logger *slog.Logger) {
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
	s.cancel() // no more mail can arrive: stop the queue worker and the watcher
	s.wg.Wait()
	if s.queue != nil {
		s.queue.Close()
	}
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
