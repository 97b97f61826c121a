package smtpin

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// slotWait is how long a connection over its address's limit waits for
// one of that address's connections to end before it is refused. A
// client that ends a connection and opens the next at once must not be
// refused: Postfix closes a connection without waiting for the reply to
// its QUIT (smtp_skip_quit_response = yes), so its next connection can
// arrive before the QUIT of the last one has even been read, and any
// client that reads the 221 races the server's own close.
const slotWait = time.Second

// limitListener enforces the connection limits and wraps every accepted
// connection in a trackedConn. A goroutine accepts connections, so that
// one admitted after waiting for a slot (slotWait) reaches Accept while
// the listener waits for the next client.
type limitListener struct {
	net.Listener
	srv       *Server
	implicitT *tls.Config // set for ServeTLS: rejections are sent over TLS

	initOnce  sync.Once
	ready     chan net.Conn // admitted connections, handed to Accept
	errs      chan error    // temporary errors of the inner Accept
	dead      chan struct{} // closed when the inner listener failed for good
	deadErr   error         // its error, set before dead is closed
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	mu      sync.Mutex
	waiting map[netip.Addr]int // connections waiting for a slot, per IP
}

func (l *limitListener) init() {
	l.initOnce.Do(func() {
		l.ready = make(chan net.Conn)
		l.errs = make(chan error)
		l.dead = make(chan struct{})
		l.done = make(chan struct{})
		l.waiting = make(map[netip.Addr]int)
		go l.acceptLoop()
	})
}

// Accept returns the next connection within the limits. Connections over
// a limit are answered and closed in the background.
func (l *limitListener) Accept() (net.Conn, error) {
	l.init()
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.dead:
		return nil, l.deadErr
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; connections still waiting for a slot are closed.
func (l *limitListener) Close() error {
	l.init()
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *limitListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() && !errors.Is(err, net.ErrClosed) {
				// The caller pauses and calls Accept again.
				select {
				case l.errs <- err:
					continue
				case <-l.done:
					return
				}
			}
			l.deadErr = err
			close(l.dead)
			return
		}
		ip := remoteIP(c.RemoteAddr())
		tc, res, _ := l.srv.acquire(c, ip)
		switch {
		case res == admitted:
			l.deliver(tc)
		case res == overIPLimit && l.addWaiter(ip):
			go l.waitForSlot(c, ip)
		default:
			go l.srv.reject(c, l.implicitT)
		}
	}
}

// deliver hands an admitted connection to Accept.
func (l *limitListener) deliver(tc *trackedConn) {
	select {
	case l.ready <- tc:
	case <-l.done:
		tc.Close()
	}
}

// addWaiter counts one more connection of ip waiting for a slot, unless
// as many are already waiting as the address may have connections.
func (l *limitListener) addWaiter(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiting[ip] >= l.srv.options().MaxConnectionsPerIP {
		return false
	}
	l.waiting[ip]++
	return true
}

func (l *limitListener) removeWaiter(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiting[ip]--; l.waiting[ip] <= 0 {
		delete(l.waiting, ip)
	}
}

// waitForSlot admits c as soon as one of its address's connections ends,
// or refuses it after slotWait.
func (l *limitListener) waitForSlot(c net.Conn, ip netip.Addr) {
	defer l.removeWaiter(ip)
	timer := time.NewTimer(slotWait)
	defer timer.Stop()
	for {
		tc, res, freed := l.srv.acquire(c, ip)
		switch res {
		case admitted:
			l.deliver(tc)
			return
		case overIPLimit:
		default:
			l.srv.reject(c, l.implicitT)
			return
		}
		select {
		case <-freed:
		case <-timer.C:
			l.srv.reject(c, l.implicitT)
			return
		case <-l.done:
			c.Close()
			return
		}
	}
}

// remoteIP returns the IP of a TCP peer; the zero Addr for a unix socket.
func remoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil && a.Network() != "unix" {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// trackedConn is a client connection: it releases its slot on Close and
// carries the per-connection error count, which survives STARTTLS (go-smtp
// makes a new session then).
type trackedConn struct {
	net.Conn
	srv *Server
	ip  netip.Addr

	closeOnce sync.Once
	// closeAfterWrite is set when the next reply is the last: the
	// connection is closed once it is written. Replies are written one
	// flush at a time by go-smtp's textproto writer, and through TLS a
	// short reply is one record, so "the next Write" is that reply.
	closeAfterWrite atomic.Bool

	mu      sync.Mutex
	errors  int
	closing bool // the error limit was reached: refuse everything
}

func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.closeAfterWrite.Load() {
		c.Close()
	}
	return n, err
}

// Close frees the connection's slot, then closes it: the slot is free by
// the time the client sees the connection end.
func (c *trackedConn) Close() error {
	c.closeOnce.Do(func() { c.srv.release(c) })
	return c.Conn.Close()
}

// admission is the outcome of acquire.
type admission int

const (
	admitted admission = iota
	// overIPLimit: the address has MaxConnectionsPerIP connections.
	overIPLimit
	// refused: the server is closed or has MaxConnections connections.
	refused
)

// acquire takes a connection slot for ip and returns the wrapped
// connection. Over the per-IP limit it also returns a channel closed when
// a slot is next released. Addresses in Options.TrustedNetworks, and unix
// sockets, have no per-IP limit.
func (s *Server) acquire(c net.Conn, ip netip.Addr) (*trackedConn, admission, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, refused, nil
	}
	if s.options().MaxConnections > 0 && len(s.conns) >= s.options().MaxConnections {
		return nil, refused, nil
	}
	if s.options().MaxConnectionsPerIP > 0 && ip.IsValid() && s.perIP[ip] >= s.options().MaxConnectionsPerIP && !s.trusted(ip) {
		if s.slotFreed == nil {
			s.slotFreed = make(chan struct{})
		}
		return nil, overIPLimit, s.slotFreed
	}
	tc := &trackedConn{Conn: c, srv: s, ip: ip}
	s.conns[tc] = struct{}{}
	if ip.IsValid() {
		s.perIP[ip]++
	}
	return tc, admitted, nil
}

// trusted reports whether ip is in Options.TrustedNetworks.
func (s *Server) trusted(ip netip.Addr) bool {
	for _, p := range s.options().TrustedNetworks {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (s *Server) release(c *trackedConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if c.ip.IsValid() {
		if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
			delete(s.perIP, c.ip)
		}
	}
	if s.slotFreed != nil {
		// Wake the connections waiting for a slot.
		close(s.slotFreed)
		s.slotFreed = nil
	}
}

// rejectTimeout bounds the TLS handshake and the write of a rejection.
const rejectTimeout = 10 * time.Second

// reject answers a connection over a limit with 421 (RFC 5321 §3.1: a
// server may refuse a connection with 421 in place of its greeting) and
// closes it. On an implicit-TLS listener the reply is sent after the
// handshake, so that the client can read it.
func (s *Server) reject(c net.Conn, tlsConfig *tls.Config) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(rejectTimeout))
	var w net.Conn = c
	if tlsConfig != nil {
		tc := tls.Server(c, tlsConfig)
		if err := tc.Handshake(); err != nil {
			return
		}
		defer tc.Close()
		w = tc
	}
	// The same keys as a session's refusals (session.logRefusal); there
	// is no session, hence no id.
	s.options().Logger.Warn("smtp: refused", "role", s.options().Role.String(), "remote", c.RemoteAddr().String(), "id", "", "from", "", "rcpt", "", "code", "421 4.7.0", "reason", "too many connections")
	w.Write([]byte("421 4.7.0 Too many connections\r\n"))
}
