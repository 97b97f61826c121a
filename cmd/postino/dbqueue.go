package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/queue"
)

// importQueue copies the messages waiting in the queue folder of the data
// folder (DATA/queue) into the queue every node shares in PostgreSQL, each
// with its entries as they are (recipients already delivered, attempts,
// next attempt, DSN parameters), so that the cluster goes on where the
// single server stopped. A message the database already has (the same
// id) is left alone, so a second run copies nothing twice. The queue is
// not per user: with addresses named, nothing is copied.
func importQueue(ctx context.Context, env *cmdEnv, cfg *config.Config, addrs []string) (int, error) {
	if len(addrs) > 0 {
		return 0, nil
	}
	dir := cfg.QueueDir()
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(env.stdout, "queued messages: 0 imported, 0 already there\n")
		return 0, nil
	}
	src, err := queue.OpenFileStore(dir)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	skipped := 0
	entries, err := src.List(ctx, func(id string, err error) {
		errorf(env, "db import: queue entry %s: skipping: %v", id, err)
		skipped++
	})
	if err != nil {
		return 0, err
	}
	byMsg := map[string][]*queue.Entry{}
	for _, e := range entries {
		byMsg[e.MessageID] = append(byMsg[e.MessageID], e)
	}
	ids := make([]string, 0, len(byMsg))
	for id := range byMsg {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	st, err := cfg.OpenPGStore(ctx, false, nil)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	dst := queue.NewPGStore(st, nil)
	defer dst.Close()
	copied, there := 0, 0
	for _, id := range ids {
		es := byMsg[id]
		if _, err := dst.Get(ctx, es[0].ID); err == nil {
			there++
			continue
		} else if !errors.Is(err, queue.ErrNotFound) {
			return skipped, err
		}
		body, err := src.OpenMessage(ctx, id)
		if err != nil {
			errorf(env, "db import: queued message %s: skipping: %v", id, err)
			skipped++
			continue
		}
		err = dst.AddMessage(ctx, id, body, es)
		body.Close()
		if err != nil {
			return skipped, fmt.Errorf("queued message %s: %w", id, err)
		}
		copied++
	}
	if copied > 0 {
		dst.Kick() // the running servers deliver them at once
	}
	fmt.Fprintf(env.stdout, "queued messages: %d imported, %d already there\n", copied, there)
	return skipped, nil
}

// runImport is "postino import DATA_DIR [ADDRESS...]": it brings the
// configured PostgreSQL schema up to date (as "db migrate"), then copies
// the single-server data folder DATA_DIR into the database (as "db
// import"): its users, aliases, DKIM keys, queued mail and the mailboxes
// with their UIDLs, each from its place in DATA_DIR (users.passwd,
// aliases, dkim/, queue/, mail/), whatever the configuration says of the
// cluster's own files.
func runImport(env *cmdEnv, args []string) int {
	fs := newFlags(env, "import", "import DATA_DIR [ADDRESS...]  [--config FILE]\n\n"+
		"Copies the data folder of a single postino server (stopped, or still\n"+
		"running) into the PostgreSQL storage of the configuration: users,\n"+
		"aliases, DKIM keys, queued mail and the Maildirs of the given users (or\n"+
		"of every user) with their UIDLs, creating or upgrading the schema first.\n"+
		"It prints its progress, and a second run copies nothing twice.")
	common := &fs.common
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("DATA_DIR (the data folder of the single server to copy)")
	}
	dataDir := pos[0]
	if fi, err := os.Stat(dataDir); err != nil || !fi.IsDir() {
		return fs.usageError("%s: not a data folder", dataDir)
	}
	cfg, code := common.loadExisting(env)
	if cfg == nil {
		return code
	}
	if !cfg.UsesPostgres() {
		errorf(env, "import: storage.backend is %q: there is no database to import into", cfg.Storage.Backend)
		return exitConfigError
	}
	// The single server's files, at their places in its data folder.
	src := *cfg
	src.DataDir = dataDir
	src.Users.File = ""
	src.SMTP.AliasesFile = ""
	src.Queue.DKIMDir = ""
	if code := dbMigrate(env, cfg); code != exitOK {
		return code
	}
	return dbImport(env, &src, pos[1:])
}
