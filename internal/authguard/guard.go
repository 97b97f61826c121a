// Package authguard slows down and then refuses password guessing. It
// counts failed logins per remote address (an IPv6 /64 counts as one
// address) and per account, makes each failure's answer wait longer
// (2 s, 4 s, 8 s, ... capped), and after too many failures from one
// address within a window refuses that address for a while. Successful
// logins are never delayed. The same Guard serves POP3 and SMTP AUTH, so
// guesses spread over both protocols add up, and every way of logging in
// goes through it: POP3 USER/PASS and every AUTH mechanism, SCRAM-SHA-256
// included (through pop3.LoginGuard), and SMTP AUTH PLAIN and LOGIN.
//
// Memory is bounded: at most MaxEntries addresses and accounts are
// tracked; expired records are swept first, then arbitrary ones.
package authguard

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Defaults for a zero Guard.
const (
	DefaultMaxFailures = 10
	DefaultWindow      = 10 * time.Minute
	DefaultBlockFor    = 15 * time.Minute
	DefaultBaseDelay   = 2 * time.Second
	DefaultMaxDelay    = 15 * time.Second
	DefaultMaxEntries  = 100_000
)

// Guard tracks failed logins. The zero value uses the defaults; set fields
// before first use.
type Guard struct {
	// MaxFailures from one address within Window block it for BlockFor.
	MaxFailures int
	Window      time.Duration
	BlockFor    time.Duration
	// BaseDelay is the wait after a first failure; it doubles with each
	// further failure of the address or account, up to MaxDelay. A
	// negative BaseDelay disables delays.
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// MaxEntries bounds the records kept.
	MaxEntries int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	records map[string]*record
}

type record struct {
	failures     int
	windowStart  time.Time
	blockedUntil time.Time
}

func (g *Guard) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

func def[T int | time.Duration](v, d T) T {
	if v == 0 {
		return d
	}
	return v
}

// AddrKey returns the key an address is counted under: the IP, or for
// IPv6 its /64.
func AddrKey(a net.Addr) string {
	if a == nil {
		return "ip:?"
	}
	s := a.String()
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(s); err == nil {
		ip = ap.Addr()
	} else if p, err := netip.ParseAddr(s); err == nil {
		ip = p
	} else {
		return "ip:" + s
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return "ip:" + p.String()
	}
	return "ip:" + ip.String()
}

func accountKey(user string) string { return "user:" + strings.ToLower(user) }

// Blocked reports whether logins from addr are refused now, and until
// when.
func (g *Guard) Blocked(addr net.Addr) (bool, time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.records[AddrKey(addr)]
	if r != nil && g.now().Before(r.blockedUntil) {
		return true, r.blockedUntil
	}
	return false, time.Time{}
}

// Failure records a failed login and returns how long the answer should
// be held back.
func (g *Guard) Failure(addr net.Addr, user string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	ipr := g.bump(AddrKey(addr), now)
	n := ipr.failures
	if user != "" {
		n = max(n, g.bump(accountKey(user), now).failures)
	}
	if ipr.failures >= def(g.MaxFailures, DefaultMaxFailures) {
		ipr.blockedUntil = now.Add(def(g.BlockFor, DefaultBlockFor))
	}
	base := def(g.BaseDelay, DefaultBaseDelay)
	if base < 0 {
		return 0
	}
	d := base << min(n-1, 16)
	return min(d, def(g.MaxDelay, DefaultMaxDelay))
}

// Success records a successful login: the account's failures are
// forgotten (the address's are not, so one known password does not let an
// address keep guessing others).
func (g *Guard) Success(addr net.Addr, user string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.records, accountKey(user))
}

func (g *Guard) bump(key string, now time.Time) *record {
	if g.records == nil {
		g.records = make(map[string]*record)
	}
	r := g.records[key]
	if r == nil {
		g.evict(now)
		r = &record{windowStart: now}
		g.records[key] = r
	}
	if now.Sub(r.windowStart) > def(g.Window, DefaultWindow) {
		r.failures, r.windowStart = 0, now
	}
	r.failures++
	return r
}

// evict makes room for one more record.
func (g *Guard) evict(now time.Time) {
	limit := def(g.MaxEntries, DefaultMaxEntries)
	if len(g.records) < limit {
		return
	}
	window := def(g.Window, DefaultWindow)
	for k, r := range g.records {
		if now.Sub(r.windowStart) > window && !now.Before(r.blockedUntil) {
			delete(g.records, k)
		}
	}
	for k := range g.records {
		if len(g.records) < limit*9/10 {
			break
		}
		delete(g.records, k) // map order is random
	}
}

// Len returns the number of records kept.
func (g *Guard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.records)
}

// Wait sleeps for d or until ctx ends.
func Wait(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
