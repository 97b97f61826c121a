package pop3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// PlaintextPolicy says when cleartext authentication (USER/PASS, AUTH PLAIN
// and LOGIN) is allowed on a connection without TLS.
type PlaintextPolicy int

const (
	// PlaintextLoopback allows cleartext authentication without TLS only
	// from loopback addresses (the default).
	PlaintextLoopback PlaintextPolicy = iota
	// PlaintextNever requires TLS for every login.
	PlaintextNever
	// PlaintextAlways allows cleartext authentication everywhere.
	PlaintextAlways
)

// plaintextNames are the text forms of the policies, as configuration
// files write them.
var plaintextNames = [...]string{PlaintextLoopback: "loopback", PlaintextNever: "never", PlaintextAlways: "always"}

// ErrPlaintextPolicy is returned by ParsePlaintextPolicy (and
// UnmarshalText) for a word that names no policy.
var ErrPlaintextPolicy = errors.New("must be one of never, loopback, always")

// ParsePlaintextPolicy returns the policy named "never", "loopback" or
// "always".
func ParsePlaintextPolicy(s string) (PlaintextPolicy, error) {
	for p, name := range plaintextNames {
		if s == name {
			return PlaintextPolicy(p), nil
		}
	}
	return PlaintextLoopback, fmt.Errorf("plaintext policy %q: %w", s, ErrPlaintextPolicy)
}

// Valid reports whether p is one of the defined policies.
func (p PlaintextPolicy) Valid() bool { return p >= 0 && int(p) < len(plaintextNames) }

// String returns "never", "loopback" or "always".
func (p PlaintextPolicy) String() string {
	if !p.Valid() {
		return fmt.Sprintf("PlaintextPolicy(%d)", int(p))
	}
	return plaintextNames[p]
}

