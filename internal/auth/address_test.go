package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonicalAddressGood(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice@example.com", "alice@example.com"},
		{"Alice@Example.COM", "Alice@example.com"},
		{"a.b+tag@sub.example.org", "a.b+tag@sub.example.org"},
		{"x@localhost", "x@localhost"},
		{"o'brien@ex-ample.co.uk", "o'brien@ex-ample.co.uk"},
		{"!#$%&'*+-=?^_`{|}~@example.com", "!#$%&'*+-=?^_`{|}~@example.com"},
		{"jörg@Bücher.Example", "jörg@bücher.example"},
		{"δοκιμή@ΠΑΡΆΔΕΙΓΜΑ.δοκιμή", "δοκιμή@παράδειγμα.δοκιμή"},
		{"user@xn--bcher-kva.example", "user@xn--bcher-kva.example"},
		{"1@2.3", "1@2.3"},
		{strings.Repeat("l", 64) + "@example.com", strings.Repeat("l", 64) + "@example.com"},
		{"a@" + strings.Repeat("d", 63) + "." + strings.Repeat("d", 63) + "." + strings.Repeat("d", 63) + "." + strings.Repeat("d", 60), "a@" + strings.Repeat("d", 63) + "." + strings.Repeat("d", 63) + "." + strings.Repeat("d", 63) + "." + strings.Repeat("d", 60)},
	}
	for _, tc := range tests {
		got, err := CanonicalAddress(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("CanonicalAddress(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			continue
		}
		if again, err := CanonicalAddress(got); err != nil || again != got {
			t.Errorf("CanonicalAddress(%q) = %q, %v: not idempotent", got, again, err)
		}
	}
}

func TestCanonicalAddressBad(t *testing.T) {
	tests := []struct{ in, why string }{
		{"", "empty"},
		{"alice", "no '@'"},
		{"@example.com", "empty local part"},
		{"alice@", "empty domain"},
		{"a@b@c", "more than one '@'"},
		{`"a@b"@c`, `'"'`},
		{"../x@y", "'/'"},
		{"..@y", "starts or ends with '.'"},
		{"a..b@y", `".."`},
		{"x@..", "starts or ends with '.'"},
		{"x@y/../z", "'/'"},
		{"a/b@c", "'/'"},
		{"a@b/c", "'/'"},
		{`a\b@c`, `'\\'`},
		{":", "':'"},
		{"a:b@c", "':'"},
		{"a@b:c", "':'"},
		{"a@b:1:2:3", "':'"},
		{"a b@c", "white space"},
		{"a@b c", "white space"},
		{"a\tb@c", "control character"},
		{"a\nb@c", "control character"},
		{"a\rb@c", "control character"},
		{"a\x00b@c", "NUL"},
		{"a\x7fb@c", "control character"},
		{"a\u0085b@c", "control character"},
		{"a\u00a0b@c", "white space"},
		{"a\u2028b@c", "white space"},
		{"a\u200bb@c", "invisible"},
		{"a\xffb@c", "UTF-8"},
		{"a@b\xc3", "UTF-8"},
		{"a(b)@c", "'('"},
		{"a,b@c", "','"},
		{"a;b@c", "';'"},
		{"<a@c>", "'<'"},
		{"a@[127.0.0.1]", "'['"},
		{"#a@c", "'#'"},
		{".a@c", "starts or ends with '.'"},
		{"a.@c", "starts or ends with '.'"},
		{"a@.c", "starts or ends with '.'"},
		{"a@c.", "starts or ends with '.'"},
		{"a@b..c", `".."`},
		{"a@-b.c", "'-'"},
		{"a@b-.c", "'-'"},
		{"a@b.-c", "'-'"},
		{"a@b_c.d", "'_'"},
		{"a@b+c.d", "'+'"},
		{"a@b*c", "'*'"},
		{"a@b'c", `'\''`},
		{strings.Repeat("l", 65) + "@example.com", "local part longer"},
		{"a@" + strings.Repeat("d", 64) + ".com", "label longer"},
		{"a@" + strings.Repeat("d.", 126) + "dd", "longer than 254"},
	}
	for _, tc := range tests {
		got, err := CanonicalAddress(tc.in)
		if err == nil {
			t.Errorf("CanonicalAddress(%q) = %q; want an error (%s)", tc.in, got, tc.why)
			continue
		}
		if !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("CanonicalAddress(%q) error %v does not wrap ErrInvalidAddress", tc.in, err)
		}
		if !strings.Contains(err.Error(), tc.why) {
			t.Errorf("CanonicalAddress(%q) = %v; want it to mention %s", tc.in, err, tc.why)
		}
	}
}
