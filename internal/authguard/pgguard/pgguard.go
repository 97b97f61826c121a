// Package pgguard keeps the failed-login state of internal/authguard in
// PostgreSQL (table login_failures of schema version 3, see
// internal/store/pgstore), so that the nodes of a cluster count failures
// together and enforce the same blocks. It implements authguard.Shared.
//
// Every statement is a single round trip: a failure is counted by one
// INSERT ... ON CONFLICT DO UPDATE that restarts an expired window and
// clears an ended block, so that failures from several nodes at once are
// all counted.
package pgguard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/store/pgstore"
)

// maxKey is the longest key stored as it is; longer keys (and keys that
// are not UTF-8 or hold NUL, which PostgreSQL's text refuses) are stored
// by their hash, so that a hostile user name is still counted.
const maxKey = 320

// Store is the failed-login state in PostgreSQL.
type Store struct {
	once sync.Once
	pool *pgxpool.Pool
	err  error
	open func() (*pgxpool.Pool, error)
}

// New returns the state kept in the database of pool, whose schema must
// be up to date (pgstore.Migrate).
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Open returns the state kept in the database of dsn, over a pool of at
// most maxConns connections made on first use.
func Open(dsn string, maxConns int32) *Store {
	return &Store{open: func() (*pgxpool.Pool, error) {
		return pgstore.NewPool(context.Background(), dsn, maxConns)
	}}
}

// db returns the pool, made on first use.
func (s *Store) db() (*pgxpool.Pool, error) {
	s.once.Do(func() {
		if s.pool == nil && s.open != nil {
			s.pool, s.err = s.open()
		}
	})
	if s.pool == nil && s.err == nil {
		return nil, errors.New("pgguard: no database")
	}
	return s.pool, s.err
}

var _ authguard.Shared = (*Store)(nil)

// dbKey returns the key as stored.
func dbKey(key string) string {
	if len(key) <= maxKey && utf8.ValidString(key) && !strings.ContainsRune(key, 0) {
		return key
	}
	kind, _, _ := strings.Cut(key, ":")
	if kind != "ip" {
		kind = "user"
	}
	sum := sha256.Sum256([]byte(key))
	return kind + ":sha256:" + hex.EncodeToString(sum[:])
}

const columns = `key, failures, window_start, blocked_until`

// scan reads a row of columns.
func scan(row pgx.Row) (authguard.SharedRecord, error) {
	var r authguard.SharedRecord
	var blocked *time.Time
	err := row.Scan(&r.Key, &r.Failures, &r.WindowStart, &blocked)
	if blocked != nil {
		r.BlockedUntil = *blocked
	}
	return r, err
}

// Get returns the record of key.
func (s *Store) Get(ctx context.Context, key string) (authguard.SharedRecord, bool, error) {
	pool, err := s.db()
	if err != nil {
		return authguard.SharedRecord{}, false, err
	}
	r, err := scan(pool.QueryRow(ctx, `SELECT `+columns+` FROM login_failures WHERE key = $1`, dbKey(key)))
	if errors.Is(err, pgx.ErrNoRows) {
		return authguard.SharedRecord{}, false, nil
	}
	if err != nil {
		return authguard.SharedRecord{}, false, fmt.Errorf("pgguard: %w", err)
	}
	return r, true, nil
}

// Fail counts one failure of key at now.
func (s *Store) Fail(ctx context.Context, key string, now time.Time, window time.Duration) (authguard.SharedRecord, error) {
	pool, err := s.db()
	if err != nil {
		return authguard.SharedRecord{}, err
	}
	r, err := scan(pool.QueryRow(ctx, `INSERT INTO login_failures AS f (key, failures, window_start) VALUES ($1, 1, $2)
		ON CONFLICT (key) DO UPDATE SET
			failures = CASE WHEN f.window_start < $2::timestamptz - $3 * interval '1 microsecond' THEN 1 ELSE f.failures + 1 END,
			window_start = CASE WHEN f.window_start < $2::timestamptz - $3 * interval '1 microsecond' THEN $2 ELSE f.window_start END,
			blocked_until = CASE WHEN f.blocked_until <= $2 THEN NULL ELSE f.blocked_until END
		RETURNING `+columns, dbKey(key), now, window.Microseconds()))
	if err != nil {
		return authguard.SharedRecord{}, fmt.Errorf("pgguard: %w", err)
	}
	return r, nil
}

// Block sets the end of key's block (a later end already set stays).
func (s *Store) Block(ctx context.Context, key string, until time.Time) error {
	pool, err := s.db()
	if err != nil {
		return err
	}
	_, err = pool.Exec(ctx, `UPDATE login_failures SET blocked_until = greatest(blocked_until, $2) WHERE key = $1`, dbKey(key), until)
	if err != nil {
		return fmt.Errorf("pgguard: %w", err)
	}
	return nil
}

// Forget removes key's record.
func (s *Store) Forget(ctx context.Context, key string) (authguard.SharedRecord, bool, error) {
	pool, err := s.db()
	if err != nil {
		return authguard.SharedRecord{}, false, err
	}
	r, err := scan(pool.QueryRow(ctx, `DELETE FROM login_failures WHERE key = $1 RETURNING `+columns, dbKey(key)))
	if errors.Is(err, pgx.ErrNoRows) {
		return authguard.SharedRecord{}, false, nil
	}
	if err != nil {
		return authguard.SharedRecord{}, false, fmt.Errorf("pgguard: %w", err)
	}
	return r, true, nil
}

// List returns every record.
func (s *Store) List(ctx context.Context) ([]authguard.SharedRecord, error) {
	pool, err := s.db()
	if err != nil {
		return nil, err
	}
	rows, err := pool.Query(ctx, `SELECT `+columns+` FROM login_failures ORDER BY key`)
	if err != nil {
		return nil, fmt.Errorf("pgguard: %w", err)
	}
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (authguard.SharedRecord, error) { return scan(r) })
	if err != nil {
		return nil, fmt.Errorf("pgguard: %w", err)
	}
	return recs, nil
}

// Sweep removes what has expired.
func (s *Store) Sweep(ctx context.Context, now time.Time, window time.Duration) error {
	pool, err := s.db()
	if err != nil {
		return err
	}
	_, err = pool.Exec(ctx, `DELETE FROM login_failures
		WHERE window_start < $1::timestamptz - $2 * interval '1 microsecond' AND (blocked_until IS NULL OR blocked_until <= $1::timestamptz)`, now, window.Microseconds())
	if err != nil {
		return fmt.Errorf("pgguard: %w", err)
	}
	return nil
}
