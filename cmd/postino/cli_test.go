package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCmd runs a command line in-process and returns its exit code and
// output.
func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cmdEnv{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb}
	code = run(env, args)
	return code, out.String(), errb.String()
}

// cliCase is one command line, what it reads and what it must answer.
type cliCase struct {
	name   string
	args   []string
	stdin  string
	code   int
	stdout string // substring of standard output ("" : not checked)
	stderr string // substring of standard error ("" : not checked)
}

func (c cliCase) check(t *testing.T) {
	t.Helper()
	code, out, errs := runCmd(t, c.stdin, c.args...)
	if code != c.code || !strings.Contains(out, c.stdout) || !strings.Contains(errs, c.stderr) {
		t.Errorf("%s: postino %q = %d\nstdout: %s\nstderr: %s\nwant %d, stdout with %q, stderr with %q",
			c.name, c.args, code, out, errs, c.code, c.stdout, c.stderr)
	}
}

// TestCLIArguments: the argument errors of every command, their exit
// codes (sysexits) and messages, and help.
func TestCLIArguments(t *testing.T) {
	t.Setenv("POSTINO_CONFIG", "")
	t.Chdir(t.TempDir()) // no ./postino.toml
	missing := filepath.Join(t.TempDir(), "missing")
	badConfig := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(badConfig, []byte("[smtp]\nmax_recipients = 0\nbogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []cliCase{
		{"no command", nil, "", exitUsage, "", "missing COMMAND"},
		{"unknown command", []string{"frobnicate"}, "", exitUsage, "", `unknown command "frobnicate"`},
		{"unknown global flag", []string{"--bogus", "version"}, "", exitUsage, "", "unknown global flag --bogus"},
		{"global flag without value", []string{"--config"}, "", exitUsage, "", "flag needs an argument: --config"},
		{"--help", []string{"--help"}, "", exitOK, "Usage: postino [--config FILE]", ""},
		{"--version", []string{"--version"}, "", exitOK, "postino ", ""},
		{"help", []string{"help"}, "", exitOK, "Commands:", ""},
		{"help COMMAND", []string{"help", "queue"}, "", exitOK, "Usage: postino queue", ""},
		{"version extra", []string{"version", "x"}, "", exitUsage, "", `version: unexpected argument "x"`},
		{"bad flag", []string{"serve", "--nope"}, "", exitUsage, "", "flag provided but not defined: -nope"},

		{"serve extra", []string{"serve", "x"}, "", exitUsage, "", `serve: unexpected argument "x"`},
		{"serve bad config", []string{"serve", "--config", badConfig}, "", exitConfigError, "", "unknown key \"smtp.bogus\""},
		{"serve missing config", []string{"serve", "--config", missing + ".toml"}, "", exitConfigError, "", "missing.toml"},
		{"serve invalid flag value", []string{"serve", "--data", t.TempDir(), "--pop3", "nope"}, "", exitConfigError, "", "pop3.listen"},

		{"init extra", []string{"init", "x"}, "", exitUsage, "", `init: unexpected argument "x"`},

		{"user no command", []string{"user"}, "", exitUsage, "", "user: missing command (add, passwd, del, list, quota"},
		{"user unknown", []string{"user", "rename"}, "", exitUsage, "", `unknown user command "rename"`},
		{"user add no address", []string{"user", "add"}, "", exitUsage, "", "missing ADDRESS (user add ADDRESS)"},
		{"user del two", []string{"user", "del", "a@x", "b@x"}, "", exitUsage, "", `unexpected argument "b@x"`},
		{"user list extra", []string{"user", "list", "x"}, "", exitUsage, "", `unexpected argument "x"`},
		{"user list no data", []string{"user", "list", "--data", missing}, "", exitConfigError, "", "does not exist (from --data)"},

		{"deliver no recipient", []string{"deliver"}, "", exitUsage, "", "missing recipient ADDRESS"},
		{"deliver no data", []string{"deliver", "--data", missing, "a@x"}, "", exitConfigError, "", "does not exist"},

		{"queue no command", []string{"queue"}, "", exitUsage, "", "missing command (list, show, retry, delete)"},
		{"queue unknown", []string{"queue", "flush"}, "", exitUsage, "", `unknown queue command "flush"`},
		{"queue show no id", []string{"queue", "show"}, "", exitUsage, "", "missing ID (queue show ID)"},
		{"queue list extra", []string{"queue", "list", "x"}, "", exitUsage, "", `unexpected argument "x"`},

		{"block no command", []string{"block"}, "", exitUsage, "", "block: missing"},
		{"block remove nothing", []string{"block", "remove"}, "", exitUsage, "", "block: missing"},

		{"dkim no command", []string{"dkim"}, "", exitUsage, "", "missing command (keygen)"},
		{"dkim unknown", []string{"dkim", "rotate"}, "", exitUsage, "", `unknown dkim command "rotate"`},
		{"dkim no domain", []string{"dkim", "keygen"}, "", exitUsage, "", "missing DOMAIN (dkim keygen DOMAIN)"},
		{"dkim extra", []string{"dkim", "keygen", "a.test", "b.test"}, "", exitUsage, "", `unexpected argument "b.test"`},

		{"fetch no accounts", []string{"fetch"}, "", exitUsage, "", "no [[fetch.account]]"},
		{"fetch server without to", []string{"fetch", "--server", "127.0.0.1", "--user", "u"}, "", exitUsage, "", "--server needs --to"},
		{"fetch server without user", []string{"fetch", "--server", "127.0.0.1", "--to", "mbox:" + missing}, "", exitUsage, "", "--server needs --user"},
		{"fetch bad max-size", []string{"fetch", "--server", "127.0.0.1", "--user", "u", "--to", "mbox:" + missing, "--max-size", "lots"}, "", exitUsage, "", "--max-size"},

		{"config no command", []string{"config"}, "", exitUsage, "", "missing default or check"},
		{"config unknown", []string{"config", "edit"}, "", exitUsage, "", `unknown config command "edit"`},
		{"config check bad", []string{"config", "check", badConfig}, "", exitConfigError, "", "smtp.bogus"},
		{"config check two", []string{"config", "check", badConfig, "--config", missing}, "", exitUsage, "", "not both"},
		{"db no command", []string{"db"}, "", exitUsage, "", "missing command (migrate, version, import)"},
		{"db unknown", []string{"db", "drop"}, "", exitUsage, "", `unknown db command "drop"`},
		{"db migrate extra", []string{"db", "migrate", "x"}, "", exitUsage, "", `unexpected argument "x"`},
		{"db on maildir", []string{"db", "migrate", "--data", t.TempDir()}, "", exitConfigError, "", `storage.backend is "maildir"`},
		{"config default", []string{"config", "default"}, "", exitOK, "max_recipients = 100", ""},
	} {
		c.check(t)
	}
}

// TestCLICommands runs every command that works on a data folder
// in-process against a new one: init, user, deliver (to a user, to an
// unknown user, a message too large), queue, block without a server,
// dkim and fetch from a closed port.
func TestCLICommands(t *testing.T) {
	t.Setenv("POSTINO_CONFIG", "")
	t.Chdir(t.TempDir())
	data := filepath.Join(t.TempDir(), "data")
	cfgFile := filepath.Join(t.TempDir(), "postino.toml")
	// A small size limit, to see deliver refuse a larger message.
	if err := os.WriteFile(cfgFile, []byte("[delivery]\nmax_message_size = \"1KiB\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	d := []string{"--config", cfgFile, "--data", data}
	with := func(args ...string) []string { return append(args, d...) }
	for _, c := range []cliCase{
		{"init", with("init"), "", exitOK, "", ""},
		{"init again", with("init"), "", exitOK, "", ""},
		{"user add", with("user", "add", "--password-stdin", "alice@example.test"), "alice-pw\n", exitOK, "", ""},
		{"user add twice", with("user", "add", "--password-stdin", "alice@example.test"), "alice-pw\n", exitError, "", "alice@example.test"},
		{"user list", with("user", "list"), "", exitOK, "alice@example.test", ""},
		{"deliver", with("deliver", "--from", "bob@remote.test", "alice@example.test"), "Subject: hi\r\n\r\nhello\r\n", exitOK, "", ""},
		{"deliver unknown user", with("deliver", "nobody@example.test"), "Subject: hi\r\n\r\nhello\r\n", exitNoUser, "", "nothing was delivered"},
		{"deliver too large", with("deliver", "alice@example.test"), "Subject: big\r\n\r\n" + strings.Repeat("x", 2000) + "\r\n", exitDataErr, "", ""},
		{"queue list", with("queue", "list"), "", exitOK, "", ""},
		{"queue show unknown", with("queue", "show", "nope"), "", exitError, "", "nope"},
		{"block list without server", with("block", "list"), "", exitUnavailable, "", ""},
		{"dkim keygen", with("dkim", "keygen", "Example.TEST"), "", exitOK, "._domainkey.example.test.", ""},
		{"fetch closed port", with("fetch", "--server", closedAddr, "--security", "none", "--allow-plaintext", "--user", "u",
			"--password-command", "echo pw", "--to", "local:alice@example.test", "--retries", "0", "--quiet"), "", 2, "", ""},
		{"user del", with("user", "del", "alice@example.test"), "", exitOK, "", ""},
		{"user list empty", with("user", "list"), "", exitOK, "", ""},
	} {
		c.check(t)
	}
}
