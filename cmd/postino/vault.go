package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
)

func runVault(env *cmdEnv, args []string) int {
	fs := newFlags(env, "vault", "vault list ADDRESS | restore ADDRESS (UIDL... | --all)  [--data DIR] [--config FILE]\n\n"+
		"The deleted-mail vault keeps the messages a POP3 client deleted (and those\n"+
		"the pop3.expire sweep removed) for pop3.vault_days days.\n"+
		"list shows a user's vault: UIDL, time of deletion (UTC), size, From and Subject.\n"+
		"restore puts the messages named by their UIDL, or all of them, back into the\n"+
		"mailbox with their old UIDL, so that a POP3 client downloads them again.\n"+
		"The mailbox must not be in use by a POP3 session; restored messages count\n"+
		"against the quota again (the vault itself does not).")
	all := fs.Bool("all", false, "restore: every message of the vault")
	common := &fs.common
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("command (list, restore)")
	}
	sub := pos[0]
	switch {
	case sub != "list" && sub != "restore":
		return fs.usageError("unknown vault command %q (list, restore)", sub)
	case len(pos) < 2:
		return fs.missing("ADDRESS (vault " + sub + " ADDRESS)")
	case sub == "list" && len(pos) > 2:
		return fs.unexpected(pos[2])
	case sub == "list" && *all:
		return fs.usageError("--all is for restore")
	case sub == "restore" && *all && len(pos) > 2:
		return fs.usageError("give UIDLs or --all, not both")
	case sub == "restore" && !*all && len(pos) == 2:
		return fs.missing("UIDL or --all (vault restore ADDRESS UIDL...)")
	}
	cfg, code := common.loadExisting(env)
	if cfg == nil {
		return code
	}
	addr, err := auth.CanonicalAddress(pos[1])
	if err != nil {
		errorf(env, "%v", err)
		return exitDataErr
	}
	u, ok := cfg.OpenUsers(nil).Lookup(addr)
	if !ok {
		errorf(env, "no such user: %s", addr)
		return exitNoUser
	}
	addr = u.Address // the mailbox's name, as the database spells it
	st, err := openVaultStore(cfg)
	if err != nil {
		errorf(env, "%v", err)
		return exitTempFail
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if sub == "list" {
		entries, err := st.VaultList(ctx, addr)
		if err != nil {
			errorf(env, "%v", err)
			return exitError
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "UIDL\tDELETED\tSIZE\tFROM\tSUBJECT")
		for _, e := range entries {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", e.UID, e.Deleted.UTC().Format(time.RFC3339), e.Size, e.From, e.Subject)
		}
		tw.Flush()
		return exitOK
	}
	done, err := st.VaultRestore(ctx, addr, pos[2:], *all)
	for _, e := range done {
		fmt.Fprintf(env.stdout, "restored %s\n", e.UID)
	}
	switch {
	case errors.Is(err, store.ErrLocked):
		errorf(env, "%s is in use by a POP3 session; try again once it ends", addr)
		return exitTempFail
	case errors.Is(err, maildir.ErrNotInVault):
		errorf(env, "%v (see postino vault list %s)", err, addr)
		return exitDataErr
	case err != nil:
		errorf(env, "%v", err)
		return exitError
	}
	fmt.Fprintf(env.stdout, "%d messages restored to %s\n", len(done), addr)
	return exitOK
}

// vaultStore is the vault of the configured mail store.
type vaultStore interface {
	VaultList(ctx context.Context, mailbox string) ([]maildir.VaultEntry, error)
	VaultRestore(ctx context.Context, mailbox string, uids []string, all bool) ([]maildir.VaultEntry, error)
	Close() error
}

// openVaultStore opens the configured mail store: the Maildirs of the
// data folder, or PostgreSQL.
func openVaultStore(cfg *config.Config) (vaultStore, error) {
	if !cfg.UsesPostgres() {
		return maildir.New(cfg.MailDir(), nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := cfg.OpenPGStore(ctx, false, nil)
	if err != nil {
		return nil, err
	}
	return pgUserStore{st}, nil
}
