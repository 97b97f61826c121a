//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package auth

import (
	"context"
	"errors"
	"os"
)

// lockFile is not supported on this system: the user database cannot be
// modified here.
func lockFile(ctx context.Context, path string) (*os.File, error) {
	return nil, errors.New("auth: file locking is not supported on this system")
}
