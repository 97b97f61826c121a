package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/fetch"
	"github.com/postino-mail/postino/internal/metrics"
	"github.com/postino-mail/postino/internal/store/pgstore"
	"github.com/postino-mail/postino/internal/tlsutil"
)

// fetchFlags are the flags of "postino fetch".
type fetchFlags struct {
	common *commonFlags

	// One account from flags.
	name, server, security, fingerprint, caFile, user, passwordCommand string
	authMethod, to, mdaCheck                                           string
	port                                                               int
	allowPlaintext, insecure, del                                      bool
	deleteAfterDays, maxMessages                                       int
	maxSize                                                            string

	// Run options.
	stateDir string
	timeout  time.Duration
	retries  int
	daemon   time.Duration
	quiet    bool
	verbose  bool
}

func runFetch(env *cmdEnv, args []string) int {
	fs := newFlags(env, "fetch", "fetch [flags] [ACCOUNT...]\n\n"+
		"Downloads the [[fetch.account]] mailboxes of the configuration (all, or the\n"+
		"ACCOUNTs named), or the one account given with --server.\n\n"+
		"Exit status: 0 new mail delivered, 1 no new mail, 2 network or temporary\n"+
		"server error, 3 authentication failed, 4 protocol error, 5 TLS or certificate\n"+
		"failure, 6 delivery failed, 7 account or mailbox locked, 64 usage, 78 config.")
	var ff fetchFlags
	ff.common = &fs.common
	fs.StringVar(&ff.server, "server", "", "fetch one account from `HOST[:PORT]` given by flags instead of the configuration")
	fs.StringVar(&ff.name, "name", "", "account `NAME` for --server (names its state file; default: USER_HOST with other characters as _)")
	fs.IntVar(&ff.port, "port", 0, "server `PORT` (default 995 for tls, 110 otherwise)")
	fs.StringVar(&ff.security, "security", "tls", "tls, starttls or none (none needs --allow-plaintext)")
	fs.BoolVar(&ff.allowPlaintext, "allow-plaintext", false, "allow --security none: password and mail unencrypted")
	fs.BoolVar(&ff.insecure, "insecure", false, "accept any server certificate (also overrides the configuration)")
	fs.StringVar(&ff.fingerprint, "fingerprint", "", "accept exactly the certificate with this SHA-256 `FINGERPRINT` (AB:CD:... as postino serve, mpop and openssl print it, or plain hex)")
	fs.StringVar(&ff.caFile, "ca-file", "", "PEM `FILE` of extra trusted certificate authorities")
	fs.StringVar(&ff.user, "user", "", "user `NAME` on the server")
	fs.StringVar(&ff.passwordCommand, "password-command", "", "shell `COMMAND` printing the password (otherwise it is asked for)")
	fs.StringVar(&ff.authMethod, "auth", "auto", "auto, scram-sha-256, plain, login, user or apop")
	fs.StringVar(&ff.to, "to", "", "destination: maildir:DIR, mbox:FILE, mda:COMMAND or local:ADDRESS")
	fs.StringVar(&ff.mdaCheck, "mda-check", "", "shell `COMMAND` telling whether $POSTINO_FETCH_ID was delivered by the MDA (exit 0 yes, 1 no)")
	fs.BoolVar(&ff.del, "delete", false, "delete messages from the server once delivered (default: leave them, fetch only new ones)")
	fs.IntVar(&ff.deleteAfterDays, "delete-after-days", 0, "leave messages on the server, but delete them `N` days after they were first seen")
	fs.StringVar(&ff.maxSize, "max-size", "", "leave messages larger than `SIZE` (e.g. 10MiB) on the server")
	fs.IntVar(&ff.maxMessages, "max-messages", 0, "download at most `N` messages per run")
	fs.StringVar(&ff.stateDir, "state-dir", "", "state `DIR` (default: fetch.state_dir, DATA/fetch, or ~/.local/state/postino without --data/--config)")
	fs.DurationVar(&ff.timeout, "timeout", 0, "time allowed for connecting and each command (default: the account's timeout, or 60s)")
	fs.IntVar(&ff.retries, "retries", 2, "reconnect this many times after a network error, resuming where the run stopped")
	fs.DurationVar(&ff.daemon, "daemon", 0, "keep running, fetching every `INTERVAL` (e.g. 5m) until SIGINT or SIGTERM")
	fs.BoolVar(&ff.quiet, "quiet", false, "print nothing but errors (no progress bar, no warnings)")
	fs.BoolVar(&ff.verbose, "verbose", false, "log each message delivered")
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	cfg, err := ff.common.load()
	if err != nil {
		errorf(env, "%v", err)
		return exitConfigError
	}
	if err := ff.needData(cfg); err != nil {
		errorf(env, "fetch: %v", err)
		return exitConfigError
	}
	accounts, stateDir, err := ff.accounts(env, cfg, pos)
	if err != nil {
		errorf(env, "fetch: %v", err)
		var ue usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitConfigError
	}

	level := slog.LevelWarn
	switch {
	case ff.quiet:
		level = slog.LevelError
	case ff.verbose:
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: level}))
	f := &fetch.Fetcher{StateDir: stateDir, Logger: logger, Retries: ff.retries}
	if cfg.Fetch.State == config.FetchStatePostgres {
		// The state of every account in the database, leased per account
		// so that the nodes of a cluster share the work exactly once.
		pctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		pool, err := pgstore.NewPool(pctx, cfg.Storage.PostgresDSN, 4)
		if err == nil {
			err = pgstore.CheckSchema(pctx, pool)
			if err != nil {
				pool.Close()
			}
		}
		cancel()
		if err != nil {
			errorf(env, "fetch: fetch.state = \"postgres\": %v", err)
			if errors.Is(err, pgstore.ErrSchemaTooOld) || errors.Is(err, pgstore.ErrSchemaTooNew) {
				return exitConfigError
			}
			return fetch.ExitNetwork
		}
		defer pool.Close()
		f.States = &fetch.PGStates{Pool: pool, LeaseTTL: cfg.Storage.LockTTL.Duration, Logger: logger}
	}
	tty := isTerminal(env.stderr)
	if tty && !ff.quiet {
		f.Progress = &fetch.Bar{W: env.stderr}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var m *metrics.Metrics
	if ff.daemon > 0 && cfg.Fetch.MetricsListen != "" {
		m = metrics.New()
		if err := serveFetchMetrics(ctx, env, cfg.Fetch.MetricsListen, m, logger); err != nil {
			errorf(env, "fetch: fetch.metrics_listen: %v", err)
			return exitConfigError
		}
	}
	once := func() int {
		result := fetch.ExitNoMail
		for _, a := range accounts {
			res, err := f.Run(ctx, a)
			if ctx.Err() == nil {
				m.FetchRun(map[bool]string{true: metrics.ResultOK, false: metrics.ResultError}[err == nil])
			}
			c := fetch.ExitCode(res.New, err)
			if err != nil {
				if ctx.Err() == nil {
					errorf(env, "fetch %s: %v", a.Name, err)
					ff.pinHint(env, a.Name, err)
				}
			}
			if (tty || ff.verbose) && !ff.quiet && (err == nil || res.New > 0) {
				fmt.Fprintf(env.stderr, "%s: %d new (%s), %d on the server, %d deleted, %d skipped → %s\n",
					a.Name, res.New, config.Size(res.Bytes).Human(), res.Listed, res.Deleted, res.Skipped, a.Dest)
			}
			result = fetch.Worst(result, c)
		}
		return result
	}
	if ff.daemon <= 0 {
		return once()
	}
	for {
		once()
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(ff.daemon):
		}
	}
}

