package aliases

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/auth"
)

const sample = `# postino aliases
sales@example.test:   alice@example.test, bob@example.test
team@Example.TEST:    sales@example.test,
                      carol@elsewhere.example
# a comment inside a continuation is skipped
	dave@example.test
self@example.test: self@example.test, archive@example.test
postmaster@example.test: root@example.test
root@example.test: alice@example.test
@example.test: postmaster@example.test
@other.test: catch@other.test
jörg@example.test: joerg@example.test
`

func TestParse(t *testing.T) {
	tab, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		want []string
		ok   bool
	}{
		{"sales@example.test", []string{"alice@example.test", "bob@example.test"}, true},
		{"SALES@EXAMPLE.TEST", []string{"alice@example.test", "bob@example.test"}, true},
		{"team@example.test", []string{"alice@example.test", "bob@example.test", "carol@elsewhere.example", "dave@example.test"}, true},
		{"self@example.test", []string{"self@example.test", "archive@example.test"}, true},
		{"postmaster@example.test", []string{"alice@example.test"}, true},
		{"jörg@example.test", []string{"joerg@example.test"}, true},
		{"alice@example.test", nil, false},
		{"nobody@example.test", nil, false},
		{"not an address", nil, false},
	}
	for _, tt := range tests {
		got, ok := tab.Expand(tt.addr)
		if ok != tt.ok || !slices.Equal(got, tt.want) {
			t.Errorf("Expand(%q) = %q, %v; want %q, %v", tt.addr, got, ok, tt.want, tt.ok)
		}
	}
	if got, ok := tab.Lookup("team@example.test"); !ok || len(got) != 3 {
		t.Errorf("Lookup(team) = %q, %v", got, ok)
	}
	for _, tt := range []struct {
		domain, want string
		ok           bool
	}{
		{"example.test", "postmaster@example.test", true},
		{"EXAMPLE.test", "postmaster@example.test", true},
		{"other.test", "catch@other.test", true},
		{"elsewhere.example", "", false},
	} {
		got, ok := tab.CatchAll(tt.domain)
		if got != tt.want || ok != tt.ok {
			t.Errorf("CatchAll(%q) = %q, %v", tt.domain, got, ok)
		}
	}
	if got := tab.Domains(); !slices.Equal(got, []string{"example.test", "other.test"}) {
		t.Errorf("Domains() = %q", got)
	}
	if tab.Len() != 8 {
		t.Errorf("Len() = %d", tab.Len())
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no colon", "a@b.test c@d.test\n", "line 1: aliases: syntax error: missing ':'"},
		{"no target", "\n\na@b.test:\n", "line 3: aliases: syntax error: alias \"a@b.test\" has no target"},
		{"bad alias", "a b@c.test: x@y.test\n", "line 1: alias: auth: invalid address"},
		{"bad target", "# c\na@b.test: x@y.test, /etc/passwd\n", "line 2: target: auth: invalid address"},
		{"bad target on continuation", "a@b.test: x@y.test,\n  bad..dots@y.test\n", "line 1: target"},
		{"leading continuation", "  a@b.test: c@d.test\n", "line 1: aliases: syntax error: continuation line"},
		{"duplicate", "a@b.test: c@d.test\n\nA@B.test: e@f.test\n", "line 3: aliases: syntax error: alias A@b.test already defined on line 1"},
		{"duplicate catch-all", "@b.test: c@b.test\n@B.test: e@b.test\n", "line 2: aliases: syntax error: catch-all @b.test already defined on line 1"},
		{"catch-all two targets", "@b.test: c@b.test, d@b.test\n", "line 1: aliases: syntax error: catch-all @b.test must have exactly one target"},
		{"catch-all bad domain", "@b..test: c@b.test\n", "line 1: catch-all domain"},
		{"loop", "a@x.test: b@x.test\nb@x.test: c@x.test\nc@x.test: a@x.test\n", "line 1: aliases: syntax error: alias loop"},
		{"empty alias", ": c@x.test\n", "line 1: aliases: syntax error: empty alias"},
		{"bare CR", "a@x.test: b@x.test\rc@x.test: d@x.test\n", "line 1: aliases: syntax error: control character"},
		{"NUL", "a@x.test: b@x.test\x00\n", "line 1: aliases: syntax error: control character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Parse: err = %v; want prefix %q", err, tt.want)
			}
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, auth.ErrInvalidAddress) {
				t.Errorf("error %v wraps neither ErrSyntax nor ErrInvalidAddress", err)
			}
		})
	}
}

// TestParseAllErrors checks that every bad line is reported, each with its
// line number, and that the good lines between them do not hide any.
func TestParseAllErrors(t *testing.T) {
	in := "ok@x.test: a@x.test\n" +
		"no colon here\n" +
		"ok2@x.test: b@x.test\n" +
		"bad@x.test: /etc/passwd\n" +
		"  \n" +
		"@x.test: c@x.test, d@x.test\n" +
		"ok@x.test: e@x.test\n"
	_, err := Parse([]byte(in))
	if err == nil {
		t.Fatal("Parse accepted four bad lines")
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %v is not a list of errors", err)
	}
	var got []string
	for _, e := range j.Unwrap() {
		got = append(got, strings.SplitN(e.Error(), ":", 2)[0])
	}
	want := []string{"line 2", "line 4", "line 6", "line 7"}
	if !slices.Equal(got, want) {
		t.Fatalf("errors on %q, want %q:\n%v", got, want, err)
	}
}

