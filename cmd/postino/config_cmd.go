package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/postino-mail/postino/internal/config"
)

// commonFlags are the global flags every command takes, before or after
// its name: --config and --data.
type commonFlags struct {
	configFile string
	dataDir    string

	// source is the configuration file load used.
	source config.Source
}

func (c *commonFlags) register(fs *cmdFlags) {
	fs.StringVar(&c.configFile, "config", "", "configuration `FILE` (TOML); default: $"+config.EnvVar+", ./"+config.LocalFile+", "+config.SystemFile+", else the embedded defaults")
	fs.StringVar(&c.dataDir, "data", "", "data `DIR` (overrides data_dir)")
}

// load finds and reads the configuration (config.Locate) and applies the
// common overrides.
func (c *commonFlags) load() (*config.Config, error) {
	src, err := config.Locate(c.configFile)
	if err != nil {
		return nil, err
	}
	c.source = src
	cfg, err := config.Load(src.Path)
	if err != nil {
		return nil, err
	}
	if c.dataDir != "" {
		cfg.DataDir = c.dataDir
	}
	return cfg, nil
}

// dataSource says where the data folder's name came from.
func (c *commonFlags) dataSource() string {
	switch {
	case c.dataDir != "":
		return "from --data"
	case c.source.Path != "":
		return "data_dir in " + c.source.String()
	}
	return "data_dir of the " + c.source.String()
}

// MissingDataError is returned for a command that needs an existing data
// folder when the folder does not exist: only "serve" and "init" create
// one, so that a command pointed at the wrong folder (a missing --config,
// a typo in --data) fails instead of quietly making a new, empty one.
type MissingDataError struct {
	Dir  string // the data folder, as configured
	From string // where that name came from
	Err  error  // what stat said, or why it is not a folder
}

// Error names the folder, where its name came from and how to fix it.
func (e *MissingDataError) Error() string {
	dir := e.Dir
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if !errors.Is(e.Err, fs.ErrNotExist) {
		return fmt.Sprintf("data folder %s (%s): %v", dir, e.From, e.Err)
	}
	return fmt.Sprintf("data folder %s does not exist (%s).\n"+
		"Point to the server's configuration with --config FILE or $%s, or to its data folder with --data DIR;\n"+
		"or create this one with \"postino init\" (\"postino serve\" creates it too)", dir, e.From, config.EnvVar)
}

// Unwrap returns the underlying error (fs.ErrNotExist for a missing folder).
func (e *MissingDataError) Unwrap() error { return e.Err }

// requireData checks that the configured data folder exists.
func (c *commonFlags) requireData(cfg *config.Config) error {
	fi, err := os.Stat(cfg.DataDir)
	if err == nil && !fi.IsDir() {
		err = errors.New("not a folder")
	}
	if err != nil {
		return &MissingDataError{Dir: cfg.DataDir, From: c.dataSource(), Err: err}
	}
	return nil
}

// loadExisting loads the configuration of a command that works in an
// existing data folder. On failure it reports the error and returns a nil
// config with the exit code.
func (c *commonFlags) loadExisting(env *cmdEnv) (*config.Config, int) {
	cfg, err := c.load()
	if err != nil {
		errorf(env, "%v", err)
		return nil, exitConfigError
	}
	if err := c.requireData(cfg); err != nil {
		errorf(env, "%v", err)
		return nil, exitConfigError
	}
	return cfg, 0
}

// loadAsOwner loads the configuration for a command that writes in the
// data folder, which must exist, and, run as root, switches to the
// folder's owner. On failure it reports the error and returns a nil config
// with the exit code.
func (c *commonFlags) loadAsOwner(env *cmdEnv) (*config.Config, int) {
	cfg, code := c.loadExisting(env)
	if cfg == nil {
		return nil, code
	}
	if err := becomeDataOwner(cfg); err != nil {
		errorf(env, "%v", err)
		return nil, exitTempFail
	}
	return cfg, 0
}

