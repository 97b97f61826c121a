package authguard

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBeginCountsAttemptsInProgress: attempts begun in parallel from one
// address (any address of an IPv6 /64) are let through only as many as
// the address has failures left; ending them as failures blocks it.
func TestBeginCountsAttemptsInProgress(t *testing.T) {
	for _, tc := range []struct{ name, a, b string }{
		{"ipv4", "192.0.2.1:1", "192.0.2.1:2"},
		{"ipv6 /64", "[2001:db8::1]:1", "[2001:db8::ffff:2]:2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &Guard{MaxFailures: 3, BaseDelay: -1}
			var through atomic.Int32
			var wg sync.WaitGroup
			start := make(chan struct{})
			held := make(chan struct{})
			for i := range 40 {
				a := tc.a
				if i%2 == 1 {
					a = tc.b
				}
				wg.Go(func() {
					<-start
					if ok, _ := g.Begin(addr(a)); ok {
						through.Add(1)
						<-held // the password is being checked
						g.EndFailure(addr(a), "alice@x")
					}
				})
			}
			close(start)
			for through.Load() < 3 {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond) // any more would be through by now
			close(held)
			wg.Wait()
			if n := through.Load(); n != 3 {
				t.Fatalf("%d of 40 parallel attempts let through, want 3", n)
			}
			if b, _ := g.Blocked(addr(tc.a)); !b {
				t.Fatal("three failures did not block the address")
			}
			if ok, until := g.Begin(addr(tc.b)); ok || until.IsZero() {
				t.Fatalf("Begin from a blocked address: %v until %v", ok, until)
			}
			if n := g.InFlight(); n != 0 {
				t.Fatalf("%d attempts still in progress", n)
			}
		})
	}
}

// TestBeginLeavesFailuresLeft: with one failure recorded, two attempts
// may be in progress; an abandoned or successful attempt frees its place
// without counting; an address whose block has expired may try again.
func TestBeginLeavesFailuresLeft(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	g := &Guard{MaxFailures: 3, BaseDelay: -1, Now: c.now, BlockFor: time.Minute, Window: time.Hour}
	a := addr("198.51.100.7:1")
	g.Failure(a, "")
	for range 2 {
		if ok, _ := g.Begin(a); !ok {
			t.Fatal("attempt refused with failures left")
		}
	}
	if ok, until := g.Begin(a); ok || !until.IsZero() {
		t.Fatalf("third attempt with one failure recorded: %v until %v", ok, until)
	}
	g.Abandon(a)
	if ok, _ := g.Begin(a); !ok {
		t.Fatal("an abandoned attempt kept its place")
	}
	g.EndSuccess(a, "alice@x")
	g.EndFailure(a, "alice@x")
	if b, _ := g.Blocked(a); b {
		t.Fatal("two failures blocked the address")
	}
	if ok, _ := g.Begin(a); !ok {
		t.Fatal("attempt refused after the others ended")
	}
	g.EndFailure(a, "alice@x")
	if ok, _ := g.Begin(a); ok {
		t.Fatal("attempt let through from a blocked address")
	}
	// The block ends within the failure window: one attempt at a time.
	c.t = c.t.Add(2 * time.Minute)
	if ok, _ := g.Begin(a); !ok {
		t.Fatal("attempt refused after the block ended")
	}
	if ok, _ := g.Begin(a); ok {
		t.Fatal("two attempts at once after the block ended with the failures still in the window")
	}
	g.Abandon(a)
}

// TestBeginTrusted: a trusted address is never refused nor counted.
func TestBeginTrusted(t *testing.T) {
	g := &Guard{MaxFailures: 1, BaseDelay: -1, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	a := addr("127.0.0.1:1")
	for range 10 {
		if ok, _ := g.Begin(a); !ok {
			t.Fatal("trusted address refused")
		}
	}
	for range 10 {
		g.EndFailure(a, "bob@x")
	}
	if n := g.InFlight(); n != 0 {
		t.Fatalf("trusted attempts counted in progress: %d", n)
	}
}

// TestEndWithoutBegin: ending an attempt that was never begun (the Guard
// was replaced in between) counts the failure and frees nothing.
func TestEndWithoutBegin(t *testing.T) {
	g := &Guard{MaxFailures: 2, BaseDelay: -1}
	a := addr("192.0.2.3:1")
	g.EndFailure(a, "x@x")
	g.Abandon(a)
	g.EndSuccess(a, "x@x")
	if ok, _ := g.Begin(a); !ok {
		t.Fatal("attempt refused with one failure left")
	}
	g.Abandon(addr("192.0.2.4:1"))
	if ok, _ := g.Begin(a); ok {
		t.Fatal("an end from another address freed this one's place")
	}
}
