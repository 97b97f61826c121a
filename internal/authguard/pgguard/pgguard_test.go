package pgguard

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/store/pgstore"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// node returns a Guard sharing the state of the database of dsn, as a
// cluster node's.
func node(t *testing.T, dsn string) (*authguard.Guard, *Store) {
	t.Helper()
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
	st := New(pool)
	return &authguard.Guard{MaxFailures: 4, BaseDelay: time.Second, MaxDelay: 8 * time.Second, Shared: st}, st
}

func tcp(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000} }

// fail runs one failed attempt on g.
func fail(t *testing.T, g *authguard.Guard, addr net.Addr, user string) time.Duration {
	t.Helper()
	ok, _ := g.Begin(addr)
	if !ok {
		t.Fatalf("attempt from %v refused before its failure", addr)
	}
	return g.EndFailure(addr, user)
}

// TestFailuresAddUpAcrossNodes: failures from one address split between
// two nodes add up to a block both enforce; another node lifts it for
// all; an account's delay grows with the failures of every node and a
// success on one node forgets them on the other.
func TestFailuresAddUpAcrossNodes(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a, _ := node(t, dsn)
	b, _ := node(t, dsn)
	cli, _ := node(t, dsn) // "postino block" on a third machine
	attacker := tcp("192.0.2.7")
	var delays []time.Duration
	for i := range 3 {
		g := a
		if i%2 == 1 {
			g = b
		}
		delays = append(delays, fail(t, g, attacker, "alice@example.com"))
	}
	// The delay doubles with every failure, whichever node counted it.
	if delays[0] != time.Second || delays[1] != 2*time.Second || delays[2] != 4*time.Second {
		t.Errorf("delays %v; want 1s 2s 4s", delays)
	}
	for _, g := range []*authguard.Guard{a, b} {
		if blocked, _ := g.Blocked(attacker); blocked {
			t.Fatal("blocked after 3 failures of 4")
		}
	}
	fail(t, b, attacker, "bob@example.com") // the 4th, on node b
	for name, g := range map[string]*authguard.Guard{"a": a, "b": b} {
		if ok, until := g.Begin(attacker); ok || time.Until(until) < 10*time.Minute {
			t.Errorf("node %s: Begin = %v until %v; want refused for the block", name, ok, until)
		}
		if blocked, _ := g.Blocked(attacker); !blocked {
			t.Errorf("node %s: not blocked", name)
		}
	}
	// Another address is not affected.
	if ok, _ := a.Begin(tcp("192.0.2.8")); !ok {
		t.Error("an innocent address is refused")
	} else {
		a.Abandon(tcp("192.0.2.8"))
	}
	entries := cli.Blocks()
	if len(entries) != 3 || !entries[0].Blocked || entries[0].Name != "192.0.2.7" || entries[0].Failures != 4 {
		t.Fatalf("Blocks on a third node = %+v", entries)
	}
	if entries[1].Name != "alice@example.com" || entries[1].Failures != 3 || entries[1].Kind != authguard.KindAccount {
		t.Errorf("account entry %+v", entries[1])
	}
	e, err := cli.Lift("192.0.2.7")
	if err != nil || !e.Blocked || e.Failures != 4 {
		t.Fatalf("Lift on a third node = %+v, %v", e, err)
	}
	for name, g := range map[string]*authguard.Guard{"a": a, "b": b} {
		ok, _ := g.Begin(attacker)
		if !ok {
			t.Fatalf("node %s still refuses after the lift", name)
		}
		g.Abandon(attacker)
	}
	if _, err := cli.Lift("192.0.2.7"); err != authguard.ErrNotFound {
		t.Errorf("second Lift = %v; want ErrNotFound", err)
	}
	if _, err := cli.LiftShared(context.Background(), "192.0.2.7"); err != authguard.ErrNotFound {
		t.Errorf("LiftShared of nothing = %v; want ErrNotFound", err)
	}
	if e, err := cli.LiftShared(context.Background(), "ALICE@example.com"); err != nil || e.Kind != authguard.KindAccount || e.Failures != 3 || e.Blocked {
		t.Errorf("LiftShared(account) = %+v, %v", e, err)
	}
	if d := fail(t, a, tcp("198.51.100.9"), "alice@example.com"); d != time.Second {
		t.Errorf("failure after the account was lifted delayed %v; want 1s", d)
	}
	fail(t, b, tcp("198.51.100.8"), "alice@example.com")
	fail(t, b, tcp("198.51.100.7"), "alice@example.com")
	// The account: 3 failures counted; a success on node a forgets them
	// on node b.
	if d := fail(t, b, tcp("198.51.100.1"), "alice@example.com"); d != 8*time.Second {
		t.Errorf("4th failure of the account from a new address delayed %v; want 8s", d)
	}
	ok, _ := a.Begin(tcp("198.51.100.2"))
	if !ok {
		t.Fatal("refused")
	}
	a.EndSuccess(tcp("198.51.100.2"), "alice@example.com")
	if d := fail(t, b, tcp("198.51.100.3"), "alice@example.com"); d != time.Second {
		t.Errorf("failure after a success on another node delayed %v; want 1s", d)
	}
}

