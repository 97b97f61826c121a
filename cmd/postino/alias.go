package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/aliases"
	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/store/pgstore"
)

// aliasUsage is the usage of "postino alias".
const aliasUsage = `alias list | set KEY TARGET... | del KEY  [--data DIR] [--config FILE]

With storage.backend = "postgres" the aliases are kept in the database,
shared by every node, and this command edits them from any machine (a
change is in force on every node within about a second). KEY is
local@domain, or @domain for the domain's catch-all (one target). The
whole table is checked before a change is stored: a loop, a chain deeper
than 8 aliases or a bad address is refused. With the Maildir backend the
aliases are the file smtp.aliases_file: list shows it, edit it to change.`

func runAlias(env *cmdEnv, args []string) int {
	fs := newFlags(env, "alias", aliasUsage)
	common := &fs.common
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("command (list, set, del)")
	}
	switch {
	case pos[0] != "list" && pos[0] != "set" && pos[0] != "del":
		return fs.usageError("unknown alias command %q (list, set, del)", pos[0])
	case pos[0] == "list" && len(pos) > 1:
		return fs.unexpected(pos[1])
	case pos[0] == "set" && len(pos) < 3:
		return fs.missing("KEY and TARGET (alias set KEY TARGET...)")
	case pos[0] == "del" && len(pos) != 2:
		if len(pos) < 2 {
			return fs.missing("KEY (alias del KEY)")
		}
		return fs.unexpected(pos[2])
	}
	cfg, code := common.loadExisting(env)
	if cfg == nil {
		return code
	}
	if pos[0] == "list" {
		al, err := cfg.OpenAliases(nil)
		if err != nil {
			errorf(env, "alias: %v", err)
			return exitError
		}
		for _, e := range al.Table().Entries() {
			fmt.Fprint(env.stdout, aliases.FormatEntry(e.Key, e.Targets))
		}
		return exitOK
	}
	if !cfg.UsesPostgres() {
		errorf(env, "alias: the aliases are the file %s: edit it (postino alias %s works with storage.backend = \"postgres\")", cfg.AliasesFile(), pos[0])
		return exitConfigError
	}
	key, err := aliasKey(pos[1])
	if err != nil {
		errorf(env, "alias: %v", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src := pgstore.OpenAliases(cfg.Storage.PostgresDSN, 1)
	defer src.Close()
	err = modifyAliases(ctx, src, func(es []pgstore.AliasEntry) ([]pgstore.AliasEntry, error) {
		i := slices.IndexFunc(es, func(e pgstore.AliasEntry) bool { return e.Key == key })
		if pos[0] == "del" {
			if i < 0 {
				return nil, errNoAlias
			}
			return slices.Delete(es, i, i+1), nil
		}
		e := pgstore.AliasEntry{Key: key, Targets: pos[2:]}
		if i < 0 {
			return append(es, e), nil
		}
		es[i] = e
		return es, nil
	})
	switch {
	case errors.Is(err, errNoAlias):
		errorf(env, "alias: no alias %s", key)
		return exitNoUser
	case errors.Is(err, aliases.ErrSyntax), errors.Is(err, auth.ErrInvalidAddress):
		errorf(env, "alias: refused, the aliases would not be valid: %v", err)
		return exitUsage
	case err != nil:
		errorf(env, "alias: %v", err)
		return exitTempFail
	}
	if pos[0] == "del" {
		fmt.Fprintf(env.stdout, "alias %s removed\n", key)
	} else {
		fmt.Fprintf(env.stdout, "alias %s set\n", key)
	}
	return exitOK
}

// errNoAlias is "alias del" of a key that is not there.
var errNoAlias = errors.New("no such alias")

// aliasKey checks and canonicalises an alias key.
func aliasKey(k string) (string, error) {
	if d, ok := strings.CutPrefix(k, "@"); ok {
		if _, err := auth.CanonicalAddress("x@" + d); err != nil || d == "" {
			return "", fmt.Errorf("bad catch-all %q", k)
		}
		return "@" + strings.ToLower(d), nil
	}
	return auth.CanonicalAddress(k)
}

// modifyAliases changes the aliases of src, refusing a table that does
// not parse (as an aliases file would not).
func modifyAliases(ctx context.Context, src *pgstore.Aliases, change func([]pgstore.AliasEntry) ([]pgstore.AliasEntry, error)) error {
	return src.Modify(ctx, change, func(text []byte) error {
		_, err := aliases.Parse(text)
		return err
	})
}

// importAliases copies the aliases file into the database: the keys the
// database lacks, so that a second run copies nothing and an alias
// changed in the cluster since is kept.
func importAliases(ctx context.Context, env *cmdEnv, cfg *config.Config, _ []string) (int, error) {
	t, err := aliases.Load(cfg.AliasesFile())
	if err != nil {
		return 0, err
	}
	src := pgstore.OpenAliases(cfg.Storage.PostgresDSN, 1)
	defer src.Close()
	copied, there := 0, 0
	err = modifyAliases(ctx, src, func(es []pgstore.AliasEntry) ([]pgstore.AliasEntry, error) {
		copied, there = 0, 0 // the transaction may be retried
		for _, e := range t.Entries() {
			if slices.ContainsFunc(es, func(x pgstore.AliasEntry) bool { return x.Key == e.Key }) {
				there++
				continue
			}
			es = append(es, pgstore.AliasEntry{Key: e.Key, Targets: e.Targets})
			copied++
		}
		return es, nil
	})
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(env.stdout, "aliases: %d imported, %d already there\n", copied, there)
	return 0, nil
}
