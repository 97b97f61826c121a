package aliases

import (
	"slices"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/auth"
)

// FuzzParse checks that Parse never panics, that every address in a parsed
// table is canonical, that expansion terminates with canonical,
// de-duplicated addresses, and that writing the table back parses to the
// same expansions.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("a@x.test: a@x.test\n"))
	f.Add([]byte("a@x.test: b@x.test\nb@x.test: a@x.test\n"))
	f.Add([]byte("  x@y.test\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := Parse(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error without a line number: %v", err)
			}
			return
		}
		var out strings.Builder
		for k, targets := range tab.aliases {
			if c, err := auth.CanonicalAddress(k); err != nil || c != k {
				t.Fatalf("key %q not canonical", k)
			}
			got, ok := tab.Expand(k)
			if !ok || len(got) == 0 {
				t.Fatalf("Expand(%q) = %q, %v", k, got, ok)
			}
			if len(slices.Compact(slices.Clone(got))) != len(got) && !sortedUnique(got) {
				t.Fatalf("Expand(%q) has duplicates: %q", k, got)
			}
			for _, a := range got {
				if c, err := auth.CanonicalAddress(a); err != nil || c != a {
					t.Fatalf("Expand(%q) gives non-canonical %q", k, a)
				}
			}
			out.WriteString(k + ": " + strings.Join(targets, ", ") + "\n")
		}
		for d, target := range tab.catchAll {
			out.WriteString("@" + d + ": " + target + "\n")
		}
		again, err := Parse([]byte(out.String()))
		if err != nil {
			t.Fatalf("re-parsing %q: %v", out.String(), err)
		}
		for k := range tab.aliases {
			a, _ := tab.Expand(k)
			b, _ := again.Expand(k)
			if !slices.Equal(a, b) {
				t.Fatalf("Expand(%q): %q then %q", k, a, b)
			}
		}
	})
}

func sortedUnique(s []string) bool {
	seen := make(map[string]bool, len(s))
	for _, x := range s {
		if seen[x] {
			return false
		}
		seen[x] = true
	}
	return true
}
