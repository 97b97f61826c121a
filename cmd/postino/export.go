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
)

func runExport(env *cmdEnv, args []string) int {
	fs := newFlags(env, "export", "export DIR [ADDRESS...]  [--data DIR] [--config FILE]\n\n"+
		"Writes the mailboxes of the given users, or of every user, from the configured\n"+
		"store (Maildir or PostgreSQL) as Maildirs under DIR/DOMAIN/LOCAL/Maildir, the\n"+
		"layout of a data folder's mail/: a backup, or the way back from PostgreSQL to\n"+
		"one server. Each message keeps its UIDL in the Maildir's dovecot-uidlist, which\n"+
		"postino (pop3.dovecot_uidl_format) and Dovecot both read, so that POP3 clients\n"+
		"download nothing again. Files are fsync'd. Running it again adds only what is\n"+
		"missing. Each mailbox is locked while it is exported, as by a POP3 session.")
	common := &fs.common
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("DIR")
	}
	cfg, code := common.loadExisting(env)
	if cfg == nil {
		return code
	}
	return export(env, cfg, pos[0], pos[1:])
}

// exportStore is the configured store, to be closed after the export.
type exportStore interface {
	store.Store
	Close() error
}

// openExportStore opens the configured mail store, with the UIDLs a
// Maildir's dovecot-uidlist gives (as postino serve does).
func openExportStore(cfg *config.Config) (exportStore, error) {
	if !cfg.UsesPostgres() {
		st, err := maildir.New(cfg.MailDir(), nil)
		if err != nil {
			return nil, err
		}
		if err := st.SetDovecotUIDLFormat(cfg.POP3.DovecotUIDLFormat); err != nil {
			st.Close()
			return nil, fmt.Errorf("pop3.dovecot_uidl_format: %w", err)
		}
		return st, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := cfg.OpenPGStore(ctx, false, nil)
	if err != nil {
		return nil, err
	}
	return pgUserStore{st}, nil
}

// export writes the mailboxes of addrs (none: every user) under dir.
func export(env *cmdEnv, cfg *config.Config, dir string, addrs []string) int {
	if len(addrs) == 0 {
		users, err := auth.OpenDB(cfg.UsersFile()).List()
		if err != nil {
			errorf(env, "export: %v", err)
			return exitError
		}
		for _, u := range users {
			addrs = append(addrs, u.Address)
		}
	}
	st, err := openExportStore(cfg)
	if err != nil {
		errorf(env, "export: %v", err)
		return exitTempFail
	}
	defer st.Close()
	ctx := context.Background()
	for _, a := range addrs {
		addr, err := auth.CanonicalAddress(a)
		if err != nil {
			errorf(env, "export: %v", err)
			return exitUsage
		}
		mdir, err := maildir.ExportDir(dir, addr)
		if err != nil {
			errorf(env, "export: %v", err)
			return exitDataErr
		}
		md, err := st.OpenMaildrop(ctx, addr)
		if errors.Is(err, store.ErrLocked) {
			errorf(env, "export: %s is in use by a POP3 session: try again later", addr)
			return exitTempFail
		}
		if err != nil {
			errorf(env, "export: %s: %v", addr, err)
			return exitTempFail
		}
		res, err := maildir.ExportMaildrop(ctx, mdir, md)
		md.Close()
		if err != nil {
			errorf(env, "export: %s: %v (%d messages written before the failure)", addr, err, res.Written)
			return exitTempFail
		}
		fmt.Fprintf(env.stdout, "%s: %d messages written, %d already there\n", addr, res.Written, res.Skipped)
	}
	return exitOK
}
