package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/term"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/junk"
	"github.com/postino-mail/postino/internal/store"
)

// userUsage is the usage of "postino user".
const userUsage = `user add ADDRESS [--password-stdin] [--scheme ARGON2ID|SCRAM-SHA-256] [--force]
       postino user passwd ADDRESS [--password-stdin] [--scheme ...]
       postino user del ADDRESS [--purge [--yes]]
       postino user list
       postino user quota ADDRESS SIZE|default [--messages N]
       postino user junk ADDRESS score|tag|quarantine|reject|off|default

Every form also takes --config FILE and --data DIR. The password is asked
for twice on a terminal, or read from the first line of standard input with
--password-stdin. The data folder must exist ("postino serve" or
"postino init" creates it). "user add" refuses an address whose domain is
not in smtp.local_domains (when that list is set), as mail for it would not
be delivered to the mailbox, unless --force is given.

list shows each user's password scheme, messages, octets stored and quota.
del --purge also removes the mailbox, after typing "yes" on a terminal or
with --yes; a user logged in over POP3 keeps it locked and it is refused.
quota sets the user's Dovecot userdb_quota_rule (SIZE such as 1G, 512M,
1048576; 0 is no limit; "default" removes it so that users.default_quota
applies). junk sets what happens to the user's spam (userdb_junk;
"default" removes it so that junk.default_action applies).`

