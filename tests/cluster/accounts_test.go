package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil/mailtest"
)

// TestUsersShared: with storage.backend = "postgres" the users are the
// database's. A user added, given a new password or deleted with node
// 1's "postino user" is seen at once by node 2, and a users file is not
// read.
func TestUsersShared(t *testing.T) {
	c := newCluster(t)
	n1 := c.start(t, "node1", c.dsn)
	n2 := c.start(t, "node2", c.dsn)
	const dave, davePW = "dave@example.test", "dave password"
	login := func(n *node, user, pw string) error {
		t.Helper()
		p := mailtest.DialPOP3(t, n.pop3, 30*time.Second)
		defer p.Close()
		err := p.Login(user, pw)
		if err == nil {
			p.Cmd("QUIT")
		}
		return err
	}
	if err := login(n2, dave, davePW); err == nil {
		t.Fatal("an unknown user logged in")
	}
	if r := postino(t, []byte(davePW+"\n"), "user", "add", dave, "--password-stdin", "--config", n1.config); r.Code != 0 {
		t.Fatalf("user add on node 1: %s", r)
	}
	if err := login(n2, dave, davePW); err != nil {
		t.Fatalf("node 2 login of the user node 1 added: %v", err)
	}
	// Mail to the new user is accepted by node 2's SMTP.
	if l := smtpSend(t, n2.smtp, message("for dave"), dave); !strings.HasPrefix(l, "250") {
		t.Fatalf("SMTP to the new user via node 2: %q", l)
	}
	if r := postino(t, []byte("new password\n"), "user", "passwd", dave, "--password-stdin", "--config", n2.config); r.Code != 0 {
		t.Fatalf("user passwd on node 2: %s", r)
	}
	if err := login(n1, dave, davePW); err == nil {
		t.Fatal("node 1 still takes the old password")
	}
	if err := login(n1, dave, "new password"); err != nil {
		t.Fatalf("node 1 refuses the new password: %v", err)
	}
	if r := postino(t, nil, "user", "quota", dave, "10M", "--config", n1.config); r.Code != 0 {
		t.Fatalf("user quota: %s", r)
	}
	r := postino(t, nil, "user", "list", "--config", n2.config)
	if r.Code != 0 || !strings.Contains(r.Stdout, dave) || !strings.Contains(r.Stdout, alice) || !strings.Contains(r.Stdout, "10M") {
		t.Fatalf("user list on node 2: %s", r)
	}
	if r := postino(t, nil, "user", "del", dave, "--config", n2.config); r.Code != 0 {
		t.Fatalf("user del: %s", r)
	}
	if err := login(n1, dave, "new password"); err == nil {
		t.Fatal("node 1 still takes the deleted user")
	}
	if l := smtpSend(t, n1.smtp, message("for dave"), dave); !strings.HasPrefix(l, "550") {
		t.Fatalf("SMTP to the deleted user via node 1: %q, want 550", l)
	}
	// The users file of the data folder plays no part.
	r = postino(t, []byte("x\n"), "user", "add", "eve@example.test", "--password-stdin", "--data", c.dir+"/shared")
	if r.Code != 0 {
		t.Fatalf("user add to the file: %s", r)
	}
	if err := login(n1, "eve@example.test", "x"); err == nil {
		t.Fatal("a user of the users file logged in on a postgres node")
	}
}

// TestBlockShared: failed logins from one address split across two nodes
// add up to a block that both enforce; "postino block list" on either
// node shows it, and "postino block remove" lifts it for both.
func TestBlockShared(t *testing.T) {
	c := newCluster(t)
	c.tweak = func(cfg string) string {
		cfg = strings.Replace(cfg, "[smtp]\n", "[smtp]\ntrusted_networks = []\n", 1)
		return strings.Replace(cfg, "[users]\n", "[users]\nmax_failures = 4\nfailure_delay = \"0s\"\n", 1)
	}
	n1 := c.start(t, "node1", c.dsn)
	n2 := c.start(t, "node2", c.dsn)
	try := func(n *node, pw string) error {
		t.Helper()
		p := mailtest.DialPOP3(t, n.pop3, 30*time.Second)
		defer p.Close()
		return p.Login(alice, pw)
	}
	for i := range 4 {
		n := n1
		if i%2 == 1 {
			n = n2
		}
		if err := try(n, "guess"); err == nil {
			t.Fatalf("guess %d logged in", i+1)
		}
	}
	// Both refuse the address now, even with the right password.
	for name, n := range map[string]*node{"node1": n1, "node2": n2} {
		if err := try(n, alicePW); err == nil {
			t.Fatalf("%s let a blocked address log in", name)
		}
	}
	r := postino(t, nil, "block", "list", "--config", n2.config)
	if r.Code != 0 || !strings.Contains(r.Stdout, "127.0.0.1") || !strings.Contains(r.Stdout, "blocked") {
		t.Fatalf("block list on node 2: %s", r)
	}
	r = postino(t, nil, "block", "remove", "127.0.0.1", "--config", n1.config)
	if r.Code != 0 || !strings.Contains(r.Stdout, "unblocked (4 failed logins forgotten)") {
		t.Fatalf("block remove on node 1: %s", r)
	}
	for name, n := range map[string]*node{"node1": n1, "node2": n2} {
		p := mailtest.DialPOP3(t, n.pop3, 30*time.Second)
		if err := p.Login(alice, alicePW); err != nil {
			t.Fatalf("%s after the block was removed: %v", name, err)
		}
		p.Cmd("QUIT")
		p.Close()
	}
	if r := postino(t, nil, "block", "remove", "127.0.0.1", "--config", n1.config); r.Code != 67 {
		t.Fatalf("second block remove: %s, want exit 67 (nothing held)", r)
	}
}

