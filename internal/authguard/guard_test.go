package authguard

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

func addr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestDelaysGrowAndBlock(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	g := &Guard{Now: c.now}
	ip := addr("192.0.2.1:1000")
	want := []time.Duration{2, 4, 8, 15, 15, 15, 15, 15, 15}
	for i, w := range want {
		if d := g.Failure(ip, fmt.Sprintf("u%d@x", i)); d != w*time.Second {
			t.Fatalf("failure %d: delay %v, want %vs", i+1, d, w)
		}
		if b, _ := g.Blocked(ip); b {
			t.Fatalf("blocked after %d failures", i+1)
		}
	}
	g.Failure(ip, "u@x")
	if b, until := g.Blocked(ip); !b || !until.Equal(c.t.Add(DefaultBlockFor)) {
		t.Fatalf("not blocked after 10 failures: %v %v", b, until)
	}
	if b, _ := g.Blocked(addr("192.0.2.2:1")); b {
		t.Fatal("another address is blocked")
	}
	c.t = c.t.Add(DefaultBlockFor + time.Second)
	if b, _ := g.Blocked(ip); b {
		t.Fatal("still blocked after BlockFor")
	}
	// The window has passed too: counting starts again.
	if d := g.Failure(ip, "new@x"); d != 2*time.Second {
		t.Fatalf("delay after the window = %v", d)
	}
}

func TestIPv6CountsPer64(t *testing.T) {
	g := &Guard{MaxFailures: 3}
	for i := range 3 {
		g.Failure(addr(fmt.Sprintf("[2001:db8::%d]:1", i+1)), "")
	}
	if b, _ := g.Blocked(addr("[2001:db8::ffff]:2")); !b {
		t.Fatal("/64 not blocked")
	}
	if b, _ := g.Blocked(addr("[2001:db8:0:1::1]:2")); b {
		t.Fatal("neighbouring /64 blocked")
	}
}

func TestAccountFailuresAcrossAddresses(t *testing.T) {
	g := &Guard{}
	var d time.Duration
	for i := range 4 {
		d = g.Failure(addr(fmt.Sprintf("198.51.100.%d:1", i+1)), "Alice@x")
	}
	if d != 15*time.Second {
		t.Fatalf("distributed guessing of one account: delay %v, want 15s", d)
	}
	g.Success(addr("198.51.100.9:1"), "alice@x")
	if d := g.Failure(addr("198.51.100.10:1"), "alice@x"); d != 2*time.Second {
		t.Fatalf("after success: delay %v", d)
	}
}

func TestBoundedMemory(t *testing.T) {
	g := &Guard{MaxEntries: 1000}
	for i := range 50_000 {
		g.Failure(addr(fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)), "")
	}
	if n := g.Len(); n > 1000 {
		t.Fatalf("%d records kept, limit 1000", n)
	}
}

func TestDisabledDelay(t *testing.T) {
	g := &Guard{BaseDelay: -1}
	if d := g.Failure(addr("192.0.2.1:1"), "a"); d != 0 {
		t.Fatalf("delay %v", d)
	}
}

// TestSetLimits: new thresholds apply to the failures recorded before
// (a reload lowering max_failures blocks an address already over it at its
// next failure), and trusted networks change too.
func TestSetLimits(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	g := &Guard{Now: c.now, BaseDelay: -1}
	ip := addr("192.0.2.1:1000")
	for range 3 {
		g.Failure(ip, "")
	}
	if b, _ := g.Blocked(ip); b {
		t.Fatal("blocked after 3 failures under the default limit")
	}
	g.SetLimits(&Guard{MaxFailures: 4, BlockFor: time.Hour, BaseDelay: -1})
	g.Failure(ip, "")
	if b, until := g.Blocked(ip); !b || !until.Equal(c.t.Add(time.Hour)) {
		t.Fatalf("after SetLimits(MaxFailures 4) and a 4th failure: blocked %v until %v", b, until)
	}
	other := addr("192.0.2.9:1")
	g.SetLimits(&Guard{MaxFailures: 1, BaseDelay: -1, Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.9/32")}})
	g.Failure(other, "")
	if b, _ := g.Blocked(other); b {
		t.Fatal("a newly trusted address was blocked")
	}
}
