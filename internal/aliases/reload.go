package aliases

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Reloading is an aliases table kept in step with its file: every lookup
// first checks (at most once per CheckInterval) whether the file's
// modification time, size or inode changed, and re-reads it if so. When
// the new content does not parse, the error is logged, remembered (see
// Err) and the last good table stays in use. Its methods are safe for
// concurrent use.
type Reloading struct {
	// CheckInterval is the least time between two stats of the file; 0
	// stats on every lookup.
	CheckInterval time.Duration
	// Logger receives reload failures; nil discards them.
	Logger *slog.Logger

	path    string
	src     Source // nil: the file at path
	version int64  // src's version of table

	mu        sync.Mutex
	table     *Table
	fi        fs.FileInfo // nil: the file did not exist
	lastCheck time.Time
	err       error
}

// NewReloading loads the aliases file at path (a missing file is an empty
// table) and returns a Reloading over it. It fails when the file exists
// but does not parse.
func NewReloading(path string, logger *slog.Logger) (*Reloading, error) {
	r := &Reloading{path: path, Logger: logger, CheckInterval: time.Second}
	fi, err := os.Stat(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	t, err := Load(path)
	if err != nil {
		return nil, err
	}
	r.table, r.fi, r.lastCheck = t, fi, time.Now()
	return r, nil
}

// sameFile reports whether two stats show the same file content.
func sameFile(a, b fs.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// Table returns the current table, re-reading the file if it changed.
func (r *Reloading) Table() *Table {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.CheckInterval > 0 && now.Sub(r.lastCheck) < r.CheckInterval && now.After(r.lastCheck) {
		return r.table
	}
	r.lastCheck = now
	if r.src != nil {
		r.reloadSource()
		return r.table
	}
	fi, err := os.Stat(r.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.fail(err)
		return r.table
	}
	if err != nil {
		fi = nil
	}
	if sameFile(fi, r.fi) {
		return r.table
	}
	t, err := Load(r.path)
	// Remember the stat even on failure, so that a broken file is reported
	// once, not on every lookup.
	r.fi = fi
	if err != nil {
		r.fail(err)
		return r.table
	}
	r.table, r.err = t, nil
	if r.Logger != nil {
		r.Logger.Info("aliases: reloaded", "path", r.path, "entries", t.Len())
	}
	return r.table
}

func (r *Reloading) fail(err error) {
	r.err = err
	if r.Logger != nil {
		r.Logger.Error("aliases: keeping the previous table", "path", r.path, "err", err)
	}
}

// Err returns the error of the last failed reload, or nil when the table
// in use matches the file.
func (r *Reloading) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Expand is Table.Expand on the current table.
func (r *Reloading) Expand(addr string) ([]string, bool) { return r.Table().Expand(addr) }

// CatchAll is Table.CatchAll on the current table.
func (r *Reloading) CatchAll(domain string) (string, bool) { return r.Table().CatchAll(domain) }

// Domains is Table.Domains on the current table.
func (r *Reloading) Domains() []string { return r.Table().Domains() }
