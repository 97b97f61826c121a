package proxyproto

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultHeaderTimeout is how long a trusted peer has to send its
// header.
const DefaultHeaderTimeout = 5 * time.Second

// DefaultMaxPending bounds the trusted connections whose header is being
// read at a time; more are closed at once.
const DefaultMaxPending = 256

// Options configure a Listener.
type Options struct {
	// Trusted are the networks of the load balancers whose connections
	// must carry a header. Empty: NewListener returns the listener as
	// it is.
	Trusted []netip.Prefix
	// HeaderTimeout bounds the reading of a header (DefaultHeaderTimeout
	// when 0).
	HeaderTimeout time.Duration
	// MaxPending bounds the connections whose header is being read at a
	// time (DefaultMaxPending when 0); more are closed at once, so that
	// stalled connections cannot pile up.
	MaxPending int
	// Logger reports refused connections; nil discards.
	Logger *slog.Logger
}

// Listener accepts connections and reads the PROXY header of those from
// trusted addresses. Headers are read in the background, so that a slow
// balancer connection does not hold up the others.
type Listener struct {
	net.Listener
	opts Options
	log  *slog.Logger

	ready     chan net.Conn
	errs      chan error
	done      chan struct{}
	closeOnce sync.Once
	sem       chan struct{}
}

// NewListener wraps l. Without trusted networks it returns l itself.
func NewListener(l net.Listener, o Options) net.Listener {
	if len(o.Trusted) == 0 {
		return l
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = DefaultHeaderTimeout
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pl := &Listener{Listener: l, opts: o, log: log, ready: make(chan net.Conn), errs: make(chan error),
		done: make(chan struct{}), sem: make(chan struct{}, o.MaxPending)}
	go pl.acceptLoop()
	return pl
}

// Accept returns the next connection: one from a trusted address once
// its header is read, with the addresses of the header; any other as it
// is, guarded against a forged header.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops the listener.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *Listener) trusted(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	return slices.ContainsFunc(l.opts.Trusted, func(p netip.Prefix) bool { return p.Contains(ip) })
}

func (l *Listener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !l.trusted(c.RemoteAddr()) {
			l.deliver(&guardConn{Conn: c, log: l.log})
			continue
		}
		select {
		case l.sem <- struct{}{}:
			go func() {
				defer func() { <-l.sem }()
				if pc := l.readHeader(c); pc != nil {
					l.deliver(pc)
				}
			}()
		default:
			l.log.Warn("proxy: too many connections waiting for their PROXY header", "remote", c.RemoteAddr().String())
			c.Close()
		}
	}
}

func (l *Listener) deliver(c net.Conn) {
	select {
	case l.ready <- c:
	case <-l.done:
		c.Close()
	}
}

// readHeader reads the header of a trusted connection; nil when it has
// none or a bad one (the connection is then closed).
func (l *Listener) readHeader(c net.Conn) net.Conn {
	c.SetReadDeadline(time.Now().Add(l.opts.HeaderTimeout))
	// The buffer is small: the header is read byte by byte where it
	// matters (v1) or by its announced length (v2), and what the client
	// sent after it stays in the buffer for the first reads.
	br := bufio.NewReaderSize(c, 256)
	h, err := ReadHeader(br)
	if err != nil {
		l.log.Warn("proxy: connection from a trusted address refused", "remote", c.RemoteAddr().String(), "err", err.Error())
		c.Close()
		return nil
	}
	c.SetReadDeadline(time.Time{})
	pc := &Conn{Conn: c, r: br, Header: *h, remote: c.RemoteAddr(), local: c.LocalAddr()}
	if h.Command == Proxy {
		pc.remote = net.TCPAddrFromAddrPort(h.Source)
		pc.local = net.TCPAddrFromAddrPort(h.Dest)
	}
	return pc
}

