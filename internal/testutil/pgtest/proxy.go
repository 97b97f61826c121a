package pgtest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy relays TCP connections from a loopback port to a target. Cut
// drops every relayed connection and leaves new ones hanging unanswered,
// as a network partition does; Reset drops the relayed connections only;
// LoseReplies lets the relayed connections carry requests but no replies
// for a while, then drops them, as a server dying after it received a
// request does.
type Proxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	links []*link
}

// link is one client connection and, unless held by a partition, the
// connection it is relayed to.
type link struct {
	c, u  net.Conn
	muted atomic.Bool // the target's bytes are dropped
}

func (l *link) close() {
	l.c.Close()
	if l.u != nil {
		l.u.Close()
	}
}

// NewProxy starts a proxy to target (host:port) on 127.0.0.1; it is
// closed at the end of the test.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{l: l, target: target}
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// take removes and returns the current connections.
func (p *Proxy) take() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	links := p.links
	p.links = nil
	return links
}

// Cut partitions the proxy's clients from the target.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
	for _, l := range p.take() {
		l.close()
	}
}

// Reset drops the connections relayed so far; new ones are relayed.
func (p *Proxy) Reset() {
	for _, l := range p.take() {
		l.close()
	}
}

// LoseReplies drops, from now on, what the target sends on the
// connections relayed so far, and drops those connections after d: a
// request sent meanwhile reaches the target, which acts on it, but its
// answer never comes back. New connections are relayed normally.
func (p *Proxy) LoseReplies(d time.Duration) {
	links := p.take()
	for _, l := range links {
		l.muted.Store(true)
	}
	time.AfterFunc(d, func() {
		for _, l := range links {
			l.close()
		}
	})
}

// Close stops the proxy and drops every connection, relayed or held.
func (p *Proxy) Close() {
	p.l.Close()
	p.Cut()
}

func (p *Proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			// A partition: the connection is kept, silent, until the end.
			p.links = append(p.links, &link{c: c})
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		go p.relay(c)
	}
}

func (p *Proxy) relay(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	l := &link{c: c, u: u}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		l.close()
		return
	}
	p.links = append(p.links, l)
	p.mu.Unlock()
	go func() { io.Copy(u, c); u.Close() }()
	buf := make([]byte, 32*1024)
	for {
		n, err := u.Read(buf)
		if n > 0 && !l.muted.Load() {
			if _, werr := c.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	c.Close()
}

// Heal ends a partition made by Cut: the connections held silent are
// dropped, and new ones are relayed again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
	for _, l := range p.take() {
		l.close()
	}
}
