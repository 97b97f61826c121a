package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postino-mail/postino/internal/store"
)

// ErrLockLost is the cause of a session ended because its maildrop lease
// could not be renewed in time, and the error of a Commit that found the
// lease no longer its own: nothing was applied.
var ErrLockLost = errors.New("pgstore: maildrop lock lost")

// locker holds a node's maildrop leases and renews them.
type locker struct {
	pool *pgxpool.Pool
	node string
	ttl  time.Duration
	log  *slog.Logger

	mu     sync.Mutex
	leases map[string]*lease // by token
	paused bool              // tests: the renewer does nothing (a dead node)
}

// lease is one held maildrop lock.
type lease struct {
	mailbox string
	token   string
	cancel  context.CancelCauseFunc
	timer   *time.Timer // ends the session at its local deadline
	gone    atomic.Bool // lost: the row is expired or another's
}

func newLocker(pool *pgxpool.Pool, node string, ttl time.Duration, log *slog.Logger) *locker {
	return &locker{pool: pool, node: node, ttl: ttl, log: log, leases: map[string]*lease{}}
}

// margin is how long before the lease's expiry in the database a session
// that could not renew it ends: time for the session to stop before
// another node may take the lock.
func (l *locker) margin() time.Duration { return l.ttl / 6 }

// acquire takes the mailbox's lease, or returns store.ErrLocked. The
// returned context is cancelled, with cause ErrLockLost, if the lease
// cannot be renewed in time.
//
// then, if not nil, queues statements sent in the same round trip, after
// the lock's and in the same implicit transaction, and read reads their
// results once the lock is taken (a read error undoes the lock).
func (l *locker) acquire(ctx context.Context, mailbox string, then func(*pgx.Batch), read func(pgx.BatchResults) error) (*lease, context.Context, error) {
	token := newToken()
	start := time.Now()
	// RFC 1939 §4: the exclusive-access lock on the maildrop. A row
	// whose lease expired (its holder dead or partitioned) is taken over.
	var got string
	b := &pgx.Batch{}
	asyncCommit(b)
	b.Queue(`INSERT INTO maildrop_locks (mailbox, token, node_id, expires_at)
		VALUES ($1, $2, $3, now() + make_interval(secs => $4))
		ON CONFLICT (mailbox) DO UPDATE SET token = excluded.token, node_id = excluded.node_id,
			acquired_at = now(), expires_at = excluded.expires_at
		WHERE maildrop_locks.expires_at <= now()
		RETURNING token`, mailbox, token, l.node, l.ttl.Seconds())
	if then != nil {
		then(b)
	}
	br := l.pool.SendBatch(ctx, b)
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&got)
	}
	if err == nil && read != nil {
		err = read(br)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if isNoRows(err) {
			return nil, nil, store.ErrLocked
		}
		if got != "" {
			// Taken, but what came with it failed: give it back (if the
			// database is out of reach, the row expires by itself).
			l.pool.Exec(context.WithoutCancel(ctx), `DELETE FROM maildrop_locks WHERE mailbox = $1 AND token = $2`, mailbox, token)
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("pgstore: locking %s: %w", mailbox, err)
	}
	sctx, cancel := context.WithCancelCause(context.Background())
	ls := &lease{mailbox: mailbox, token: token, cancel: cancel}
	ls.timer = time.AfterFunc(time.Until(start.Add(l.ttl-l.margin())), func() { l.lost(ls) })
	l.mu.Lock()
	l.leases[token] = ls
	l.mu.Unlock()
	return ls, sctx, nil
}

// lost ends the session of a lease that was not renewed in time.
func (l *locker) lost(ls *lease) {
	l.mu.Lock()
	_, held := l.leases[ls.token]
	delete(l.leases, ls.token)
	l.mu.Unlock()
	if held {
		l.log.Warn("pgstore: maildrop lock lost, ending the session", "mailbox", ls.mailbox)
		ls.gone.Store(true)
		ls.cancel(ErrLockLost)
	}
}

// asyncCommit queues, first in a batch (an implicit transaction), the
// setting that lets that transaction's COMMIT return before its WAL
// record is flushed: for the lease rows, whose loss in a database crash
// or failover is harmless. A lease row lost that way is found missing by
// the holder's next renewal, which ends its session, and until then the
// fencing check of Commit refuses its deletions (the row is gone): two
// sessions may briefly both read the maildrop, but no stale one applies
// an UPDATE. What it saves is a WAL flush (and a wait for a synchronous
// standby) at every login and logout.
func asyncCommit(b *pgx.Batch) {
	b.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
}

