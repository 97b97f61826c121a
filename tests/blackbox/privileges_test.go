package blackbox

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.SkipOrFatal(t, "needs root (CI runs as root)")
	}
}

// TestRootRefusesNetworkWithoutRunAs: as root with no run_as, a
// non-loopback listener is refused before anything is bound.
func TestRootRefusesNetworkWithoutRunAs(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	r := postino(t, nil, "serve", "--data", dir, "--pop3", "0.0.0.0:1", "--pop3s", "",
		"--smtp", "", "--submission", "", "--submissions", "")
	if r.Code != 78 || !strings.Contains(r.Stderr, "refusing to listen on 0.0.0.0:1 as root") {
		t.Fatalf("serve as root on 0.0.0.0: %s", r)
	}
}

// TestRootLoopbackWarns: the quick start works as root, with a warning.
func TestRootLoopbackWarns(t *testing.T) {
	needRoot(t)
	s := startServer(t, serverOpts{})
	if !strings.Contains(s.Stderr.String(), "running as root") {
		t.Errorf("no warning about running as root:\n%s", s.Stderr.String())
	}
}

// TestRunAsDropsPrivileges: with run_as the process switches user (every
// user and group id, and no supplementary group but the user's own) after
// binding, owns the data folder, and still serves and stores mail. The
// run_as user is one made for the test, so that nothing else runs as it.
func TestRunAsDropsPrivileges(t *testing.T) {
	needRoot(t)
	runAs := testutil.NewSystemUser(t)
	base, err := os.MkdirTemp("", "postino-runas-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755) // the run_as user must reach the data folder inside
	data := filepath.Join(base, "data")
	addUser(t, data, "alice@example.test", "pw")
	cfg := filepath.Join(base, "postino.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("run_as = %q\n", runAs.Username)), 0o644)
	s := startServer(t, serverOpts{data: data, extraArgs: []string{"--config", cfg}})

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// /proc/PID/status: "Uid:" and "Gid:" list the real, effective,
	// saved and filesystem ids; "Groups:" the supplementary groups.
	ids := map[string][]string{}
	for _, l := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			ids[k] = strings.Fields(v)
		}
	}
	for k, want := range map[string][]string{
		"Uid":    {runAs.Uid, runAs.Uid, runAs.Uid, runAs.Uid},
		"Gid":    {runAs.Gid, runAs.Gid, runAs.Gid, runAs.Gid},
		"Groups": {runAs.Gid},
	} {
		if !slices.Equal(ids[k], want) {
			t.Errorf("%s: %q, want %q (%s)", k, ids[k], want, runAs.Username)
		}
	}
	fi, err := os.Stat(filepath.Join(data, "users.passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); strconv.Itoa(int(st.Uid)) != runAs.Uid || strconv.Itoa(int(st.Gid)) != runAs.Gid {
		t.Errorf("users.passwd owned by %d:%d, want %s:%s", st.Uid, st.Gid, runAs.Uid, runAs.Gid)
	}
	mustDeliver(t, data, "bob@example.test", []byte("Subject: x\n\nhello\n"), "alice@example.test")
	// deliver ran as root: the server (as the run_as user) must still
	// read it.
	c := s.login("alice@example.test", "pw")
	if n, _, err := c.Stat(); err != nil || n != 1 {
		t.Fatalf("STAT as %s: %d, %v", runAs.Username, n, err)
	}
	c.Quit()
}

// TestBadCertificateRefused: a certificate that does not match its key
// stops the start with a clear message naming the files.
func TestBadCertificateRefused(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	// Two self-signed pairs: a's certificate with b's key.
	for _, d := range []string{a, b} {
		s := startServer(t, serverOpts{data: d})
		s.stop()
	}
	cert, key := filepath.Join(a, "tls", "cert.pem"), filepath.Join(b, "tls", "key.pem")
	r := postino(t, nil, "serve", "--data", t.TempDir(), "--tls-cert", cert, "--tls-key", key,
		"--pop3", "127.0.0.1:0", "--pop3s", "", "--smtp", "", "--submission", "", "--submissions", "")
	if r.Code != 78 || !strings.Contains(r.Stderr, "do not match") || !strings.Contains(r.Stderr, "cert.pem") {
		t.Fatalf("mismatched certificate and key: %s", r)
	}
	r = postino(t, nil, "serve", "--data", t.TempDir(), "--tls-cert", filepath.Join(a, "users.passwd"), "--tls-key", key,
		"--pop3", "127.0.0.1:0", "--pop3s", "", "--smtp", "", "--submission", "", "--submissions", "")
	if r.Code != 78 || !strings.Contains(r.Stderr, "tls:") {
		t.Fatalf("garbage certificate: %s", r)
	}
}
