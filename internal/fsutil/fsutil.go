// Package fsutil holds the small file and stream helpers that postino's
// packages share: durable whole-file replacement, directory fsync, and a
// reader that stops when its context ends.
//
// Durability contract: WriteFile returns only once the new content is on
// disk under its final name and that name is durable (the file and its
// directory fsync'd); SyncDir makes every rename and creation already done
// in a directory durable.
package fsutil

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// SyncDir fsyncs a directory, making renames and creations in it durable
// (POSIX fsync on the directory: without it a crash may lose the entry).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteFile replaces path with data durably: it writes path + ".tmp" with
// mode perm (whatever the umask), fsyncs it, renames it over path and
// fsyncs the directory. A stale path + ".tmp" left by a crash is removed
// first; two concurrent writers of the same path cannot interleave (the
// second one fails to create the temporary file).
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// ContextReader returns a reader that reads from r until ctx ends, and
// from then on returns ctx.Err(). It checks the context before each Read,
// so a copy of a long stream stops at the next buffer.
func ContextReader(ctx context.Context, r io.Reader) io.Reader {
	return ctxReader{ctx: ctx, r: r}
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
