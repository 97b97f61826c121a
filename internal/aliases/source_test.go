package aliases

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/store/pgstore"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// pgAliases returns two nodes' aliases on one fresh, migrated database.
func pgAliases(t *testing.T) (*pgstore.Aliases, *pgstore.Aliases, string) {
	t.Helper()
	dsn := pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgstore.NewPool(ctx, dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pgstore.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	b := pgstore.OpenAliases(dsn, 2)
	t.Cleanup(b.Close)
	return pgstore.NewAliases(pool), b, dsn
}

// set stores the aliases of an aliases file's text through src, checked
// as the file would be.
func set(ctx context.Context, src *pgstore.Aliases, text string) error {
	tab, err := Parse([]byte(text))
	if err != nil {
		return err
	}
	return src.Modify(ctx, func([]pgstore.AliasEntry) ([]pgstore.AliasEntry, error) {
		var es []pgstore.AliasEntry
		for _, e := range tab.Entries() {
			es = append(es, pgstore.AliasEntry{Key: e.Key, Targets: e.Targets})
		}
		return es, nil
	}, func(b []byte) error { _, err := Parse(b); return err })
}

// TestSourceReloading: aliases in PostgreSQL expand as the same file
// would; a change made through one node is in force on another at its
// next check; a change that would loop is refused and changes nothing.
func TestSourceReloading(t *testing.T) {
	a, b, _ := pgAliases(t)
	ctx := context.Background()
	if err := set(ctx, a, "sales@Example.test: alice@example.test, bob@example.test\n@example.test: postmaster@example.test\n"); err != nil {
		t.Fatal(err)
	}
	r, err := NewSourceReloading(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.CheckInterval = 0
	if got, ok := r.Expand("SALES@example.TEST"); !ok || !slices.Equal(got, []string{"alice@example.test", "bob@example.test"}) {
		t.Errorf("Expand(sales) = %v, %v", got, ok)
	}
	if got, ok := r.CatchAll("EXAMPLE.test"); !ok || got != "postmaster@example.test" {
		t.Errorf("CatchAll = %q, %v", got, ok)
	}
	if err := set(ctx, a, "team@example.test: sales@example.test, carol@elsewhere.example\nsales@example.test: dave@example.test\n"); err != nil {
		t.Fatal(err)
	}
	if got, ok := r.Expand("team@example.test"); !ok || !slices.Equal(got, []string{"dave@example.test", "carol@elsewhere.example"}) {
		t.Errorf("Expand(team) after the change on another node = %v, %v", got, ok)
	}
	if _, ok := r.CatchAll("example.test"); ok {
		t.Error("the removed catch-all is still in force")
	}
	// A loop is refused by the check, inside the transaction.
	err = a.Modify(ctx, func(es []pgstore.AliasEntry) ([]pgstore.AliasEntry, error) {
		return append(es, pgstore.AliasEntry{Key: "dave@example.test", Targets: []string{"team@example.test"}}), nil
	}, func(b []byte) error { _, err := Parse(b); return err })
	if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), "loop") {
		t.Errorf("Modify making a loop = %v; want a loop error", err)
	}
	text, _, err := b.Load(ctx)
	if err != nil || strings.Contains(string(text), "dave@example.test: ") {
		t.Errorf("after the refused change: %q, %v", text, err)
	}
	if es := r.Table().Entries(); len(es) != 2 || es[0].Key != "sales@example.test" || es[1].Key != "team@example.test" {
		t.Errorf("Entries = %+v", es)
	}
}

// TestSourceHostileRows: rows written by hand that do not parse leave
// the last good table in force and are reported by Err.
func TestSourceHostileRows(t *testing.T) {
	a, b, dsn := pgAliases(t)
	ctx := context.Background()
	if err := set(ctx, a, "x@example.test: y@example.test\n"); err != nil {
		t.Fatal(err)
	}
	r, err := NewSourceReloading(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.CheckInterval = 0
	// A target that would add a line is refused even without the check.
	err = a.Modify(ctx, func(es []pgstore.AliasEntry) ([]pgstore.AliasEntry, error) {
		return append(es, pgstore.AliasEntry{Key: "evil@example.test", Targets: []string{"a@example.test\nroot@example.test: attacker@evil.example"}}), nil
	}, func([]byte) error { return nil })
	if err == nil {
		t.Fatal("a target with a line break was stored")
	}
	// Rows written by hand: one the parser refuses, one with a line break.
	pool, err := pgstore.NewPool(ctx, dsn, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, row := range [][]any{
		{"../evil@example.test", []string{"a@example.test"}},
		{"evil@example.test", []string{"a@example.test\nroot@example.test: attacker@evil.example"}},
	} {
		if _, err := pool.Exec(ctx, `INSERT INTO aliases (key, targets) VALUES ($1, $2)`, row...); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `UPDATE aliases_version SET version = version + 1`); err != nil {
			t.Fatal(err)
		}
		if got, ok := r.Expand("x@example.test"); !ok || len(got) != 1 {
			t.Errorf("last good table not kept: %v, %v", got, ok)
		}
		if _, ok := r.Expand("root@example.test"); ok {
			t.Error("an injected line was taken")
		}
		if r.Err() == nil {
			t.Error("Err() = nil after a broken change")
		}
		pool.Exec(ctx, `DELETE FROM aliases WHERE key = $1`, row[0])
	}
}
