// Package aliases reads postino's aliases file, a simple relative of
// Postfix's virtual alias table:
//
//	# comment
//	sales@example.test:   alice@example.test, bob@example.test
//	team@example.test:    sales@example.test,
//	                      carol@elsewhere.example
//	@example.test:        postmaster@example.test
//
// A logical line starts with a non-blank character in the first column; a
// line starting with white space continues the previous logical line
// (comment and blank lines in between are skipped, as in Postfix). Each
// logical line is "key: target, target, ...", where targets are separated
// by commas and/or white space. A key "local@domain" is an alias; a key
// "@domain" is the catch-all of that domain, which must have exactly one
// target. Every address is checked with auth.CanonicalAddress (so the
// domain is compared in lower case) and every error names its line.
//
// An alias may point to local users, to other aliases and to remote
// addresses. Expand follows aliases recursively, up to MaxDepth levels. A
// target equal to the alias being expanded is the usual "keep a copy"
// idiom and is final; every other cycle, and chains deeper than MaxDepth,
// are errors when the file is loaded, so a loaded Table never loops.
//
// A missing file is an empty table. Reloading re-reads the file when its
// modification time, size or inode changes and keeps serving the last good
// table when the new content does not parse.
package aliases

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode"

	"github.com/postino-mail/postino/internal/auth"
)

// MaxDepth is how many levels of aliases Expand follows (an alias of an
// alias of ... is depth 2, 3, ...).
const MaxDepth = 8

// MaxFileSize bounds the size of an aliases file, as a guard against
// pointing the configuration at the wrong file.
const MaxFileSize = 16 << 20

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("aliases: syntax error")

// Table is a parsed aliases file. It is immutable and safe for concurrent
// use. The zero value is an empty table.
type Table struct {
	aliases  map[string][]string // canonical key -> canonical targets, in file order, de-duplicated
	folded   map[string][]string // lower-cased key -> keys (for case-insensitive local parts)
	catchAll map[string]string   // domain -> target
	lines    map[string]int      // key or "@domain" -> line number
}

// entry is one logical line while parsing.
type entry struct {
	line int
	text string
}

// Load reads and parses the aliases file at path. A missing file is an
// empty table.
func Load(path string) (*Table, error) {
	data, err := readFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Table{}, nil
	}
	if err != nil {
		return nil, err
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxFileSize {
		return nil, fmt.Errorf("aliases: %s is larger than %d bytes", path, MaxFileSize)
	}
	return os.ReadFile(path)
}

