package srs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzReverse checks that Reverse never panics on any recipient, returns
// only its typed errors, and that what it accepts was made with the
// secret: an SRS0 address reverses to local@domain, whose forwarding now
// reverses to the same address again.
func FuzzReverse(f *testing.F) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	r, _ := New([]byte("0123456789abcdef0123456789abcdef"))
	r.Now = func() time.Time { return now }
	good, _ := r.Forward("user@orig.example", "example.test")
	srs1, _ := r.Forward("SRS0=abcd=AA=orig.example=user@first.example", "example.test")
	for _, s := range []string{good, strings.ToUpper(good), srs1, "SRS0=@x", "srs1===@", "SRS0=a=b=c=d=e@f", "plain@example.test", "SRS0=x=zz=d=@", "@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		orig, err := r.Reverse(addr)
		if err != nil {
			if !errors.Is(err, ErrNotSRS) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadHash) && !errors.Is(err, ErrExpired) {
				t.Fatalf("Reverse(%q): untyped error %v", addr, err)
			}
			return
		}
		if !strings.Contains(orig, "@") {
			t.Fatalf("Reverse(%q) = %q, not an address", addr, orig)
		}
		again, err := r.Forward(orig, "example.test")
		if err != nil {
			t.Fatalf("Forward(%q): %v", orig, err)
		}
		if back, err := r.Reverse(again); err != nil || back != orig {
			t.Fatalf("round trip of %q: %q, %v", orig, back, err)
		}
	})
}
