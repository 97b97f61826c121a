package srs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newRewriter(t *testing.T, now *time.Time) *Rewriter {
	t.Helper()
	r, err := New([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	r.Now = func() time.Time { return *now }
	return r
}

// TestRoundTrip: a forwarded sender becomes an SRS0 address of our domain
// that reverses to it, also when a relay changed its case.
func TestRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	r := newRewriter(t, &now)
	got, err := r.Forward("Ceo.Smith@Sender.example", "example.test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "SRS0=") || !strings.HasSuffix(got, "=Sender.example=Ceo.Smith@example.test") || !IsSRS(got) {
		t.Fatalf("Forward = %q", got)
	}
	for _, a := range []string{got, strings.ToLower(got), strings.ToUpper(got)} {
		back, err := r.Reverse(a)
		if err != nil || !strings.EqualFold(back, "Ceo.Smith@Sender.example") {
			t.Errorf("Reverse(%q) = %q, %v", a, back, err)
		}
	}
	if s, err := r.Forward("", "example.test"); s != "" || err != nil {
		t.Errorf("null sender forwarded as %q, %v", s, err)
	}
	// 21 days later it still reverses; a day more and it is expired.
	now = now.Add(DefaultMaxAge)
	if _, err := r.Reverse(got); err != nil {
		t.Errorf("after 21 days: %v", err)
	}
	now = now.Add(25 * time.Hour)
	if _, err := r.Reverse(got); !errors.Is(err, ErrExpired) {
		t.Errorf("after 22 days: %v, want ErrExpired", err)
	}
}

// TestForged: SRS addresses made without our secret, or tampered with, are
// refused.
func TestForged(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	r := newRewriter(t, &now)
	good, _ := r.Forward("victim@target.example", "example.test")
	other, _ := New([]byte("another secret, another server!"))
	other.Now = r.Now
	foreign, _ := other.Forward("victim@target.example", "example.test")
	tampered := strings.Replace(good, "victim@", "attacker@", 1)
	retarget := strings.Replace(good, "=target.example=", "=evil.example=", 1)
	for _, c := range []struct {
		addr string
		want error
	}{
		{foreign, ErrBadHash},
		{tampered, ErrBadHash},
		{retarget, ErrBadHash},
		{"SRS0=aaaaaaaa=AA=target.example=victim@example.test", ErrBadHash},
		{"SRS0=xx@example.test", ErrMalformed},
		{"SRS0==AA=target.example=victim@example.test", ErrMalformed},
		{"SRS1=abc=fwd.example=x@example.test", ErrMalformed},
		{"SRS1=aaaaaaaa=fwd.example==rest@example.test", ErrBadHash},
		{"alice@example.test", ErrNotSRS},
	} {
		if _, err := r.Reverse(c.addr); !errors.Is(err, c.want) {
			t.Errorf("Reverse(%q) = %v, want %v", c.addr, err, c.want)
		}
	}
	// A valid hash with a time stamp from the future (or 1000 days ago)
	// is expired.
	now2 := now.Add(-30 * 24 * time.Hour)
	old := newRewriter(t, &now2)
	stale, _ := old.Forward("victim@target.example", "example.test")
	if _, err := r.Reverse(stale); !errors.Is(err, ErrExpired) {
		t.Errorf("30-day-old address: %v", err)
	}
}

// TestSRS1: re-forwarding an SRS0 address of another domain makes an SRS1
// address that reverses to the first forwarder's SRS0 address, which that
// forwarder reverses to the original sender.
func TestSRS1(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	first := newRewriter(t, &now)
	srs0, _ := first.Forward("user@orig.example", "first.example")
	second, _ := New([]byte("the second forwarder's own secret"))
	second.Now = first.Now
	srs1, err := second.Forward(srs0, "example.test")
	if err != nil || !strings.HasPrefix(srs1, "SRS1=") || !strings.HasSuffix(srs1, "@example.test") {
		t.Fatalf("Forward(%q) = %q, %v", srs0, srs1, err)
	}
	// A third hop keeps the first forwarder.
	srs1b, _ := second.Forward(srs1, "third.example")
	if !strings.Contains(srs1b, "=first.example==") || strings.Count(srs1b, "SRS") != 1 {
		t.Errorf("re-forwarded SRS1 = %q", srs1b)
	}
	back, err := second.Reverse(srs1)
	if err != nil || back != srs0 {
		t.Fatalf("Reverse(%q) = %q, %v; want %q", srs1, back, err, srs0)
	}
	orig, err := first.Reverse(back)
	if err != nil || orig != "user@orig.example" {
		t.Errorf("first.Reverse = %q, %v", orig, err)
	}
}

// TestLoadKey: the secret is made once, private, and read back the same.
func TestLoadKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "srs.key")
	k1, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
	k2, err := LoadKey(path)
	if err != nil || string(k1) != string(k2) || len(k1) != keyLen {
		t.Fatalf("second load differs: %x %x %v", k1, k2, err)
	}
	os.WriteFile(path, []byte("short\n"), 0o600)
	if _, err := LoadKey(path); err == nil {
		t.Error("a bad key file was accepted")
	}
}
