package antispam

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/inbound"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newGreylist(t *testing.T, path string, clock *fakeClock) *Greylist {
	t.Helper()
	st, err := OpenFileStore(path, 0, clock.Now, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return &Greylist{Delay: 5 * time.Minute, RetryWindow: 48 * time.Hour, Expire: 35 * 24 * time.Hour,
		Store: st, Now: clock.Now, Logger: slog.New(slog.DiscardHandler)}
}

// attempt returns the action greylisting demands for a triplet.
func attempt(g *Greylist, ip, from, rcpt string) inbound.Action {
	s := g.Begin(context.Background(), &inbound.Conn{ID: "t", Remote: netip.MustParseAddr(ip)}, &inbound.Verdict{})
	if s == nil {
		return inbound.Accept
	}
	v := &inbound.Verdict{}
	s.(inbound.RcptStage).Rcpt(context.Background(), &inbound.Envelope{ID: "tx", From: from}, rcpt, v)
	r, _ := v.Strongest()
	return r.Action
}

// TestGreylist walks a triplet through its life with a fake clock and a
// restart (a new store reading the same file).
func TestGreylist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "greylist.db")
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	g := newGreylist(t, path, clock)
	const ip, from, rcpt = "198.51.100.7", "a@sender.test", "u@example.test"
	if a := attempt(g, ip, from, rcpt); a != inbound.Tempfail {
		t.Fatalf("first attempt: %v", a)
	}
	clock.Add(time.Minute)
	if a := attempt(g, ip, from, rcpt); a != inbound.Tempfail {
		t.Fatalf("retry before the delay: %v", a)
	}
	// Another address of the same /24 retries (a pool of MTAs), after
	// a restart.
	clock.Add(5 * time.Minute)
	g = newGreylist(t, path, clock)
	if a := attempt(g, "198.51.100.8", from, rcpt); a != inbound.Accept {
		t.Fatalf("retry after the delay: %v", a)
	}
	// Other triplets are still greylisted.
	for _, tr := range [][3]string{{"198.51.101.7", from, rcpt}, {ip, "b@sender.test", rcpt}, {ip, from, "v@example.test"}} {
		if a := attempt(g, tr[0], tr[1], tr[2]); a != inbound.Tempfail {
			t.Errorf("%v: %v", tr, a)
		}
	}
	// The passed triplet passes for Expire after its last message, also
	// after a restart, and case does not matter.
	clock.Add(30 * 24 * time.Hour)
	g = newGreylist(t, path, clock)
	if a := attempt(g, ip, strings.ToUpper(from), rcpt); a != inbound.Accept {
		t.Fatalf("passed triplet: %v", a)
	}
	clock.Add(34 * 24 * time.Hour)
	if a := attempt(g, ip, from, rcpt); a != inbound.Accept {
		t.Fatalf("passed triplet, refreshed: %v", a)
	}
	clock.Add(36 * 24 * time.Hour)
	g = newGreylist(t, path, clock)
	if a := attempt(g, ip, from, rcpt); a != inbound.Tempfail {
		t.Fatalf("expired triplet: %v", a)
	}
	// A retry after the retry window starts over.
	clock.Add(49 * time.Hour)
	if a := attempt(g, ip, from, rcpt); a != inbound.Tempfail {
		t.Fatalf("retry after the window: %v", a)
	}
	// Skipped networks are never greylisted.
	g.Skip = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	if a := attempt(g, "203.0.113.1", from, rcpt); a != inbound.Accept {
		t.Errorf("skipped client: %v", a)
	}
}

