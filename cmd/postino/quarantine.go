package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/junk"
	"github.com/postino-mail/postino/internal/quarantine"
	"github.com/postino-mail/postino/internal/server"
)

func runQuarantine(env *cmdEnv, args []string) int {
	fs := newFlags(env, "quarantine", "quarantine list [USER] | show ID | release ID | delete ID | digest  [--data DIR] [--config FILE]")
	common := &fs.common
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("command (list, show, release, delete, digest)")
	}
	switch {
	case pos[0] != "list" && pos[0] != "show" && pos[0] != "release" && pos[0] != "delete" && pos[0] != "digest":
		return fs.usageError("unknown quarantine command %q (list, show, release, delete, digest)", pos[0])
	case pos[0] != "list" && pos[0] != "digest" && len(pos) < 2:
		return fs.missing("ID (quarantine " + pos[0] + " ID)")
	case pos[0] == "digest" && len(pos) > 1:
		return fs.unexpected(pos[1])
	case len(pos) > 2:
		return fs.unexpected(pos[2])
	}
	cfg, code := common.loadAsOwner(env)
	if cfg == nil {
		return code
	}
	// release, delete and digest change mailboxes or the quarantine: they
	// are logged, with who ran them.
	var logger *slog.Logger
	if pos[0] == "release" || pos[0] == "delete" || pos[0] == "digest" {
		logger = commandLogger(env, cfg, "quarantine "+pos[0])
	}
	q := &quarantine.Store{Dir: cfg.QuarantineDir(), Logger: logger}
	ctx := context.Background()
	switch pos[0] {
	case "list":
		user := ""
		if len(pos) == 2 {
			u, err := auth.CanonicalAddress(pos[1])
			if err != nil {
				return fs.usageError("%v", err)
			}
			user = u
			// The user's mailbox name, as the user database spells it.
			if found, ok := cfg.OpenUsers(nil).Lookup(u); ok {
				user = found.Address
			}
		}
		entries, err := q.List(user)
		if err != nil {
			errorf(env, "quarantine: %v", err)
			return exitTempFail
		}
		printQuarantine(env.stdout, entries)
		return exitOK
	case "show":
		e, rc, err := q.Open(pos[1])
		if err != nil {
			errorf(env, "quarantine: %v", err)
			return quarantineExit(err)
		}
		defer rc.Close()
		fmt.Fprintf(env.stdout, "ID:        %s\nUser:      %s\nHeld:      %s\nSender:    <%s>\nRecipient: %s\nScore:     %s\nReasons:   %s\n\n",
			e.ID, e.User, e.Date.Local().Format(time.RFC1123Z), e.Sender, e.Recipient, junk.FormatScore(e.Score), e.Reasons)
		if _, err := io.Copy(env.stdout, rc); err != nil {
			errorf(env, "quarantine: %v", err)
			return exitIOErr
		}
		return exitOK
	case "release":
		users := cfg.OpenUsers(nil)
		d, _, err := cfg.OpenDeliverer(users, logger)
		if err != nil {
			errorf(env, "quarantine: %v", err)
			return exitTempFail
		}
		e, err := q.Release(ctx, pos[1], func(ctx context.Context, e quarantine.Entry, msg io.Reader) error {
			_, err := d.DeliverStream(ctx, e.Sender, e.Recipient, e.User, msg, "")
			return err
		})
		if err != nil {
			logger.Warn("quarantine: release failed", "id", pos[1], "err", err)
			errorf(env, "quarantine: %v", err)
			return quarantineExit(err)
		}
		logger.Info("quarantine: released by administrator", "id", e.ID, "user", e.User)
		fmt.Fprintf(env.stdout, "released %s into the mailbox of %s\n", e.ID, e.User)
		return exitOK
	case "delete":
		if err := q.Delete(pos[1]); err != nil {
			logger.Warn("quarantine: delete failed", "id", pos[1], "err", err)
			errorf(env, "quarantine: %v", err)
			return quarantineExit(err)
		}
		logger.Info("quarantine: deleted by administrator", "id", pos[1])
		fmt.Fprintf(env.stdout, "deleted %s\n", pos[1])
		return exitOK
	case "digest":
		// Now, rather than at junk.digest_time: what was held since the
		// last digest.
		users := cfg.OpenUsers(nil)
		d, _, err := cfg.OpenDeliverer(users, logger)
		if err != nil {
			errorf(env, "quarantine: %v", err)
			return exitTempFail
		}
		n, err := server.Digest(cfg, d, logger).Run(ctx)
		if err != nil {
			errorf(env, "quarantine: %v", err)
			return exitTempFail
		}
		logger.Info("quarantine: digests sent by administrator", "count", n)
		fmt.Fprintf(env.stdout, "%d digests delivered\n", n)
		return exitOK
	}
	return exitSoftware // not reached: pos[0] was checked above
}

func quarantineExit(err error) int {
	if errors.Is(err, quarantine.ErrNotFound) || errors.Is(err, quarantine.ErrBadID) {
		return exitError
	}
	return exitTempFail
}

func printQuarantine(w io.Writer, entries []quarantine.Entry) {
	if len(entries) == 0 {
		fmt.Fprintln(w, "quarantine is empty")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHELD\tUSER\tSCORE\tSIZE\tFROM\tSUBJECT")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, e.Date.Local().Format(time.DateTime), e.User, junk.FormatScore(e.Score), e.Size,
			truncate(e.From, 40), truncate(e.Subject, 50))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d messages\n", len(entries))
}
