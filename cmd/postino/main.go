// Command postino is a mail server whose heart is POP3: it receives mail,
// stores it durably in per-user Maildir mailboxes and serves it to any POP3
// client, in the clear with STLS or over implicit TLS.
//
// Usage:
//
//	postino serve [flags]              run the server
//	postino user add|passwd|del|list   manage users
//	postino deliver [--from S] ADDR... store a message from standard input
//	postino queue list|show|retry|delete  inspect the outbound queue
//	postino dkim keygen DOMAIN         make DKIM keys
//	postino fetch [ACCOUNT...]         download remote POP3 mailboxes
//	postino config default|check       print or validate configuration
//	postino version                    print the version
//
// Run "postino help COMMAND" for the flags of a command.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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
}

var commandTable []cmd

func init() {
	commandTable = []cmd{
		{"serve", "[flags]", "run the mail server", runServe},
		{"user", "add|passwd|del|list [flags] [ADDRESS]", "manage users", runUser},
		{"deliver", "[--from SENDER] ADDRESS... < message", "deliver a message from standard input", runDeliver},
		{"fetch", "[flags] [ACCOUNT...]", "download remote POP3 mailboxes", runFetch},
		{"queue", "list | show ID | retry [ID] | delete ID", "inspect and steer the outbound queue", runQueue},
		{"dkim", "keygen DOMAIN", "make DKIM signing keys and print the DNS records", runDKIM},
		{"config", "default | check [FILE]", "print the commented default configuration, or check a file", runConfig},
		{"version", "", "print the version", runVersion},
		{"help", "[COMMAND]", "show help", runHelp},
	}
}

func main() {
	env := &cmdEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(run(env, os.Args[1:]))
}

func run(env *cmdEnv, args []string) int {
	if len(args) == 0 {
		usage(env.stderr)
		return exitUsage
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "-help" {
		name = "help"
	}
	for _, c := range commandTable {
		if c.name == name {
			return c.run(env, args[1:])
		}
	}
	fmt.Fprintf(env.stderr, "postino: unknown command %q\n\n", args[0])
	usage(env.stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: postino COMMAND [ARGS]\n\nCommands:")
	for _, c := range commandTable {
		fmt.Fprintf(w, "  %-8s %-42s %s\n", c.name, c.args, c.short)
	}
	fmt.Fprintln(w, "\nRun 'postino help COMMAND' or 'postino COMMAND -h' for details.")
}

func runHelp(env *cmdEnv, args []string) int {
	if len(args) == 0 {
		usage(env.stdout)
		return exitOK
	}
	return run(env, []string{args[0], "-h"})
}

func runVersion(env *cmdEnv, args []string) int {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	fmt.Fprintf(env.stdout, "postino %s\n", v)
	return exitOK
}

// newFlags makes a FlagSet that reports errors instead of exiting.
func newFlags(env *cmdEnv, name, usageLine string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "Usage: postino %s\n\nFlags:\n", usageLine)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses flags anywhere among the arguments ("user add ADDR
// --password-stdin" as well as "user add --password-stdin ADDR") and
// returns the positional arguments. ok is false after -h or an error,
// with code the exit code to use.
func parseFlags(fs *flag.FlagSet, args []string) (pos []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
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
func flagSet(fs *flag.FlagSet, name string) bool {
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
