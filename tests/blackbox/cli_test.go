package blackbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// inDir runs the binary in the working directory dir with the extra
// environment env (POSTINO_CONFIG is always cleared first, so the caller
// decides) and returns its output and exit code.
func inDir(t testing.TB, dir string, env []string, stdin []byte, args ...string) testutil.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POSTINO_CONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := testutil.Result{Cmdline: strings.Join(args, " "), Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("postino %s timed out:\nstdout:\n%s\nstderr:\n%s", r.Cmdline, r.Stdout, r.Stderr)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("postino %s: %v", r.Cmdline, err)
	}
	return r
}

// show formats a result of inDir for failure messages.
func show(r testutil.Result) string {
	return "$ postino " + r.Cmdline + "\nexit " + strconv.Itoa(r.Code) + "\nstdout:\n" + r.Stdout + "\nstderr:\n" + r.Stderr
}

// noSystemConfig fails or skips a test whose expectations assume that
// /etc/postino/postino.toml does not exist on this machine.
func noSystemConfig(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/etc/postino/postino.toml"); err == nil {
		testutil.SkipOrFatal(t, "/etc/postino/postino.toml exists here; the lookup tests need a machine without it")
	}
}

// TestMissingDataFolderRefused checks that only serve and init create a
// data folder: every other command pointed at one that does not exist
// fails with exit 78, names the folder and where its name came from, and
// creates nothing. Without --config, a command run in a folder with no
// postino.toml must not quietly make ./postino-data (and report success
// for a user that the running server would never see).
func TestMissingDataFolderRefused(t *testing.T) {
	noSystemConfig(t)
	work := t.TempDir()
	missing := filepath.Join(work, "nonexistent")
	conf := filepath.Join(work, "server.toml")
	os.WriteFile(conf, []byte("data_dir = \""+filepath.Join(work, "from-config")+"\"\n"), 0o600)

	commands := []struct {
		stdin []byte
		args  []string
	}{
		{[]byte("pw\n"), []string{"user", "add", "alice@example.test", "--password-stdin"}},
		{[]byte("pw\n"), []string{"user", "passwd", "alice@example.test", "--password-stdin"}},
		{nil, []string{"user", "del", "alice@example.test"}},
		{nil, []string{"user", "list"}},
		{[]byte("Subject: x\n\nx\n"), []string{"deliver", "alice@example.test"}},
		{nil, []string{"queue", "list"}},
		{nil, []string{"dkim", "keygen", "example.test"}},
		{nil, []string{"fetch", "--server", "127.0.0.1:1", "--user", "u", "--to", "local:alice@example.test"}},
	}
	for _, c := range commands {
		name := strings.Join(c.args[:2], " ")
		t.Run(name, func(t *testing.T) {
			// --data naming a folder that does not exist.
			r := inDir(t, work, nil, c.stdin, append(c.args, "--data", missing)...)
			if r.Code != 78 || !strings.Contains(r.Stderr, missing+" does not exist (from --data)") {
				t.Errorf("want exit 78 naming %s and --data:\n%s", missing, show(r))
			}
			// No configuration at all: the embedded default ./postino-data.
			r = inDir(t, work, nil, c.stdin, c.args...)
			if want := filepath.Join(work, "postino-data") + " does not exist (data_dir of the embedded defaults"; r.Code != 78 || !strings.Contains(r.Stderr, want) {
				t.Errorf("want exit 78 with %q:\n%s", want, show(r))
			}
			// A configuration whose data_dir does not exist.
			r = inDir(t, work, nil, c.stdin, append(c.args, "--config", conf)...)
			if want := "(data_dir in " + conf + " (--config))"; r.Code != 78 || !strings.Contains(r.Stderr, want) {
				t.Errorf("want exit 78 with %q:\n%s", want, show(r))
			}
			for _, d := range []string{missing, filepath.Join(work, "postino-data"), filepath.Join(work, "from-config")} {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s was created: %v", d, err)
				}
			}
		})
	}
}

