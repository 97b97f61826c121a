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
	"sync/atomic"
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
	// cur holds the options in force and the recipient resolver over
	// them; SetOptions swaps both at once.
	cur  atomic.Pointer[state]
	smtp *smtp.Server
	now  func() time.Time // clock for Received headers; tests replace it

	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
	perIP  map[netip.Addr]int
	// slotFreed is closed when a connection slot is released, for the
	// connections waiting for one (listener.go).
	slotFreed chan struct{}
	// pregreet remembers the clients that passed the pregreet test.
	pregreet pregreetCache
}

// New checks opts, fills in defaults and returns a Server.
func New(opts Options) (*Server, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		now:   time.Now,
		conns: make(map[*trackedConn]struct{}),
		perIP: make(map[netip.Addr]int),
	}
	s.cur.Store(&state{opts: o, resolver: s.newResolver(&o)})
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

// state is one set of options and the resolver (finding where mail for a
// recipient goes) built over them.
type state struct {
	opts     Options
	resolver *delivery.Resolver
}

// options returns the options in force.
func (s *Server) options() *Options { return &s.cur.Load().opts }

// SetOptions replaces the server's options (a configuration reload): the
// sessions that begin afterwards (a session begins at HELO/EHLO/LHLO) use
// them, those already begun keep theirs; the connection limits apply to
// the connections accepted afterwards.
// The settings of the SMTP protocol engine (Hostname, Role, TLS,
// MaxMessageBytes, MaxLineLength, ReadTimeout, WriteTimeout) are fixed at
// New: SetOptions refuses a set that changes them (*FixedOptionError) and
// an invalid set (*OptionError), keeping the old options.
func (s *Server) SetOptions(opts Options) error {
	o, err := opts.withDefaults()
	if err != nil {
		return err
	}
	old := s.options()
	for _, f := range []struct {
		name    string
		changed bool
	}{
		{"Hostname", o.Hostname != old.Hostname},
		{"Role", o.Role != old.Role},
		{"TLS", o.TLS != old.TLS},
		{"MaxMessageBytes", o.MaxMessageBytes != old.MaxMessageBytes},
		{"MaxLineLength", o.MaxLineLength != old.MaxLineLength},
		{"ReadTimeout", o.ReadTimeout != old.ReadTimeout},
		{"WriteTimeout", o.WriteTimeout != old.WriteTimeout},
	} {
		if f.changed {
			return &FixedOptionError{Field: f.name}
		}
	}
	s.cur.Store(&state{opts: o, resolver: s.newResolver(&o)})
	return nil
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
	if s.options().TLS == nil {
		return errors.New("smtpin: ServeTLS needs Options.TLS")
	}
	ll := &limitListener{Listener: l, srv: s, implicitT: s.options().TLS}
	return s.serve(tls.NewListener(ll, s.options().TLS))
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
	return envelope.LocalDomainFunc(s.options().LocalDomains, s.options().Users, s.options().Aliases, s.options().Logger)(domain)
}