// TestHostileNames: user names PostgreSQL's text cannot hold (invalid
// UTF-8, NUL) or very long are still counted, each apart.
func TestHostileNames(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a, st := node(t, dsn)
	b, _ := node(t, dsn)
	for i, user := range []string{"\xff\xfe", "a\x00b", strings.Repeat("x", 5000)} {
		fail(t, a, tcp(fmt.Sprintf("192.0.2.%d", 2*i+1)), user)
		if d := fail(t, b, tcp(fmt.Sprintf("192.0.2.%d", 2*i+2)), user); d != 2*time.Second {
			t.Errorf("second failure of %.20q delayed %v; want 2s (counted across nodes)", user, d)
		}
	}
	recs, err := st.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 9 { // six addresses, three accounts
		t.Errorf("%d records; want 9: %+v", len(recs), recs)
	}
}

// TestSweep: records past their window and not blocked are removed;
// blocks and recent failures stay.
func TestSweep(t *testing.T) {
	dsn := pgtest.NewDB(t)
	_, st := node(t, dsn)
	ctx := context.Background()
	old := time.Now().Add(-time.Hour)
	if _, err := st.Fail(ctx, "ip:192.0.2.1", old, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Fail(ctx, "ip:192.0.2.2", old, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := st.Block(ctx, "ip:192.0.2.2", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Fail(ctx, "user:a@example.com", time.Now(), 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := st.Sweep(ctx, time.Now(), 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.List(ctx)
	var keys []string
	for _, r := range recs {
		keys = append(keys, r.Key)
	}
	if strings.Join(keys, " ") != "ip:192.0.2.2 user:a@example.com" {
		t.Errorf("after Sweep: %v", keys)
	}
	// A failure after the window starts a new one.
	r, err := st.Fail(ctx, "ip:192.0.2.2", time.Now(), 10*time.Minute)
	if err != nil || r.Failures != 1 || r.BlockedUntil.IsZero() {
		t.Errorf("Fail after the window = %+v, %v; want 1 failure, still blocked", r, err)
	}
}

// TestDatabaseUnreachable: a node cut off from the database goes on
// counting on its own, and blocks after MaxFailures of its own.
func TestDatabaseUnreachable(t *testing.T) {
	dsn := pgtest.NewDB(t)
	node(t, dsn) // migrates
	px := pgtest.NewProxy(t, pgtest.Addr(t))
	t.Cleanup(px.Close)
	g, _ := node(t, strings.Replace(dsn, pgtest.Addr(t), px.Addr(), 1))
	px.Cut()
	px.Close()
	attacker := tcp("192.0.2.9")
	for range 4 {
		fail(t, g, attacker, "alice@example.com")
	}
	if ok, _ := g.Begin(attacker); ok {
		t.Fatal("not blocked by the node's own count")
	}
}