// TestQuickStart follows the README on a fresh folder: "postino serve"
// with no configuration creates ./postino-data, and "postino user add"
// from the same folder, also without flags, adds a user the running
// server knows. Before serve, user add fails instead of creating the
// folder; "postino init" creates it explicitly.
func TestQuickStart(t *testing.T) {
	noSystemConfig(t)
	work := t.TempDir()
	t.Chdir(work) // serve's working directory: it inherits the test's
	t.Setenv("POSTINO_CONFIG", "")
	if r := inDir(t, work, nil, []byte("pw\n"), "user", "add", "alice@example.test", "--password-stdin"); r.Code != 78 {
		t.Fatalf("user add before serve: want exit 78:\n%s", show(r))
	}
	if _, err := os.Stat(filepath.Join(work, "postino-data")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("user add created ./postino-data: %v", err)
	}

	s := startServer(t, serverOpts{data: filepath.Join(work, "postino-data"), noDataFlag: true})
	if !strings.Contains(s.Stdout.String(), "config: embedded defaults") {
		t.Errorf("banner does not say that the embedded defaults are used:\n%s", s.Stdout)
	}
	if r := inDir(t, work, nil, []byte("pw\n"), "user", "add", "alice@example.test", "--password-stdin"); r.Code != 0 {
		t.Fatalf("user add after serve:\n%s", show(r))
	}
	s.login("alice@example.test", "pw").Quit()

	other := filepath.Join(work, "other")
	if r := inDir(t, work, nil, nil, "init", "--data", other); r.Code != 0 || !strings.Contains(r.Stdout, "created data folder "+other) {
		t.Fatalf("init --data:\n%s", show(r))
	}
	if fi, err := os.Stat(other); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("init made %v (%v), want a 0700 folder", fi, err)
	}
	if r := inDir(t, work, nil, nil, "init", "--data", other); r.Code != 0 || !strings.Contains(r.Stdout, "already exists") {
		t.Errorf("second init:\n%s", show(r))
	}
	if r := inDir(t, work, nil, []byte("pw\n"), "user", "add", "bob@example.test", "--password-stdin", "--data", other); r.Code != 0 {
		t.Errorf("user add after init:\n%s", show(r))
	}
}

// TestConfigLookupOrder checks the order --config, $POSTINO_CONFIG,
// ./postino.toml (then /etc/postino/postino.toml, then the embedded
// defaults): config check and the start banner say which file is used,
// and a user added with no flags at all, through $POSTINO_CONFIG, is one
// the running server knows.
func TestConfigLookupOrder(t *testing.T) {
	noSystemConfig(t)
	work := t.TempDir()
	mk := func(name string) (file, data string) {
		data = filepath.Join(work, name+"-data")
		file = filepath.Join(work, name+".toml")
		if name == "local" {
			file = filepath.Join(work, "postino.toml")
		}
		os.MkdirAll(data, 0o700)
		os.WriteFile(file, []byte("data_dir = \""+data+"\"\n"), 0o600)
		return file, data
	}
	local, localData := mk("local")
	envFile, envData := mk("env")
	flagFile, flagData := mk("flag")

	check := func(env []string, args []string, wantFile, wantHow, wantData string) {
		t.Helper()
		r := inDir(t, work, env, nil, append([]string{"config", "check"}, args...)...)
		want := wantFile + " (" + wantHow + "): OK\ndata folder: " + wantData + " (exists)\n"
		if r.Code != 0 || r.Stdout != want {
			t.Errorf("want %q:\n%s", want, show(r))
		}
	}
	check(nil, nil, "postino.toml", "working directory", localData)
	check([]string{"POSTINO_CONFIG=" + envFile}, nil, envFile, "$POSTINO_CONFIG", envData)
	check([]string{"POSTINO_CONFIG=" + envFile}, []string{"--config", flagFile}, flagFile, "--config", flagData)
	check([]string{"POSTINO_CONFIG=" + envFile}, []string{flagFile}, flagFile, "--config", flagData)
	os.Remove(local)
	r := inDir(t, work, nil, nil, "config", "check")
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "embedded defaults (no --config, no $POSTINO_CONFIG, no ./postino.toml, no /etc/postino/postino.toml): OK\n") {
		t.Errorf("config check without any file:\n%s", show(r))
	}
	// A file named by $POSTINO_CONFIG must exist: no silent fall-back.
	r = inDir(t, work, []string{"POSTINO_CONFIG=" + filepath.Join(work, "typo.toml")}, nil, "user", "list")
	if r.Code != 78 || !strings.Contains(r.Stderr, "typo.toml") {
		t.Errorf("user list with $POSTINO_CONFIG naming a missing file:\n%s", show(r))
	}

	// The server started through $POSTINO_CONFIG says so, and a command
	// run with only the variable set reaches its data folder.
	free := testutil.FreeAddrs(t, 1)
	os.WriteFile(envFile, []byte("data_dir = \""+envData+"\"\nhostname = \"localhost\"\n[pop3]\nlisten = \""+free[0]+"\"\nlisten_tls = \"\"\n[smtp]\nlisten = \"\"\nsubmission = \"\"\nsubmissions = \"\"\n"), 0o600)
	t.Setenv("POSTINO_CONFIG", envFile)
	s := startServer(t, serverOpts{data: envData, noAddrs: true, noDataFlag: true, pop3Addr: free[0]})
	if want := "config: " + envFile + " ($POSTINO_CONFIG)\n"; !strings.Contains(s.Stdout.String(), want) {
		t.Errorf("banner lacks %q:\n%s", want, s.Stdout)
	}
	if r := inDir(t, t.TempDir(), []string{"POSTINO_CONFIG=" + envFile}, []byte("pw\n"), "user", "add", "carol@example.test", "--password-stdin"); r.Code != 0 {
		t.Fatalf("user add through $POSTINO_CONFIG:\n%s", show(r))
	}
	s.login("carol@example.test", "pw").Quit()
}

