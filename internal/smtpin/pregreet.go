package smtpin

import (
	"bufio"
	"errors"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// The pregreet test (Options.PregreetWait), as Postfix's postscreen
// greet test: the MX waits before its greeting, and a client that talks
// meanwhile is not an MTA that follows RFC 5321 §3.1 (the client waits
// for the server's greeting) but most likely spamware that pipelines
// blindly. It runs on plain connections of the MX only: on implicit TLS
// the client speaks first (the TLS handshake).

// maxPregreetCache bounds the clients remembered as having passed.
const maxPregreetCache = 100000

// Limits of the conversation with a refused client: after the 554
// greeting RFC 5321 §3.1 has the server answer 503 until QUIT; a client
// gets this many lines or this much time, whichever ends first.
const (
	pregreetMaxLines = 10
	pregreetLinger   = 5 * time.Second
	pregreetMaxLine  = 512
)

// pregreetCache remembers the clients (by ipKey) that passed the test,
// until when.
type pregreetCache struct {
	mu     sync.Mutex
	passed map[netip.Addr]time.Time
}

// ok reports whether key passed the test less than its TTL ago.
func (c *pregreetCache) ok(key netip.Addr, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, found := c.passed[key]
	return found && now.Before(until)
}

// pass records that key passed, until until. Beyond maxPregreetCache
// clients the expired ones are forgotten; if none has, key is not
// remembered (it waits again next time).
func (c *pregreetCache) pass(key netip.Addr, now, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.passed == nil {
		c.passed = make(map[netip.Addr]time.Time)
	}
	if _, found := c.passed[key]; !found && len(c.passed) >= maxPregreetCache {
		for k, u := range c.passed {
			if !now.Before(u) {
				delete(c.passed, k)
			}
		}
		if len(c.passed) >= maxPregreetCache {
			return
		}
	}
	c.passed[key] = until
}

// admit hands an admitted connection to Accept, after the pregreet test
// when it applies.
func (l *limitListener) admit(tc *trackedConn) {
	o := l.srv.options()
	if l.implicitT != nil || o.Role != RoleMX || o.PregreetWait <= 0 || !tc.ip.IsValid() ||
		l.srv.trusted(tc.ip) || (o.PregreetPassTTL > 0 && l.srv.pregreet.ok(tc.key, l.srv.now())) {
		l.deliver(tc)
		return
	}
	go l.pregreetTest(tc, o.PregreetWait, o.PregreetPassTTL)
}

// pregreetTest waits for wait before the greeting; a client that sends
// anything meanwhile is refused.
func (l *limitListener) pregreetTest(tc *trackedConn, wait, ttl time.Duration) {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-l.done:
			// The server shuts down: end the wait now.
			tc.Conn.SetReadDeadline(time.Now())
		case <-stop:
		}
	}()
	tc.Conn.SetReadDeadline(time.Now().Add(wait))
	var b [1]byte
	n, err := tc.Conn.Read(b[:])
	tc.Conn.SetReadDeadline(time.Time{})
	select {
	case <-l.done:
		tc.Close()
		return
	default:
	}
	switch {
	case n > 0:
		l.refusePregreet(tc, b[0])
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The client waited: greet it.
		if ttl > 0 {
			now := l.srv.now()
			l.srv.pregreet.pass(tc.key, now, now.Add(ttl))
		}
		l.deliver(tc)
	default:
		// The client left without a word (or the read failed).
		tc.Close()
	}
}

// refusePregreet answers a client that talked before the greeting:
// RFC 5321 §3.1 lets a server greet with 554 instead of 220; it then
// answers 503 to every command until QUIT, for a few lines or seconds.
func (l *limitListener) refusePregreet(tc *trackedConn, first byte) {
	defer tc.Close()
	o := l.srv.options()
	o.Logger.Warn("smtp: refused", "role", o.Role.String(), "remote", tc.RemoteAddr().String(), "id", "", "from", "", "rcpt", "", "code", "554 5.5.1", "reason", "pregreet: the client talked before the greeting")
	tc.Conn.SetDeadline(time.Now().Add(pregreetLinger))
	w := bufio.NewWriter(tc.Conn)
	w.WriteString("554 5.5.1 Protocol error: talking before the greeting\r\n")
	if w.Flush() != nil {
		return
	}
	r := bufio.NewReaderSize(tc.Conn, pregreetMaxLine)
	line, firstLine := "", true
	for range pregreetMaxLines {
		s, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
		if firstLine {
			line, firstLine = string(first)+string(s), false
		} else {
			line = string(s)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			return // a line over the limit: no more talk
		}
		if strings.EqualFold(strings.TrimSpace(line), "QUIT") {
			w.WriteString("221 2.0.0 Bye\r\n")
			w.Flush()
			return
		}
		w.WriteString("503 5.5.1 Error: no valid transaction\r\n")
		if w.Flush() != nil {
			return
		}
	}
}