// TestImportAccounts: "postino db import" copies the users, the aliases
// file and the DKIM keys of a single server's data folder into the
// database, printing what it copied; a second run copies nothing twice.
// Then aliases are edited with "postino alias" and used by a node, and
// "postino dkim keygen" adds keys to the database.
func TestImportAccounts(t *testing.T) {
	c := newCluster(t)
	pgCfg := c.config(t, "node1", c.dsn, "127.0.0.1:0", "127.0.0.1:0")
	b, _ := os.ReadFile(pgCfg)
	mdCfg := filepath.Join(c.dir, "node1-maildir.toml")
	os.WriteFile(mdCfg, []byte(strings.Replace(string(b), `backend = "postgres"`, `backend = "maildir"`, 1)), 0o600)
	os.WriteFile(filepath.Join(c.dir, "node1", "aliases"), []byte("sales@example.test: alice@example.test, carol@example.test\n@example.test: alice@example.test\n"), 0o600)
	if r := postino(t, nil, "dkim", "keygen", "example.test", "--config", mdCfg); r.Code != 0 {
		t.Fatalf("dkim keygen into the data folder: %s", r)
	}
	if r := postino(t, nil, "db", "migrate", "--config", pgCfg); r.Code != 0 {
		t.Fatalf("db migrate: %s", r)
	}
	r := postino(t, nil, "db", "import", "--config", pgCfg)
	for _, want := range []string{"users: 2 imported, 0 already there", "aliases: 2 imported, 0 already there", "DKIM keys: 2 imported, 0 already there"} {
		if r.Code != 0 || !strings.Contains(r.Stdout, want) {
			t.Fatalf("db import: %s, want %q", r, want)
		}
	}
	c.imported = true
	r = postino(t, nil, "db", "import", "--config", pgCfg)
	for _, want := range []string{"users: 0 imported, 2 already there", "aliases: 0 imported, 2 already there", "DKIM keys: 0 imported, 2 already there"} {
		if r.Code != 0 || !strings.Contains(r.Stdout, want) {
			t.Fatalf("db import again: %s, want %q", r, want)
		}
	}
	if r := postino(t, nil, "alias", "list", "--config", pgCfg); r.Code != 0 || !strings.Contains(r.Stdout, "sales@example.test: alice@example.test, carol@example.test") {
		t.Fatalf("alias list: %s", r)
	}
	// A loop is refused; a new alias is in force on a running node.
	if r := postino(t, nil, "alias", "set", "alice@example.test", "sales@example.test", "--config", pgCfg); r.Code == 0 {
		t.Fatalf("alias making a loop accepted: %s", r)
	}
	if r := postino(t, nil, "alias", "del", "@example.test", "--config", pgCfg); r.Code != 0 {
		t.Fatalf("alias del: %s", r)
	}
	n := c.start(t, "node1", c.dsn)
	if l := smtpSend(t, n.smtp, message("to nobody"), "nobody@example.test"); !strings.HasPrefix(l, "550") {
		t.Fatalf("SMTP to an unknown address after the catch-all was removed: %q", l)
	}
	if r := postino(t, nil, "alias", "set", "team@example.test", "carol@example.test", "--config", pgCfg); r.Code != 0 {
		t.Fatalf("alias set: %s", r)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		l := smtpSend(t, n.smtp, message("to team"), "team@example.test")
		if strings.HasPrefix(l, "250") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SMTP to the new alias: %q", l)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r = postino(t, nil, "dkim", "keygen", "example.test", "--selector", "cluster1", "--algo", "ed25519", "--config", pgCfg)
	if r.Code != 0 || !strings.Contains(r.Stdout, "the database") || !strings.Contains(r.Stdout, "cluster1._domainkey.example.test") {
		t.Fatalf("dkim keygen into the database: %s", r)
	}
	if r := postino(t, nil, "dkim", "keygen", "example.test", "--selector", "cluster1", "--algo", "ed25519", "--config", pgCfg); r.Code == 0 {
		t.Fatalf("a second key with the same selector: %s", r)
	}
}
