// Package authguard slows down and then refuses password guessing. It
// counts failed logins per remote address (an IPv6 /64 counts as one
// address) and per account, makes each failure's answer wait longer
// (2 s, 4 s, 8 s, ... capped), and after too many failures from one
// address within a window refuses that address for a while. Attempts in
// progress count too (Begin, then EndFailure, EndSuccess or Abandon): an
// address has at most as many logins being checked at once as it has
// failures left, so guesses sent in parallel over many connections
// cannot all be checked before the first of them fails. Successful
// logins are never delayed. The same Guard serves POP3 and SMTP AUTH, so
// guesses spread over both protocols add up, and every way of logging in
// goes through it: POP3 USER/PASS and every AUTH mechanism, SCRAM-SHA-256
// included (through pop3.LoginGuard), and SMTP AUTH PLAIN and LOGIN.
//
// Memory is bounded: at most MaxEntries addresses and accounts are
// tracked; expired records are swept first, then arbitrary ones.
//
// Addresses in Trusted are never counted nor blocked; the accounts they
// fail to log in to still are, so their answers are delayed like anyone's
// (an account is only ever delayed, never refused: refusing an account
// would let anyone lock its owner out). Blocks are logged when they start
// and when they end (expired, lifted with Lift, or dropped to bound
// memory), and Blocks lists what is being held against whom.
package authguard

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/metrics"
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
	// Trusted addresses are never counted nor blocked (their failures
	// still count against the account tried).
	Trusted []netip.Prefix
	// Logger receives a line when a block starts and when it ends; nil
	// logs nothing.
	Logger *slog.Logger
	// Metrics counts the blocks started; nil: none.
	Metrics *metrics.Metrics
	// Shared, when set, is the failure state of every node of a cluster:
	// each attempt reads its address's record from it first, and each
	// failure is counted in it, so that failures on one node count on
	// all and a block holds on every node. When it cannot be reached the
	// Guard counts on this node alone. Set it before first use.
	Shared Shared

	mu      sync.Mutex
	records map[string]*record
	// inFlight counts, per address key, the attempts begun (Begin) and
	// not yet ended. It is bounded by the connections open at a time.
	inFlight map[string]int
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

// addrIP returns the IP of a connection's remote address, if it has one.
func addrIP(a net.Addr) (netip.Addr, bool) {
	if a == nil {
		return netip.Addr{}, false
	}
	s := a.String()
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if p, err := netip.ParseAddr(s); err == nil {
		return p.Unmap(), true
	}
	return netip.Addr{}, false
}

// AddrPrefix returns the network an address is counted under: an IPv4
// address alone (/32), an IPv6 address by its /64: RFC 4291 §2.5.4: the
// low 64 bits are the interface identifier, which one client can vary at
// will (RFC 8981 temporary addresses). An IPv4-mapped IPv6 address counts
// as the IPv4 address.
func AddrPrefix(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p
	}
	return netip.PrefixFrom(ip, ip.BitLen())
}

// ipKey is the key of an IP: itself, or for IPv6 its /64.
func ipKey(ip netip.Addr) string {
	p := AddrPrefix(ip)
	if p.Addr().Is6() {
		return "ip:" + p.String()
	}
	return "ip:" + p.Addr().String()
}

// AddrKey returns the key an address is counted under: the IP, or for
// IPv6 its /64.
func AddrKey(a net.Addr) string {
	if ip, ok := addrIP(a); ok {
		return ipKey(ip)
	}
	if a == nil {
		return "ip:?"
	}
	return "ip:" + a.String()
}

