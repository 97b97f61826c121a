package auth

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Store keeps the entries of a DB somewhere shared instead of in a
// passwd-file (PostgreSQL in cluster mode, see internal/store/pgstore).
// The entries are exchanged as passwd-file lines, so that a DB over a
// Store parses, resolves, caches and modifies exactly as over a file.
type Store interface {
	// Version returns a number that changes whenever the entries change;
	// a DB re-reads the entries only when it differs from the last one.
	Version(ctx context.Context) (int64, error)
	// Load returns every entry as a passwd-file line, and the version
	// they are.
	Load(ctx context.Context) (lines []string, version int64, err error)
	// Modify calls change with the current lines under a lock that
	// excludes every other Modify of the same entries (on any node), and
	// stores the lines it returns unless it returns an error.
	Modify(ctx context.Context, change func(lines []string) ([]string, error)) error
	// Name describes where the entries are, for messages.
	Name() string
}

// storeTimeout bounds a store round trip of the methods that take no
// context (Lookup, List).
const storeTimeout = 10 * time.Second

// OpenStoreDB returns the user database kept in st. It behaves as OpenDB's
// (the same matching, password-check cache and modifications), but every
// use first asks st for its version, so that a change made on any node
// is seen by the next lookup.
func OpenStoreDB(st Store) *DB {
	db := OpenDB(st.Name())
	db.store = st
	return db
}

// currentOrLast is current for a DB over a Store: when the store cannot
// be reached it returns the entries last read, if any, so that lookups
// (a recipient's mailbox, its quota) go on answering through a database
// outage; what then needs the store (delivery, the maildrop) fails
// temporarily on its own. Authenticate does not use it: a login needs
// the current password.
//
// After a failure the store is not asked again for storeRetry: lookups
// meanwhile answer at once from the users last read, instead of each
// waiting for the connection to time out.
//
// A lookup within storeFresh of the last version check answers from the
// users read then, without asking the store: an SMTP transaction looks a
// recipient up several times (address, aliases, quota), and a busy
// server would otherwise ask the database for each.
func (db *DB) currentOrLast() (*snapshot, error) { return db.storeSnapshot(true) }

// storeSnapshot is currentOrLast; with useFresh false it asks the store
// even within storeFresh.
func (db *DB) storeSnapshot(useFresh bool) (*snapshot, error) {
	db.mu.RLock()
	now := db.now()
	last, down := db.snap, now.Before(db.storeDownUntil)
	fresh := useFresh && last != nil && now.Sub(db.storeCheckedAt) < storeFresh && !now.Before(db.storeCheckedAt)
	db.mu.RUnlock()
	if (down || fresh) && last != nil {
		return last, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	s, err := db.currentStore(ctx)
	if err == nil {
		return s, nil
	}
	db.mu.Lock()
	db.storeDownUntil = db.now().Add(storeRetry)
	last = db.snap
	db.mu.Unlock()
	if last == nil {
		return nil, err
	}
	if db.Logger != nil {
		db.Logger.Warn("auth: user database unreachable, using the users last read", "err", err, "retry_in", storeRetry)
	}
	return last, nil
}

// storeRetry is how long lookups answer from the users last read after
// the store could not be reached.
const storeRetry = 5 * time.Second

// storeFresh is how long after a version check lookups (not logins) take
// the users read then as current: a change made on another node reaches
// this node's deliveries within it, and its logins at once. An address
// not found in them is looked up again in the store (Lookup), so that a
// user just added is never refused.
const storeFresh = time.Second

// currentStore returns the snapshot of the store's entries, re-reading
// them when their version changed.
func (db *DB) currentStore(ctx context.Context) (*snapshot, error) {
	asked := db.now()
	v, err := db.store.Version(ctx)
	if err != nil {
		return nil, fmt.Errorf("auth: user database %s: %w", db.store.Name(), err)
	}
	db.mu.Lock()
	s := db.snap
	if s != nil && s.version == v {
		if asked.After(db.storeCheckedAt) {
			db.storeCheckedAt = asked
		}
		db.mu.Unlock()
		return s, nil
	}
	db.mu.Unlock()
	raws, v, err := db.store.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("auth: user database %s: %w", db.store.Name(), err)
	}
	s = newSnapshot(nil, parseLines(strings.Join(raws, "\n")))
	s.version = v
	db.mu.Lock()
	if db.snap == nil || db.snap.version != v {
		db.snap = s
		db.storeCheckedAt = asked
	}
	db.mu.Unlock()
	if db.Logger != nil {
		for _, p := range s.problems {
			db.Logger.Warn("auth: skipping an entry of the user database", "store", db.store.Name(), "entry", p.Line, "err", p.Err)
		}
	}
	return s, nil
}

// modifyStore is modify for a DB over a Store.
func (db *DB) modifyStore(ctx context.Context, change func([]fileLine, *snapshot) ([]fileLine, error)) error {
	err := db.store.Modify(ctx, func(raws []string) ([]string, error) {
		lines := parseLines(strings.Join(raws, "\n"))
		lines, err := change(lines, newSnapshot(nil, lines))
		if err != nil {
			return nil, err
		}
		// A Store keeps entries only: comments and lines that do not
		// parse are dropped, and of an address the first entry counts.
		out := make([]string, 0, len(lines))
		seen := make(map[string]bool, len(lines))
		for _, l := range lines {
			u, err := ParseLine(l.raw)
			if err != nil || seen[u.Address] {
				continue
			}
			seen[u.Address] = true
			out = append(out, u.line())
		}
		return out, nil
	})
	db.mu.Lock()
	db.snap = nil // re-read on next use
	db.mu.Unlock()
	return err
}

// line returns the passwd-file line of u.
func (u User) line() string {
	if u.Extra == nil {
		return u.Address + ":" + u.Hash
	}
	return u.Address + ":" + u.Hash + ":" + strings.Join(u.Extra, ":")
}

// AddUser adds u with its extra fields, as a copy from another user
// database does (postino db import). It returns ErrUserExists when the
// address is already a user, whatever its fields.
func (db *DB) AddUser(ctx context.Context, u User) error {
	u, err := checkUser(u)
	if err != nil {
		return err
	}
	addr := u.Address
	return db.modify(ctx, func(lines []fileLine, s *snapshot) ([]fileLine, error) {
		if _, ok := s.users[addr]; ok {
			return nil, fmt.Errorf("%w: %s", ErrUserExists, addr)
		}
		return append(lines, fileLine{raw: u.line()}), nil
	})
}

// checkUser checks a user to be stored as one line: a valid address
// (returned canonical), a usable hash, extra fields without ':' or a
// line break.
func checkUser(u User) (User, error) {
	addr, err := CanonicalAddress(u.Address)
	if err != nil {
		return User{}, err
	}
	if err := ValidateHash(u.Hash); err != nil {
		return User{}, err
	}
	for _, f := range u.Extra {
		if strings.ContainsAny(f, ":\r\n") {
			return User{}, fmt.Errorf("auth: user %s: extra field %q holds ':' or a line break", addr, f)
		}
	}
	u.Address = addr
	return u, nil
}