// usesDataState reports whether the state goes to DATA/fetch: when the
// data folder or the configuration was named (--data, --config,
// $POSTINO_CONFIG), or the accounts come from a configuration file found
// in the usual places. A one-off --server run without either keeps its
// state in the user's own folder, as before any configuration existed.
func (ff *fetchFlags) usesDataState() bool {
	src := ff.common.source
	return ff.stateDir == "" && (ff.common.dataDir != "" || src.Explicit() || (src.Path != "" && ff.server == ""))
}

// needData checks that the data folder exists when the run would write in
// it: its state in DATA/fetch or a relative fetch.state_dir (without
// --state-dir), or a local: destination.
func (ff *fetchFlags) needData(cfg *config.Config) error {
	uses := false
	if ff.stateDir == "" {
		if sd := cfg.Fetch.StateDir; sd != "" {
			uses = !filepath.IsAbs(sd) // relative to the data folder
		} else {
			uses = ff.usesDataState()
		}
	}
	if ff.server != "" {
		uses = uses || config.IsLocalFetchDestination(ff.to)
	} else {
		for _, a := range cfg.Fetch.Accounts {
			uses = uses || config.IsLocalFetchDestination(a.Destination)
		}
	}
	if !uses {
		return nil
	}
	return ff.common.requireData(cfg)
}

