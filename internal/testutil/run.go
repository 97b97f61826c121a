package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// InCI reports whether the tests run in CI (CI=true), where a missing
// external program is a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFatal skips the test with the message, or fails it under CI=true.
// Use it where a test cannot run here (a missing program, no root).
func SkipOrFatal(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// NeedProgram returns the path of an external program. A missing program
// fails the test in CI (CI=true) and skips it elsewhere.
func NeedProgram(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if InCI() {
			t.Fatalf("%s is required in CI but not installed: %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

// Runner runs external commands for tests. The zero value has no timeout
// and is of no use; set at least Timeout.
type Runner struct {
	// Timeout bounds every command: one running longer is killed and
	// fails the test.
	Timeout time.Duration
	// WaitDelay is exec.Cmd.WaitDelay: how long to wait for the output
	// pipes after the process has exited or been killed (0: for ever).
	WaitDelay time.Duration
	// Split captures standard output and standard error apart (in
	// Result.Stdout and Result.Stderr) instead of together in
	// Result.Output.
	Split bool
	// MaxShown cuts Result.String's output longer than this in the
	// middle; 0 never cuts.
	MaxShown int
}

// Result is how a command run by a Runner ended.
type Result struct {
	Cmdline string // the command's name and arguments
	Output  string // standard output and error together (without Split)
	Stdout  string // standard output (with Split)
	Stderr  string // standard error (with Split)
	Code    int    // the exit code; -1 if killed by a signal

	split    bool
	maxShown int
}

// String describes the result for failure messages.
func (r Result) String() string {
	if r.split {
		return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
	}
	out := r.Output
	if n := r.maxShown; n > 0 && len(out) > n {
		out = out[:n/2] + "\n[... " + strconv.Itoa(len(out)-n) + " bytes cut ...]\n" + out[len(out)-n/2:]
	}
	return fmt.Sprintf("$ %s\nexit %d, output:\n%s", r.Cmdline, r.Code, out)
}

// Run runs the command with the extra environment env (added to the
// test's own) and stdin, and returns its output and exit code. It fails
// the test if the command cannot start or times out.
func (rn Runner) Run(t testing.TB, env []string, stdin []byte, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rn.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.WaitDelay = rn.WaitDelay
	var out, errb bytes.Buffer
	if rn.Split {
		cmd.Stdout, cmd.Stderr = &out, &errb
	} else {
		cmd.Stdout, cmd.Stderr = &out, &out
	}
	err := cmd.Run()
	r := Result{Cmdline: name + " " + strings.Join(args, " "), split: rn.Split, maxShown: rn.MaxShown}
	if rn.Split {
		r.Stdout, r.Stderr = out.String(), errb.String()
	} else {
		r.Output = out.String()
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("timed out after %v:\n%s", rn.Timeout, r)
	case err == nil:
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	default:
		t.Fatalf("cannot run %s: %v", r.Cmdline, err)
	}
	return r
}
