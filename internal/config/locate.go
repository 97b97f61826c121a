package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// EnvVar is the environment variable naming the configuration file when no
// --config flag is given.
const EnvVar = "POSTINO_CONFIG"

// LocalFile is the configuration file looked for in the working directory.
const LocalFile = "postino.toml"

// SystemFile is the configuration file looked for last, the one the
// systemd unit in dist/postino.service passes to "postino serve". It is a
// variable only so that tests can point it elsewhere.
var SystemFile = "/etc/postino/postino.toml"

// How a configuration file was chosen, in the order Locate tries them.
const (
	FromFlag     = "--config"
	FromEnv      = "$" + EnvVar
	FromWorkDir  = "working directory"
	FromSystem   = "system configuration"
	FromDefaults = "embedded defaults"
)

// Source says which configuration file a command uses and how it was
// found. Path is empty for the embedded defaults.
type Source struct {
	Path string
	How  string // one of FromFlag, FromEnv, FromWorkDir, FromSystem, FromDefaults
}

// String describes the source for messages and the start banner, e.g.
// "/etc/postino/postino.toml (system configuration)".
func (s Source) String() string {
	if s.Path == "" {
		return fmt.Sprintf("embedded defaults (no --config, no $%s, no ./%s, no %s)", EnvVar, LocalFile, SystemFile)
	}
	return fmt.Sprintf("%s (%s)", s.Path, s.How)
}

// Explicit reports whether the file was named by the user (--config or
// $POSTINO_CONFIG) rather than found by looking in the usual places.
func (s Source) Explicit() bool { return s.How == FromFlag || s.How == FromEnv }

// Locate returns the configuration file to use, in this order: flagPath
// (--config) when not empty, then $POSTINO_CONFIG when set and not empty,
// then ./postino.toml, then SystemFile; when none of the last two exists,
// the embedded defaults (Path ""). A file named by the flag or the
// variable is returned whether or not it exists, so that Load reports it
// missing; a file in the usual places that exists but cannot be examined
// (permissions) is an error rather than silently skipped.
func Locate(flagPath string) (Source, error) {
	if flagPath != "" {
		return Source{Path: flagPath, How: FromFlag}, nil
	}
	if p := strings.TrimSpace(os.Getenv(EnvVar)); p != "" {
		return Source{Path: p, How: FromEnv}, nil
	}
	for _, c := range []Source{{LocalFile, FromWorkDir}, {SystemFile, FromSystem}} {
		_, err := os.Stat(c.Path)
		switch {
		case err == nil:
			return c, nil
		case !errors.Is(err, fs.ErrNotExist):
			return Source{}, fmt.Errorf("config: %w", err)
		}
	}
	return Source{How: FromDefaults}, nil
}
