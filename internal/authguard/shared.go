package authguard

import (
	"context"
	"errors"
	"net"
	"time"
)

// SharedRecord is the failure state of one key (an address, "ip:...",
// or an account, "user:...") as a Shared store keeps it.
type SharedRecord struct {
	Key          string
	Failures     int
	WindowStart  time.Time
	BlockedUntil time.Time // zero: not blocked
}

// Shared keeps the Guard's failure counts and blocks where every node of
// a cluster sees them (PostgreSQL, see internal/authguard/pgguard), so
// that failures on one node count on all and a block holds on every
// node. Times are the Guard's clock.
type Shared interface {
	// Get returns the record of key; ok is false when there is none.
	Get(ctx context.Context, key string) (rec SharedRecord, ok bool, err error)
	// Fail counts one failure of key at now, in one atomic step: a
	// window older than window starts again at now with one failure,
	// and a block that ended before now is cleared.
	Fail(ctx context.Context, key string, now time.Time, window time.Duration) (SharedRecord, error)
	// Block sets key's block to end at until.
	Block(ctx context.Context, key string, until time.Time) error
	// Forget removes key's record and returns it; ok is false when there
	// was none.
	Forget(ctx context.Context, key string) (rec SharedRecord, ok bool, err error)
	// List returns every record.
	List(ctx context.Context) ([]SharedRecord, error)
	// Sweep removes the records whose window is older than window at
	// now and that are not blocked past now.
	Sweep(ctx context.Context, now time.Time, window time.Duration) error
}

// sharedTimeout bounds a round trip to the Shared store; when it fails
// the Guard goes on with what this node counted.
const sharedTimeout = 3 * time.Second

func sharedCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), sharedTimeout)
}

// sharedError logs a failed round trip to the Shared store.
func (g *Guard) sharedError(op string, err error) {
	if g.Logger != nil {
		g.Logger.Error("login guard: shared state unreachable, counting on this node only", "op", op, "err", err)
	}
}

// setLocked makes the record of key the shared one (rec, or none when ok
// is false), logging the end of a block this node knew of when the shared
// state no longer has it (lifted on another node, or expired).
func (g *Guard) setLocked(key string, rec SharedRecord, ok bool) *record {
	r := g.records[key]
	if !ok {
		if r != nil {
			g.end(key, r, "lifted or expired on another node")
			delete(g.records, key)
		}
		return nil
	}
	if r == nil {
		if g.records == nil {
			g.records = make(map[string]*record)
		}
		g.evict(g.now())
		r = &record{}
		g.records[key] = r
	}
	r.failures, r.windowStart = rec.Failures, rec.WindowStart
	if rec.BlockedUntil.IsZero() {
		g.end(key, r, "lifted on another node")
	}
	r.blockedUntil = rec.BlockedUntil
	return r
}

// syncAddr brings the record of addr's key up to date from the Shared
// store, before a decision that depends on it.
func (g *Guard) syncAddr(addr net.Addr) {
	if g.Shared == nil || g.trusted(addr) {
		return
	}
	key := AddrKey(addr)
	ctx, cancel := sharedCtx()
	defer cancel()
	rec, ok, err := g.Shared.Get(ctx, key)
	if err != nil {
		g.sharedError("get", err)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.setLocked(key, rec, ok)
}

// sharedFailure counts a failure of addr and user in the Shared store
// and returns the records to count it with (nil where it failed or does
// not apply).
func (g *Guard) sharedFailure(addr net.Addr, user string) (ip, account *SharedRecord) {
	if g.Shared == nil {
		return nil, nil
	}
	ctx, cancel := sharedCtx()
	defer cancel()
	now, window := g.now(), def(g.Window, DefaultWindow)
	if !g.trusted(addr) {
		if rec, err := g.Shared.Fail(ctx, AddrKey(addr), now, window); err != nil {
			g.sharedError("fail", err)
		} else {
			ip = &rec
		}
	}
	if user != "" {
		if rec, err := g.Shared.Fail(ctx, accountKey(user), now, window); err != nil {
			g.sharedError("fail", err)
		} else {
			account = &rec
		}
	}
	return ip, account
}

// sharedBlock records a block this node started.
func (g *Guard) sharedBlock(key string, until time.Time) {
	if g.Shared == nil || key == "" {
		return
	}
	ctx, cancel := sharedCtx()
	defer cancel()
	if err := g.Shared.Block(ctx, key, until); err != nil {
		g.sharedError("block", err)
	}
}

// sharedForget removes key from the Shared store.
func (g *Guard) sharedForget(key string) (SharedRecord, bool) {
	if g.Shared == nil {
		return SharedRecord{}, false
	}
	ctx, cancel := sharedCtx()
	defer cancel()
	rec, ok, err := g.Shared.Forget(ctx, key)
	if err != nil {
		g.sharedError("forget", err)
		return SharedRecord{}, false
	}
	return rec, ok
}

// LiftShared is Lift on the Shared store alone, with its errors: what
// "postino block remove" does from any machine of a cluster. The nodes
// see the record gone at their next attempt from that address.
func (g *Guard) LiftShared(ctx context.Context, name string) (Entry, error) {
	key, kind, err := liftKey(name)
	if err != nil {
		return Entry{}, err
	}
	if g.Shared == nil {
		return Entry{}, errors.New("authguard: no shared state")
	}
	rec, ok, err := g.Shared.Forget(ctx, key)
	if err != nil {
		return Entry{}, err
	}
	if !ok {
		return Entry{}, ErrNotFound
	}
	e := Entry{Kind: kind, Name: displayKey(key), Failures: rec.Failures}
	if g.now().Before(rec.BlockedUntil) {
		e.Blocked, e.Until = true, rec.BlockedUntil
	}
	return e, nil
}
