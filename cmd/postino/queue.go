package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/queue"
)

func runQueue(env *cmdEnv, args []string) int {
	fs := newFlags(env, "queue", "queue list | show ID | retry [ID] | delete ID  [--data DIR] [--config FILE]")
	common := &fs.common
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("command (list, show, retry, delete)")
	}
	switch {
	case pos[0] != "list" && pos[0] != "show" && pos[0] != "retry" && pos[0] != "delete":
		return fs.usageError("unknown queue command %q (list, show, retry, delete)", pos[0])
	case (pos[0] == "show" || pos[0] == "delete") && len(pos) < 2:
		return fs.missing("ID (queue " + pos[0] + " ID)")
	case pos[0] == "list" && len(pos) > 1:
		return fs.unexpected(pos[1])
	case len(pos) > 2:
		return fs.unexpected(pos[2])
	}
	cfg, code := common.loadAsOwner(env)
	if cfg == nil {
		return code
	}
	// retry and delete change the queue: they are logged, with who ran
	// them.
	var logger *slog.Logger
	if pos[0] == "retry" || pos[0] == "delete" {
		logger = commandLogger(env, cfg, "queue "+pos[0])
	}
	q, closeQ, err := openQueueCmd(cfg, logger)
	if err != nil {
		errorf(env, "queue: %v", err)
		return exitTempFail
	}
	defer closeQ()
	ctx := context.Background()
	switch pos[0] {
	case "list":
		entries, err := q.List(ctx)
		if err != nil {
			errorf(env, "queue: %v", err)
			return exitTempFail
		}
		printQueue(env.stdout, entries)
		return exitOK
	case "show":
		id := pos[1]
		entries, err := q.Show(ctx, id)
		if err != nil {
			errorf(env, "queue: %v", err)
			return queueExit(err)
		}
		for _, e := range entries {
			showEntry(env.stdout, e)
		}
		return exitOK
	case "retry":
		id := ""
		if len(pos) == 2 {
			id = pos[1]
		}
		n, err := q.Retry(ctx, id)
		if err != nil {
			logger.Warn("queue: retry failed", "id", id, "err", err)
			errorf(env, "queue: %v", err)
			return queueExit(err)
		}
		logger.Info("queue: retry by administrator", "id", id, "entries", n)
		fmt.Fprintf(env.stdout, "%d entries will be retried now\n", n)
		return exitOK
	case "delete":
		id := pos[1]
		n, err := q.Delete(ctx, id)
		if err != nil {
			logger.Warn("queue: delete failed", "id", id, "err", err)
			if errors.Is(err, queue.ErrBusy) {
				errorf(env, "queue: %s is being delivered right now, try again in a moment", id)
				return exitTempFail
			}
			errorf(env, "queue: %v", err)
			return queueExit(err)
		}
		logger.Info("queue: delete by administrator", "id", id, "entries", n)
		fmt.Fprintf(env.stdout, "deleted %d entries of %s (no bounce is sent)\n", n, id)
		return exitOK
	}
	return exitSoftware // not reached: pos[0] was checked above
}

func queueExit(err error) int {
	if errors.Is(err, queue.ErrNotFound) {
		return exitError
	}
	return exitTempFail
}

func printQueue(w io.Writer, entries []*queue.Entry) {
	if len(entries) == 0 {
		fmt.Fprintln(w, "queue is empty")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tARRIVAL\tSIZE\tFROM\tDOMAIN\tPENDING\tNEXT ATTEMPT\tLAST REPLY")
	for _, e := range entries {
		from := e.From
		if from == "" {
			from = "<>"
		}
		last := ""
		for _, r := range e.Recipients {
			if r.Reply != "" {
				last = r.Reply
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d/%d\t%s\t%s\n", e.ID, e.Arrival.Local().Format(time.DateTime), e.Size,
			from, e.Domain, e.Pending(), len(e.Recipients), e.NextAttempt.Local().Format(time.DateTime), truncate(last, 60))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d entries\n", len(entries))
}

func showEntry(w io.Writer, e *queue.Entry) {
	from := e.From
	if from == "" {
		from = "<>"
	}
	fmt.Fprintf(w, "Entry:        %s (message %s)\nFrom:         %s\nDomain:       %s\nSize:         %d\n", e.ID, e.MessageID, from, e.Domain, e.Size)
	fmt.Fprintf(w, "Arrival:      %s\nExpires:      %s\nNext attempt: %s\n", e.Arrival.Local().Format(time.RFC1123Z),
		e.Expires.Local().Format(time.RFC1123Z), e.NextAttempt.Local().Format(time.RFC1123Z))
	if e.Return != "" || e.EnvelopeID != "" {
		fmt.Fprintf(w, "DSN:          RET=%s ENVID=%s\n", e.Return, e.EnvelopeID)
	}
	fmt.Fprintln(w, "Recipients:")
	for _, r := range e.Recipients {
		fmt.Fprintf(w, "  %-40s %-8s %s\n", r.Addr, r.Status, r.Reply)
	}
	if len(e.Attempts) > 0 {
		fmt.Fprintln(w, "Attempts:")
		for _, a := range e.Attempts {
			note := a.Result
			if a.Interrupted {
				note += " (interrupted)"
			}
			fmt.Fprintf(w, "  %s  %-30s %s\n", a.Start.Local().Format(time.DateTime), a.Host, note)
		}
	}
	fmt.Fprintln(w)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func runDKIM(env *cmdEnv, args []string) int {
	fs := newFlags(env, "dkim", "dkim keygen DOMAIN [--algo ed25519|rsa] [--selector NAME] [--data DIR] [--config FILE]")
	common := &fs.common
	algo := fs.String("algo", "", "only this key type: ed25519 or rsa (default: both)")
	selector := fs.String("selector", "", "selector `NAME` (default: the key type and the month)")
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	switch {
	case len(pos) == 0:
		return fs.missing("command (keygen)")
	case pos[0] != "keygen":
		return fs.usageError("unknown dkim command %q (keygen)", pos[0])
	case len(pos) == 1:
		return fs.missing("DOMAIN (dkim keygen DOMAIN)")
	case len(pos) > 2:
		return fs.unexpected(pos[2])
	}
	cfg, code := common.loadAsOwner(env)
	if cfg == nil {
		return code
	}
	where := cfg.DKIMDir()
	var recs []dkim.Record
	var err error
	if ks := cfg.DKIMKeyStore(); ks != nil {
		// Every node signs with the keys of the database.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		recs, err = dkim.GenerateStore(ctx, ks, pos[1], *algo, *selector)
		cancel()
		ks.Close()
		where = "the database"
	} else {
		recs, err = dkim.Generate(cfg.DKIMDir(), pos[1], *algo, *selector)
	}
	if err != nil {
		errorf(env, "dkim: %v", err)
		return exitError
	}
	fmt.Fprintf(env.stdout, "Keys written to %s. Publish these DNS records:\n\n", where)
	for _, r := range recs {
		fmt.Fprintln(env.stdout, r.String())
	}
	return exitOK
}
