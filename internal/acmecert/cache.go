package acmecert

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/acme/autocert"

	"github.com/postino-mail/postino/internal/fsutil"
)

// Cache is where certificates, their keys and the ACME account key are
// kept between runs. It is autocert's interface: Get returns ErrCacheMiss
// for a key never stored. The data-folder implementation is DirCache; a
// cluster keeps them in a shared database so that every node serves the
// same certificates.
type Cache = autocert.Cache

// ErrCacheMiss is what a Cache's Get returns for a missing key.
var ErrCacheMiss = autocert.ErrCacheMiss

// ErrBadKey is wrapped by DirCache's errors for a key that cannot be a file
// name.
var ErrBadKey = errors.New("acme cache: invalid key")

// maxKeyLen bounds cache keys: a host name (253) and a suffix.
const maxKeyLen = 300

// DirCache is a Cache over a folder of the data directory. Each entry is one
// file named after its key, written with mode 0600 to a temporary file that
// is synced and renamed into place (fsutil.WriteFile), so a crash never
// leaves half a certificate. Every access is confined to the folder
// (os.Root).
type DirCache string

// checkKey refuses keys that are not plain file names.
func checkKey(key string) error {
	if key == "" || len(key) > maxKeyLen || key == "." || key == ".." ||
		strings.ContainsAny(key, "/\\\x00") || strings.HasPrefix(key, ".") {
		return fmt.Errorf("%w: %q", ErrBadKey, key)
	}
	return nil
}

// Get returns the data stored under key, or ErrCacheMiss.
func (d DirCache) Get(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrCacheMiss
	}
	if err != nil {
		return nil, fmt.Errorf("acme cache: %w", err)
	}
	defer root.Close()
	data, err := root.ReadFile(key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrCacheMiss
	}
	if err != nil {
		return nil, fmt.Errorf("acme cache: %w", err)
	}
	return data, nil
}

// Put stores data under key durably, creating the folder (mode 0700) if
// needed.
func (d DirCache) Put(ctx context.Context, key string, data []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fmt.Errorf("acme cache: %w", err)
	}
	// The key has no separator (checkKey): the path stays in the folder.
	if err := fsutil.WriteFile(filepath.Join(string(d), key), data, 0o600); err != nil {
		return fmt.Errorf("acme cache: %w", err)
	}
	return nil
}

// Delete removes the entry of key; a missing one is not an error.
func (d DirCache) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	root, err := os.OpenRoot(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("acme cache: %w", err)
	}
	defer root.Close()
	if err := root.Remove(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("acme cache: %w", err)
	}
	return fsutil.SyncDir(string(d))
}

// loggingCache logs each certificate stored: a first certificate or a
// renewal.
type loggingCache struct {
	Cache
	logger *slog.Logger
}

// Put stores data and logs certificates (keys that are host names, with
// "+rsa" for RSA ones; not the account key or challenge tokens).
func (c loggingCache) Put(ctx context.Context, key string, data []byte) error {
	err := c.Cache.Put(ctx, key, data)
	name := strings.TrimSuffix(key, "+rsa")
	if !strings.Contains(name, "+") && !strings.HasPrefix(name, "acme_account") {
		if err != nil {
			c.logger.Error("acme: storing certificate failed", "name", name, "err", err)
		} else {
			c.logger.Info("acme: certificate obtained", "name", name, "key", key)
		}
	}
	return err
}