// trusted reports whether a is in g.Trusted.
func (g *Guard) trusted(a net.Addr) bool {
	ip, ok := addrIP(a)
	if !ok {
		return false
	}
	ip = ip.WithZone("")
	for _, p := range g.Trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func accountKey(user string) string { return "user:" + strings.ToLower(user) }

// Blocked reports whether logins from addr are refused now, and until
// when.
func (g *Guard) Blocked(addr net.Addr) (bool, time.Time) {
	g.syncAddr(addr)
	g.mu.Lock()
	defer g.mu.Unlock()
	key := AddrKey(addr)
	r := g.records[key]
	if r == nil {
		return false, time.Time{}
	}
	now := g.now()
	if now.Before(r.blockedUntil) {
		return true, r.blockedUntil
	}
	g.expire(key, r, now)
	return false, time.Time{}
}

// Begin starts a login attempt from addr, before its credentials are
// checked, and reports whether it may go on; if not, it also returns when
// a block ends (the zero time when the address is not blocked but has as
// many attempts in progress as it has failures left). An address may have
// at most MaxFailures minus its recent failures attempts in progress (and
// always one, when it is not blocked), so that guesses sent in parallel
// cannot all be checked before the first of them is counted. Every Begin
// that returns true must be ended by exactly one of EndFailure, EndSuccess
// or Abandon. A trusted address is always let through and not counted.
func (g *Guard) Begin(addr net.Addr) (bool, time.Time) {
	if g.trusted(addr) {
		return true, time.Time{}
	}
	g.syncAddr(addr)
	g.mu.Lock()
	defer g.mu.Unlock()
	key := AddrKey(addr)
	now := g.now()
	failures := 0
	if r := g.records[key]; r != nil {
		if now.Before(r.blockedUntil) {
			return false, r.blockedUntil
		}
		g.expire(key, r, now)
		if now.Sub(r.windowStart) <= def(g.Window, DefaultWindow) {
			failures = r.failures
		}
	}
	if n := g.inFlight[key]; n > 0 && n >= def(g.MaxFailures, DefaultMaxFailures)-failures {
		return false, time.Time{}
	}
	if g.inFlight == nil {
		g.inFlight = make(map[string]int)
	}
	g.inFlight[key]++
	return true, time.Time{}
}

// endLocked ends an attempt Begin let through.
func (g *Guard) endLocked(addr net.Addr) {
	if g.trusted(addr) {
		return
	}
	key := AddrKey(addr)
	// An end without a Begin (the Guard was swapped in between) frees
	// nothing.
	if n := g.inFlight[key]; n > 1 {
		g.inFlight[key] = n - 1
	} else {
		delete(g.inFlight, key)
	}
}

// Abandon ends an attempt Begin let through that neither failed nor
// succeeded (the client went away, the user database could not be read):
// nothing is counted.
func (g *Guard) Abandon(addr net.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.endLocked(addr)
}

// EndFailure ends an attempt Begin let through as a failure: in one step,
// so that no other attempt can begin in between, it is counted as
// Failure counts it. It returns how long the answer should be held back.
func (g *Guard) EndFailure(addr net.Addr, user string) time.Duration {
	ip, account := g.sharedFailure(addr, user)
	g.mu.Lock()
	g.endLocked(addr)
	d, key, until := g.failureLocked(addr, user, ip, account)
	g.mu.Unlock()
	g.sharedBlock(key, until)
	return d
}

// EndSuccess ends an attempt Begin let through as a success, as Success
// records one.
func (g *Guard) EndSuccess(addr net.Addr, user string) {
	g.mu.Lock()
	g.endLocked(addr)
	delete(g.records, accountKey(user))
	g.mu.Unlock()
	g.sharedForget(accountKey(user))
}

// InFlight returns the number of attempts begun and not yet ended, from
// every address.
func (g *Guard) InFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, v := range g.inFlight {
		n += v
	}
	return n
}

// Failure records a failed login and returns how long the answer should
// be held back. A trusted address is neither counted nor blocked; the
// account is.
func (g *Guard) Failure(addr net.Addr, user string) time.Duration {
	ip, account := g.sharedFailure(addr, user)
	g.mu.Lock()
	d, key, until := g.failureLocked(addr, user, ip, account)
	g.mu.Unlock()
	g.sharedBlock(key, until)
	return d
}