// pinHint follows a certificate that could not be verified with its
// SHA-256 fingerprint and the exact flag, or configuration line, that
// accepts it, for the user to compare with the fingerprint the server
// shows (postino serve prints it at start) before pasting.
func (ff *fetchFlags) pinHint(env *cmdEnv, account string, err error) {
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) || len(cve.UnverifiedCertificates) == 0 {
		return
	}
	fp := tlsutil.CertFingerprint(cve.UnverifiedCertificates[0])
	fmt.Fprintf(env.stderr, "postino: fetch %s: the server's certificate has the SHA-256 fingerprint\n  %s\n", account, fp)
	fmt.Fprintln(env.stderr, "If it is the one the server shows (postino serve prints it at start), pin it with")
	if ff.server != "" {
		fmt.Fprintf(env.stderr, "  --fingerprint %s\n", fp)
	} else {
		fmt.Fprintf(env.stderr, "  fingerprint = \"%s\"\nin the [[fetch.account]] named %q of %s\n", fp, account, ff.common.source)
	}
}

// usageError marks command-line mistakes.
type usageError struct{ error }

// accounts builds the accounts to fetch and the state directory.
func (ff *fetchFlags) accounts(env *cmdEnv, cfg *config.Config, names []string) ([]*fetch.Account, string, error) {
	stateDir := ff.stateDir
	if stateDir == "" {
		switch {
		case cfg.Fetch.StateDir != "":
			stateDir = cfg.ResolvePath(cfg.Fetch.StateDir)
		case ff.usesDataState():
			stateDir = filepath.Join(cfg.DataDir, "fetch")
		default:
			stateDir = fetch.DefaultStateDir()
		}
	}
	var list []config.FetchAccount
	if ff.server != "" {
		if len(names) > 0 {
			return nil, "", usageError{errors.New("--server fetches one account given by flags; do not also name accounts")}
		}
		host, port := ff.server, ff.port
		if h, p, err := fetch.SplitHostPortOpt(ff.server); err == nil {
			host = h
			if p != 0 {
				port = p
			}
		}
		if ff.to == "" {
			return nil, "", usageError{errors.New("--server needs --to DESTINATION")}
		}
		if ff.user == "" {
			return nil, "", usageError{errors.New("--server needs --user")}
		}
		name := ff.name
		if name == "" {
			name = strings.Map(func(r rune) rune {
				if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
					return r
				}
				return '_'
			}, ff.user+"_"+host)
		}
		ms := config.Size(0)
		if ff.maxSize != "" {
			var err error
			if ms, err = config.ParseSize(ff.maxSize); err != nil {
				return nil, "", usageError{fmt.Errorf("--max-size: %v", err)}
			}
		}
		fa := config.FetchAccount{
			Name: name, Server: host, Port: port, Security: ff.security, AllowPlaintext: ff.allowPlaintext,
			Insecure: ff.insecure, Fingerprint: ff.fingerprint, CAFile: ff.caFile, User: ff.user,
			PasswordCommand: ff.passwordCommand, Auth: ff.authMethod, Destination: ff.to, MDACheck: ff.mdaCheck,
			Delete: ff.del, DeleteAfterDays: ff.deleteAfterDays, MaxSize: ms, MaxMessages: ff.maxMessages,
			Timeout: config.D(ff.timeout),
		}
		c := config.Default()
		c.Fetch.Accounts = []config.FetchAccount{fa}
		if err := c.Validate(); err != nil {
			return nil, "", usageError{err}
		}
		list = c.Fetch.Accounts
	} else {
		if len(cfg.Fetch.Accounts) == 0 {
			return nil, "", usageError{errors.New("no [[fetch.account]] in the configuration (use --config FILE) and no --server")}
		}
		for _, n := range names {
			found := false
			for _, a := range cfg.Fetch.Accounts {
				found = found || a.Name == n
			}
			if !found {
				return nil, "", usageError{fmt.Errorf("no account %q in the configuration", n)}
			}
		}
		for _, a := range cfg.Fetch.Accounts {
			if len(names) == 0 || contains(names, a.Name) {
				if ff.insecure {
					a.Insecure = true
				}
				if ff.timeout > 0 {
					a.Timeout = config.D(ff.timeout)
				}
				list = append(list, a)
			}
		}
	}
	var out []*fetch.Account
	for _, fa := range list {
		a, err := fetch.NewAccount(cfg, fa, env.stderr)
		if err != nil {
			return nil, "", fmt.Errorf("account %s: %w", fa.Name, err)
		}
		out = append(out, a)
	}
	return out, stateDir, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// serveFetchMetrics serves the metrics of "fetch --daemon" on addr until
// ctx ends.
func serveFetchMetrics(ctx context.Context, env *cmdEnv, addr string, m *metrics.Metrics, logger *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "fetch: metrics on http://%s/metrics\n", l.Addr())
	go metrics.Serve(ctx, l, m.Handler(nil, logger), logger)
	return nil
}
