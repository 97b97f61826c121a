package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/acme/autocert"
)

// ACMECache keeps internal/acmecert's cache in PostgreSQL (schema
// version 3, table acme_cache) for every node, and locks a name while a
// node orders its certificate (Lock). It implements autocert.Cache.
type ACMECache struct {
	lazyPool
}

// NewACMECache returns the cache kept in the database of pool.
func NewACMECache(pool *pgxpool.Pool) *ACMECache { return &ACMECache{lazyPool{pool: pool}} }

// OpenACMECache returns the cache kept in the database of dsn, over a
// pool of at most maxConns connections made on first use (a held Lock
// takes one).
func OpenACMECache(dsn string, maxConns int32) *ACMECache {
	return &ACMECache{lazyPool{dsn: dsn, maxConns: maxConns}}
}

// maxACMEData bounds an entry (a certificate chain and its key are a
// few KiB).
const maxACMEData = 1 << 20

// Get returns the data of key, or autocert.ErrCacheMiss.
func (c *ACMECache) Get(ctx context.Context, key string) ([]byte, error) {
	pool, err := c.db(ctx)
	if err != nil {
		return nil, err
	}
	var data []byte
	err = pool.QueryRow(ctx, `SELECT data FROM acme_cache WHERE key = $1`, key).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, autocert.ErrCacheMiss
	}
	return data, schemaErr(err)
}

// Put stores data under key.
func (c *ACMECache) Put(ctx context.Context, key string, data []byte) error {
	if key == "" || len(data) > maxACMEData {
		return fmt.Errorf("pgstore: acme cache: refusing an entry of %d octets under %q", len(data), key)
	}
	pool, err := c.db(ctx)
	if err != nil {
		return err
	}
	_, err = pool.Exec(ctx, `INSERT INTO acme_cache (key, data) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_at = now()`, key, data)
	return schemaErr(err)
}

// Delete removes key; a missing key is not an error.
func (c *ACMECache) Delete(ctx context.Context, key string) error {
	pool, err := c.db(ctx)
	if err != nil {
		return err
	}
	_, err = pool.Exec(ctx, `DELETE FROM acme_cache WHERE key = $1`, key)
	return schemaErr(err)
}

// Lock waits until no other node orders a certificate for name, takes
// the name's advisory lock (a session lock on a connection of its own)
// and returns its release. A node that dies releases it with its
// connection.
func (c *ACMECache) Lock(ctx context.Context, name string) (unlock func(), err error) {
	pool, err := c.db(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended('postino acme ' || $1, 0))`, name); err != nil {
		conn.Release()
		return nil, fmt.Errorf("pgstore: acme lock of %s: %w", name, err)
	}
	return func() {
		ctx := context.WithoutCancel(ctx)
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtextextended('postino acme ' || $1, 0))`, name); err != nil {
			conn.Conn().Close(ctx) // the lock goes with the session
		}
		conn.Release()
	}, nil
}

var _ autocert.Cache = (*ACMECache)(nil)

// Close closes a pool OpenACMECache made.
func (c *ACMECache) Close() {
	c.close("pgstore: acme cache: closed")
}
