package pgguard

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDBKey: whatever user name a client sends, the key stored is text
// PostgreSQL accepts (UTF-8, no NUL), fits the column's limit, keeps its
// kind, and names short clean keys as they are.
func FuzzDBKey(f *testing.F) {
	for _, s := range []string{"user:alice@example.com", "ip:192.0.2.1", "ip:2001:db8::/64", "user:\xff\xfe", "user:a\x00b", "user:" + strings.Repeat("é", 400), "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		k := dbKey(key)
		if !utf8.ValidString(k) || strings.ContainsRune(k, 0) || len(k) > 600 {
			t.Fatalf("dbKey(%q) = %q: not storable", key, k)
		}
		if strings.HasPrefix(key, "ip:") != strings.HasPrefix(k, "ip:") {
			t.Fatalf("dbKey(%q) = %q changed the kind", key, k)
		}
		if k != dbKey(key) {
			t.Fatal("not deterministic")
		}
		if len(key) <= maxKey && utf8.ValidString(key) && !strings.ContainsRune(key, 0) && k != key {
			t.Fatalf("dbKey(%q) = %q; want it unchanged", key, k)
		}
	})
}
