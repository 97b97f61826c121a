package smtpin

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// limitListener enforces the connection limits and wraps every accepted
// connection in a trackedConn.
type limitListener struct {
	net.Listener
	srv       *Server
	implicitT *tls.Config // set for ServeTLS: rejections are sent over TLS
}

// Accept returns the next connection within the limits; connections over
// a limit are answered and closed in the background.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		tc, ok := l.srv.acquire(c, ip)
		if !ok {
			go l.srv.reject(c, l.implicitT)
			continue
		}
		return tc, nil
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

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.srv.release(c) })
	return err
}

// acquire takes a connection slot for ip and returns the wrapped
// connection, or false when a limit is reached.
func (s *Server) acquire(c net.Conn, ip netip.Addr) (*trackedConn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	if s.opts.MaxConnections > 0 && len(s.conns) >= s.opts.MaxConnections {
		return nil, false
	}
	if s.opts.MaxConnectionsPerIP > 0 && ip.IsValid() && s.perIP[ip] >= s.opts.MaxConnectionsPerIP {
		return nil, false
	}
	tc := &trackedConn{Conn: c, srv: s, ip: ip}
	s.conns[tc] = struct{}{}
	if ip.IsValid() {
		s.perIP[ip]++
	}
	return tc, true
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
	s.opts.Logger.Info("smtp: connection refused: too many connections", "role", s.opts.Role, "remote", c.RemoteAddr().String())
	w.Write([]byte("421 4.7.0 Too many connections\r\n"))
}