// TestFileStoreBounds: the store keeps at most its bound, compacts its
// log, survives a cut last line and refuses a corrupt file.
func TestFileStoreBounds(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "greylist.db")
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	st, err := OpenFileStore(path, 10, clock.Now, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3000 {
		clock.Add(time.Second)
		e := Entry{First: clock.Now(), Last: clock.Now(), Expires: clock.Now().Add(time.Hour)}
		if err := st.Put(ctx, fmt.Sprintf("k%d", i%50), e); err != nil {
			t.Fatal(err)
		}
	}
	if st.Len() != 10 {
		t.Errorf("%d entries, want 10", st.Len())
	}
	data, _ := os.ReadFile(path)
	if n := bytes.Count(data, []byte("\n")); n > 2*10+1000+1 {
		t.Errorf("log has %d lines: not compacted", n)
	}
	if _, ok, _ := st.Get(ctx, "k49"); !ok {
		t.Error("the newest entry is gone")
	}
	// A write cut by a crash: the partial line is ignored.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("k99 1800000000 18")
	f.Close()
	st2, err := OpenFileStore(path, 10, clock.Now, slog.New(slog.DiscardHandler))
	if err != nil || st2.Len() != 10 {
		t.Fatalf("reopen: %v, %d entries", err, st2.Len())
	}
	os.WriteFile(path, []byte("k1 1 2 3 4\n"), 0o600)
	if _, err := OpenFileStore(path, 10, clock.Now, nil); !errors.Is(err, ErrStoreLine) {
		t.Errorf("corrupt file: %v", err)
	}
	if err := st.Put(ctx, "bad key", Entry{}); err == nil {
		t.Error("a key with a space was stored")
	}
}

// TestGreylistFloodKeepsPassed: an attacker who floods new triplets
// (and never retries) fills the store, but the triplets that passed stay.
func TestGreylistFloodKeepsPassed(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	st, err := OpenFileStore(filepath.Join(t.TempDir(), "greylist.db"), 200, clock.Now, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	g := &Greylist{Delay: time.Minute, RetryWindow: time.Hour, Expire: 24 * time.Hour, Store: st, Now: clock.Now, Logger: slog.New(slog.DiscardHandler)}
	for i := range 10 {
		from := fmt.Sprintf("real%d@sender.test", i)
		attempt(g, "192.0.2.1", from, "u@example.test")
		clock.Add(2 * time.Minute)
		if a := attempt(g, "192.0.2.1", from, "u@example.test"); a != inbound.Accept {
			t.Fatalf("retry: %v", a)
		}
	}
	for i := range 5000 {
		clock.Add(time.Millisecond)
		attempt(g, fmt.Sprintf("198.51.%d.%d", i/256, i%256), fmt.Sprintf("spam%d@spam.test", i), "u@example.test")
	}
	if st.Len() > 200 {
		t.Errorf("%d triplets kept, bound 200", st.Len())
	}
	for i := range 10 {
		if a := attempt(g, "192.0.2.1", fmt.Sprintf("real%d@sender.test", i), "u@example.test"); a != inbound.Accept {
			t.Errorf("passed triplet %d pushed out by the flood", i)
		}
	}
}

func FuzzParseStore(f *testing.F) {
	f.Add([]byte("k1 1800000000 1800000000 0 1800003600\nk1 1800000000 1800000300 1 1900000000\n"))
	f.Add([]byte("k1 1 2 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		now := time.Unix(1_800_000_000, 0)
		entries, _, err := ParseStore(bytes.NewReader(data), now)
		if err != nil {
			return
		}
		for k, e := range entries {
			if len(k) > maxKeyLen || !e.Expires.After(now) {
				t.Fatalf("entry %q %+v", k, e)
			}
			// What was read writes back the same.
			back, _, err := ParseStore(strings.NewReader(formatStoreLine(k, e)), now)
			if err != nil || back[k] != e {
				t.Fatalf("round trip of %q: %+v %v", k, back[k], err)
			}
		}
	})
}

// BenchmarkFileStorePut measures a greylisting write: one appended line,
// fsynced.
func BenchmarkFileStorePut(b *testing.B) {
	st, err := OpenFileStore(filepath.Join(b.TempDir(), "greylist.db"), 0, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	for i := 0; b.Loop(); i++ {
		key := TripletKey(netip.MustParseAddr("198.51.100.7"), fmt.Sprintf("s%d@sender.test", i), "u@example.test")
		if err := st.Put(ctx, key, Entry{First: now, Last: now, Expires: now.Add(time.Hour)}); err != nil {
			b.Fatal(err)
		}
	}
}
