package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pythonProbe imports the modules named in its arguments and prints the
// path of the interpreter itself (not that of a pyenv shim).
const pythonProbe = `import importlib, sys
for m in sys.argv[1:]:
    importlib.import_module(m)
print(sys.executable)`

var (
	pythonMu    sync.Mutex
	pythonFound = map[string]pythonResult{} // by the modules, comma-joined
)

type pythonResult struct {
	path string // the interpreter; "" if none fits
	why  string // what was tried, when none fits
}

// NeedPython returns the path of a python3 interpreter that can import
// every one of modules (none: any python3). It tries each python3 found in
// the folders of PATH in order and takes the first that can: a python3
// from pyenv ahead of the system one in PATH lacks the modules of Debian's
// python3-* packages, which only /usr/bin/python3 sees. When none fits,
// the test is skipped, or fails under CI=true. The answer is kept for the
// rest of the test binary's run.
func NeedPython(t testing.TB, modules ...string) string {
	t.Helper()
	key := strings.Join(modules, ",")
	pythonMu.Lock()
	res, ok := pythonFound[key]
	if !ok {
		res = findPython(modules)
		pythonFound[key] = res
	}
	pythonMu.Unlock()
	if res.path == "" {
		SkipOrFatal(t, "no python3 in PATH can import %q (Debian: python3 and its python3-* packages): %s", modules, res.why)
	}
	return res.path
}

// findPython looks for NeedPython's interpreter.
func findPython(modules []string) pythonResult {
	var tried []string
	seen := map[string]bool{}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" {
			continue
		}
		// exec.LookPath with a path checks that very file.
		p, err := exec.LookPath(filepath.Join(dir, "python3"))
		if err != nil {
			continue
		}
		real, err := filepath.EvalSymlinks(p) // /bin is /usr/bin on Debian 12
		if err != nil || seen[real] {
			continue
		}
		seen[real] = true
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, p, append([]string{"-c", pythonProbe}, modules...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		cancel()
		exe := strings.TrimSpace(string(out))
		if err == nil && filepath.IsAbs(exe) {
			return pythonResult{path: exe}
		}
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:] // the exception, e.g. ModuleNotFoundError: ...
		}
		tried = append(tried, fmt.Sprintf("%s: %v %s", p, err, msg))
	}
	if len(tried) == 0 {
		return pythonResult{why: "python3 is not in PATH"}
	}
	return pythonResult{why: strings.Join(tried, "; ")}
}

// NewSystemUser creates a system user (and its group) of its own for the
// test with useradd, and deletes both with userdel when the test and its
// cleanups registered later are done. It needs root: without root, or
// without useradd, the test is skipped, or fails under CI=true (CI runs as
// root).
func NewSystemUser(t testing.TB) *user.User {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFatal(t, "creating a user needs root (euid %d)", os.Geteuid())
	}
	useradd := NeedProgram(t, "useradd")
	userdel := NeedProgram(t, "userdel")
	var b [4]byte
	rand.Read(b[:])
	name := "postino-t" + hex.EncodeToString(b[:]) // 17 characters: within any limit
	rn := Runner{Timeout: time.Minute}
	var r Result
	// useradd fails while another process holds /etc/passwd's lock (a
	// test package running at the same time): try again.
	for attempt := 0; ; attempt++ {
		r = rn.Run(t, nil, nil, useradd, "--system", "--user-group", "--no-create-home",
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name)
		if r.Code == 0 || attempt == 4 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r.Code != 0 {
		t.Fatalf("cannot create user %s:\n%s", name, r)
	}
	t.Cleanup(func() {
		for attempt := 0; ; attempt++ {
			r := rn.Run(t, nil, nil, userdel, name)
			if r.Code == 0 {
				return
			}
			if attempt == 4 {
				t.Errorf("cannot delete user %s:\n%s", name, r)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s was created but cannot be looked up: %v", name, err)
	}
	return u
}
