package pgstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Aliases keeps postino's aliases in PostgreSQL (schema version 3, table
// aliases) for every node. It implements aliases.Source; each change
// bumps aliases_version, which the nodes check at most once per
// aliases.Reloading's CheckInterval (a second), so a change is in force
// on every node within about a second.
type Aliases struct {
	lazyPool
}

// NewAliases returns the aliases kept in the database of pool.
func NewAliases(pool *pgxpool.Pool) *Aliases { return &Aliases{lazyPool{pool: pool}} }

// OpenAliases returns the aliases kept in the database of dsn, over a
// pool of at most maxConns connections made on first use.
func OpenAliases(dsn string, maxConns int32) *Aliases {
	return &Aliases{lazyPool{dsn: dsn, maxConns: maxConns}}
}

// Close closes a pool OpenAliases made.
func (a *Aliases) Close() {
	a.close("pgstore: aliases: closed")
}

// Name describes where the aliases are.
func (a *Aliases) Name() string { return "PostgreSQL table aliases" }

// Version returns the aliases' change counter.
func (a *Aliases) Version(ctx context.Context) (int64, error) {
	pool, err := a.db(ctx)
	if err != nil {
		return 0, err
	}
	var v int64
	err = pool.QueryRow(ctx, `SELECT version FROM aliases_version`).Scan(&v)
	return v, schemaErr(err)
}

// AliasEntry is one row of the aliases: key ("local@domain" or
// "@domain") and targets.
type AliasEntry struct {
	Key     string
	Targets []string
}

// aliasRows reads every alias in one snapshot with the version.
func aliasRows(ctx context.Context, tx pgx.Tx) ([]AliasEntry, int64, error) {
	var v int64
	if err := tx.QueryRow(ctx, `SELECT version FROM aliases_version`).Scan(&v); err != nil {
		return nil, 0, err
	}
	rows, err := tx.Query(ctx, `SELECT key, targets FROM aliases ORDER BY key`)
	if err != nil {
		return nil, 0, err
	}
	es, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AliasEntry, error) {
		var e AliasEntry
		err := r.Scan(&e.Key, &e.Targets)
		return e, err
	})
	return es, v, err
}

// checkAliasEntry refuses a key or target that could not be one word
// of an aliases file line (a line break would let a row add lines).
func checkAliasEntry(e AliasEntry) error {
	for _, w := range append([]string{e.Key}, e.Targets...) {
		if w == "" || strings.ContainsAny(w, " \t\r\n\x00,#") || (w != e.Key && strings.Contains(w, ":")) {
			return fmt.Errorf("pgstore: alias %q: %q is not a single address", e.Key, w)
		}
	}
	return nil
}

// aliasText renders entries in the syntax of an aliases file; an entry
// that cannot be rendered as one line is an error.
func aliasText(es []AliasEntry) ([]byte, error) {
	var b strings.Builder
	for _, e := range es {
		if err := checkAliasEntry(e); err != nil {
			return nil, err
		}
		b.WriteString(e.Key + ": " + strings.Join(e.Targets, ", ") + "\n")
	}
	return []byte(b.String()), nil
}

// Load returns the aliases in the syntax of an aliases file.
func (a *Aliases) Load(ctx context.Context) ([]byte, int64, error) {
	pool, err := a.db(ctx)
	if err != nil {
		return nil, 0, err
	}
	var es []AliasEntry
	var v int64
	err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		es, v, err = aliasRows(ctx, tx)
		return err
	})
	if err != nil {
		return nil, 0, schemaErr(err)
	}
	text, err := aliasText(es)
	return text, v, err
}

// Modify calls change with every alias under the row lock of
// aliases_version (serialising the changes of every node), checks the
// result with check (given it in the syntax of an aliases file:
// aliases.Parse), and stores it, bumping the version. Nothing is stored
// when change or check fails.
func (a *Aliases) Modify(ctx context.Context, change func([]AliasEntry) ([]AliasEntry, error), check func([]byte) error) error {
	pool, err := a.db(ctx)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT version FROM aliases_version FOR UPDATE`); err != nil {
			return err
		}
		old, _, err := aliasRows(ctx, tx)
		if err != nil {
			return err
		}
		es, err := change(append([]AliasEntry(nil), old...))
		if err != nil {
			return err
		}
		text, err := aliasText(es)
		if err != nil {
			return err
		}
		if err := check(text); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM aliases`); err != nil {
			return err
		}
		for _, e := range es {
			if _, err := tx.Exec(ctx, `INSERT INTO aliases (key, targets) VALUES ($1, $2)`, e.Key, e.Targets); err != nil {
				return fmt.Errorf("storing alias %s: %w", e.Key, err)
			}
		}
		_, err = tx.Exec(ctx, `UPDATE aliases_version SET version = version + 1`)
		return err
	})
	return schemaErr(err)
}