// TestGlobalFlagsAnywhere checks that --config and --data are accepted
// before the command, between the command and its subcommand, and after
// it, in both "--flag value" and "--flag=value" forms.
func TestGlobalFlagsAnywhere(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o700)
	conf := filepath.Join(dir, "p.toml")
	os.WriteFile(conf, []byte("data_dir = \""+data+"\"\n"), 0o600)
	addUser(t, data, "alice@example.test", "pw")

	for _, args := range [][]string{
		{"--config", conf, "user", "list"},
		{"--config=" + conf, "user", "list"},
		{"user", "--config", conf, "list"},
		{"user", "list", "--config", conf},
		{"-config", conf, "user", "list"},
		{"--data", data, "user", "list"},
		{"user", "--data=" + data, "list"},
	} {
		r := inDir(t, dir, nil, nil, args...)
		if r.Code != 0 || r.Stdout != "alice@example.test\tARGON2ID\t0\t0\t-\n" {
			t.Errorf("want alice listed:\n%s", show(r))
		}
	}
	for _, args := range [][]string{
		{"config", "check", "--config", conf},
		{"--config", conf, "config", "check"},
	} {
		r := inDir(t, dir, nil, nil, args...)
		if r.Code != 0 || !strings.HasPrefix(r.Stdout, conf+" (--config): OK\n") {
			t.Errorf("want %s checked:\n%s", conf, show(r))
		}
	}
	// A hostile or mistyped global flag is a usage error, not a command.
	for _, args := range [][]string{{"--bogus", "user", "list"}, {"--config"}, {"--config", conf}} {
		if r := inDir(t, dir, nil, nil, args...); r.Code != 64 || r.Stdout != "" {
			t.Errorf("want exit 64 and nothing on stdout:\n%s", show(r))
		}
	}
}

// TestHelpEverywhere checks that every command, and postino itself,
// answers --help, -h and "help COMMAND" with its usage on standard output
// and exit status 0.
func TestHelpEverywhere(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []string{"serve", "init", "user", "deliver", "fetch", "queue", "block", "dkim", "db", "config", "version", "help"} {
		for _, args := range [][]string{{c, "--help"}, {c, "-h"}, {"help", c}, {"--config", "x.toml", c, "--help"}} {
			r := inDir(t, dir, nil, nil, args...)
			if r.Code != 0 || !strings.HasPrefix(r.Stdout, "Usage: postino "+c) || r.Stderr != "" {
				t.Errorf("want usage of %s on stdout, exit 0:\n%s", c, show(r))
			}
		}
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		r := inDir(t, dir, nil, nil, args...)
		if r.Code != 0 || !strings.Contains(r.Stdout, "Commands:") || !strings.Contains(r.Stdout, "--config FILE") || r.Stderr != "" {
			t.Errorf("want the command list on stdout, exit 0:\n%s", show(r))
		}
	}
}

