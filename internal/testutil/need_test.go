package testutil

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// recorder is a testing.TB whose Fatalf and Skipf are recorded instead of
// ending the test that runs the helper under test.
type recorder struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runHelper runs fn with a recorder in a goroutine of its own (Fatalf and
// Skipf end it) and returns the recorder.
func runHelper(t *testing.T, fn func(tb testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

// TestMissingIsFatalInCI: a missing program or Python module skips the
// test, except under CI=true where it fails it.
func TestMissingIsFatalInCI(t *testing.T) {
	helpers := map[string]func(testing.TB){
		"NeedProgram": func(tb testing.TB) { NeedProgram(tb, "postino-no-such-program") },
		"NeedPython":  func(tb testing.TB) { NeedPython(tb, "postino_no_such_module") },
		"SkipOrFatal": func(tb testing.TB) { SkipOrFatal(tb, "cannot run here") },
	}
	for name, h := range helpers {
		for _, ci := range []string{"true", "", "false"} {
			t.Setenv("CI", ci)
			r := runHelper(t, h)
			if want := ci == "true"; r.failed != want || r.skipped == want {
				t.Errorf("%s with CI=%q: failed %v, skipped %v (%s)", name, ci, r.failed, r.skipped, r.msg)
			}
		}
	}
}

// TestNeedPythonTriesEveryPython: the first python3 in PATH cannot import
// the module (as a pyenv python3 lacks Debian's python3-dkim); the next
// one can and is chosen.
func TestNeedPythonTriesEveryPython(t *testing.T) {
	sh := NeedProgram(t, "sh")
	without, with := t.TempDir(), t.TempDir()
	scripts := map[string]string{
		without: "#!" + sh + "\necho 'ModuleNotFoundError: No module named x' >&2\nexit 1\n",
		with:    "#!" + sh + "\necho " + filepath.Join(with, "python3.11") + "\n",
	}
	for dir, s := range scripts {
		if err := os.WriteFile(filepath.Join(dir, "python3"), []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", strings.Join([]string{t.TempDir(), without, with}, string(filepath.ListSeparator)))
	if got, want := NeedPython(t, "postino_probe_a"), filepath.Join(with, "python3.11"); got != want {
		t.Errorf("NeedPython = %q, want %q", got, want)
	}
	t.Setenv("PATH", without)
	t.Setenv("CI", "true")
	r := runHelper(t, func(tb testing.TB) { NeedPython(tb, "postino_probe_b") })
	if !r.failed || !strings.Contains(r.msg, "ModuleNotFoundError") || !strings.Contains(r.msg, without) {
		t.Errorf("no python3 fits: failed %v, message %q", r.failed, r.msg)
	}
}

// TestNewSystemUser creates a user and checks it is gone after the test
// that made it.
func TestNewSystemUser(t *testing.T) {
	var name string
	t.Run("create", func(t *testing.T) {
		u := NewSystemUser(t)
		name = u.Username
		if u.Uid == "0" || u.Gid == "0" || !strings.HasPrefix(u.Username, "postino-t") {
			t.Fatalf("NewSystemUser = %+v", u)
		}
		g, err := user.LookupGroupId(u.Gid)
		if err != nil || g.Name != u.Username {
			t.Errorf("group %s: %+v, %v", u.Gid, g, err)
		}
	})
	if name == "" {
		return // skipped or failed above
	}
	if _, err := user.Lookup(name); err == nil {
		t.Errorf("user %s still exists after the test", name)
	}
}

// allowedSkips are the direct Skip calls in test files that do not depend
// on the machine: a helper process that is not a test of its own, and a
// long test left out by "go test -short". Keyed by file (from the module
// root) and the skip message.
var allowedSkips = map[string]bool{
	"internal/store/maildir/maildir_test.go\x00helper process only": true,
	"internal/queue/crash_test.go\x00subprocess test":               true,
}

// TestSkipsGoThroughTestutil reads every test file of the module: a test
// that cannot run on this machine must say so through SkipOrFatal,
// NeedProgram, NeedPython or NewSystemUser, which fail under CI=true, and
// not with its own t.Skip or its own reading of CI.
func TestSkipsGoThroughTestutil(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			// third_party holds other modules, with tests of their own.
			if rel == "third_party" || rel == "internal/testutil" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		files++
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			arg := ""
			if len(call.Args) > 0 {
				if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					arg, _ = strconv.Unquote(lit.Value)
				}
			}
			pos := fset.Position(call.Pos())
			switch x, _ := sel.X.(*ast.Ident); {
			case sel.Sel.Name == "Skip" || sel.Sel.Name == "Skipf" || sel.Sel.Name == "SkipNow":
				if !allowedSkips[rel+"\x00"+arg] {
					t.Errorf("%s:%d: %s: use testutil.SkipOrFatal or a testutil.Need* helper, which fail under CI=true", rel, pos.Line, sel.Sel.Name)
				}
			case x != nil && x.Name == "os" && (sel.Sel.Name == "Getenv" || sel.Sel.Name == "LookupEnv") && arg == "CI":
				t.Errorf("%s:%d: reads CI itself: use testutil.InCI", rel, pos.Line)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 20 {
		t.Fatalf("only %d test files found under %s", files, root)
	}
}