// execAsync runs one statement whose commit does not wait for the WAL
// flush (asyncCommit), in one round trip.
func execAsync(ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) error {
	b := &pgx.Batch{}
	asyncCommit(b)
	b.Queue(sql, args...)
	return pool.SendBatch(ctx, b).Close()
}

// release forgets the lease and deletes its row if still ours. then, if
// not nil, queues statements sent in the same round trip and implicit
// transaction (committed without waiting for the WAL flush: asyncCommit),
// before the row's deletion.
func (l *locker) release(ctx context.Context, ls *lease, then func(*pgx.Batch)) error {
	ls.timer.Stop()
	l.mu.Lock()
	delete(l.leases, ls.token)
	l.mu.Unlock()
	ls.cancel(context.Canceled)
	if ls.gone.Load() {
		// Expiring or taken over: nothing to delete, and the database
		// may well be out of reach (the usual reason for the loss).
		return nil
	}
	b := &pgx.Batch{}
	asyncCommit(b)
	if then != nil {
		then(b)
	}
	b.Queue(`DELETE FROM maildrop_locks WHERE mailbox = $1 AND token = $2`, ls.mailbox, ls.token)
	err := l.pool.SendBatch(ctx, b).Close()
	if err != nil && then != nil {
		// What came with the release failed, and took the release with
		// it (one transaction): release on its own, rather than leave
		// the mailbox locked until the row expires.
		l.log.Warn("pgstore: statements sent with a lock's release failed", "mailbox", ls.mailbox, "err", err)
		err = execAsync(ctx, l.pool, `DELETE FROM maildrop_locks WHERE mailbox = $1 AND token = $2`, ls.mailbox, ls.token)
	}
	if err != nil {
		// The row expires by itself within the TTL.
		return fmt.Errorf("pgstore: unlocking %s: %w", ls.mailbox, err)
	}
	return nil
}

// releaseAll ends every session (at shutdown).
func (l *locker) releaseAll() {
	l.mu.Lock()
	all := make([]*lease, 0, len(l.leases))
	for _, ls := range l.leases {
		all = append(all, ls)
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, ls := range all {
		l.release(ctx, ls, nil)
	}
}

// run renews the node's leases every TTL/3 until ctx ends.
func (l *locker) run(ctx context.Context) {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.renew(ctx)
		}
	}
}

// renew extends every lease of the node in one statement. A lease the
// statement did not find (taken over after it expired) is lost at once;
// when the statement fails, each lease's timer ends its session at its
// deadline unless a later renewal succeeds.
func (l *locker) renew(ctx context.Context) {
	l.mu.Lock()
	if l.paused || len(l.leases) == 0 {
		l.mu.Unlock()
		return
	}
	tokens := make([]string, 0, len(l.leases))
	for tok := range l.leases {
		tokens = append(tokens, tok)
	}
	l.mu.Unlock()
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	// A join with the tokens (hashed), not token = ANY($2), which
	// compares every row with every token.
	rows, err := l.pool.Query(rctx, `UPDATE maildrop_locks l SET expires_at = now() + make_interval(secs => $3)
		FROM unnest($2::text[]) AS t(token)
		WHERE l.token = t.token AND l.node_id = $1 AND l.expires_at > now() RETURNING l.token`, l.node, tokens, l.ttl.Seconds())
	if err != nil {
		l.log.Error("pgstore: renewing maildrop locks", "locks", len(tokens), "err", err)
		return
	}
	renewed := map[string]bool{}
	for rows.Next() {
		var tok string
		if err := rows.Scan(&tok); err == nil {
			renewed[tok] = true
		}
	}
	if err := rows.Err(); err != nil {
		l.log.Error("pgstore: renewing maildrop locks", "locks", len(tokens), "err", err)
		return
	}
	deadline := start.Add(l.ttl - l.margin())
	var gone []*lease
	l.mu.Lock()
	for _, tok := range tokens {
		ls, ok := l.leases[tok]
		if !ok {
			continue // released meanwhile
		}
		if renewed[tok] {
			ls.timer.Reset(time.Until(deadline))
		} else {
			gone = append(gone, ls)
		}
	}
	l.mu.Unlock()
	for _, ls := range gone {
		l.lost(ls)
	}
}

// setPaused stops (or resumes) renewals, as if the node hung: tests.
func (l *locker) setPaused(p bool) {
	l.mu.Lock()
	l.paused = p
	l.mu.Unlock()
}
