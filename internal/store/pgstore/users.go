package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Users keeps postino's users in PostgreSQL (schema version 3, table
// users), for every node sharing the database. It implements auth.Store:
// auth.OpenStoreDB over it is the user database in cluster mode. Every
// change bumps the single row of users_version, so that a node re-reads
// the table only when it changed, and a user added on one node can log in
// on any node at once.
type Users struct {
	lazyPool
}

// NewUsers returns the users kept in the database of pool, whose schema
// must be up to date (Migrate).
func NewUsers(pool *pgxpool.Pool) *Users { return &Users{lazyPool{pool: pool}} }

// OpenUsers returns the users kept in the database of dsn, over a pool of
// at most maxConns connections of their own made on first use (a bad
// DSN is then the error of every method).
func OpenUsers(dsn string, maxConns int32) *Users {
	return &Users{lazyPool{dsn: dsn, maxConns: maxConns}}
}

// schemaErr tells an error of a database without the table users (not
// migrated) as ErrSchemaTooOld.
func schemaErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return fmt.Errorf("%w (%s)", ErrSchemaTooOld, pe.Message)
	}
	return err
}

// Close closes a pool OpenUsers made; a pool given to NewUsers is its
// owner's to close.
func (u *Users) Close() {
	u.close("pgstore: users: closed")
}

// Name describes where the users are.
func (u *Users) Name() string { return "PostgreSQL table users" }

// Version returns the users' change counter.
func (u *Users) Version(ctx context.Context) (int64, error) {
	pool, err := u.db(ctx)
	if err != nil {
		return 0, err
	}
	var v int64
	err = pool.QueryRow(ctx, `SELECT version FROM users_version`).Scan(&v)
	return v, schemaErr(err)
}

// userLines returns every user as a passwd-file line, sorted by address,
// and the version, read in one snapshot.
func userLines(ctx context.Context, q pgx.Tx) ([]string, int64, error) {
	var v int64
	if err := q.QueryRow(ctx, `SELECT version FROM users_version`).Scan(&v); err != nil {
		return nil, 0, err
	}
	rows, err := q.Query(ctx, `SELECT address, password, extra FROM users ORDER BY address`)
	if err != nil {
		return nil, 0, err
	}
	lines, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var addr, pw string
		var extra []string
		if err := r.Scan(&addr, &pw, &extra); err != nil {
			return "", err
		}
		return joinLine(addr, pw, extra), nil
	})
	return lines, v, err
}

// joinLine makes the passwd-file line of a user.
func joinLine(addr, pw string, extra []string) string {
	if extra == nil {
		return addr + ":" + pw
	}
	return addr + ":" + pw + ":" + strings.Join(extra, ":")
}

// Load returns every user as a passwd-file line and the version.
func (u *Users) Load(ctx context.Context) (lines []string, version int64, err error) {
	pool, err := u.db(ctx)
	if err != nil {
		return nil, 0, err
	}
	err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		lines, version, err = userLines(ctx, tx)
		return err
	})
	return lines, version, schemaErr(err)
}

// userRow is a user as stored.
type userRow struct {
	pw    string
	extra []string // nil: no fields after the password
}

// parseUserLine splits a passwd-file line written by auth (its address
// already canonical). ok is false for lines that are not entries
// (comments, blank lines), which a table cannot keep.
func parseUserLine(line string) (addr string, r userRow, ok bool) {
	line = strings.TrimSuffix(line, "\r")
	if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
		return "", userRow{}, false
	}
	f := strings.Split(line, ":")
	if len(f) < 2 || f[0] == "" || f[1] == "" {
		return "", userRow{}, false
	}
	r.pw = f[1]
	if len(f) > 2 {
		r.extra = f[2:]
	}
	return f[0], r, true
}

// Modify calls change with every user as a passwd-file line, under the
// row lock of users_version (which serialises the modifications of every
// node), writes the difference to the table and bumps the version.
func (u *Users) Modify(ctx context.Context, change func(lines []string) ([]string, error)) error {
	pool, err := u.db(ctx)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT version FROM users_version FOR UPDATE`); err != nil {
			return err
		}
		lines, _, err := userLines(ctx, tx)
		if err != nil {
			return err
		}
		old := make(map[string]userRow, len(lines))
		for _, l := range lines {
			if a, r, ok := parseUserLine(l); ok {
				old[a] = r
			}
		}
		lines, err = change(lines)
		if err != nil {
			return err
		}
		want := make(map[string]userRow, len(lines))
		for _, l := range lines {
			a, r, ok := parseUserLine(l)
			if !ok {
				continue
			}
			if _, dup := want[a]; !dup { // the first entry of an address counts, as in a file
				want[a] = r
			}
		}
		for a := range old {
			if _, keep := want[a]; !keep {
				if _, err := tx.Exec(ctx, `DELETE FROM users WHERE address = $1`, a); err != nil {
					return err
				}
			}
		}
		for a, r := range want {
			if o, had := old[a]; had && o.pw == r.pw && sameExtra(o.extra, r.extra) {
				continue
			}
			if _, err := tx.Exec(ctx, `INSERT INTO users (address, password, extra) VALUES ($1, $2, $3)
				ON CONFLICT (address) DO UPDATE SET password = excluded.password, extra = excluded.extra, updated_at = now()`,
				a, r.pw, r.extra); err != nil {
				return fmt.Errorf("storing user %s: %w", a, err)
			}
		}
		_, err = tx.Exec(ctx, `UPDATE users_version SET version = version + 1`)
		return err
	})
	return schemaErr(err)
}

// sameExtra compares two extra-field lists, nil differing from empty.
func sameExtra(a, b []string) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
