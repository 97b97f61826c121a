package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postino-mail/postino/internal/dkim"
)

// DKIMKeys keeps the DKIM signing keys in PostgreSQL (schema version 3,
// table dkim_keys), so that every node signs with the same keys. It
// implements dkim.KeyStore.
type DKIMKeys struct {
	lazyPool
}

// NewDKIMKeys returns the keys kept in the database of pool.
func NewDKIMKeys(pool *pgxpool.Pool) *DKIMKeys { return &DKIMKeys{lazyPool{pool: pool}} }

// OpenDKIMKeys returns the keys kept in the database of dsn, over a pool
// of at most maxConns connections made on first use.
func OpenDKIMKeys(dsn string, maxConns int32) *DKIMKeys {
	return &DKIMKeys{lazyPool{dsn: dsn, maxConns: maxConns}}
}

// Close closes a pool OpenDKIMKeys made.
func (k *DKIMKeys) Close() {
	k.close("pgstore: dkim keys: closed")
}

// Version returns the keys' change counter.
func (k *DKIMKeys) Version(ctx context.Context) (int64, error) {
	pool, err := k.db(ctx)
	if err != nil {
		return 0, err
	}
	var v int64
	err = pool.QueryRow(ctx, `SELECT version FROM dkim_version`).Scan(&v)
	return v, schemaErr(err)
}

// Keys returns the keys of domain, by selector.
func (k *DKIMKeys) Keys(ctx context.Context, domain string) ([]dkim.StoredKey, error) {
	pool, err := k.db(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := pool.Query(ctx, `SELECT domain, selector, private_key FROM dkim_keys WHERE domain = $1 ORDER BY selector`, domain)
	if err != nil {
		return nil, schemaErr(err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (dkim.StoredKey, error) {
		var sk dkim.StoredKey
		var p string
		err := r.Scan(&sk.Domain, &sk.Selector, &p)
		sk.PEM = []byte(p)
		return sk, err
	})
}

// Add stores a new key.
func (k *DKIMKeys) Add(ctx context.Context, sk dkim.StoredKey) error {
	pool, err := k.db(ctx)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO dkim_keys (domain, selector, private_key) VALUES ($1, $2, $3)`, sk.Domain, sk.Selector, string(sk.PEM)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE dkim_version SET version = version + 1`)
		return err
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
		return fmt.Errorf("%w: %s %s", dkim.ErrKeyExists, sk.Domain, sk.Selector)
	}
	return schemaErr(err)
}
