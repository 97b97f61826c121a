package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey is the pg_advisory_lock key held while migrating
// ("postino" in ASCII).
const migrationLockKey int64 = 0x706f7374696e6f

// ErrSchemaTooNew is returned when the database's schema is newer than
// the newest this build of postino knows: it must not run against it.
var ErrSchemaTooNew = errors.New("pgstore: database schema is newer than this postino understands")

// ErrSchemaTooOld is returned by CheckSchema when migrations are missing
// ("postino db migrate" applies them).
var ErrSchemaTooOld = errors.New("pgstore: database schema is older than this postino; run postino db migrate")

// migration is one embedded schema version.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	ents, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range ents {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("pgstore: bad migration file name %q", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	// Versions are fixed per feature, so a build may lack some (each
	// migration depends on version 1 only): they must only be unique.
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("pgstore: two migrations numbered %d: %s", ms[i].version, ms[i].name)
		}
	}
	if len(ms) == 0 || ms[0].version != 1 {
		return nil, errors.New("pgstore: migration 1 is missing")
	}
	return ms, nil
}

// LatestVersion returns the newest schema version this build knows.
func LatestVersion() int {
	ms, err := migrations()
	if err != nil {
		panic(err) // the embedded files are checked by the tests
	}
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

const createVersionTable = `CREATE TABLE IF NOT EXISTS schema_version (
	version    integer     PRIMARY KEY,
	name       text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// currentVersion returns the highest applied version, 0 for none.
func currentVersion(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, err
	}
	if !exists {
		return 0, nil
	}
	var v int
	err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&v)
	return v, err
}

// missing returns the migrations of ms the database lacks, given the
// versions applied (appliedVersions), and the highest applied version.
func missing(ms []migration, applied map[int]bool) (todo []migration, top int) {
	for v := range applied {
		top = max(top, v)
	}
	for _, m := range ms {
		if !applied[m.version] {
			todo = append(todo, m)
		}
	}
	return todo, top
}

// appliedVersions returns the versions of schema_version (none when the
// table does not exist).
func appliedVersions(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[int]bool, error) {
	if v, err := currentVersion(ctx, q); err != nil || v == 0 {
		return map[int]bool{}, err
	}
	rows, err := q.Query(ctx, `SELECT version FROM schema_version`)
	if err != nil {
		return nil, err
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, err
	}
	out := make(map[int]bool, len(vs))
	for _, v := range vs {
		out[v] = true
	}
	return out, nil
}

// CheckSchema returns nil when the database has exactly the schema this
// build knows, ErrSchemaTooNew or ErrSchemaTooOld otherwise.
func CheckSchema(ctx context.Context, pool *pgxpool.Pool) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	applied, err := appliedVersions(ctx, pool)
	if err != nil {
		return fmt.Errorf("pgstore: reading schema version: %w", err)
	}
	todo, v := missing(ms, applied)
	switch latest := LatestVersion(); {
	case v > latest:
		return fmt.Errorf("%w (database %d, postino %d)", ErrSchemaTooNew, v, latest)
	case len(todo) > 0:
		return fmt.Errorf("%w (database %d, postino %d, missing %s)", ErrSchemaTooOld, v, latest, todo[0].name)
	}
	return nil
}

// Migrate brings the database's schema to the newest version this build
// knows and returns the versions it applied. It holds an advisory lock
// meanwhile, so that nodes migrating at once apply each version once.
// A schema newer than known is ErrSchemaTooNew, and nothing is changed.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (applied []int, err error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	// The fast path: nothing to do, no lock taken.
	if applied, err := appliedVersions(ctx, pool); err == nil {
		if todo, v := missing(ms, applied); len(todo) == 0 && v <= LatestVersion() {
			return nil, nil
		}
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("pgstore: migrate: %w", err)
	}
	defer conn.Release()
	// A session-level advisory lock on one connection, released before
	// the connection goes back to the pool.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return nil, fmt.Errorf("pgstore: migrate: taking the lock: %w", err)
	}
	defer func() {
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLockKey); uerr != nil {
			// A connection that may still hold the lock must not be reused.
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}()
	if _, err := conn.Exec(ctx, createVersionTable); err != nil {
		return nil, fmt.Errorf("pgstore: migrate: %w", err)
	}
	done, err := appliedVersions(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: migrate: %w", err)
	}
	todo, v := missing(ms, done)
	if v > LatestVersion() {
		return nil, fmt.Errorf("%w (database %d, postino %d)", ErrSchemaTooNew, v, LatestVersion())
	}
	for _, m := range todo {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_version (version, name) VALUES ($1, $2)`, m.version, m.name)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("pgstore: migration %s: %w", m.name, err)
		}
		applied = append(applied, m.version)
	}
	return applied, nil
}
