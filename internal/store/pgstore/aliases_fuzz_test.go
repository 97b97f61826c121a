package pgstore

import (
	"testing"

	"github.com/postino-mail/postino/internal/aliases"
)

// FuzzAliasText: a row accepted by checkAliasEntry renders as one line
// of an aliases file: when it parses, the table holds that key alone, so
// a row (written by hand or through a bug) cannot add another alias.
func FuzzAliasText(f *testing.F) {
	f.Add("sales@example.test", "alice@example.test", "bob@example.test")
	f.Add("@example.test", "postmaster@example.test", "")
	f.Add("a@b", "c@d\nroot@example.test: evil@x", "")
	f.Add("a@b", "c@d, root@e", "#x")
	f.Fuzz(func(t *testing.T, key, t1, t2 string) {
		e := AliasEntry{Key: key, Targets: []string{t1}}
		if t2 != "" {
			e.Targets = append(e.Targets, t2)
		}
		text, err := aliasText([]AliasEntry{e})
		if err != nil {
			return
		}
		tab, err := aliases.Parse(text)
		if err != nil {
			return
		}
		for _, got := range tab.Entries() {
			if got.Key != key && got.Key != canonicalKey(key) {
				t.Fatalf("row %+v made the alias %q (%q)", e, got.Key, text)
			}
		}
		if tab.Len() > 1 {
			t.Fatalf("row %+v made %d aliases (%q)", e, tab.Len(), text)
		}
	})
}

// canonicalKey is the table's form of an alias key: the domain in lower
// case.
func canonicalKey(k string) string {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == '@' {
			return k[:i] + toLower(k[i:])
		}
	}
	return k
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
