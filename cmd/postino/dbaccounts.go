package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/dkim"
)

// importStep copies one kind of a single-node data folder's state into
// the configured PostgreSQL storage for "postino db import", before the
// mailboxes. addrs are the users named on the command line (none: all).
// A step prints its progress, copies nothing twice when run again, and
// returns how many items it had to skip (they are reported on standard
// error, and the command then exits 1 after the other steps).
type importStep struct {
	name string
	run  func(ctx context.Context, env *cmdEnv, cfg *config.Config, addrs []string) (skipped int, err error)
}

// importSteps are run in order by "postino db import".
var importSteps = []importStep{
	{"users", importUsers},
	{"aliases", importAliases},
	{"DKIM keys", importDKIM},
	{"queued messages", importQueue},
}

// runImportSteps runs every import step; it returns the exit code of the
// first failing one, or exitError when items were skipped.
func runImportSteps(ctx context.Context, env *cmdEnv, cfg *config.Config, addrs []string) int {
	skipped := 0
	for _, s := range importSteps {
		n, err := s.run(ctx, env, cfg, addrs)
		if err != nil {
			errorf(env, "db import: %s: %v", s.name, err)
			return exitTempFail
		}
		skipped += n
	}
	if skipped > 0 {
		return exitError
	}
	return exitOK
}

// importUsers copies the users of users.file (all, or those of addrs)
// into the database, with their password hashes and extra fields. A user
// the database already has is left as it is there (it may have changed
// its password since).
func importUsers(ctx context.Context, env *cmdEnv, cfg *config.Config, addrs []string) (int, error) {
	src := auth.OpenDB(cfg.UsersFile())
	for _, p := range src.Problems() {
		errorf(env, "db import: %s: skipping %s", cfg.UsersFile(), p)
	}
	users, err := src.List()
	if err != nil {
		return 0, err
	}
	if len(addrs) > 0 {
		var named []auth.User
		for _, a := range addrs {
			u, ok := src.Lookup(a)
			if !ok {
				continue // a mailbox without a user is still imported
			}
			named = append(named, u)
		}
		users = named
	}
	dst := cfg.OpenUsers(nil)
	copied, there, skipped := 0, 0, len(src.Problems())
	for _, u := range users {
		err := dst.AddUser(ctx, u)
		switch {
		case err == nil:
			copied++
		case errors.Is(err, auth.ErrUserExists):
			there++
		case errors.Is(err, auth.ErrMalformedHash), errors.Is(err, auth.ErrUnknownScheme), errors.Is(err, auth.ErrInvalidAddress):
			errorf(env, "db import: user %s skipped: %v", u.Address, err)
			skipped++
		default:
			return skipped, err
		}
	}
	fmt.Fprintf(env.stdout, "users: %d imported, %d already there\n", copied, there)
	return skipped, nil
}

// importDKIM copies the DKIM keys of DATA/dkim into the database, so that
// every node signs with them; a key whose selector the database already
// has for the domain is left as it is there.
func importDKIM(ctx context.Context, env *cmdEnv, cfg *config.Config, _ []string) (int, error) {
	keys, err := dkim.FileKeys(cfg.DKIMDir())
	if err != nil {
		return 0, err
	}
	ks := cfg.DKIMKeyStore()
	defer ks.Close()
	copied, there := 0, 0
	for _, k := range keys {
		err := ks.Add(ctx, k)
		switch {
		case err == nil:
			copied++
		case errors.Is(err, dkim.ErrKeyExists):
			there++
		default:
			return 0, err
		}
	}
	fmt.Fprintf(env.stdout, "DKIM keys: %d imported, %d already there\n", copied, there)
	return 0, nil
}