// MarshalText implements encoding.TextMarshaler.
func (p PlaintextPolicy) MarshalText() ([]byte, error) {
	if !p.Valid() {
		return nil, fmt.Errorf("plaintext policy %d: %w", int(p), ErrPlaintextPolicy)
	}
	return []byte(p.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, with the names of
// ParsePlaintextPolicy.
func (p *PlaintextPolicy) UnmarshalText(text []byte) error {
	v, err := ParsePlaintextPolicy(string(text))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Defaults for the Server's limits.
const (
	// DefaultAutologout is the RFC 1939 §3 minimum inactivity timer.
	DefaultAutologout = 10 * time.Minute
	// DefaultMaxLine is the longest command line accepted, CRLF included.
	// RFC 2449 §4 asks for at least 255 octets.
	DefaultMaxLine = 1024
	// DefaultMaxSASLLine is the longest line accepted during AUTH
	// (RFC 5034 §4 lets SASL responses exceed the command limit).
	DefaultMaxSASLLine = 16 * 1024
	// DefaultMaxBadCommands is how many failed commands in a row end the
	// connection.
	DefaultMaxBadCommands = 20
	// DefaultMaxAuthFailures is how many failed logins end the connection.
	DefaultMaxAuthFailures = 3
	// DefaultWriteTimeout bounds how long a client may stop reading.
	DefaultWriteTimeout = 5 * time.Minute
	// DefaultLineTimeout bounds the arrival of a command line once it has
	// begun.
	DefaultLineTimeout = 30 * time.Second
	// DefaultHandshakeTimeout bounds a TLS handshake.
	DefaultHandshakeTimeout = 30 * time.Second
)

// Server is a POP3 server. Set the fields before calling Serve; they must
// not change afterwards: Update replaces them as a whole.
type Server struct {
	// Backend authenticates users and opens maildrops. Required.
	Backend Backend
	// TLSConfig enables STLS on cleartext listeners and is used by
	// ServeTLS. Nil disables TLS.
	TLSConfig *tls.Config
	// Logger receives connection and error logs. Nil discards them.
	Logger *slog.Logger
	// Plaintext is the cleartext authentication policy.
	Plaintext PlaintextPolicy
	// Implementation is advertised by CAPA (RFC 2449 §6.9); "" omits it.
	Implementation string
	// Autologout is the inactivity timer (RFC 1939 §3); 0 means
	// DefaultAutologout.
	Autologout time.Duration
	// WriteTimeout bounds each write to a client; 0 means
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxLine limits the length of a command line; 0 means DefaultMaxLine.
	MaxLine int
	// MaxBadCommands ends a connection after this many failed commands in
	// a row; 0 means DefaultMaxBadCommands.
	MaxBadCommands int
	// MaxAuthFailures ends a connection after this many failed logins; 0
	// means DefaultMaxAuthFailures.
	MaxAuthFailures int
	// MaxConnections limits concurrent sessions; 0 means no limit.
	MaxConnections int
	// MaxConnectionsPerIP limits concurrent sessions from one address (an
	// IPv6 /64 counts as one); 0 means no limit. A session frees its slot
	// before its last reply, and a connection over the limit waits up to
	// a second for a slot before it is refused.
	MaxConnectionsPerIP int
	// Expire is the EXPIRE capability argument (RFC 2449 §6.7); "" means
	// "NEVER".
	Expire string
	// LoginDelay is the LOGIN-DELAY capability in seconds (RFC 2449 §6.8).
	LoginDelay int
	// LineTimeout bounds how long the rest of a command line may take once
	// its first octet has arrived, so that a client sending a byte every
	// few seconds (slowloris) cannot hold a session; 0 means
	// DefaultLineTimeout.
	LineTimeout time.Duration
	// MaxSessionTime ends a session after this long in all, whatever it is
	// doing (nothing is deleted); 0 means no limit.
	MaxSessionTime time.Duration
	// CommandsPerSecond throttles a session sending more commands than
	// this (burst: one second's worth): excess commands wait; 0 means no
	// limit.
	CommandsPerSecond int
	// SCRAM offers AUTH SCRAM-SHA-256 (RFC 7677) when the Backend
	// implements SCRAMBackend. Only users whose stored password is a SCRAM
	// one can use it, so enable it where clients fall back to PLAIN or
	// where every user has SCRAM credentials.
	SCRAM bool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	perIP     map[netip.Prefix]int
	waiting   map[netip.Prefix]int // connections waiting for a slot (slotWait)
	slotFreed chan struct{}        // closed when a per-IP slot is released
	closing   atomic.Bool
	nextID    atomic.Uint64
	refusing  atomic.Int32  // connections being refused (refuse)
	idle      chan struct{} // closed when sessions drop to zero during Shutdown
	// next holds the settings given by Update, nil before.
	next atomic.Pointer[Server]
}

// Update replaces the server's settings (its exported fields) with those
// of next, a Server that is never served itself: the connections accepted
// afterwards use them (limits, timeouts, policies, capabilities, Backend,
// Logger), the sessions already open keep theirs. Only the listeners
// opened by ServeTLS keep the TLSConfig they started with.
func (s *Server) Update(next *Server) { s.next.Store(next) }

// settings returns the settings in force: those of the last Update, or
// the Server's own fields.
func (s *Server) settings() *Server {
	if n := s.next.Load(); n != nil {
		return n
	}
	return s
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("pop3: server closed")

func (s *Server) logger() *slog.Logger {
	if l := s.settings().Logger; l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Serve accepts connections on l and serves each in its own goroutine. If
// l yields *tls.Conn connections (tls.NewListener), they are served as
// implicit TLS (RFC 8314). Serve returns ErrServerClosed after Shutdown.
//
// The client's address is the connection's RemoteAddr: per-address limits,
// the plaintext policy, logs and the Backend (ConnInfo) use it. Behind a
// load balancer, pass a listener that returns connections whose RemoteAddr
// is the real client's (one that reads the PROXY protocol header, below
// any tls.NewListener).
func (s *Server) Serve(l net.Listener) error {
	if !s.track(l) {
		l.Close()
		return ErrServerClosed
	}
	defer s.untrack(l)
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if isTemporaryAcceptError(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		go s.serveConn(c)
	}
}

// isTemporaryAcceptError reports whether Accept failed for a passing
// reason (out of file descriptors, an aborted connection): the listener
// keeps serving after a pause instead of shutting down.
func isTemporaryAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// ServeTLS serves implicit-TLS POP3 (port 995, RFC 8314) on l using
// TLSConfig.
func (s *Server) ServeTLS(l net.Listener) error {
	if s.TLSConfig == nil {
		return errors.New("pop3: ServeTLS needs a TLSConfig")
	}
	return s.Serve(tls.NewListener(l, s.TLSConfig))
}

func (s *Server) track(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[net.Listener]struct{})
	}
	s.listeners[l] = struct{}{}
	return true
}

func (s *Server) untrack(l net.Listener) {
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
}

// ipKey groups addresses for per-IP limits: an IPv4 address alone, an IPv6
// address by its /64.
func ipKey(a net.Addr) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Prefix{}, false
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32), true
	}
	p, _ := ip.Prefix(64)
	return p, true
}

// slotWait is how long a connection over its address's limit waits for
// one of that address's sessions to end before it is refused: a client
// that ends a session and reconnects at once must not be refused because
// the server has not yet noticed the end (a dropped connection is only
// seen at the next read).
const slotWait = time.Second

