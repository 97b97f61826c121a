package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// buildTimeout bounds "go build ./cmd/postino".
const buildTimeout = 5 * time.Minute

// Main is the body of the TestMain of a package that tests the postino
// binary. It builds ./cmd/postino into a new temporary folder and stores
// the binary's path in *bin, calls setup (when not nil) with that folder,
// runs the tests and removes the folder. It returns the exit code for
// os.Exit. Failures before the tests run are printed to standard error,
// prefixed with tag, and give exit code 1.
func Main(m *testing.M, tag string, bin *string, setup func(dir string) error) int {
	path, dir, err := BuildPostino(tag)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", tag, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*bin = path
	if setup != nil {
		if err := setup(dir); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", tag, err)
			return 1
		}
	}
	return m.Run()
}

// BuildPostino builds ./cmd/postino of the module that holds the current
// folder into a new temporary folder named after tag. It returns the
// binary's path and the folder, which the caller removes.
func BuildPostino(tag string) (bin, dir string, err error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", "", fmt.Errorf("cannot find the repository root: %w", err)
	}
	dir, err = os.MkdirTemp("", "postino-"+tag+"-")
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "postino")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/postino")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("go build ./cmd/postino: %v\n%s", err, out)
	}
	return bin, dir, nil
}

// ModuleRoot returns the nearest folder at or above the current one that
// holds a go.mod file.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the current folder")
		}
		dir = parent
	}
}
