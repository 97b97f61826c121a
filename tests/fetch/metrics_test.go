package fetch_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
)

// scrapeMetrics returns the samples of a Prometheus text page, keyed by
// "name{labels}", or nil when the page cannot be fetched.
func scrapeMetrics(url string) map[string]float64 {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			out[l[:i]] = v
		}
	}
	return out
}

func httpStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeMetricsAndVault drives the real binaries: "postino serve" with
// the admin listener and the vault on; a POP3 client downloads three
// messages and deletes one; the server's /metrics counts the logins
// (one good, one forged) and /readyz is ready; "postino vault list" shows
// the deleted message and "postino vault restore --all" brings it back
// under its old UIDL; "postino fetch --daemon" with fetch.metrics_listen
// then downloads the mailbox and counts its runs.
func TestServeMetricsAndVault(t *testing.T) {
	admin := testutil.FreeAddrs(t, 1)[0]
	s := startPostino(t, "vault_days = 7", "[admin]", fmt.Sprintf("listen = %q", admin))
	s.addUser(t, "alice@example.test", "alice-pw")
	for i := range 3 {
		s.deliver(t, "alice@example.test", testMessage(i, 500))
	}
	c := popClient(t, s.pop3Addr, "alice@example.test", "alice-pw")
	uidls, err := c.UIDL()
	if err != nil || len(uidls) != 3 {
		t.Fatalf("UIDL: %v, %v", uidls, err)
	}
	for n := 1; n <= 3; n++ {
		r, err := c.Retr(n)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r)
	}
	if err := c.Dele(2); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	// An attacker guesses a password.
	bad := mailtest.DialPOP3(t, s.pop3Addr, 10*time.Second)
	if err := bad.Login("alice@example.test", "guess"); err == nil {
		t.Fatal("forged login accepted")
	}
	bad.Close()

	base := "http://" + admin
	var got map[string]float64
	testutil.WaitFor(t, 10*time.Second, "the failed login in the metrics", func() bool {
		got = scrapeMetrics(base + "/metrics")
		return got[`postino_logins_total{protocol="pop3",result="failed"}`] == 1
	})
	for k, want := range map[string]float64{
		`postino_logins_total{protocol="pop3",result="ok"}`: 1,
		`postino_connections_total{listener="pop3"}`:        2,
		`postino_vault_moved_total`:                         1,
	} {
		if v, present := got[k]; !present || v != want {
			t.Errorf("%s = %v (present %v), want %v", k, v, present, want)
		}
	}
	if code, body := httpStatus(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}

	r := run(t, nil, nil, binPath, "vault", "list", "alice@example.test", "--data", s.data)
	if r.Code != 0 || !strings.Contains(string(r.Output), uidls[1].UID) || !strings.Contains(string(r.Output), "test 1") || strings.Contains(string(r.Output), uidls[0].UID) {
		t.Fatalf("vault list (%d):\n%s", r.Code, r.Output)
	}
	if r := run(t, nil, nil, binPath, "vault", "restore", "alice@example.test", "--all", "--data", s.data); r.Code != 0 {
		t.Fatalf("vault restore (%d):\n%s", r.Code, r.Output)
	}
	c = popClient(t, s.pop3Addr, "alice@example.test", "alice-pw")
	after, err := c.UIDL()
	c.Quit()
	if err != nil || len(after) != 3 || after[1].UID != uidls[1].UID {
		t.Fatalf("UIDL after restore: %v, %v (before %v)", after, err, uidls)
	}

	// postino fetch --daemon with its own metrics listener.
	fm := testutil.FreeAddrs(t, 1)[0]
	cfg := filepath.Join(t.TempDir(), "fetch.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir = %q\n[fetch]\nmetrics_listen = %q\n", t.TempDir(), fm)), 0o600)
	dest := filepath.Join(t.TempDir(), "Maildir")
	cmd := exec.Command(binPath, "fetch", "--config", cfg, "--server", s.pop3Addr, "--security", "none", "--allow-plaintext",
		"--user", "alice@example.test", "--password-command", "echo alice-pw", "--to", "maildir:"+dest,
		"--state-dir", t.TempDir(), "--name", "acct", "--daemon", "1s", "--quiet")
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	p, err := testutil.StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Terminate(10 * time.Second)
	testutil.WaitFor(t, 20*time.Second, "two fetch runs in the metrics", func() bool {
		got = scrapeMetrics("http://" + fm + "/metrics")
		return got[`postino_fetch_runs_total{result="ok"}`] >= 2
	})
	if got[`postino_fetch_runs_total{result="error"}`] != 0 {
		t.Errorf("fetch errors counted: %v", got)
	}
	if n := len(mustReadDir(t, filepath.Join(dest, "new"))); n != 3 {
		t.Errorf("fetch delivered %d messages, want 3", n)
	}
	if !p.Terminate(10 * time.Second) {
		t.Error("fetch --daemon did not stop on SIGTERM")
	}
}

func mustReadDir(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return es
}
