package main

import (
	"log/slog"
	"os"
	"os/user"
	"strconv"

	"github.com/postino-mail/postino/internal/config"
)

// commandLogger returns the configured logger (log_format and log_level,
// on standard error) for a command that changes mail or the queue
// outside the server, with who ran it: the keys "run_by_uid" and "run_by" (the
// user name, or the uid when it has none), and "command".
func commandLogger(env *cmdEnv, cfg *config.Config, command string) *slog.Logger {
	uid := os.Getuid()
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	return newLogger(env, cfg, cfg.SlogLevel()).With("command", command, "run_by_uid", uid, "run_by", name)
}