func TestDepth(t *testing.T) {
	chain := func(n int) string {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			b.WriteString("a" + itoa(i) + "@x.test: a" + itoa(i+1) + "@x.test\n")
		}
		return b.String()
	}
	// MaxDepth aliases in a chain: allowed, and expands to the end.
	tab, err := Parse([]byte(chain(MaxDepth)))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := tab.Expand("a1@x.test"); !ok || !slices.Equal(got, []string{"a" + itoa(MaxDepth+1) + "@x.test"}) {
		t.Errorf("Expand = %q, %v", got, ok)
	}
	if _, err := Parse([]byte(chain(MaxDepth + 1))); err == nil || !strings.Contains(err.Error(), "nests more than 8 levels") {
		t.Errorf("Parse(chain of %d) err = %v", MaxDepth+1, err)
	}
	// A hand-made table with a loop: Expand must stop.
	bad := &Table{aliases: map[string][]string{"a@x.test": {"b@x.test"}, "b@x.test": {"a@x.test"}}}
	if got, ok := bad.Expand("a@x.test"); !ok || got != nil {
		t.Errorf("Expand on a loop = %q, %v", got, ok)
	}
	// A diamond is no loop.
	tab, err = Parse([]byte("a@x.test: b@x.test, c@x.test\nb@x.test: d@x.test\nc@x.test: d@x.test\nd@x.test: e@x.test\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tab.Expand("a@x.test"); !slices.Equal(got, []string{"e@x.test"}) {
		t.Errorf("diamond = %q", got)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestEmptyAndMissing(t *testing.T) {
	var zero Table
	if _, ok := zero.Expand("a@b.test"); ok {
		t.Error("zero Table expands")
	}
	if _, ok := zero.CatchAll("b.test"); ok {
		t.Error("zero Table has a catch-all")
	}
	var nilTab *Table
	if _, ok := nilTab.Expand("a@b.test"); ok || nilTab.Len() != 0 || nilTab.Domains() != nil {
		t.Error("nil Table not empty")
	}
	tab, err := Load(filepath.Join(t.TempDir(), "missing"))
	if err != nil || tab.Len() != 0 {
		t.Fatalf("Load(missing) = %v, %v", tab, err)
	}
	tab, err = Parse([]byte("\n# only comments\r\n\n"))
	if err != nil || tab.Len() != 0 {
		t.Fatalf("Parse(comments) = %v, %v", tab, err)
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "aliases")
	os.WriteFile(p, []byte("ok@x.test: y@x.test\nbroken\n"), 0o600)
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p+": line 2:") {
		t.Fatalf("Load err = %v", err)
	}
}

func TestReloading(t *testing.T) {
	p := filepath.Join(t.TempDir(), "aliases")
	r, err := NewReloading(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.CheckInterval = 0
	if _, ok := r.Expand("a@x.test"); ok {
		t.Fatal("alias in a missing file")
	}
	write := func(s string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour)
	write("a@x.test: b@x.test\n", base)
	if got, ok := r.Expand("a@x.test"); !ok || !slices.Equal(got, []string{"b@x.test"}) {
		t.Fatalf("after create: %q, %v", got, ok)
	}
	// Same size, new mtime.
	write("a@x.test: c@x.test\n", base.Add(time.Second))
	if got, _ := r.Expand("a@x.test"); !slices.Equal(got, []string{"c@x.test"}) {
		t.Fatalf("after edit: %q", got)
	}
	// A broken file keeps the last good table.
	write("a@x.test c@x.test\n", base.Add(2*time.Second))
	if got, _ := r.Expand("a@x.test"); !slices.Equal(got, []string{"c@x.test"}) {
		t.Fatalf("after broken edit: %q", got)
	}
	if r.Err() == nil {
		t.Fatal("Err() = nil after a broken edit")
	}
	write("@x.test: all@x.test\n", base.Add(3*time.Second))
	if got, ok := r.CatchAll("x.test"); !ok || got != "all@x.test" || r.Err() != nil {
		t.Fatalf("after fix: %q, %v, %v", got, ok, r.Err())
	}
	if d := r.Domains(); !slices.Equal(d, []string{"x.test"}) {
		t.Fatalf("Domains = %q", d)
	}
	os.Remove(p)
	if _, ok := r.CatchAll("x.test"); ok {
		t.Fatal("catch-all after removal")
	}
	// With a check interval, a change is seen only after it.
	r.CheckInterval = time.Hour
	write("a@x.test: b@x.test\n", base)
	if _, ok := r.Expand("a@x.test"); ok {
		t.Fatal("change seen before CheckInterval")
	}
	if _, err := NewReloading(p+"-bad", nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p+"-bad", []byte("x"), 0o600)
	if _, err := NewReloading(p+"-bad", nil); err == nil {
		t.Fatal("NewReloading of a broken file succeeded")
	}
}
