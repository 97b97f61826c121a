package antispam

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/inbound"
)

// Greylist is greylisting: the first attempt of a (client network,
// sender, recipient) triplet is refused with a temporary error; a retry
// after Delay and within RetryWindow passes, and the triplet then passes
// at once for Expire after its last message. Real MTAs retry; most
// spamware does not.
type Greylist struct {
	// Delay is how long a new triplet is refused.
	Delay time.Duration
	// RetryWindow is how long after its first attempt a triplet may
	// pass; a later retry starts over.
	RetryWindow time.Duration
	// Expire is how long a passed triplet is remembered after its last
	// message.
	Expire time.Duration
	// Skip are the client networks never greylisted.
	Skip []netip.Prefix
	// Store keeps the triplets.
	Store Store
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Logger receives the store's failures.
	Logger *slog.Logger
}

// Name implements inbound.Check.
func (g *Greylist) Name() string { return "greylist" }

// Begin greylists the session's transactions unless the client is
// skipped.
func (g *Greylist) Begin(ctx context.Context, c *inbound.Conn, v *inbound.Verdict) inbound.Session {
	if skipped(c.Remote, g.Skip) {
		return nil
	}
	return &greylistSession{g: g, conn: c}
}

type greylistSession struct {
	g    *Greylist
	conn *inbound.Conn
}

// TripletKey returns the store key of a triplet: a hash of the client's
// network (IPv4 /24, IPv6 /64: the pools many MTAs retry from), the
// sender and the recipient, lower-cased.
func TripletKey(ip netip.Addr, from, rcpt string) string {
	ip = ip.Unmap()
	bits := 24
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	h := sha256.Sum256([]byte(p.String() + "\x00" + strings.ToLower(from) + "\x00" + strings.ToLower(rcpt)))
	return hex.EncodeToString(h[:16])
}

// refreshAfter is how old a passed triplet's last use must be before a
// new message records it again (fewer writes to the store).
const refreshAfter = time.Hour

// Rcpt refuses the recipient's first attempts.
func (s *greylistSession) Rcpt(ctx context.Context, env *inbound.Envelope, rcpt string, v *inbound.Verdict) {
	g := s.g
	now := time.Now()
	if g.Now != nil {
		now = g.Now()
	}
	key := TripletKey(s.conn.Remote, env.From, rcpt)
	e, ok, err := g.Store.Get(ctx, key)
	if err != nil {
		// The store failed: let the mail through rather than lose it.
		g.Logger.Warn("greylist: store failed; not greylisting", "id", s.conn.ID, "err", err)
		return
	}
	put := func(e Entry) {
		if err := g.Store.Put(ctx, key, e); err != nil {
			g.Logger.Warn("greylist: store failed", "id", s.conn.ID, "err", err)
		}
	}
	switch {
	case ok && e.Passed && now.Before(e.Last.Add(g.Expire)):
		if now.Sub(e.Last) > refreshAfter {
			e.Last = now
			e.Expires = now.Add(g.Expire)
			put(e)
		}
		return
	case ok && !e.Passed && now.Before(e.First.Add(g.RetryWindow)):
		if now.Before(e.First.Add(g.Delay)) {
			v.Add(greylisted(e.First.Add(g.Delay).Sub(now)))
			return
		}
		// The retry came after the delay: the triplet passes.
		put(Entry{First: e.First, Last: now, Passed: true, Expires: now.Add(g.Expire)})
		v.Add(inbound.Result{Check: "greylist", Detail: "passed after " + now.Sub(e.First).Round(time.Second).String()})
		return
	}
	// A new triplet, or one whose retry window or expiry is over.
	put(Entry{First: now, Last: now, Expires: now.Add(g.RetryWindow)})
	v.Add(greylisted(g.Delay))
}

func greylisted(left time.Duration) inbound.Result {
	return inbound.Result{Check: "greylist", Action: inbound.Tempfail, Code: 450, Enhanced: [3]int{4, 2, 0},
		Reply: "Greylisted, try again later", Detail: "greylisted for " + left.Round(time.Second).String()}
}