// Conn is a connection relayed by a trusted balancer: RemoteAddr and
// LocalAddr are those of its header.
type Conn struct {
	net.Conn
	r *bufio.Reader
	// Header is the header the balancer sent.
	Header        Header
	remote, local net.Addr
}

// NetConn returns the connection under c, for writes that bypass it
// (sendfile(2)); reads must go through c, which holds what followed the
// header.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Read reads what follows the header.
func (c *Conn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

// RemoteAddr returns the client's address from the header (the
// balancer's for a LOCAL header).
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr returns the address the client connected to.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// ErrSpoofed is returned by the first read of a connection from an
// untrusted address that starts with a PROXY header.
var ErrSpoofed = errors.New("proxyproto: PROXY header from an untrusted address")

// guardConn is a connection from an untrusted address: its first bytes
// must not be a PROXY header.
type guardConn struct {
	net.Conn
	log     *slog.Logger
	checked bool
	pending []byte // bytes read while deciding, not yet returned
	// rd is the read deadline the server set, in Unix nanoseconds (0:
	// none); the server may set it from another goroutine.
	rd atomic.Int64
}

func (g *guardConn) setRD(t time.Time) {
	if t.IsZero() {
		g.rd.Store(0)
	} else {
		g.rd.Store(t.UnixNano())
	}
}

func (g *guardConn) readDeadline() time.Time {
	if n := g.rd.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// headerGap is how long the guard waits for the rest of what could be a
// PROXY header: a balancer sends a header in one piece, so a client whose
// first bytes only look like its start (a blank line: "\r\n" begins the
// v2 signature) is served after this pause.
const headerGap = 500 * time.Millisecond

// SetDeadline sets the deadlines, remembered for the guard's own reads.
func (g *guardConn) SetDeadline(t time.Time) error {
	g.setRD(t)
	return g.Conn.SetDeadline(t)
}

// SetReadDeadline sets the read deadline, remembered for the guard's own
// reads.
func (g *guardConn) SetReadDeadline(t time.Time) error {
	g.setRD(t)
	return g.Conn.SetReadDeadline(t)
}

// Read checks the first bytes the client sends. As long as they could be
// the start of a header, it reads on for up to headerGap; a header is cut
// off with ErrSpoofed.
func (g *guardConn) Read(p []byte) (int, error) {
	if !g.checked {
		if err := g.check(); err != nil {
			return 0, err
		}
	}
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	return g.Conn.Read(p)
}

func (g *guardConn) check() error {
	buf := make([]byte, 0, len(v2Sig))
	tmp := make([]byte, len(v2Sig))
	for {
		if len(buf) > 0 {
			// The rest of a header would follow at once.
			dl := time.Now().Add(headerGap)
			if rd := g.readDeadline(); !rd.IsZero() && rd.Before(dl) {
				dl = rd
			}
			g.Conn.SetReadDeadline(dl)
		}
		n, err := g.Conn.Read(tmp[:cap(buf)-len(buf)])
		buf = append(buf, tmp[:n]...)
		if len(buf) > 0 {
			g.Conn.SetReadDeadline(g.readDeadline())
		}
		if !MayBeHeader(buf) {
			g.checked, g.pending = true, buf
			return nil
		}
		if len(buf) >= len(v1Prefix) && (len(buf) == cap(buf) || string(buf[:len(v1Prefix)]) == string(v1Prefix)) {
			g.log.Warn("proxy: PROXY header from an untrusted address refused", "remote", g.Conn.RemoteAddr().String())
			g.Conn.Close()
			return ErrSpoofed
		}
		if err != nil {
			var ne net.Error
			if len(buf) > 0 && errors.As(err, &ne) && ne.Timeout() && (g.readDeadline().IsZero() || time.Now().Before(g.readDeadline())) {
				// Not a header: nothing followed in headerGap.
				g.checked, g.pending = true, buf
				return nil
			}
			g.checked, g.pending = true, buf
			if len(buf) == 0 {
				return err
			}
			return nil
		}
	}
}
