package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// TestLockAcrossNodes: a second session for a mailbox, on the same node
// or another, is refused while the first holds it, and gets it once the
// first closes.
func TestLockAcrossNodes(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a, b := node(t, dsn, Options{NodeID: "a"}), node(t, dsn, Options{NodeID: "b"})
	deliver(t, a, alice, "hello\n")
	md, err := a.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*Store{"same node": a, "other node": b} {
		if _, err := s.OpenMaildrop(context.Background(), alice); !errors.Is(err, store.ErrLocked) {
			t.Fatalf("%s: second open = %v, want ErrLocked", name, err)
		}
	}
	// Another mailbox is not affected.
	other, err := b.OpenMaildrop(context.Background(), "bob@example.test")
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	md.Close()
	md, err = b.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatalf("after close: %v", err)
	}
	md.Close()
}

// TestLockRenewedWhileIdle: a session outlives many TTLs while its node
// renews the lease.
func TestLockRenewedWhileIdle(t *testing.T) {
	dsn := pgtest.NewDB(t)
	ttl := 2 * time.Second
	a, b := node(t, dsn, Options{NodeID: "a", LockTTL: ttl}), node(t, dsn, Options{NodeID: "b", LockTTL: ttl})
	md, err := a.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	deadline := time.Now().Add(5 * ttl / 2)
	for time.Now().Before(deadline) {
		if _, err := b.OpenMaildrop(context.Background(), alice); !errors.Is(err, store.ErrLocked) {
			t.Fatalf("other node's open = %v while the lease is renewed", err)
		}
		select {
		case <-md.(*Maildrop).Done():
			t.Fatal("session ended while its lease was renewed")
		case <-time.After(ttl / 4):
		}
	}
}

// TestLockDeadNodeFreed: a node that stops renewing (it died) leaves the
// lock to others within the TTL, without anyone's action.
func TestLockDeadNodeFreed(t *testing.T) {
	dsn := pgtest.NewDB(t)
	ttl := 2 * time.Second
	a, b := node(t, dsn, Options{NodeID: "a", LockTTL: ttl}), node(t, dsn, Options{NodeID: "b", LockTTL: ttl})
	if _, err := a.OpenMaildrop(context.Background(), alice); err != nil {
		t.Fatal(err)
	}
	a.locks.setPaused(true) // a's renewer dies; its session is never closed
	start := time.Now()
	for {
		md, err := b.OpenMaildrop(context.Background(), alice)
		if err == nil {
			md.Close()
			break
		}
		if !errors.Is(err, store.ErrLocked) {
			t.Fatal(err)
		}
		if time.Since(start) > ttl+2*time.Second {
			t.Fatalf("lock still held %v after the node died (ttl %v)", time.Since(start), ttl)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if time.Since(start) < ttl/2 {
		t.Fatalf("lock freed after %v, before its lease could expire", time.Since(start))
	}
}

// TestLockPartitionedNodeEndsFirst: a node cut off from PostgreSQL ends
// its session (Done closes, streams fail) before another node can take
// the lock, and the partitioned session's QUIT applies nothing.
func TestLockPartitionedNodeEndsFirst(t *testing.T) {
	addr := pgtest.Addr(t)
	dsn := pgtest.NewDB(t)
	ttl := 6 * time.Second // its margin, ttl/6, absorbs a loaded machine
	p := pgtest.NewProxy(t, addr)
	a := node(t, strings.Replace(dsn, addr, p.Addr(), 1), Options{NodeID: "a", LockTTL: ttl})
	b := node(t, dsn, Options{NodeID: "b", LockTTL: ttl})
	t.Cleanup(p.Close) // before a's pool closes: no connection left hanging
	for i := range 3 {
		deliver(t, b, alice, fmt.Sprintf("m%d\n", i))
	}
	md, err := a.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	p.Cut()
	ended := make(chan time.Time, 1)
	go func() {
		<-md.(*Maildrop).Done()
		ended <- time.Now()
	}()
	var took time.Time
	for {
		m2, err := b.OpenMaildrop(context.Background(), alice)
		if err == nil {
			took = time.Now()
			m2.Close()
			break
		}
		if !errors.Is(err, store.ErrLocked) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case e := <-ended:
		if !e.Before(took) {
			t.Fatalf("partitioned session ended at %v, after the other node took the lock at %v", e, took)
		}
	default:
		t.Fatal("the other node took the lock while the partitioned session still ran")
	}
	if c := context.Cause(md.(*Maildrop).ctx); !errors.Is(c, ErrLockLost) {
		t.Fatalf("cause %v, want ErrLockLost", c)
	}
	if _, err := md.Open(context.Background(), 0); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Open after the loss = %v", err)
	}
	if n, _, _ := b.Usage(context.Background(), alice); n != 3 {
		t.Fatalf("%d messages, want 3", n)
	}
}

// TestStaleQuitAppliesNothing: a session whose lease expired and passed
// to another node cannot apply its deletions (fencing), even if its
// node never noticed.
func TestStaleQuitAppliesNothing(t *testing.T) {
	dsn := pgtest.NewDB(t)
	ttl := time.Second
	a, b := node(t, dsn, Options{NodeID: "a", LockTTL: ttl}), node(t, dsn, Options{NodeID: "b", LockTTL: ttl})
	for i := range 3 {
		deliver(t, a, alice, fmt.Sprintf("m%d\n", i))
	}
	md, err := a.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	a.locks.setPaused(true)
	md.(*Maildrop).lease.timer.Stop() // a hung node: it does not end its session
	var m2 store.Maildrop
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if m2, err = b.OpenMaildrop(context.Background(), alice); err == nil {
			break
		}
		if time.Since(start) > 3*ttl {
			t.Fatalf("lock not taken over: %v", err)
		}
	}
	if err := md.Commit(context.Background(), []int{0, 1}); !errors.Is(err, ErrLockLost) {
		t.Fatalf("stale commit = %v, want ErrLockLost", err)
	}
	md.Close() // must not free b's lock
	if _, err := a.OpenMaildrop(context.Background(), alice); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("after the stale session closed, open = %v; b's lock was released", err)
	}
	if got := len(m2.Messages()); got != 3 {
		t.Fatalf("%d messages, want 3", got)
	}
	m2.Close()
	// Expired but not taken over: still refused.
	md, _ = a.OpenMaildrop(context.Background(), alice)
	md.(*Maildrop).lease.timer.Stop()
	time.Sleep(ttl + 200*time.Millisecond)
	if err := md.Commit(context.Background(), []int{0}); !errors.Is(err, ErrLockLost) {
		t.Fatalf("commit on an expired lease = %v, want ErrLockLost", err)
	}
	md.Close()
}

// TestPoolBounded: many idle sessions hold no connection each: the pool
// stays within its bound.
func TestPoolBounded(t *testing.T) {
	dsn := pgtest.NewDB(t)
	s := node(t, dsn, Options{MaxConns: 4})
	var mds []store.Maildrop
	for i := range 300 {
		md, err := s.OpenMaildrop(context.Background(), fmt.Sprintf("u%d@example.test", i))
		if err != nil {
			t.Fatal(err)
		}
		mds = append(mds, md)
	}
	s.locks.renew(context.Background()) // one renewal of all 300
	var n int
	s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM maildrop_locks WHERE expires_at > now() + interval '25 seconds'`).Scan(&n)
	if n != 300 {
		t.Fatalf("%d leases renewed, want 300", n)
	}
	if tc := s.Pool().Stat().TotalConns(); tc > 4 {
		t.Fatalf("%d connections for 300 sessions, bound 4", tc)
	}
	for _, md := range mds {
		md.Close()
	}
}
