package main

import (
	"flag"

	"github.com/postino-mail/postino/internal/config"
)

// commonFlags are the flags every command that touches the data folder
// takes: --config and --data.
type commonFlags struct {
	configFile string
	dataDir    string
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.configFile, "config", "", "configuration `FILE` (TOML); embedded defaults when empty")
	fs.StringVar(&c.dataDir, "data", "", "data `DIR` (overrides data_dir)")
}

// load reads the configuration and applies the common overrides.
func (c *commonFlags) load() (*config.Config, error) {
	cfg := config.Default()
	if c.configFile != "" {
		var err error
		if cfg, err = config.Load(c.configFile); err != nil {
			return nil, err
		}
	}
	if c.dataDir != "" {
		cfg.DataDir = c.dataDir
	}
	return cfg, nil
}

// loadAsOwner loads the configuration for a command that writes in the
// data folder and, run as root, switches to the folder's owner. On failure
// it reports the error and returns a nil config with the exit code.
func (c *commonFlags) loadAsOwner(env *cmdEnv) (*config.Config, int) {
	cfg, err := c.load()
	if err != nil {
		errorf(env, "%v", err)
		return nil, exitConfigError
	}
	if err := becomeDataOwner(cfg); err != nil {
		errorf(env, "%v", err)
		return nil, exitTempFail
	}
	return cfg, 0
}

func runConfig(env *cmdEnv, args []string) int {
	fs := newFlags(env, "config", "config default | config check [FILE]")
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		fs.Usage()
		return exitUsage
	}
	switch pos[0] {
	case "default":
		if err := config.WriteDefault(env.stdout); err != nil {
			errorf(env, "%v", err)
			return exitError
		}
		return exitOK
	case "check":
		file := "postino.toml"
		if len(pos) > 1 {
			file = pos[1]
		}
		if _, err := config.Load(file); err != nil {
			errorf(env, "%v", err)
			return exitConfigError
		}
		env.stdout.Write([]byte(file + ": OK\n"))
		return exitOK
	}
	fs.Usage()
	return exitUsage
}