func runUser(env *cmdEnv, args []string) int {
	fs := newFlags(env, "user", userUsage)
	common := &fs.common
	stdinPw := fs.Bool("password-stdin", false, "read the password from standard input")
	force := fs.Bool("force", false, "user add: add the user even if its domain is not in smtp.local_domains")
	scheme := fs.String("scheme", "ARGON2ID", "password `SCHEME` for new hashes: ARGON2ID, or SCRAM-SHA-256 (enables AUTH SCRAM-SHA-256 for this user)")
	purge := fs.Bool("purge", false, "del: also remove the mailbox")
	yes := fs.Bool("yes", false, "del --purge: do not ask for confirmation")
	quotaMsgs := fs.Int64("messages", 0, "quota: the largest number of messages (0: no limit)")
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("command (add, passwd, del, list, quota, junk)")
	}
	sub := pos[0]
	pos = pos[1:]
	switch sub {
	case "list":
		if len(pos) > 0 {
			return fs.unexpected(pos[0])
		}
	case "add", "passwd", "del":
		if len(pos) == 0 {
			return fs.missing("ADDRESS (user " + sub + " ADDRESS)")
		}
		if len(pos) > 1 {
			return fs.unexpected(pos[1])
		}
	case "quota":
		if len(pos) < 2 {
			return fs.missing("ADDRESS and SIZE (user quota ADDRESS SIZE)")
		}
		if len(pos) > 2 {
			return fs.unexpected(pos[2])
		}
	case "junk":
		if len(pos) < 2 {
			return fs.missing("ADDRESS and CHOICE (user junk ADDRESS CHOICE)")
		}
		if len(pos) > 2 {
			return fs.unexpected(pos[2])
		}
	default:
		return fs.usageError("unknown user command %q (add, passwd, del, list, quota, junk)", sub)
	}
	cfg, code := common.loadAsOwner(env)
	if cfg == nil {
		return code
	}
	db := cfg.OpenUsers(nil)
	ctx := context.Background()
	needAddr := func() (string, bool) {
		a, err := auth.CanonicalAddress(pos[0])
		if err != nil {
			errorf(env, "%v", err)
			return "", false
		}
		return a, true
	}
	switch sub {
	case "list":
		users, err := db.List()
		if err != nil {
			errorf(env, "%v", err)
			return exitError
		}
		st, err := openUserStore(cfg)
		if err != nil {
			errorf(env, "%v", err)
			return exitError
		}
		defer st.Close()
		def := defaultQuota(cfg)
		for _, u := range users {
			scheme, _, _ := strings.Cut(strings.TrimPrefix(u.Hash, "{"), "}")
			// Sizes from the file names only: no message is read.
			n, size, err := st.Usage(ctx, u.Address)
			if err != nil {
				errorf(env, "%s: %v", u.Address, err)
				return exitError
			}
			fmt.Fprintf(env.stdout, "%s\t%s\t%d\t%d\t%s\n", u.Address, scheme, n, size, quotaText(u, def))
		}
		return exitOK
	case "quota":
		addr, ok := needAddr()
		if !ok {
			return exitUsage
		}
		var q *auth.Quota
		if !strings.EqualFold(pos[1], "default") {
			b, err := auth.ParseQuotaSize(pos[1])
			if err != nil || *quotaMsgs < 0 {
				if err == nil {
					err = errors.New("--messages must not be negative")
				}
				errorf(env, "%v", err)
				return exitUsage
			}
			q = &auth.Quota{Bytes: b, Messages: *quotaMsgs}
		}
		if err := db.SetQuota(ctx, addr, q); err != nil {
			errorf(env, "%v", err)
			if errors.Is(err, auth.ErrNoSuchUser) {
				return exitNoUser
			}
			return exitCantCreate
		}
		if q == nil {
			fmt.Fprintf(env.stdout, "quota of %s: the default (users.default_quota)\n", addr)
		} else {
			fmt.Fprintf(env.stdout, "quota of %s: %s\n", addr, q)
		}
		return exitOK
	case "junk":
		addr, ok := needAddr()
		if !ok {
			return exitUsage
		}
		choice := ""
		if !strings.EqualFold(pos[1], "default") {
			c, err := junk.ParseChoice(pos[1])
			if err != nil {
				errorf(env, "%v", err)
				return exitUsage
			}
			choice = c.String()
		}
		if err := db.SetJunk(ctx, addr, choice); err != nil {
			errorf(env, "%v", err)
			if errors.Is(err, auth.ErrNoSuchUser) {
				return exitNoUser
			}
			return exitCantCreate
		}
		if choice == "" {
			fmt.Fprintf(env.stdout, "spam of %s: the default (junk.default_action)\n", addr)
		} else {
			fmt.Fprintf(env.stdout, "spam of %s: %s\n", addr, choice)
		}
		return exitOK
	case "add", "passwd":
		addr, ok := needAddr()
		if !ok {
			return exitUsage
		}
		if sub == "add" {
			if _, exists := db.Lookup(addr); exists {
				errorf(env, "user %s already exists", addr)
				return exitError
			}
			if !localDomainOK(env, cfg, db, addr, *force) {
				return exitConfigError
			}
		} else if _, exists := db.Lookup(addr); !exists {
			errorf(env, "no such user: %s", addr)
			return exitNoUser
		}
		pw, err := readPassword(env, *stdinPw)
		if err != nil {
			errorf(env, "%v", err)
			return exitDataErr
		}
		var hash string
		switch strings.ToUpper(*scheme) {
		case "ARGON2ID":
			hash, err = auth.HashPassword(pw)
		case "SCRAM-SHA-256":
			hash, err = auth.HashSCRAMSHA256(pw)
		default:
			errorf(env, "unknown scheme %q (use ARGON2ID or SCRAM-SHA-256)", *scheme)
			return exitUsage
		}
		if err != nil {
			errorf(env, "%v", err)
			return exitSoftware
		}
		if sub == "add" {
			err = db.Add(ctx, addr, hash)
		} else {
			err = db.SetPassword(ctx, addr, hash)
		}
		if err != nil {
			errorf(env, "%v", err)
			if errors.Is(err, auth.ErrUserExists) {
				return exitError
			}
			return exitCantCreate
		}
		if sub == "add" {
			fmt.Fprintf(env.stdout, "added %s\n", addr)
		} else {
			fmt.Fprintf(env.stdout, "password of %s changed\n", addr)
		}
		return exitOK
	case "del":
		addr, ok := needAddr()
		if !ok {
			return exitUsage
		}
		if *purge {
			return purgeUser(env, cfg, db, addr, *yes)
		}
		if err := db.Delete(ctx, addr); err != nil {
			errorf(env, "%v", err)
			if errors.Is(err, auth.ErrNoSuchUser) {
				return exitNoUser
			}
			return exitError
		}
		fmt.Fprintf(env.stdout, "deleted %s (the mailbox in %s is kept)\n", addr, cfg.MailDir())
		return exitOK
	}
	return exitSoftware // not reached: sub was checked above
}

// defaultQuota is the quota of users without a rule of their own.
func defaultQuota(cfg *config.Config) auth.Quota {
	return auth.Quota{Bytes: int64(cfg.Users.DefaultQuota), Messages: int64(cfg.Users.DefaultQuotaMessages)}
}

// quotaText describes a user's quota for "user list": the user's Dovecot
// rule, or the default's followed by "(default)", or "-" for none.
func quotaText(u auth.User, def auth.Quota) string {
	q, ok, err := u.Quota()
	switch {
	case err != nil:
		return "invalid rule, default applies: " + quotaOrNone(def)
	case ok:
		return quotaOrNone(q)
	case def.IsZero():
		return "-"
	}
	return def.String() + " (default)"
}

func quotaOrNone(q auth.Quota) string {
	if q.IsZero() {
		return "-"
	}
	return q.String()
}

