package blackbox

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestReleaseStatic runs "make release" into a temporary folder and checks
// what it promises: one binary per platform, each static (no program
// interpreter, no shared library needed: the "one static binary" of the
// README), SHA256SUMS matching them, and the version given to make stamped
// in, winning over the build information.
func TestReleaseStatic(t *testing.T) {
	mk := testutil.NeedProgram(t, "make")
	testutil.NeedProgram(t, "sha256sum")
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	const stamp = "v9.8.7-releasetest"
	res := testutil.Runner{Timeout: 10 * cmdTimeout}.Run(t, nil, nil, mk, "-C", root, "release", "RELEASE_DIR="+out, "VERSION="+stamp)
	if res.Code != 0 {
		t.Fatalf("make release: %s", res)
	}

	sums := map[string]string{}
	f, err := os.Open(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatalf("no SHA256SUMS: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not \"SUM  NAME\"", sc.Text())
		}
		sums[name] = sum
	}

	for _, p := range []struct {
		name    string
		machine elf.Machine
		arch    string
	}{{"postino-linux-amd64", elf.EM_X86_64, "amd64"}, {"postino-linux-arm64", elf.EM_AARCH64, "arm64"}} {
		path := filepath.Join(out, p.name)
		if got, want := fileSHA256(t, path), sums[p.name]; got != want {
			t.Errorf("%s: SHA-256 %s, SHA256SUMS says %q", p.name, got, want)
		}
		ef, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		if ef.Machine != p.machine {
			t.Errorf("%s: ELF machine %v, want %v", p.name, ef.Machine, p.machine)
		}
		for _, prog := range ef.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s: has a program interpreter (PT_INTERP): dynamically linked", p.name)
			}
		}
		if libs, err := ef.ImportedLibraries(); err != nil || len(libs) > 0 {
			t.Errorf("%s: needs shared libraries %v (%v)", p.name, libs, err)
		}
		if ds := ef.Section(".dynamic"); ds != nil {
			needed, _ := ef.DynString(elf.DT_NEEDED)
			if len(needed) > 0 {
				t.Errorf("%s: DT_NEEDED %v", p.name, needed)
			}
		}
		ef.Close()
		if p.arch != runtime.GOARCH || runtime.GOOS != "linux" {
			continue
		}
		v := run(t, nil, nil, path, "--version")
		if v.Code != 0 || !strings.HasPrefix(v.Stdout, "postino "+stamp+" (") {
			t.Errorf("%s --version: want the stamped %s\n%s", p.name, stamp, v)
		}
		t.Logf("%s", strings.TrimSpace(v.Stdout))
	}
}

// fileSHA256 returns the hex SHA-256 of a file.
func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
