package aliases

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Source keeps the aliases somewhere shared instead of in a file
// (PostgreSQL in cluster mode, see internal/store/pgstore). It hands out
// the aliases in the file's syntax, so that they are parsed and checked
// (loops, depth) exactly as a file is.
type Source interface {
	// Version returns a number that changes whenever the aliases change.
	Version(ctx context.Context) (int64, error)
	// Load returns the aliases in the syntax of an aliases file, and
	// their version.
	Load(ctx context.Context) (text []byte, version int64, err error)
	// Name describes where the aliases are, for messages.
	Name() string
}

// sourceTimeout bounds a round trip to a Source.
const sourceTimeout = 10 * time.Second

// NewSourceReloading loads the aliases of src and returns a Reloading
// over it: every lookup first asks src for its version (at most once per
// CheckInterval) and re-reads the aliases when it changed. It fails when
// src cannot be read or its aliases do not parse.
func NewSourceReloading(src Source, logger *slog.Logger) (*Reloading, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sourceTimeout)
	defer cancel()
	data, v, err := src.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("aliases: %s: %w", src.Name(), err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src.Name(), err)
	}
	return &Reloading{src: src, path: src.Name(), Logger: logger, CheckInterval: time.Second,
		table: t, version: v, lastCheck: time.Now()}, nil
}

// reloadSource is Table's check for a Reloading over a Source; r.mu is
// held. A Source that cannot be reached, or aliases that do not parse,
// leave the last good table in use.
func (r *Reloading) reloadSource() {
	ctx, cancel := context.WithTimeout(context.Background(), sourceTimeout)
	defer cancel()
	v, err := r.src.Version(ctx)
	if err != nil {
		r.fail(err)
		return
	}
	if v == r.version {
		return
	}
	data, v, err := r.src.Load(ctx)
	if err != nil {
		r.fail(err)
		return
	}
	r.version = v // a broken version is reported once
	t, err := Parse(data)
	if err != nil {
		r.fail(err)
		return
	}
	r.table, r.err = t, nil
	if r.Logger != nil {
		r.Logger.Info("aliases: reloaded", "source", r.src.Name(), "entries", t.Len())
	}
}

// FormatEntry returns the line of an aliases file for key ("local@domain"
// or "@domain") and its targets.
func FormatEntry(key string, targets []string) string {
	return key + ": " + strings.Join(targets, ", ") + "\n"
}

// Entries returns the entries of the table: each key ("local@domain", or
// "@domain" for a catch-all) with its targets, sorted by key.
func (t *Table) Entries() []Entry {
	var out []Entry
	for k, v := range t.aliases {
		out = append(out, Entry{Key: k, Targets: append([]string(nil), v...)})
	}
	for d, v := range t.catchAll {
		out = append(out, Entry{Key: "@" + d, Targets: []string{v}})
	}
	sortEntries(out)
	return out
}

// Entry is one alias or catch-all of a table.
type Entry struct {
	Key     string
	Targets []string
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
}
