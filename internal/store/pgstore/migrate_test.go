package pgstore

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// TestMigrateConcurrent: nodes starting at once apply each migration
// exactly once; a second run applies nothing.
func TestMigrateConcurrent(t *testing.T) {
	dsn := pgtest.NewDB(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	applied := make(chan []int, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pool, err := NewPool(ctx, dsn, 2)
			if err != nil {
				t.Error(err)
				return
			}
			defer pool.Close()
			v, err := Migrate(ctx, pool)
			if err != nil {
				t.Error(err)
			}
			applied <- v
		}()
	}
	wg.Wait()
	close(applied)
	total := 0
	for v := range applied {
		total += len(v)
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if total != len(ms) {
		t.Fatalf("%d migrations applied in all, want %d", total, len(ms))
	}
	pool, _ := NewPool(ctx, dsn, 2)
	defer pool.Close()
	if err := CheckSchema(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if v, err := Migrate(ctx, pool); err != nil || len(v) != 0 {
		t.Fatalf("second run applied %v, %v", v, err)
	}
}

// TestSchemaTooNew: a node refuses a database migrated by a newer
// postino, and one not migrated yet unless it migrates.
func TestSchemaTooNew(t *testing.T) {
	dsn := pgtest.NewDB(t)
	ctx := context.Background()
	if _, err := Open(ctx, Options{DSN: dsn}); !errors.Is(err, ErrSchemaTooOld) {
		t.Fatalf("unmigrated database: %v, want ErrSchemaTooOld", err)
	}
	s := node(t, dsn, Options{})
	if _, err := s.Pool().Exec(ctx, `INSERT INTO schema_version (version, name) VALUES ($1, 'future')`, LatestVersion()+1); err != nil {
		t.Fatal(err)
	}
	for _, migrate := range []bool{false, true} {
		if _, err := Open(ctx, Options{DSN: dsn, Migrate: migrate}); !errors.Is(err, ErrSchemaTooNew) {
			t.Fatalf("migrate=%v: %v, want ErrSchemaTooNew", migrate, err)
		}
	}
}

// TestMigrateMissingVersion: versions are numbered per feature, so a
// database may lack one below its highest (made by a build without that
// feature): it is too old, and Migrate applies exactly what is missing.
func TestMigrateMissingVersion(t *testing.T) {
	dsn := pgtest.NewDB(t)
	ctx := context.Background()
	s := node(t, dsn, Options{})
	pool := s.Pool()
	if _, err := pool.Exec(ctx, `DROP TABLE fetch_accounts, fetch_journal, fetch_leases; ALTER TABLE messages DROP COLUMN downloaded_at, DROP COLUMN vaulted_at;
		DELETE FROM schema_version WHERE version = 4`); err != nil {
		t.Fatal(err)
	}
	if err := CheckSchema(ctx, pool); !errors.Is(err, ErrSchemaTooOld) {
		t.Fatalf("CheckSchema without version 4: %v, want ErrSchemaTooOld", err)
	}
	applied, err := Migrate(ctx, pool)
	if err != nil || len(applied) != 1 || applied[0] != 4 {
		t.Fatalf("Migrate applied %v, %v; want [4]", applied, err)
	}
	if err := CheckSchema(ctx, pool); err != nil {
		t.Fatal(err)
	}
}
