package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
)

// startMaildir runs node name with storage.backend = "maildir" (its own
// data folder's mail/).
func (c *cluster) startMaildir(t *testing.T, name string) *node {
	t.Helper()
	n := &node{}
	n.Serve = testutil.StartServe(t, testutil.ServeConfig{
		Bin: binPath, FreeAddrs: 2, Retry: true,
		Setup: func(free []string) ([]string, map[string]string) {
			n.pop3, n.smtp = free[0], free[1]
			cfg := c.config(t, name, c.dsn, n.pop3, n.smtp)
			b, _ := os.ReadFile(cfg)
			os.WriteFile(cfg, []byte(strings.Replace(string(b), `backend = "postgres"`, `backend = "maildir"`, 1)), 0o600)
			n.config = cfg
			return []string{"serve", "--config", cfg}, map[string]string{"pop3": n.pop3, "smtp": n.smtp}
		},
	})
	t.Cleanup(func() {
		if !n.killed && !n.done {
			n.Stop(t, 15*time.Second, n.Stderr)
		}
	})
	return n
}

// TestExportRoundTrip: Maildir → db import → PostgreSQL (plus mail
// delivered there) → postino export → a Maildir server: every message
// keeps its UIDL and its octets, and a second export writes nothing.
func TestExportRoundTrip(t *testing.T) {
	c := newCluster(t)
	pgCfg := c.config(t, "node1", c.dsn, "127.0.0.1:0", "127.0.0.1:0")
	b, _ := os.ReadFile(pgCfg)
	mdCfg := filepath.Join(c.dir, "node1-maildir.toml")
	os.WriteFile(mdCfg, []byte(strings.Replace(string(b), `backend = "postgres"`, `backend = "maildir"`, 1)), 0o600)
	for i := range 2 {
		if r := postino(t, fmt.Appendf(nil, "Subject: md %d\n\nbody %d\n", i, i), "deliver", "--config", mdCfg, "--from", "x@remote.example", alice); r.Code != 0 {
			t.Fatalf("deliver into the Maildir: %s", r)
		}
	}
	if r := postino(t, nil, "db", "migrate", "--config", pgCfg); r.Code != 0 {
		t.Fatalf("db migrate: %s", r)
	}
	if r := postino(t, nil, "db", "import", "--config", pgCfg, alice); r.Code != 0 {
		t.Fatalf("db import: %s", r)
	}
	// Straight into PostgreSQL, one without a final newline.
	for _, body := range []string{"Subject: pg 1\n\nline\n.dot line\n", "Subject: pg 2\r\n\r\nno final newline"} {
		if r := postino(t, []byte(body), "deliver", "--config", pgCfg, "--from", "y@remote.example", alice); r.Code != 0 {
			t.Fatalf("deliver into PostgreSQL: %s", r)
		}
	}

	n1 := c.start(t, "node1", c.dsn)
	p, err := n1.login(t)
	if err != nil {
		t.Fatal(err)
	}
	wantUIDLs := mailtest.UIDLs(t, p)
	want := mailtest.RetrAll(t, p, "in PostgreSQL")
	p.Cmd("QUIT")
	if len(wantUIDLs) != 4 {
		t.Fatalf("PostgreSQL mailbox has %d messages, want 4", len(wantUIDLs))
	}
	if !strings.HasPrefix(wantUIDLs[3], "P") || strings.HasPrefix(wantUIDLs[0], "P") {
		t.Fatalf("UIDLs %v: want 2 imported from the Maildir, then 2 of PostgreSQL", wantUIDLs)
	}

	dir := filepath.Join(c.dir, "node2", "mail")
	r := postino(t, nil, "export", dir, "--config", pgCfg)
	if r.Code != 0 || !strings.Contains(r.Stdout, alice+": 4 messages written, 0 already there") || !strings.Contains(r.Stdout, carol+": 0 messages written") {
		t.Fatalf("export: %s", r)
	}
	r = postino(t, nil, "export", dir, alice, "--config", pgCfg)
	if r.Code != 0 || !strings.Contains(r.Stdout, alice+": 0 messages written, 4 already there") {
		t.Fatalf("export again: %s", r)
	}
	// Hostile names never leave DIR.
	if r := postino(t, nil, "export", dir, "../../x@example.test", "--config", pgCfg); r.Code == 0 {
		t.Fatalf("export of ../../x@example.test: %s", r)
	}

	n2 := c.startMaildir(t, "node2")
	p2, err := n2.login(t)
	if err != nil {
		t.Fatal(err)
	}
	if got := mailtest.UIDLs(t, p2); strings.Join(got, " ") != strings.Join(wantUIDLs, " ") {
		t.Fatalf("UIDLs of the export %v, in PostgreSQL %v", got, wantUIDLs)
	}
	got := mailtest.RetrAll(t, p2, "exported")
	for i := range want {
		if string(got[i]) != string(want[i]) {
			t.Fatalf("message %d exported %q, in PostgreSQL %q", i+1, got[i], want[i])
		}
	}
	p2.Cmd("QUIT")
}

