package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/store/pgstore"
)

func runDB(env *cmdEnv, args []string) int {
	fs := newFlags(env, "db", "db migrate | version | import [ADDRESS...]  [--data DIR] [--config FILE]\n\n"+
		"migrate creates the PostgreSQL schema of storage.postgres_dsn, or brings it\n"+
		"up to date, and prints the versions applied; several servers may run it at\n"+
		"once ('postino serve' does it at start too). version prints the schema\n"+
		"version of the database and the newest this postino knows. A database\n"+
		"newer than this postino is refused. import copies the Maildirs of the data\n"+
		"folder (DATA/mail) of the given users, or of every user, into the database\n"+
		"(and the users themselves, from users.file, with their passwords),\n"+
		"each message with its UIDL (Dovecot's too, see pop3.dovecot_uidl_format),\n"+
		"so that POP3 clients download nothing again; the Maildirs are left as they\n"+
		"are, and a message already imported is skipped.")
	common := &fs.common
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("command (migrate, version, import)")
	}
	if pos[0] != "migrate" && pos[0] != "version" && pos[0] != "import" {
		return fs.usageError("unknown db command %q (migrate, version, import)", pos[0])
	}
	if len(pos) > 1 && pos[0] != "import" {
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
	if pos[0] == "import" {
		return dbImport(env, cfg, pos[1:])
	}
	if pos[0] == "migrate" {
		return dbMigrate(env, cfg)
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
	errorf(env, "db: unknown command %q", pos[0])
	return exitUsage
}

// dbMigrate creates the schema of storage.postgres_dsn or brings it up to
// date, printing the versions applied.
func dbMigrate(env *cmdEnv, cfg *config.Config) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pool, err := pgstore.NewPool(ctx, cfg.Storage.PostgresDSN, 2)
	if err != nil {
		errorf(env, "db: %v", err)
		return exitConfigError
	}
	defer pool.Close()
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

// dbImport copies the Maildirs of addrs (none: every user) into the
// PostgreSQL store, keeping UIDLs.
func dbImport(env *cmdEnv, cfg *config.Config, addrs []string) int {
	ctx := context.Background()
	named := addrs
	if len(addrs) == 0 {
		users, err := auth.OpenDB(cfg.UsersFile()).List()
		if err != nil {
			errorf(env, "db import: %v", err)
			return exitError
		}
		for _, u := range users {
			addrs = append(addrs, u.Address)
		}
	}
	src, err := maildir.New(cfg.MailDir(), nil)
	if err != nil {
		errorf(env, "db import: %v", err)
		return exitError
	}
	defer src.Close()
	// Mailboxes moved from Dovecot keep Dovecot's UIDLs, as when served.
	if err := src.SetDovecotUIDLFormat(cfg.POP3.DovecotUIDLFormat); err != nil {
		errorf(env, "db import: pop3.dovecot_uidl_format: %v", err)
		return exitConfigError
	}
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	dst, err := cfg.OpenPGStore(octx, false, nil)
	cancel()
	if err != nil {
		errorf(env, "db import: %v", err)
		return exitTempFail
	}
	defer dst.Close()
	code := runImportSteps(ctx, env, cfg, named)
	if code == exitTempFail {
		return code
	}
	for _, a := range addrs {
		addr, err := auth.CanonicalAddress(a)
		if err != nil {
			errorf(env, "db import: %v", err)
			return exitUsage
		}
		// The Maildir's lock is held meanwhile: no POP3 session of a
		// Maildir server changes it under the import.
		md, err := src.OpenMaildrop(ctx, addr)
		if errors.Is(err, store.ErrLocked) {
			errorf(env, "db import: the Maildir of %s is in use (a POP3 session): try again later", addr)
			return exitTempFail
		}
		if err != nil {
			errorf(env, "db import: %s: %v", addr, err)
			return exitError
		}
		n, err := dst.ImportMaildrop(ctx, addr, md)
		md.Close()
		if err != nil {
			errorf(env, "db import: %v (%d messages of %s imported before the failure)", err, n, addr)
			return exitTempFail
		}
		fmt.Fprintf(env.stdout, "%s: %d messages imported\n", addr, n)
	}
	return code
}
