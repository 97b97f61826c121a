package smtpin

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postino-mail/postino/internal/authguard"
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
	waiting map[netip.Addr]int // connections waiting for a slot, per ipKey

	refusing atomic.Int32 // connections being refused (reject)
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
			l.admit(tc)
		case res == overIPLimit && l.addWaiter(ipKey(ip)):
			go l.waitForSlot(c, ip)
		case l.startRefusal():
			go l.reject(c)
		default:
			// Too many refusals under way: no goroutine, no reply.
			c.Close()
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

// maxRefusing bounds the connections a listener is refusing at a time.
// Beyond it a connection over the limits is closed at once without a
// reply: a flood of connections that never complete a TLS handshake
// cannot hold more than this many goroutines and descriptors, for
// rejectTimeout each.
const maxRefusing = 100

// startRefusal counts one more refusal under way, unless maxRefusing
// are.
func (l *limitListener) startRefusal() bool {
	if l.refusing.Add(1) > maxRefusing {
		l.refusing.Add(-1)
		return false
	}
	return true
}

// reject refuses c (Server.reject) as a refusal startRefusal counted.
func (l *limitListener) reject(c net.Conn) {
	defer l.refusing.Add(-1)
	l.srv.reject(c, l.implicitT)
}

// refuse refuses c, or closes it at once beyond maxRefusing refusals
// under way.
func (l *limitListener) refuse(c net.Conn) {
	if !l.startRefusal() {
		c.Close()
		return
	}
	l.reject(c)
}

// addWaiter counts one more connection of key (ipKey) waiting for a
// slot, unless as many are already waiting as the address may have
// connections.
func (l *limitListener) addWaiter(key netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiting[key] >= l.srv.options().MaxConnectionsPerIP {
		return false
	}
	l.waiting[key]++
	return true
}

func (l *limitListener) removeWaiter(key netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiting[key]--; l.waiting[key] <= 0 {
		delete(l.waiting, key)
	}
}

// waitForSlot admits c as soon as one of its address's connections ends,
// or refuses it after slotWait.
func (l *limitListener) waitForSlot(c net.Conn, ip netip.Addr) {
	defer l.removeWaiter(ipKey(ip))
	timer := time.NewTimer(slotWait)
	defer timer.Stop()
	for {
		tc, res, freed := l.srv.acquire(c, ip)
		switch res {
		case admitted:
			l.admit(tc)
			return
		case overIPLimit:
		default:
			l.refuse(c)
			return
		}
		select {
		case <-freed:
		case <-timer.C:
			l.refuse(c)
			return
		case <-l.done:
			c.Close()
			return
		}
	}
}

// ipKey is what the per-IP limit counts connections under: an IPv4
// address itself, an IPv6 address its /64 (the network's address), as
// the POP3 server and the login guard count them.
func ipKey(ip netip.Addr) netip.Addr {
	if !ip.IsValid() {
		return ip
	}
	return authguard.AddrPrefix(ip).Addr()
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
	key netip.Addr // ipKey(ip)

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

// acquire takes a connection slot for ip (counted under ipKey: an IPv6
// /64 is one address) and returns the wrapped
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
	key := ipKey(ip)
	if s.options().MaxConnectionsPerIP > 0 && ip.IsValid() && s.perIP[key] >= s.options().MaxConnectionsPerIP && !s.trusted(ip) {
		if s.slotFreed == nil {
			s.slotFreed = make(chan struct{})
		}
		return nil, overIPLimit, s.slotFreed
	}
	tc := &trackedConn{Conn: c, srv: s, ip: ip, key: key}
	s.conns[tc] = struct{}{}
	if ip.IsValid() {
		s.perIP[key]++
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
		if s.perIP[c.key]--; s.perIP[c.key] <= 0 {
			delete(s.perIP, c.key)
		}
	}
	if s.slotFreed != nil {
		// Wake the connections waiting for a slot.
		close(s.slotFreed)
		s.slotFreed = nil
	}
}

// rejectTimeout bounds the TLS handshake and the write of a rejection.
const rejectTimeout = 5 * time.Second

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
