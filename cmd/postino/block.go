package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/postino-mail/postino/internal/authguard"
)

// exitUnavailable (EX_UNAVAILABLE) is the exit status of "postino block"
// when no server is running.
const exitUnavailable = 69

func runBlock(env *cmdEnv, args []string) int {
	fs := newFlags(env, "block", "block list | remove ADDRESS|ACCOUNT  [--data DIR] [--config FILE]\n\n"+
		"list shows the addresses refused after too many failed logins, with the\n"+
		"time their block ends, and the addresses and accounts with failures counted\n"+
		"(their logins are delayed until the end of the failure window).\n"+
		"remove lifts an address's block (an IPv6 address lifts its /64) or forgets\n"+
		"an account's failures, at once. Both ask the running server, through the\n"+
		"admin socket "+authguard.AdminSocketName+" in the data folder: run them as root or as\n"+
		"the server's user (run_as). With storage.backend = \"postgres\" they work on\n"+
		"the state every node shares, in the database, from any machine.")
	common := &fs.common
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("command (list, remove)")
	}
	switch {
	case pos[0] != "list" && pos[0] != "remove":
		return fs.usageError("unknown block command %q (list, remove)", pos[0])
	case pos[0] == "remove" && len(pos) < 2:
		return fs.missing("ADDRESS or ACCOUNT (block remove ADDRESS|ACCOUNT)")
	case pos[0] == "list" && len(pos) > 1:
		return fs.unexpected(pos[1])
	case len(pos) > 2:
		return fs.unexpected(pos[2])
	}
	cfg, code := common.loadExisting(env)
	if cfg == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sock := cfg.AdminSocket()
	list, lift := authguard.AdminList, authguard.AdminLift
	if cfg.UsesPostgres() {
		// The state every node shares, in the database.
		list, lift = sharedBlocks(cfg)
	}
	switch pos[0] {
	case "list":
		entries, err := list(ctx, sock)
		if err != nil {
			return blockError(env, err)
		}
		printBlocks(env.stdout, entries, time.Now())
		return exitOK
	default:
		e, err := lift(ctx, sock, pos[1])
		if errors.Is(err, authguard.ErrNotFound) {
			errorf(env, "block: nothing is held against %q (see postino block list)", pos[1])
			return exitNoUser
		}
		if err != nil {
			return blockError(env, err)
		}
		if e.Blocked {
			fmt.Fprintf(env.stdout, "%s %s unblocked (%d failed logins forgotten)\n", e.Kind, e.Name, e.Failures)
		} else {
			fmt.Fprintf(env.stdout, "%s %s: %d failed logins forgotten\n", e.Kind, e.Name, e.Failures)
		}
		return exitOK
	}
}

// blockError reports an admin socket failure and returns the exit status.
func blockError(env *cmdEnv, err error) int {
	if errors.Is(err, authguard.ErrNotRunning) {
		errorf(env, "block: %v: blocks live in the server's memory, so nothing is blocked while it is stopped", err)
		return exitUnavailable
	}
	errorf(env, "block: %v", err)
	return exitTempFail
}

// printBlocks writes the guard's entries as a table, times in UTC.
func printBlocks(w io.Writer, entries []authguard.Entry, now time.Time) {
	if len(entries) == 0 {
		fmt.Fprintln(w, "no blocked addresses, no failed logins counted")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tSTATE\tFAILURES\tUNTIL\tIN")
	for _, e := range entries {
		state := "delayed"
		if e.Blocked {
			state = "blocked"
		}
		left := e.Until.Sub(now).Round(time.Second)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", e.Kind, e.Name, state, e.Failures, e.Until.UTC().Format(time.RFC3339), max(left, 0))
	}
	tw.Flush()
}
