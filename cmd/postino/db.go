package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/postino-mail/postino/internal/store/pgstore"
)

func runDB(env *cmdEnv, args []string) int {
	fs := newFlags(env, "db", "db migrate | version  [--data DIR] [--config FILE]\n\n"+
		"migrate creates the PostgreSQL schema of storage.postgres_dsn, or brings it\n"+
		"up to date, and prints the versions applied; several servers may run it at\n"+
		"once ('postino serve' does it at start too). version prints the schema\n"+
		"version of the database and the newest this postino knows. A database\n"+
		"newer than this postino is refused.")
	common := &fs.common
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("command (migrate, version)")
	}
	if pos[0] != "migrate" && pos[0] != "version" {
		return fs.usageError("unknown db command %q (migrate, version)", pos[0])
	}
	if len(pos) > 1 {
		return fs.unexpected(pos[1])
	}
	cfg, code := common.loadExisting(env)
	if cfg == nil {
		return code
	}
	if !cfg.UsesPostgres() {
		errorf(env, "db: storage.backend is %q: there is no database", cfg.Storage.Backend)
		return exitConfigError
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pool, err := pgstore.NewPool(ctx, cfg.Storage.PostgresDSN, 2)
	if err != nil {
		errorf(env, "db: %v", err)
		return exitConfigError
	}
	defer pool.Close()
	if pos[0] == "version" {
		err := pgstore.CheckSchema(ctx, pool)
		switch {
		case err == nil, errors.Is(err, pgstore.ErrSchemaTooOld), errors.Is(err, pgstore.ErrSchemaTooNew):
			fmt.Fprintf(env.stdout, "postino schema %d\n", pgstore.LatestVersion())
			if err != nil {
				fmt.Fprintf(env.stdout, "%v\n", err)
				return exitError
			}
			fmt.Fprintf(env.stdout, "database up to date\n")
			return exitOK
		}
		errorf(env, "db: %v", err)
		return exitTempFail
	}
	applied, err := pgstore.Migrate(ctx, pool)
	for _, v := range applied {
		fmt.Fprintf(env.stdout, "applied schema version %d\n", v)
	}
	if err != nil {
		errorf(env, "db migrate: %v", err)
		if errors.Is(err, pgstore.ErrSchemaTooNew) {
			return exitConfigError
		}
		return exitTempFail
	}
	if len(applied) == 0 {
		fmt.Fprintf(env.stdout, "schema up to date (version %d)\n", pgstore.LatestVersion())
	}
	return exitOK
}
