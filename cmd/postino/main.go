// Command postino is a mail server whose heart is POP3: it receives mail,
// stores it durably in per-user Maildir mailboxes and serves it to any POP3
// client, in the clear with STLS or over implicit TLS.
//
// Usage:
//
//	postino serve [flags]              run the server
//	postino init                       create the data folder
//	postino user add|passwd|del|list|quota|junk   manage users
//	postino deliver [--from S] ADDR... store a message from standard input
//	postino queue list|show|retry|delete  inspect the outbound queue
//	postino block list|remove ADDR     see and lift failed-login blocks
//	postino vault list|restore ADDR    see and restore deleted messages
//	postino quarantine list|show|release|delete  manage mail held as spam
//	postino dkim keygen DOMAIN         make DKIM keys
//	postino fetch [ACCOUNT...]         download remote POP3 mailboxes
//	postino dns DOMAIN                 print the DNS records to publish
//	postino check DOMAIN|pop3://HOST   check DNS, ports, certificates; audit POP3
//	postino config default|check       print or validate configuration
//	postino version                    print the version
//
// The global flags --config FILE and --data DIR go before or after the
// command. Without --config, the configuration is $POSTINO_CONFIG, else
// ./postino.toml, else /etc/postino/postino.toml, else the embedded
// defaults. Run "postino help COMMAND" for the flags of a command.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/config"
)

// version is stamped at build time with -ldflags "-X main.version=..."
// (make release does); when empty, the version comes from the build
// information (see versionString).
var version string

// Exit codes from sysexits.h, which MTAs understand from a delivery agent.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 64 // EX_USAGE
	exitDataErr     = 65 // EX_DATAERR
	exitNoUser      = 67 // EX_NOUSER
	exitSoftware    = 70 // EX_SOFTWARE
	exitCantCreate  = 73 // EX_CANTCREAT
	exitIOErr       = 74 // EX_IOERR
	exitTempFail    = 75 // EX_TEMPFAIL
	exitConfigError = 78 // EX_CONFIG
)

// cmd is one subcommand.
type cmd struct {
	name  string
	args  string
	short string
	run   func(env *cmdEnv, args []string) int
}

// cmdEnv is what a subcommand may touch, so tests can run commands
// in-process with their own streams.
type cmdEnv struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// signals, when set, replaces the process's SIGINT, SIGTERM and
	// SIGHUP for "serve" (tests send them without signalling the test
	// process).
	signals <-chan os.Signal
}

var commandTable []cmd

func init() {
	commandTable = []cmd{
		{"serve", "[flags]", "run the mail server", runServe},
		{"init", "", "create the data folder", runInit},
		{"user", "add|passwd|del|list|quota|junk [flags] [ADDRESS]", "manage users", runUser},
		{"deliver", "[--from SENDER] ADDRESS... < message", "deliver a message from standard input", runDeliver},
		{"fetch", "[flags] [ACCOUNT...]", "download remote POP3 mailboxes", runFetch},
		{"queue", "list | show ID | retry [ID] | delete ID", "inspect and steer the outbound queue", runQueue},
		{"block", "list | remove ADDRESS|ACCOUNT", "see and lift blocks after failed logins", runBlock},
		{"alias", "list | set KEY TARGET... | del KEY", "see and edit the aliases (in the database with storage.backend = \"postgres\")", runAlias},
		{"vault", "list ADDRESS | restore ADDRESS (UIDL...|--all)", "see and restore messages deleted over POP3", runVault},
		{"quarantine", "list [USER] | show ID | release ID | delete ID | digest", "see, release and delete mail held as spam", runQuarantine},
		{"dkim", "keygen DOMAIN", "make DKIM signing keys and print the DNS records", runDKIM},
		{"dns", "DOMAIN [--ipv4 ADDR] [--ipv6 ADDR]", "print the DNS records to publish for a domain", runDNS},
		{"check", "DOMAIN | pop3://HOST | pop3s://HOST", "check a domain's DNS, ports and certificates, or audit a POP3 server", runCheck},
		{"import", "DATA_DIR [ADDRESS...]", "copy a single-server data folder into the configured PostgreSQL storage (db migrate, then db import)", runImport},
		{"db", "migrate | version | import [ADDRESS...]", "create or upgrade the PostgreSQL schema, import Maildirs (storage.backend = \"postgres\")", runDB},
		{"export", "DIR [ADDRESS...]", "write mailboxes as Maildirs with their UIDLs (backup, or the way out of PostgreSQL)", runExport},
		{"config", "default | check [FILE]", "print the commented default configuration, or check one", runConfig},
		{"version", "", "print the version", runVersion},
		{"help", "[COMMAND]", "show help", runHelp},
	}
}

func main() {
	env := &cmdEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(run(env, os.Args[1:]))
}