// TestVaultAndExpire: pop3.expire and the deleted-mail vault with the
// mailboxes in PostgreSQL: a message deleted over POP3 goes into the
// vault, one downloaded is removed by the sweep (expire = 0 days) and
// goes there too; `postino vault list` shows both and `postino vault
// restore --all` puts them back with their UIDLs and octets.
func TestVaultAndExpire(t *testing.T) {
	c := newCluster(t)
	// The sweep runs at start, then every sweep_interval (1m at least):
	// a node started after the download expires the message.
	start := func() *node {
		n := &node{}
		n.Serve = testutil.StartServe(t, testutil.ServeConfig{
			Bin: binPath, FreeAddrs: 2, Retry: true,
			Setup: func(free []string) ([]string, map[string]string) {
				n.pop3, n.smtp = free[0], free[1]
				cfg := c.config(t, "node1", c.dsn, n.pop3, n.smtp)
				b, _ := os.ReadFile(cfg)
				os.WriteFile(cfg, []byte(strings.Replace(string(b), "[pop3]\n", "[pop3]\nexpire = \"0\"\nvault_days = 30\n", 1)), 0o600)
				n.config = cfg
				return []string{"serve", "--config", cfg}, map[string]string{"pop3": n.pop3, "smtp": n.smtp}
			},
		})
		t.Cleanup(func() {
			if !n.done {
				n.Stop(t, 15*time.Second, n.Stderr)
			}
		})
		return n
	}
	n := start()
	c.importUsers(t, n.config)
	for i := range 2 {
		if r := postino(t, fmt.Appendf(nil, "Subject: vault %d\n\nbody %d\n", i, i), "deliver", "--config", n.config, "--from", "x@remote.example", alice); r.Code != 0 {
			t.Fatalf("deliver: %s", r)
		}
	}
	p, err := n.login(t)
	if err != nil {
		t.Fatal(err)
	}
	wantUIDLs := mailtest.UIDLs(t, p)
	want := mailtest.RetrAll(t, p, "before")
	if _, err := p.Cmd("DELE 2"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Cmd("QUIT"); err != nil {
		t.Fatal(err)
	}
	// Message 1 was downloaded: the sweep of the next start removes it
	// into the vault.
	n.Stop(t, 15*time.Second, n.Stderr)
	n.done = true
	n = start()
	testutil.WaitFor(t, 20*time.Second, "the sweep to expire the downloaded message", func() bool {
		r := postino(t, nil, "vault", "list", alice, "--config", n.config)
		return r.Code == 0 && strings.Contains(r.Stdout, wantUIDLs[0]) && strings.Contains(r.Stdout, wantUIDLs[1])
	})
	r := postino(t, nil, "vault", "list", alice, "--config", n.config)
	if !strings.Contains(r.Stdout, "vault 0") || !strings.Contains(r.Stdout, "vault 1") {
		t.Fatalf("vault list: %s", r)
	}
	if r := postino(t, nil, "vault", "restore", alice, "NOPE", "--config", n.config); r.Code != 65 {
		t.Fatalf("restore of an unknown UIDL: %s", r)
	}
	testutil.WaitFor(t, 20*time.Second, "vault restore --all", func() bool {
		r = postino(t, nil, "vault", "restore", alice, "--all", "--config", n.config)
		return r.Code == 0 // 75 while the sweep holds the mailbox
	})
	if !strings.Contains(r.Stdout, "2 messages restored") {
		t.Fatalf("vault restore: %s", r)
	}
	p2, err := n.login(t)
	if err != nil {
		t.Fatal(err)
	}
	if got := mailtest.UIDLs(t, p2); strings.Join(got, " ") != strings.Join(wantUIDLs, " ") {
		t.Fatalf("UIDLs after the restore %v, before %v", got, wantUIDLs)
	}
	got := mailtest.RetrAll(t, p2, "restored")
	for i := range want {
		if string(got[i]) != string(want[i]) {
			t.Fatalf("message %d restored %q, before %q", i+1, got[i], want[i])
		}
	}
	p2.Cmd("RSET")
	p2.Cmd("QUIT")
}