// TestUsageNamesMissingArgument checks that a command missing an argument
// says which one, on standard error, with exit status 64 (EX_USAGE).
func TestUsageNamesMissingArgument(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "missing COMMAND"},
		{[]string{"user"}, "missing command (add, passwd, del, list, quota"},
		{[]string{"user", "add"}, "missing ADDRESS"},
		{[]string{"user", "passwd", "--password-stdin"}, "missing ADDRESS"},
		{[]string{"user", "del"}, "missing ADDRESS"},
		{[]string{"deliver", "--from", "a@b.test"}, "missing recipient ADDRESS"},
		{[]string{"queue"}, "missing command (list, show, retry, delete)"},
		{[]string{"queue", "show"}, "missing ID"},
		{[]string{"queue", "delete"}, "missing ID"},
		{[]string{"block"}, "missing command (list, remove)"},
		{[]string{"block", "remove"}, "missing ADDRESS or ACCOUNT"},
		{[]string{"dkim"}, "missing command (keygen)"},
		{[]string{"dkim", "keygen"}, "missing DOMAIN"},
		{[]string{"config"}, "missing default or check"},
		{[]string{"user", "frobnicate"}, `unknown user command "frobnicate"`},
		{[]string{"user", "list", "extra"}, `unexpected argument "extra"`},
		{[]string{"nosuchcommand"}, `unknown command "nosuchcommand"`},
	} {
		r := inDir(t, dir, nil, nil, c.args...)
		if r.Code != 64 || !strings.Contains(r.Stderr, c.want) || !strings.Contains(r.Stderr, "Usage: postino") || r.Stdout != "" {
			t.Errorf("want exit 64 and %q with the usage on stderr:\n%s", c.want, show(r))
		}
	}
}

// TestVersion checks "postino --version" and "postino version": the same
// answer, never "dev", taken from the build information the binary
// carries (its module version, or its commit and "+dirty"), as "go
// version -m" reads it.
func TestVersion(t *testing.T) {
	a := postino(t, nil, "--version")
	b := postino(t, nil, "version")
	if a.Code != 0 || b.Code != 0 || a.Stdout != b.Stdout || a.Stderr != "" {
		t.Fatalf("--version and version differ or fail:\n%s\n%s", a, b)
	}
	m := regexp.MustCompile(`^postino (\S+) \(go\S+ \S+/\S+\)`).FindStringSubmatch(a.Stdout)
	if m == nil {
		t.Fatalf("version output %q is not \"postino VERSION (GO OS/ARCH)\"", a.Stdout)
	}
	v := m[1]
	if v == "dev" || v == "" {
		t.Fatalf("version %q", v)
	}
	info := testutil.Runner{Timeout: cmdTimeout}.Run(t, nil, nil, "go", "version", "-m", binPath)
	if info.Code != 0 {
		t.Fatalf("go version -m: %s", info)
	}
	settings := map[string]string{}
	modVersion := ""
	for _, line := range strings.Split(info.Output, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "mod":
			modVersion = f[2]
		case len(f) >= 2 && f[0] == "build":
			k, val, _ := strings.Cut(f[1], "=")
			settings[k] = val
		}
	}
	rev := settings["vcs.revision"]
	switch {
	case modVersion != "" && modVersion != "(devel)":
		if v != modVersion {
			t.Errorf("version %q, want the module version %q", v, modVersion)
		}
	case rev != "":
		if !strings.Contains(v, rev[:12]) {
			t.Errorf("version %q lacks the revision %s", v, rev[:12])
		}
		if dirty := settings["vcs.modified"] == "true"; dirty != strings.HasSuffix(v, "+dirty") {
			t.Errorf("version %q: vcs.modified is %v", v, dirty)
		}
	default:
		// Built without version control information (-buildvcs=false,
		// or a tree that is not a git checkout): it says so.
		if v != "devel" || !strings.Contains(a.Stdout, "\nbuilt without version control information") {
			t.Errorf("version %q of a build without VCS information does not say so", a.Stdout)
		}
	}
	t.Logf("%s", strings.TrimSpace(a.Stdout))
}