// run dispatches a command line. The global flags (--config, --data) may
// come before the command as well as after it: those before it are handed
// to the command in front of its own arguments, so "postino --config F
// user list", "postino user --config F list" and "postino user list
// --config F" are the same.
func run(env *cmdEnv, args []string) int {
	var global []string
globals:
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		a := args[0]
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case a == "--":
			args = args[1:]
			break globals
		case name == "h" || name == "help":
			usage(env.stdout)
			return exitOK
		case name == "version" || name == "V":
			return runVersion(env, nil)
		case name == "config" || name == "data":
			if hasValue {
				global = append(global, "--"+name, value)
				args = args[1:]
				continue
			}
			if len(args) < 2 {
				errorf(env, "flag needs an argument: %s", a)
				usage(env.stderr)
				return exitUsage
			}
			global = append(global, "--"+name, args[1])
			args = args[2:]
		default:
			errorf(env, "unknown global flag %s (global flags: --config FILE, --data DIR, --help, --version)", a)
			usage(env.stderr)
			return exitUsage
		}
	}
	if len(args) == 0 {
		errorf(env, "missing COMMAND")
		usage(env.stderr)
		return exitUsage
	}
	name := args[0]
	for _, c := range commandTable {
		if c.name == name {
			return c.run(env, append(global, args[1:]...))
		}
	}
	errorf(env, "unknown command %q", name)
	usage(env.stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: postino [--config FILE] [--data DIR] COMMAND [ARGS]\n\nCommands:")
	for _, c := range commandTable {
		fmt.Fprintf(w, "  %-8s %-42s %s\n", c.name, c.args, c.short)
	}
	fmt.Fprintf(w, `
Global flags, before or after the command:
  --config FILE  configuration file; without it: $%s, ./%s,
                 %s, else the embedded defaults
  --data DIR     data folder (overrides data_dir)
  --help         show help; "postino COMMAND --help" for a command
  --version      print the version
`, config.EnvVar, config.LocalFile, config.SystemFile)
}

func runHelp(env *cmdEnv, args []string) int {
	fs := newFlags(env, "help", "help [COMMAND]")
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		usage(env.stdout)
		return exitOK
	}
	return run(env, []string{pos[0], "--help"})
}

func runVersion(env *cmdEnv, args []string) int {
	fs := newFlags(env, "version", "version")
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return fs.unexpected(pos[0])
	}
	v := versionString()
	fmt.Fprintf(env.stdout, "postino %s (%s %s/%s)\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if v == develVersion {
		fmt.Fprintln(env.stdout, "built without version control information: build in a git checkout, or stamp a version with -ldflags \"-X main.version=...\"")
	}
	return exitOK
}

// develVersion is the version of a build that carries neither a stamped
// version nor version control information ("postino version" then says
// so on a second line).
const develVersion = "devel"

// versionString is the stamped version, or else the one recorded in the
// build information.
func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return develVersion
	}
	return buildVersion(bi)
}

// buildVersion derives a version from build information: the main
// module's version when the go command recorded one (a tagged release, or
// since Go 1.24 a pseudo-version made from the commit, with "+dirty" for
// uncommitted changes), or else the version control revision and time,
// with "+dirty" when the tree had uncommitted changes.
func buildVersion(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, at string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return develVersion
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v := "devel-" + rev
	if t, err := time.Parse(time.RFC3339, at); err == nil {
		v += "-" + t.UTC().Format("20060102150405")
	}
	if dirty {
		v += "+dirty"
	}
	return v
}

// cmdFlags is a subcommand's flag set. Help (-h, --help) goes to standard
// output with exit status 0; mistakes go to standard error with exit
// status 64 (EX_USAGE).
type cmdFlags struct {
	*flag.FlagSet
	env       *cmdEnv
	usageLine string
	// common holds the global flags (--config, --data), which every
	// command accepts.
	common commonFlags
}

// newFlags makes the flag set of a subcommand; usageLine follows
// "Usage: postino ".
func newFlags(env *cmdEnv, name, usageLine string) *cmdFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {} // parseFlags prints the usage where it belongs
	c := &cmdFlags{FlagSet: fs, env: env, usageLine: usageLine}
	c.common.register(c)
	return c
}

// printUsage writes the usage line and the flags to w.
func (fs *cmdFlags) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: postino %s\n\nFlags:\n", fs.usageLine)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(fs.env.stderr)
}

// usageError reports a command-line mistake with the usage, and returns
// the exit status for it.
func (fs *cmdFlags) usageError(format string, a ...any) int {
	errorf(fs.env, "%s: %s", fs.Name(), fmt.Sprintf(format, a...))
	fs.printUsage(fs.env.stderr)
	return exitUsage
}

// missing reports a missing argument, named as in the usage line.
func (fs *cmdFlags) missing(what string) int { return fs.usageError("missing %s", what) }

// unexpected reports an argument too many.
func (fs *cmdFlags) unexpected(arg string) int { return fs.usageError("unexpected argument %q", arg) }

// parseFlags parses flags anywhere among the arguments ("user add ADDR
// --password-stdin" as well as "user add --password-stdin ADDR") and
// returns the positional arguments. ok is false after -h or an error,
// with code the exit code to use.
func parseFlags(fs *cmdFlags, args []string) (pos []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.printUsage(fs.env.stdout)
				return nil, exitOK, false
			}
			fs.printUsage(fs.env.stderr)
			return nil, exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// flagSet reports whether a flag was given on the command line.
func flagSet(fs *cmdFlags, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func errorf(env *cmdEnv, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	fmt.Fprintln(env.stderr, "postino: "+strings.TrimSuffix(msg, "\n"))
}