// failureLocked counts a failure: with the Shared store's records ip and
// account where they are known (the failure is already counted there),
// else on this node. It returns the delay, and the key and end of the
// block it set, if any, for the Shared store.
func (g *Guard) failureLocked(addr net.Addr, user string, ip, account *SharedRecord) (d time.Duration, blockKey string, until time.Time) {
	now := g.now()
	n := 1
	if !g.trusted(addr) {
		key := AddrKey(addr)
		var ipr *record
		if ip != nil {
			ipr = g.setLocked(key, *ip, true)
		} else {
			ipr = g.bump(key, now)
		}
		n = ipr.failures
		if ipr.failures >= def(g.MaxFailures, DefaultMaxFailures) {
			starts := ipr.blockedUntil.IsZero()
			ipr.blockedUntil = now.Add(def(g.BlockFor, DefaultBlockFor))
			blockKey, until = key, ipr.blockedUntil
			if starts {
				g.Metrics.Block()
			}
			if starts && g.Logger != nil {
				g.Logger.Warn("login block started: too many failed logins from this address",
					"address", displayKey(key), "failures", ipr.failures, "user", user,
					"until", ipr.blockedUntil.UTC().Format(time.RFC3339))
			}
		}
	}
	if user != "" {
		if account != nil {
			n = max(n, g.setLocked(accountKey(user), *account, true).failures)
		} else {
			n = max(n, g.bump(accountKey(user), now).failures)
		}
	}
	base := def(g.BaseDelay, DefaultBaseDelay)
	if base < 0 {
		return 0, blockKey, until
	}
	d = base << min(n-1, 16)
	return min(d, def(g.MaxDelay, DefaultMaxDelay)), blockKey, until
}

// Success records a successful login: the account's failures are
// forgotten (the address's are not, so one known password does not let an
// address keep guessing others).
func (g *Guard) Success(addr net.Addr, user string) {
	g.mu.Lock()
	delete(g.records, accountKey(user))
	g.mu.Unlock()
	g.sharedForget(accountKey(user))
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
	g.expire(key, r, now)
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
			g.expire(k, r, now)
			delete(g.records, k)
		}
	}
	for k, r := range g.records {
		if len(g.records) < limit*9/10 {
			break
		}
		g.end(k, r, "evicted to bound memory")
		delete(g.records, k) // map order is random
	}
}

// expire notices the end of an expired block: it is logged once and
// forgotten.
func (g *Guard) expire(key string, r *record, now time.Time) {
	if !r.blockedUntil.IsZero() && !now.Before(r.blockedUntil) {
		g.end(key, r, "expired")
	}
}

// end logs the end of r's block, if it has one, and clears it.
func (g *Guard) end(key string, r *record, reason string) {
	if r.blockedUntil.IsZero() {
		return
	}
	if g.Logger != nil {
		g.Logger.Info("login block ended", "address", displayKey(key), "reason", reason,
			"failures", r.failures, "until", r.blockedUntil.UTC().Format(time.RFC3339))
	}
	r.blockedUntil = time.Time{}
}