func runConfig(env *cmdEnv, args []string) int {
	fs := newFlags(env, "config", "config default | config check [FILE] [--config FILE]\n\n"+
		"check validates FILE, or the file --config names, or the one found in the\n"+
		"usual places ($"+config.EnvVar+", ./"+config.LocalFile+", "+config.SystemFile+"), and\n"+
		"says which file it checked and which data folder it names. It reports every\n"+
		"problem in one run, each as FILE:LINE: KEY: message on standard error:\n"+
		"unknown keys, bad values, tls.cert/tls.key, the users and aliases files,\n"+
		"DKIM keys, listener addresses (each is bound for an instant) and users\n"+
		"outside smtp.local_domains; it exits 78 if there is any error (warnings\n"+
		"do not change the exit code).")
	common := &fs.common
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("default or check")
	}
	switch pos[0] {
	case "default":
		if len(pos) > 1 {
			return fs.unexpected(pos[1])
		}
		if err := config.WriteDefault(env.stdout); err != nil {
			errorf(env, "%v", err)
			return exitError
		}
		return exitOK
	case "check":
		switch {
		case len(pos) > 2:
			return fs.unexpected(pos[2])
		case len(pos) == 2 && common.configFile != "" && common.configFile != pos[1]:
			return fs.usageError("check %s or --config %s, not both", pos[1], common.configFile)
		case len(pos) == 2:
			common.configFile = pos[1]
		}
		return checkConfig(env, common)
	}
	return fs.usageError("unknown config command %q (default, check)", pos[0])
}

func runInit(env *cmdEnv, args []string) int {
	fs := newFlags(env, "init", "init [--config FILE] [--data DIR]\n\n"+
		"Creates the data folder of the configuration (data_dir, or --data), which\n"+
		"the other commands, except serve, require to exist.")
	common := &fs.common
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return fs.unexpected(pos[0])
	}
	cfg, err := common.load()
	if err != nil {
		errorf(env, "%v", err)
		return exitConfigError
	}
	if common.requireData(cfg) == nil {
		fmt.Fprintf(env.stdout, "data folder %s already exists (%s)\n", cfg.DataDir, common.dataSource())
		return exitOK
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		errorf(env, "creating the data folder: %v", err)
		return exitCantCreate
	}
	fmt.Fprintf(env.stdout, "created data folder %s (%s)\n", cfg.DataDir, common.dataSource())
	return exitOK
}

// checkTimeout bounds the listener checks of "config check".
const checkTimeout = 30 * time.Second

// checkConfig runs "config check": every finding of config.Check on
// standard error, then a summary and the data folder on standard output.
// It exits with EX_CONFIG when there is any error.
func checkConfig(env *cmdEnv, common *commonFlags) int {
	src, err := config.Locate(common.configFile)
	if err != nil {
		errorf(env, "%v", err)
		return exitConfigError
	}
	common.source = src
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	res := config.Check(ctx, src.Path, config.CheckOptions{DataDir: common.dataDir})
	for _, f := range res.Findings {
		fmt.Fprintln(env.stderr, f)
	}
	nErr, nWarn := res.Errors(), res.Warnings()
	summary := "OK"
	if nErr > 0 {
		summary = plural(nErr, "error") + ", " + plural(nWarn, "warning")
	} else if nWarn > 0 {
		summary = "OK, " + plural(nWarn, "warning")
	}
	fmt.Fprintf(env.stdout, "%s: %s\n", common.source, summary)
	if res.Config != nil {
		state := "exists"
		if err := common.requireData(res.Config); err != nil {
			state = "does not exist yet; \"postino serve\" or \"postino init\" creates it"
		}
		fmt.Fprintf(env.stdout, "data folder: %s (%s)\n", res.Config.DataDir, state)
	}
	if nErr > 0 {
		return exitConfigError
	}
	return exitOK
}

// plural returns "1 error" or "2 errors".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