// admit registers a new session, enforcing the connection limits. When
// only the per-IP limit stands in the way it also returns a channel that
// is closed when a per-IP slot is next released.
func (s *Server) admit(ss *session) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false, nil
	}
	cfg := s.settings()
	if cfg.MaxConnections > 0 && len(s.sessions) >= cfg.MaxConnections {
		return false, nil
	}
	if key, ok := ipKey(ss.conn.RemoteAddr()); ok {
		if cfg.MaxConnectionsPerIP > 0 && s.perIP[key] >= cfg.MaxConnectionsPerIP {
			if s.slotFreed == nil {
				s.slotFreed = make(chan struct{})
			}
			return false, s.slotFreed
		}
		if s.perIP == nil {
			s.perIP = make(map[netip.Prefix]int)
		}
		s.perIP[key]++
		ss.ipKey, ss.hasIPKey = key, true
	}
	if s.sessions == nil {
		s.sessions = make(map[*session]struct{})
	}
	s.sessions[ss] = struct{}{}
	return true, nil
}

// admitWaiting admits ss, waiting up to slotWait for a per-IP slot. At
// most MaxConnectionsPerIP connections of an address wait at a time.
func (s *Server) admitWaiting(ss *session) bool {
	ok, freed := s.admit(ss)
	if ok || freed == nil {
		return ok
	}
	key, _ := ipKey(ss.conn.RemoteAddr())
	s.mu.Lock()
	if s.waiting[key] >= s.settings().MaxConnectionsPerIP {
		s.mu.Unlock()
		return false
	}
	if s.waiting == nil {
		s.waiting = make(map[netip.Prefix]int)
	}
	s.waiting[key]++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.waiting[key]--; s.waiting[key] <= 0 {
			delete(s.waiting, key)
		}
		s.mu.Unlock()
	}()
	timer := time.NewTimer(slotWait)
	defer timer.Stop()
	for {
		select {
		case <-freed:
		case <-timer.C:
			return false
		}
		if ok, freed = s.admit(ss); ok || freed == nil {
			return ok
		}
	}
}

// releaseSlot gives back the session's per-IP slot. A session does so
// before its last reply, so that a client that reconnects as soon as it
// reads it finds the slot free.
func (s *Server) releaseSlot(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseSlotLocked(ss)
}

func (s *Server) releaseSlotLocked(ss *session) {
	if !ss.hasIPKey {
		return
	}
	ss.hasIPKey = false
	if s.perIP[ss.ipKey]--; s.perIP[ss.ipKey] <= 0 {
		delete(s.perIP, ss.ipKey)
	}
	if s.slotFreed != nil {
		close(s.slotFreed)
		s.slotFreed = nil
	}
}

func (s *Server) release(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[ss]; !ok {
		return
	}
	delete(s.sessions, ss)
	s.releaseSlotLocked(ss)
	if len(s.sessions) == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// Sessions returns the number of open sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Shutdown stops accepting connections and ends every session at its next
// command boundary: a session in the middle of a command (a RETR, or the
// UPDATE of a QUIT) finishes it first, an idle session is told the server
// is going away, and none applies deletions it was not asked to. Shutdown
// returns when all sessions have ended, or closes the remaining
// connections when ctx is done and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	var idle chan struct{}
	if len(s.sessions) > 0 {
		idle = make(chan struct{})
		s.idle = idle
	}
	for ss := range s.sessions {
		ss.interrupt()
	}
	s.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for ss := range s.sessions {
			ss.conn.Close()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// Close closes every listener and connection at once. Sessions end without
// UPDATE: nothing is deleted.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	for ss := range s.sessions {
		ss.conn.Close()
	}
	return nil
}

// refuseTimeout bounds the refusal of a connection over the limits: on
// an implicit-TLS listener the TLS handshake that precedes the reply
// waits for the client's ClientHello, and a client that sends nothing
// must not hold the connection.
const refuseTimeout = 5 * time.Second

// maxRefusing bounds the connections being refused at a time. Beyond it a
// connection is closed at once without a reply: a flood of connections
// that never complete a handshake cannot hold more than this many
// goroutines and descriptors, for refuseTimeout each.
const maxRefusing = 100

func (s *Server) serveConn(c net.Conn) {
	ss := newSession(s, c)
	if !s.admitWaiting(ss) {
		s.refuse(c)
		return
	}
	defer s.release(ss)
	ss.run()
}

// refuse answers a connection over the limits with -ERR [SYS/TEMP]
// (RFC 3206 §4: a temporary failure of the system) and closes it, all
// within refuseTimeout; beyond maxRefusing refusals at a time the
// connection is closed without a reply.
func (s *Server) refuse(c net.Conn) {
	defer c.Close()
	if s.refusing.Add(1) > maxRefusing {
		s.refusing.Add(-1)
		return
	}
	defer s.refusing.Add(-1)
	// Read and write: on a *tls.Conn the write runs the handshake, which
	// reads first.
	c.SetDeadline(time.Now().Add(refuseTimeout))
	if s.closing.Load() {
		c.Write([]byte("-ERR [SYS/TEMP] Server shutting down.\r\n"))
	} else {
		c.Write([]byte("-ERR [SYS/TEMP] Too many connections, try again later.\r\n"))
	}
}