// Parse parses the content of an aliases file. Every problem is reported,
// not only the first: the error is the errors.Join of one error per bad
// line, each wrapping ErrSyntax (or auth.ErrInvalidAddress) and starting
// with "line N:". Loops and over-deep chains are looked for only when every
// line parses.
func Parse(data []byte) (*Table, error) {
	entries, errs := logicalLines(data)
	t := &Table{
		aliases:  make(map[string][]string),
		folded:   make(map[string][]string),
		catchAll: make(map[string]string),
		lines:    make(map[string]int),
	}
	for _, e := range entries {
		if err := t.addEntry(e); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := t.checkGraph(); err != nil {
		return nil, err
	}
	return t, nil
}

func lineErr(line int, format string, args ...any) error {
	return fmt.Errorf("line %d: %w: %s", line, ErrSyntax, fmt.Sprintf(format, args...))
}

// logicalLines splits data into logical lines, joining continuation lines.
// A bad physical line is reported and left out; the others are kept.
func logicalLines(data []byte) ([]entry, []error) {
	var entries []entry
	var errs []error
	n := 0
	for len(data) > 0 {
		n++
		var raw []byte
		raw, data, _ = bytes.Cut(data, []byte("\n"))
		raw = bytes.TrimSuffix(raw, []byte("\r"))
		s := string(raw)
		if strings.ContainsRune(s, '\r') || strings.ContainsRune(s, 0) {
			errs = append(errs, lineErr(n, "control character in line"))
			continue
		}
		trimmed := strings.TrimSpace(s)
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if s[0] == ' ' || s[0] == '\t' {
			if len(entries) == 0 {
				errs = append(errs, lineErr(n, "continuation line without a preceding entry"))
				continue
			}
			last := &entries[len(entries)-1]
			last.text += " " + trimmed
			if len(last.text) > MaxFileSize {
				return entries, append(errs, lineErr(n, "logical line too long"))
			}
			continue
		}
		entries = append(entries, entry{line: n, text: s})
	}
	return entries, errs
}

// addEntry parses one logical line into t.
func (t *Table) addEntry(e entry) error {
	key, rest, ok := strings.Cut(e.text, ":")
	if !ok {
		return lineErr(e.line, "missing ':' after the alias")
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return lineErr(e.line, "empty alias")
	}
	targets := strings.FieldsFunc(rest, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(targets) == 0 {
		return lineErr(e.line, "alias %q has no target", key)
	}
	var canon []string
	for _, tg := range targets {
		c, err := auth.CanonicalAddress(tg)
		if err != nil {
			return fmt.Errorf("line %d: target: %w", e.line, err)
		}
		if !slices.Contains(canon, c) {
			canon = append(canon, c)
		}
	}
	if domain, ok := strings.CutPrefix(key, "@"); ok {
		// A per-domain catch-all: check the domain with a dummy local part.
		c, err := auth.CanonicalAddress("x@" + domain)
		if err != nil {
			return fmt.Errorf("line %d: catch-all domain: %w", e.line, err)
		}
		domain = c[2:]
		if len(canon) != 1 {
			return lineErr(e.line, "catch-all @%s must have exactly one target", domain)
		}
		if prev, dup := t.lines["@"+domain]; dup {
			return lineErr(e.line, "catch-all @%s already defined on line %d", domain, prev)
		}
		t.catchAll[domain] = canon[0]
		t.lines["@"+domain] = e.line
		return nil
	}
	c, err := auth.CanonicalAddress(key)
	if err != nil {
		return fmt.Errorf("line %d: alias: %w", e.line, err)
	}
	k := strings.ToLower(c)
	if prev, dup := t.folded[k]; dup {
		// Keys differing only in the case of the local part would make
		// case-insensitive matching ambiguous: refuse them too.
		return lineErr(e.line, "alias %s already defined on line %d", c, t.lines[prev[0]])
	}
	t.aliases[c] = canon
	t.lines[c] = e.line
	t.folded[k] = append(t.folded[k], c)
	return nil
}

// checkGraph reports alias cycles (other than an alias naming itself) and
// chains deeper than MaxDepth, naming the line of the alias where the
// problem starts.
func (t *Table) checkGraph() error {
	// depth[k] is the number of alias levels below and including k, once
	// known; onPath marks the aliases being visited.
	depth := make(map[string]int, len(t.aliases))
	onPath := make(map[string]bool)
	var visit func(k string) (int, error)
	visit = func(k string) (int, error) {
		if d, ok := depth[k]; ok {
			return d, nil
		}
		if onPath[k] {
			return 0, lineErr(t.lines[k], "alias loop through %s", k)
		}
		onPath[k] = true
		max := 0
		for _, tg := range t.aliases[k] {
			tk, ok := t.key(tg)
			if !ok || tk == k {
				continue
			}
			d, err := visit(tk)
			if err != nil {
				return 0, err
			}
			max = maxInt(max, d)
		}
		onPath[k] = false
		depth[k] = max + 1
		if depth[k] > MaxDepth {
			return 0, lineErr(t.lines[k], "alias %s nests more than %d levels deep", k, MaxDepth)
		}
		return depth[k], nil
	}
	keys := make([]string, 0, len(t.aliases))
	for k := range t.aliases {
		keys = append(keys, k)
	}
	// Report the problem found first in file order, so errors are stable.
	slices.SortFunc(keys, func(a, b string) int { return t.lines[a] - t.lines[b] })
	for _, k := range keys {
		if _, err := visit(k); err != nil {
			return err
		}
	}
	return nil
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// key returns the alias key addr names: the same canonical address, or
// else the one key that differs from it only in letter case.
func (t *Table) key(addr string) (string, bool) {
	if t == nil || len(t.aliases) == 0 {
		return "", false
	}
	c, err := auth.CanonicalAddress(addr)
	if err != nil {
		return "", false
	}
	if _, ok := t.aliases[c]; ok {
		return c, true
	}
	if m := t.folded[strings.ToLower(c)]; len(m) == 1 {
		return m[0], true
	}
	return "", false
}

// Lookup returns the targets of the alias addr, one level deep, and whether
// addr is an alias.
func (t *Table) Lookup(addr string) ([]string, bool) {
	k, ok := t.key(addr)
	if !ok {
		return nil, false
	}
	return slices.Clone(t.aliases[k]), true
}

// Expand returns the final addresses the alias addr delivers to, following
// aliases of aliases up to MaxDepth levels, de-duplicated and in file
// order, and whether addr is an alias at all. A target that is the alias
// being expanded itself is final (the "keep a copy" idiom). Final addresses
// may be local users or remote addresses; telling them apart is the
// caller's business. If expansion would exceed MaxDepth or loop (which a
// Table from Parse never does), Expand returns nil, true.
func (t *Table) Expand(addr string) ([]string, bool) {
	k, ok := t.key(addr)
	if !ok {
		return nil, false
	}
	var out []string
	if !t.expand(k, 1, []string{k}, &out) {
		return nil, true
	}
	return out, true
}

// expand appends the final addresses of alias k to out; path holds the
// aliases being expanded (loop detection).
func (t *Table) expand(k string, depth int, path []string, out *[]string) bool {
	if depth > MaxDepth {
		return false
	}
	for _, tg := range t.aliases[k] {
		tk, isAlias := t.key(tg)
		switch {
		case !isAlias || tk == k:
			if !slices.Contains(*out, tg) {
				*out = append(*out, tg)
			}
		case slices.Contains(path, tk):
			return false
		default:
			if !t.expand(tk, depth+1, append(path, tk), out) {
				return false
			}
		}
	}
	return true
}

// CatchAll returns the catch-all target of domain (compared in lower case),
// if the table has one.
func (t *Table) CatchAll(domain string) (string, bool) {
	if t == nil || len(t.catchAll) == 0 {
		return "", false
	}
	target, ok := t.catchAll[strings.ToLower(domain)]
	return target, ok
}

// Domains returns the domains of all aliases and catch-alls, sorted and
// without duplicates.
func (t *Table) Domains() []string {
	if t == nil {
		return nil
	}
	var ds []string
	for k := range t.aliases {
		_, d, _ := strings.Cut(k, "@")
		ds = append(ds, d)
	}
	for d := range t.catchAll {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	return slices.Compact(ds)
}

// Len returns the number of aliases and catch-alls in the table.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.aliases) + len(t.catchAll)
}
