package pgstore

import (
	"context"
	"errors"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"
)

// lazyPool is the connection pool of the small shared tables (users,
// aliases, DKIM keys, ACME cache): either a pool given by its owner, or
// one of at most maxConns connections made on first use from dsn, so that
// a command that never touches a table opens no connection for it.
type lazyPool struct {
	once     sync.Once
	pool     *pgxpool.Pool
	err      error
	dsn      string
	maxConns int32
}

// db returns the pool, making it on first use.
func (l *lazyPool) db(ctx context.Context) (*pgxpool.Pool, error) {
	l.once.Do(func() {
		if l.pool == nil {
			l.pool, l.err = NewPool(ctx, l.dsn, l.maxConns)
		}
	})
	return l.pool, l.err
}

// close closes a pool made from dsn (a pool given by its owner is the
// owner's to close); afterwards, db fails with closedErr when it had not
// made the pool yet.
func (l *lazyPool) close(closedErr string) {
	l.once.Do(func() { l.err = errors.New(closedErr) })
	if l.dsn != "" && l.pool != nil {
		l.pool.Close()
	}
}