// purgeUser deletes the user and its mailbox, once confirmed. Both happen
// under the maildrop lock, the user first: a user logged in over POP3
// keeps both, a login in between cannot take the lock, and if the user
// cannot be deleted the mailbox stays. All or nothing.
func purgeUser(env *cmdEnv, cfg *config.Config, db *auth.DB, addr string, yes bool) int {
	ctx := context.Background()
	u, exists := db.Lookup(addr)
	if !exists {
		errorf(env, "no such user: %s", addr)
		return exitNoUser
	}
	addr = u.Address
	st, err := openUserStore(cfg)
	if err != nil {
		errorf(env, "%v", err)
		return exitError
	}
	defer st.Close()
	n, size, err := st.Usage(ctx, addr)
	if err != nil {
		errorf(env, "%v", err)
		return exitError
	}
	if !yes {
		f, isFile := env.stdin.(*os.File)
		if !isFile || !term.IsTerminal(int(f.Fd())) {
			errorf(env, "not removing %s and its mailbox (%d messages, %d octets) without confirmation: standard input is not a terminal (use --yes)", addr, n, size)
			return exitUsage
		}
		fmt.Fprintf(env.stderr, "Remove %s and its mailbox (%d messages, %d octets) for good? Type yes: ", addr, n, size)
		line, _ := bufio.NewReader(f).ReadString('\n')
		if strings.TrimSpace(line) != "yes" {
			errorf(env, "not confirmed: nothing removed")
			return exitError
		}
	}
	err = st.RemoveMailboxWith(ctx, addr, func(ctx context.Context) error {
		return db.Delete(ctx, addr)
	})
	if errors.Is(err, store.ErrLocked) {
		errorf(env, "the mailbox of %s is in use (the user is logged in over POP3): nothing removed, try again later", addr)
		return exitTempFail
	}
	if err != nil {
		errorf(env, "%v (nothing removed)", err)
		return exitError
	}
	fmt.Fprintf(env.stdout, "deleted %s and its mailbox (%d messages, %d octets)\n", addr, n, size)
	return exitOK
}

// readPassword reads a new password: twice without echo on a terminal, or
// one line from standard input.
func readPassword(env *cmdEnv, fromStdin bool) (string, error) {
	f, isFile := env.stdin.(*os.File)
	if !fromStdin && isFile && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(env.stderr, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(env.stderr, "Repeat password: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.stderr)
		if err != nil {
			return "", err
		}
		if string(p1) != string(p2) {
			return "", errors.New("the passwords do not match")
		}
		return checkPassword(string(p1))
	}
	if !fromStdin {
		return "", errors.New("standard input is not a terminal: use --password-stdin")
	}
	line, err := bufio.NewReader(env.stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	return checkPassword(strings.TrimRight(line, "\r\n"))
}

func checkPassword(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty password")
	}
	if strings.ContainsAny(p, "\x00\r\n") {
		return "", errors.New("the password contains a NUL or line break")
	}
	return p, nil
}

// localDomainOK checks the domain of a user about to be added. With
// smtp.local_domains set, a domain outside it is refused (mail for the
// user would be relayed or refused, never delivered to the mailbox) unless
// force; with it empty the domains of users and aliases are the local
// ones, so a new domain becomes local, which is said on standard error.
func localDomainOK(env *cmdEnv, cfg *config.Config, db *auth.DB, addr string, force bool) bool {
	domain := strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
	local := cfg.SMTP.LocalDomains
	if len(local) > 0 {
		if slices.ContainsFunc(local, func(d string) bool { return strings.EqualFold(d, domain) }) {
			return true
		}
		if force {
			fmt.Fprintf(env.stderr, "postino: warning: %s is not in smtp.local_domains (%s): mail for %s is not delivered to its mailbox until the domain is added\n",
				domain, strings.Join(local, ", "), addr)
			return true
		}
		errorf(env, "%s is not in smtp.local_domains (%s), so mail for %s would not be delivered to its mailbox.\n"+
			"Add %q to smtp.local_domains first, or use --force to add the user anyway", domain, strings.Join(local, ", "), addr, domain)
		return false
	}
	users, _ := db.List()
	for _, u := range users {
		if strings.EqualFold(u.Address[strings.LastIndexByte(u.Address, '@')+1:], domain) {
			return true
		}
	}
	if al, err := cfg.OpenAliases(nil); err == nil && slices.Contains(al.Domains(), domain) {
		return true
	}
	fmt.Fprintf(env.stderr, "postino: note: smtp.local_domains is empty, so the domains of the users and aliases are local: %s becomes a local domain\n", domain)
	return true
}