// Sweep forgets what has expired: blocks past their end (each logged as
// ended) and failures older than Window. A server calls it now and
// then, so that the end of a block is logged even when the address never
// comes back.
func (g *Guard) Sweep() {
	if g.Shared != nil {
		ctx, cancel := sharedCtx()
		if err := g.Shared.Sweep(ctx, g.now(), def(g.Window, DefaultWindow)); err != nil {
			g.sharedError("sweep", err)
		}
		cancel()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	window := def(g.Window, DefaultWindow)
	for k, r := range g.records {
		g.expire(k, r, now)
		if r.blockedUntil.IsZero() && now.Sub(r.windowStart) > window {
			delete(g.records, k)
		}
	}
}

// Kinds of Entry.
const (
	KindAddress = "address"
	KindAccount = "account"
)

// Entry is one address or account the Guard holds failures against.
type Entry struct {
	// Kind is KindAddress or KindAccount.
	Kind string
	// Name is the IP address (IPv6: its /64) or the account name.
	Name string
	// Failures counted within the current window.
	Failures int
	// Blocked is true for an address refused until Until. An account is
	// never refused: its logins are delayed until Until, the end of
	// its failure window.
	Blocked bool
	// Until is when the block, or else the failure window, ends.
	Until time.Time
}

// Blocks lists the addresses and accounts with failures held against
// them now, blocked addresses first, each group by name.
func (g *Guard) Blocks() []Entry {
	if g.Shared != nil {
		ctx, cancel := sharedCtx()
		recs, err := g.Shared.List(ctx)
		cancel()
		if err == nil {
			return g.SharedEntries(recs)
		}
		g.sharedError("list", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	window := def(g.Window, DefaultWindow)
	var out []Entry
	for k, r := range g.records {
		g.expire(k, r, now)
		e := Entry{Kind: KindAddress, Name: displayKey(k), Failures: r.failures}
		if strings.HasPrefix(k, "user:") {
			e.Kind = KindAccount
		}
		switch {
		case !r.blockedUntil.IsZero():
			e.Blocked, e.Until = true, r.blockedUntil
		case now.Sub(r.windowStart) <= window:
			e.Until = r.windowStart.Add(window)
		default:
			continue
		}
		out = append(out, e)
	}
	sortEntries(out)
	return out
}

// SharedEntries is Blocks from the Shared store's records recs.
func (g *Guard) SharedEntries(recs []SharedRecord) []Entry {
	now := g.now()
	window := def(g.Window, DefaultWindow)
	var out []Entry
	for _, r := range recs {
		e := Entry{Kind: KindAddress, Name: displayKey(r.Key), Failures: r.Failures}
		if strings.HasPrefix(r.Key, "user:") {
			e.Kind = KindAccount
		}
		switch {
		case now.Before(r.BlockedUntil):
			e.Blocked, e.Until = true, r.BlockedUntil
		case now.Sub(r.WindowStart) <= window:
			e.Until = r.WindowStart.Add(window)
		default:
			continue
		}
		out = append(out, e)
	}
	sortEntries(out)
	return out
}

// sortEntries orders entries as Blocks returns them.
func sortEntries(out []Entry) {
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Blocked != b.Blocked {
			return a.Blocked
		}
		if a.Kind != b.Kind {
			return a.Kind == KindAddress
		}
		return a.Name < b.Name
	})
}

// ErrNotFound is returned by Lift for a name the Guard holds nothing
// against.
var ErrNotFound = errors.New("authguard: no failures recorded for that address or account")

// ErrBadName is returned by Lift for an empty name.
var ErrBadName = errors.New("authguard: empty address or account")

// Lift forgets the failures of an address or an account, lifting the
// address's block (logged as ended). name is an IP address (any address
// of an IPv6 /64 lifts the /64, as does the /64 itself) or an account
// name. It returns the Entry removed.
func (g *Guard) Lift(name string) (Entry, error) {
	key, kind, err := liftKey(name)
	if err != nil {
		return Entry{}, err
	}
	rec, shared := g.sharedForget(key)
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.records[key]
	if r == nil && shared {
		// Held on other nodes only.
		r = &record{failures: rec.Failures, windowStart: rec.WindowStart}
		if g.now().Before(rec.BlockedUntil) {
			r.blockedUntil = rec.BlockedUntil
		}
	}
	if r == nil {
		return Entry{}, ErrNotFound
	}
	e := Entry{Kind: kind, Name: displayKey(key), Failures: r.failures, Blocked: !r.blockedUntil.IsZero(), Until: r.blockedUntil}
	g.end(key, r, "lifted")
	delete(g.records, key)
	return e, nil
}

// liftKey returns the record key and kind Lift looks for name under.
func liftKey(name string) (key, kind string, err error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", "", ErrBadName
	}
	key, kind = accountKey(name), KindAccount
	if ip, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		key, kind = ipKey(ip.Unmap()), KindAddress
	} else if p, err := netip.ParsePrefix(name); err == nil && p.Addr().Is6() && p.Bits() == 64 {
		key, kind = ipKey(p.Addr()), KindAddress
	}
	return key, kind, nil
}

// displayKey is a record key without its kind prefix.
func displayKey(key string) string {
	_, name, _ := strings.Cut(key, ":")
	return name
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

// SetLimits replaces g's thresholds, delays, trusted networks and logger
// with those of from (a configuration reload); the failures and blocks
// recorded so far are kept, and are judged by the new limits from now on.
func (g *Guard) SetLimits(from *Guard) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.MaxFailures, g.Window, g.BlockFor = from.MaxFailures, from.Window, from.BlockFor
	g.BaseDelay, g.MaxDelay = from.BaseDelay, from.MaxDelay
	g.Trusted = from.Trusted
	g.Logger = from.Logger
}
