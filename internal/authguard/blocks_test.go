package authguard

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// logBuffer returns a logger writing text lines into a buffer.
func logBuffer() (*slog.Logger, *bytes.Buffer) {
	var b bytes.Buffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

// blockAddr fails logins from a until it is blocked.
func blockAddr(t *testing.T, g *Guard, a string) {
	t.Helper()
	for i := range def(g.MaxFailures, DefaultMaxFailures) {
		g.Failure(addr(a), fmt.Sprintf("guess%d@x", i))
	}
	if b, _ := g.Blocked(addr(a)); !b {
		t.Fatalf("%s not blocked", a)
	}
}

// TestBlockStartAndExpiryLogged: a block's start is logged once, with the
// address, the failure count and its end; its expiry is logged when
// noticed, by the next check or by Sweep.
func TestBlockStartAndExpiryLogged(t *testing.T) {
	for _, notice := range []string{"check", "sweep", "failure"} {
		t.Run(notice, func(t *testing.T) {
			c := &clock{t: time.Unix(1e9, 0)}
			log, buf := logBuffer()
			g := &Guard{MaxFailures: 3, BaseDelay: -1, Now: c.now, Logger: log}
			blockAddr(t, g, "192.0.2.7:1000")
			g.Failure(addr("192.0.2.7:1001"), "more@x") // extends the block, no second start
			until := c.t.Add(DefaultBlockFor).UTC().Format(time.RFC3339)
			if n := strings.Count(buf.String(), "login block started"); n != 1 {
				t.Fatalf("%d start lines:\n%s", n, buf)
			}
			for _, want := range []string{"level=WARN", "address=192.0.2.7", "failures=3", "until=" + until} {
				if !strings.Contains(buf.String(), want) {
					t.Fatalf("start line lacks %q:\n%s", want, buf)
				}
			}
			if strings.Contains(buf.String(), "login block ended") {
				t.Fatalf("end logged while blocked:\n%s", buf)
			}
			c.t = c.t.Add(DefaultBlockFor + time.Second)
			switch notice {
			case "check":
				if b, _ := g.Blocked(addr("192.0.2.7:1")); b {
					t.Fatal("still blocked")
				}
			case "sweep":
				g.Sweep()
			case "failure":
				g.Failure(addr("192.0.2.7:1"), "x@x")
			}
			if !strings.Contains(buf.String(), `msg="login block ended" address=192.0.2.7 reason=expired`) {
				t.Fatalf("no end line:\n%s", buf)
			}
			g.Blocked(addr("192.0.2.7:1"))
			g.Sweep()
			if n := strings.Count(buf.String(), "login block ended"); n != 1 {
				t.Fatalf("%d end lines:\n%s", n, buf)
			}
		})
	}
}

// TestSweepForgets: Sweep drops records whose window has passed.
func TestSweepForgets(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	g := &Guard{Now: c.now, BaseDelay: -1}
	g.Failure(addr("192.0.2.1:1"), "a@x")
	g.Sweep()
	if g.Len() != 2 {
		t.Fatalf("%d records, want 2", g.Len())
	}
	c.t = c.t.Add(DefaultWindow + time.Second)
	g.Sweep()
	if g.Len() != 0 {
		t.Fatalf("%d records after the window", g.Len())
	}
}

// TestLift: a blocked address (IPv4, an IPv6 /64 named by any of its
// addresses or by the /64) is lifted at once and the end is logged; an
// account's failures are forgotten; unknown names are ErrNotFound.
func TestLift(t *testing.T) {
	log, buf := logBuffer()
	g := &Guard{MaxFailures: 2, BaseDelay: -1, Logger: log}
	blockAddr(t, g, "192.0.2.9:1")
	blockAddr(t, g, "[2001:db8:1:2::5]:1")
	blockAddr(t, g, "[2001:db8:1:3::5]:1")

	e, err := g.Lift("192.0.2.9")
	if err != nil || e.Kind != KindAddress || e.Name != "192.0.2.9" || !e.Blocked || e.Failures != 2 {
		t.Fatalf("Lift(192.0.2.9) = %+v, %v", e, err)
	}
	if b, _ := g.Blocked(addr("192.0.2.9:2")); b {
		t.Fatal("still blocked after Lift")
	}
	if !strings.Contains(buf.String(), `msg="login block ended" address=192.0.2.9 reason=lifted`) {
		t.Fatalf("lift not logged:\n%s", buf)
	}
	if _, err := g.Lift("2001:db8:1:2::ffff"); err != nil {
		t.Fatalf("Lift of another address of the /64: %v", err)
	}
	if b, _ := g.Blocked(addr("[2001:db8:1:2::5]:1")); b {
		t.Fatal("/64 still blocked")
	}
	if _, err := g.Lift("2001:db8:1:3::/64"); err != nil {
		t.Fatalf("Lift of the /64: %v", err)
	}
	if b, _ := g.Blocked(addr("[2001:db8:1:3::5]:1")); b {
		t.Fatal("/64 named as a prefix still blocked")
	}

	g.Failure(addr("198.51.100.1:1"), "Bob@x")
	if e, err := g.Lift("bob@X"); err != nil || e.Kind != KindAccount || e.Name != "bob@x" || e.Blocked {
		t.Fatalf("Lift(bob@X) = %+v, %v", e, err)
	}
	for _, name := range []string{"bob@x", "203.0.113.1", "nobody"} {
		if _, err := g.Lift(name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Lift(%q) = %v, want ErrNotFound", name, err)
		}
	}
	if _, err := g.Lift(" "); !errors.Is(err, ErrBadName) {
		t.Fatalf("Lift of a blank name: %v", err)
	}
}

// TestBlocksList: Blocks lists blocked addresses first with their end,
// then addresses and accounts with failures and the end of their window.
func TestBlocksList(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	g := &Guard{MaxFailures: 2, BaseDelay: -1, Now: c.now}
	g.Failure(addr("192.0.2.1:1"), "alice@x")
	g.Failure(addr("192.0.2.1:1"), "alice@x")
	g.Failure(addr("[2001:db8::1]:1"), "")
	got := g.Blocks()
	want := []Entry{
		{KindAddress, "192.0.2.1", 2, true, c.t.Add(DefaultBlockFor)},
		{KindAddress, "2001:db8::/64", 1, false, c.t.Add(DefaultWindow)},
		{KindAccount, "alice@x", 2, false, c.t.Add(DefaultWindow)},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Blocks() =\n%v\nwant\n%v", got, want)
	}
	c.t = c.t.Add(DefaultBlockFor + time.Second)
	if got := g.Blocks(); len(got) != 0 {
		t.Fatalf("Blocks() after everything expired = %v", got)
	}
}

// TestTrustedNeverBlocked: a trusted address is never counted nor blocked,
// whatever it does; the accounts it fails on are still counted, so a
// guessing attack spread over untrusted addresses is still delayed.
func TestTrustedNeverBlocked(t *testing.T) {
	log, buf := logBuffer()
	g := &Guard{MaxFailures: 3, Logger: log,
		Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}}
	var d time.Duration
	for range 20 {
		d = g.Failure(addr("127.0.0.1:1"), "carol@x")
		g.Failure(addr("[2001:db8::1]:1"), "")
	}
	for _, a := range []string{"127.0.0.1:1", "[2001:db8::1]:1", "[::ffff:127.0.0.1]:1"} {
		if b, _ := g.Blocked(addr(a)); b {
			t.Fatalf("trusted %s blocked", a)
		}
	}
	if d != DefaultMaxDelay {
		t.Fatalf("delay of the 20th failure on one account = %v, want %v", d, DefaultMaxDelay)
	}
	if got := g.Blocks(); len(got) != 1 || got[0].Kind != KindAccount || got[0].Failures != 20 {
		t.Fatalf("Blocks() = %v, want only the account", got)
	}
	if strings.Contains(buf.String(), "login block started") {
		t.Fatalf("a trusted address was blocked:\n%s", buf)
	}
	// An untrusted address is still blocked.
	g.Failure(addr("192.0.2.1:1"), "carol@x")
	g.Failure(addr("192.0.2.1:1"), "carol@x")
	g.Failure(addr("192.0.2.1:1"), "carol@x")
	if b, _ := g.Blocked(addr("192.0.2.1:1")); !b {
		t.Fatal("untrusted address not blocked")
	}
}
