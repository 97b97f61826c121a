package smtpin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	smtp "github.com/emersion/go-smtp"

	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/envelope"
)

// ErrServerClosed is returned by Serve and ServeTLS after Shutdown.
var ErrServerClosed = errors.New("smtpin: server closed")

// Server is an SMTP, submission or LMTP server (see Role). One Server may
// serve several listeners, for example 587 with Serve and 465 with
// ServeTLS; the connection limits count them together.
type Server struct {
	opts Options
	smtp *smtp.Server
	now  func() time.Time // clock for Received headers; tests replace it
	// resolver finds where mail for a recipient goes.
	resolver *delivery.Resolver

	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
	perIP  map[netip.Addr]int
	// slotFreed is closed when a connection slot is released, for the
	// connections waiting for one (listener.go).
	slotFreed chan struct{}
}

// New checks opts, fills in defaults and returns a Server.
func New(opts Options) (*Server, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:  o,
		now:   time.Now,
		conns: make(map[*trackedConn]struct{}),
		perIP: make(map[netip.Addr]int),
	}
	s.resolver = s.newResolver()
	ss := smtp.NewServer(smtp.BackendFunc(s.newSession))
	ss.Domain = o.Hostname
	ss.LMTP = o.Role == RoleLMTP
	ss.TLSConfig = o.TLS
	ss.MaxMessageBytes = o.MaxMessageBytes // SIZE, RFC 1870: EHLO, MAIL SIZE=, DATA and BDAT
	ss.MaxLineLength = o.MaxLineLength
	// Our own limit gives the exact reply "452 4.5.3 Too many recipients";
	// go-smtp's would say something else (and advertise LIMITS).
	ss.MaxRecipients = 0
	// AUTH is offered and refused by our session (AuthMechanisms and
	// Auth) according to the PlaintextAuth policy, so that a refusal is
	// RFC 4954's 538 and not go-smtp's 523.
	ss.AllowInsecureAuth = true
	ss.ReadTimeout = o.ReadTimeout
	ss.WriteTimeout = o.WriteTimeout
	ss.EnableSMTPUTF8 = true // RFC 6531: UTF-8 addresses and headers are stored as they are
	ss.EnableDSN = true      // RFC 3461: parameters kept for the Relay
	ss.ErrorLog = slogAdapter{o.Logger}
	s.smtp = ss
	return s, nil
}

// Serve accepts connections on l until Shutdown. For RoleSubmission on
// port 465 use ServeTLS instead. It returns ErrServerClosed after
// Shutdown.
func (s *Server) Serve(l net.Listener) error {
	return s.serve(&limitListener{Listener: l, srv: s})
}

// ServeTLS accepts implicit-TLS connections (RFC 8314, port 465) on l
// until Shutdown. Options.TLS must be set.
func (s *Server) ServeTLS(l net.Listener) error {
	if s.opts.TLS == nil {
		return errors.New("smtpin: ServeTLS needs Options.TLS")
	}
	ll := &limitListener{Listener: l, srv: s, implicitT: s.opts.TLS}
	return s.serve(tls.NewListener(ll, s.opts.TLS))
}

func (s *Server) serve(l net.Listener) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		l.Close()
		return ErrServerClosed
	}
	err := s.smtp.Serve(l)
	s.mu.Lock()
	closed = s.closed
	s.mu.Unlock()
	if closed {
		return ErrServerClosed
	}
	return err
}

// Shutdown stops accepting connections, lets the open ones finish until
// ctx ends, then closes those left and returns ctx's error. Connections
// left idle by their clients end only with ReadTimeout, so ctx should
// have a deadline.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.closed = true
	s.mu.Unlock()
	err := s.smtp.Shutdown(ctx)
	if err == nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	s.mu.Lock()
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return err
}

// slogAdapter lets go-smtp log its unexpected errors through slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Printf(format string, v ...any) {
	a.l.Warn("smtp: " + fmt.Sprintf(format, v...))
}

func (a slogAdapter) Println(v ...any) {
	a.l.Warn("smtp: " + strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

// isLocalDomain reports whether mail for domain is delivered here.
func (s *Server) isLocalDomain(domain string) bool {
	return envelope.LocalDomainFunc(s.opts.LocalDomains, s.opts.Users, s.opts.Aliases, s.opts.Logger)(domain)
}
