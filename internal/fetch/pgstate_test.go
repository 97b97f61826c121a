package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postino-mail/postino/internal/store/pgstore"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// fetchDB returns a pool on a new, migrated database.
func fetchDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool, err := pgstore.NewPool(ctx, pgtest.NewDB(t), 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pgstore.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// TestPGStateTwoNodes: two nodes fetch one account from one server at
// the same time, round after round, mail arriving in between and being
// deleted once delivered: never two sessions at once on the server, the
// second node is told the account is locked, and every message is
// delivered exactly once.
func TestPGStateTwoNodes(t *testing.T) {
	pool := fetchDB(t)
	srv := startFakePOP(t, SecurityNone)
	srv.retrDelay = 5 * time.Millisecond
	dir := t.TempDir()
	nodes := []*Fetcher{
		{StateDir: t.TempDir(), States: &PGStates{Pool: pool, NodeID: "n1", LeaseTTL: 3 * time.Second}},
		{StateDir: t.TempDir(), States: &PGStates{Pool: pool, NodeID: "n2", LeaseTTL: 3 * time.Second}},
	}
	total, locked := 0, 0
	for round := range 6 {
		for range 10 {
			total++
			srv.add(fmt.Sprintf("u%d", total), fakeMessage(fmt.Sprintf("m%d", total)))
		}
		var wg sync.WaitGroup
		errs := make([]error, len(nodes))
		for i, f := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := srv.account(SecurityNone, dir)
				a.Delete = round%2 == 1
				_, errs[i] = f.Run(context.Background(), a)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			switch {
			case errors.Is(err, ErrStateLocked):
				locked++
			case err != nil:
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	// Whatever is left: one more run.
	if _, err := nodes[0].Run(context.Background(), srv.account(SecurityNone, dir)); err != nil {
		t.Fatal(err)
	}
	if srv.maxActive != 1 {
		t.Errorf("%d sessions at once on the server, want 1", srv.maxActive)
	}
	if locked == 0 {
		t.Error("no node was ever told the account was locked")
	}
	got := subjects(t, dir)
	for i := 1; i <= total; i++ {
		if n := got[fmt.Sprintf("m%d", i)]; n != 1 {
			t.Errorf("m%d delivered %d times", i, n)
		}
	}
	if len(got) != total {
		t.Errorf("%d distinct messages delivered, want %d", len(got), total)
	}
}

// TestPGStateTakeover: a node dies (its lease is no longer renewed)
// after recording an intent; the other is refused until the lease
// expires, then takes the account over and finds the pending intent;
// the dead node, back, can record nothing (fencing).
func TestPGStateTakeover(t *testing.T) {
	pool := fetchDB(t)
	ctx := context.Background()
	ttl := 2 * time.Second
	n1 := &PGStates{Pool: pool, NodeID: "n1", LeaseTTL: ttl}
	n2 := &PGStates{Pool: pool, NodeID: "n2", LeaseTTL: ttl}
	s1, err := n1.OpenState(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	m := &Message{ID: ID{Key: "u1", SHA256: "aa"}, Size: 10, BodySHA256: "bb", BodySize: 5}
	if err := s1.Intents([]*Message{m}); err != nil {
		t.Fatal(err)
	}
	if err := s1.Done("u1", "d1", "aa", 10); err != nil {
		t.Fatal(err)
	}
	// The node freezes: no more renewals, nothing released.
	s1.pg.stopRenew()

	if _, err := n2.OpenState(ctx, "acct"); !errors.Is(err, ErrStateLocked) {
		t.Fatalf("second node while the lease runs: %v, want ErrStateLocked", err)
	}
	var s2 *StateFile
	deadline := time.Now().Add(3 * ttl)
	for {
		s2, err = n2.OpenState(ctx, "acct")
		if err == nil {
			break
		}
		if !errors.Is(err, ErrStateLocked) || time.Now().After(deadline) {
			t.Fatalf("taking over: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer s2.Close()
	// The done record was never committed: the intent is pending, for
	// recovery to look for the message at the destination.
	if r := s2.State.Messages["u1"]; r == nil || !r.Pending || r.Delivered() || r.BodySHA256 != "bb" {
		t.Fatalf("state taken over: %+v, want u1 pending", r)
	}
	// The old node wakes up: its records are refused.
	if err := s1.Sync(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("old node's Sync: %v, want ErrLeaseLost", err)
	}
	if err := s1.Save(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("old node's Save: %v, want ErrLeaseLost", err)
	}
	select {
	case <-s1.Lost():
	default:
		t.Fatal("old node's Lost() not closed")
	}
	s1.Close()
	// The new holder's records go through, and survive a reopen.
	if err := s2.Done("u1", "d1", "aa", 10); err != nil {
		t.Fatal(err)
	}
	if err := s2.Sync(); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	s3, err := n1.OpenState(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	if r := s3.State.Messages["u1"]; r == nil || r.Pending || !r.Delivered() || r.Dest != "d1" {
		t.Fatalf("state after takeover: %+v", r)
	}
}

// TestPGStateRenewal: a lease is renewed while the account is held, far
// beyond its length; released at Close, the account is free at once.
func TestPGStateRenewal(t *testing.T) {
	pool := fetchDB(t)
	ctx := context.Background()
	ttl := time.Second
	n1 := &PGStates{Pool: pool, NodeID: "n1", LeaseTTL: ttl}
	n2 := &PGStates{Pool: pool, NodeID: "n2", LeaseTTL: ttl}
	s1, err := n1.OpenState(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * ttl)
	if _, err := n2.OpenState(ctx, "acct"); !errors.Is(err, ErrStateLocked) {
		t.Fatalf("other node after 3 lease lengths: %v, want ErrStateLocked", err)
	}
	if err := s1.Intent("u1", &Message{ID: ID{SHA256: "aa"}, Size: 1}); err != nil {
		t.Fatalf("holder's intent after 3 lease lengths: %v", err)
	}
	select {
	case <-s1.Lost():
		t.Fatal("lease lost while renewed")
	default:
	}
	s1.Close()
	s2, err := n2.OpenState(ctx, "acct")
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	defer s2.Close()
	if r := s2.State.Messages["u1"]; r == nil || !r.Pending {
		t.Fatalf("intent not shared: %+v", r)
	}
}

// TestPGStateDatabaseCut: a node cut from the database gives its lease
// up (Lost) before the lease can pass to another node, and its run ends
// with ErrLeaseLost (exit code 7) having recorded nothing more.
func TestPGStateDatabaseCut(t *testing.T) {
	pool := fetchDB(t)
	ctx := context.Background()
	proxy := pgtest.NewProxy(t, pgtest.Addr(t))
	dsn := fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable&connect_timeout=1", proxy.Addr(), pool.Config().ConnConfig.Database)
	cut, err := pgstore.NewPool(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer cut.Close()
	ttl := 1500 * time.Millisecond
	s1, err := (&PGStates{Pool: cut, NodeID: "n1", LeaseTTL: ttl}).OpenState(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	proxy.Close()
	start := time.Now()
	select {
	case <-s1.Lost():
	case <-time.After(3 * ttl):
		t.Fatal("lease not given up after the database was cut")
	}
	el := time.Since(start)
	t.Logf("lease given up %v after the cut", el)
	if el >= ttl {
		t.Errorf("lease given up after %v, not before it expired (%v)", el, ttl)
	}
	if err := s1.Intent("u1", &Message{ID: ID{SHA256: "aa"}, Size: 1}); err == nil {
		t.Fatal("intent recorded without the database")
	}
	s1.Close()
	if c := ExitCode(0, ErrLeaseLost); c != ExitLocked {
		t.Errorf("ExitCode(ErrLeaseLost) = %d, want %d", c, ExitLocked)
	}
}

// BenchmarkPGStateBatch: the state commits of one batch of 64 messages
// in PostgreSQL (intents, then done records), as a run makes them.
func BenchmarkPGStateBatch(b *testing.B) {
	ctx := context.Background()
	pool, err := pgstore.NewPool(ctx, pgtest.NewDB(b), 4)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if _, err := pgstore.Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	st, err := (&PGStates{Pool: pool, NodeID: "bench"}).OpenState(ctx, "acct")
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const batch = 64
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		ms := make([]*Message, batch)
		for i := range ms {
			n++
			ms[i] = &Message{ID: ID{Key: fmt.Sprintf("u%d", n), SHA256: "aa"}, Size: 1000, BodySHA256: "bb", BodySize: 900}
		}
		if err := st.Intents(ms); err != nil {
			b.Fatal(err)
		}
		for _, m := range ms {
			if err := st.Done(m.Key, "d", m.SHA256, m.Size); err != nil {
				b.Fatal(err)
			}
		}
		if err := st.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*batch), "µs/msg")
}
