package blackbox

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// userRow returns the "postino user list" row of addr, split on tabs.
func userRow(t *testing.T, data, addr string) []string {
	t.Helper()
	r := postino(t, nil, "user", "list", "--data", data)
	if r.Code != 0 {
		t.Fatalf("user list: %s", r)
	}
	for _, line := range strings.Split(r.Stdout, "\n") {
		if f := strings.Split(line, "\t"); f[0] == addr {
			return f
		}
	}
	return nil
}

// TestQuotaCLIAndPOP3: "user quota" writes Dovecot's extra field and keeps
// it across passwd, "user list" shows counts, sizes and quotas, "deliver"
// exits 73 when the mailbox is full (delivering nothing), and a user over
// quota can still log in (plain, STLS, implicit TLS), download and delete,
// and then receives mail again.
func TestQuotaCLIAndPOP3(t *testing.T) {
	s := startServer(t, serverOpts{})
	addUser(t, s.data, "alice@example.test", "alice-pw")
	addUser(t, s.data, "bob@example.test", "bob-pw")
	const from = "sender@remote.test"
	msg := []byte("Subject: q\n\n" + strings.Repeat("x", 300) + "\n")

	if r := postino(t, nil, "user", "quota", "alice@example.test", "1k", "--data", s.data); r.Code != 0 {
		t.Fatalf("user quota: %s", r)
	}
	if r := postino(t, []byte("alice-pw\n"), "user", "passwd", "alice@example.test", "--password-stdin", "--data", s.data); r.Code != 0 {
		t.Fatalf("user passwd: %s", r)
	}
	passwd, err := os.ReadFile(filepath.Join(s.data, "users.passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(passwd), "alice@example.test:{ARGON2ID}") || !strings.Contains(string(passwd), "::::::userdb_quota_rule=*:storage=1k\n") {
		t.Fatalf("users.passwd:\n%s", passwd)
	}
	for _, bad := range [][]string{{"alice@example.test", "lots"}, {"alice@example.test", "1k", "--messages", "-1"}} {
		if r := postino(t, nil, append([]string{"user", "quota", "--data", s.data}, bad...)...); r.Code != 64 {
			t.Errorf("user quota %q: %s, want exit 64", bad, r)
		}
	}
	if r := postino(t, nil, "user", "quota", "nobody@example.test", "1k", "--data", s.data); r.Code != 67 {
		t.Errorf("user quota of an unknown user: %s, want exit 67", r)
	}

	mustDeliver(t, s.data, from, msg, "alice@example.test")
	mustDeliver(t, s.data, from, msg, "alice@example.test")
	// A third does not fit: 73, and bob, also a recipient, gets nothing.
	r := deliver(t, s.data, from, msg, "bob@example.test", "alice@example.test")
	if r.Code != 73 || !strings.Contains(r.Stderr, "mailbox full") {
		t.Fatalf("deliver over quota: %s, want exit 73 and \"mailbox full\"", r)
	}
	row := userRow(t, s.data, "alice@example.test")
	if len(row) != 5 || row[1] != "ARGON2ID" || row[2] != "2" || row[4] != "*:storage=1k" {
		t.Fatalf("user list row of alice: %q", row)
	}
	if n, _ := strconv.Atoi(row[3]); n < 600 || n > 1024 {
		t.Errorf("alice's octets: %q", row[3])
	}
	if row := userRow(t, s.data, "bob@example.test"); strings.Join(row, "|") != "bob@example.test|ARGON2ID|0|0|-" {
		t.Errorf("user list row of bob: %q", row)
	}

	// Over quota, alice still logs in everywhere and frees space.
	for _, mode := range []string{"plain", "stls", "tls"} {
		if err := pop3Login(t, s, mode, "alice@example.test", "alice-pw"); err != nil {
			t.Fatalf("%s login over quota: %v", mode, err)
		}
	}
	c := s.login("alice@example.test", "alice-pw")
	got := retrAll(t, c)
	if len(got) != 2 {
		t.Fatalf("RETR over quota: %d messages", len(got))
	}
	for i := range got {
		if err := c.Dele(i + 1); err != nil {
			t.Fatalf("DELE %d: %v", i+1, err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	mustDeliver(t, s.data, from, msg, "alice@example.test")
	if row := userRow(t, s.data, "alice@example.test"); row[2] != "1" {
		t.Errorf("after freeing space and one delivery: %q", row)
	}

	// The configured default applies once the user's own rule is removed.
	if r := postino(t, nil, "user", "quota", "alice@example.test", "default", "--data", s.data); r.Code != 0 {
		t.Fatalf("user quota default: %s", r)
	}
	if row := userRow(t, s.data, "alice@example.test"); row[4] != "-" {
		t.Errorf("quota after removing the rule (no default configured): %q", row)
	}
}

// TestUserDelPurge: del --purge needs a terminal or --yes, refuses while
// the user is logged in over POP3, and removes only the user's directory.
func TestUserDelPurge(t *testing.T) {
	s := startServer(t, serverOpts{})
	addUser(t, s.data, "alice@example.test", "alice-pw")
	addUser(t, s.data, "bob@example.test", "bob-pw")
	mustDeliver(t, s.data, "x@remote.test", []byte("Subject: a\n\nx\n"), "alice@example.test", "bob@example.test")
	aliceDir := filepath.Join(s.data, "mail", "example.test", "alice")
	bobDir := filepath.Join(s.data, "mail", "example.test", "bob")

	// No terminal, no --yes: refused, nothing removed.
	r := postino(t, []byte("yes\n"), "user", "del", "alice@example.test", "--purge", "--data", s.data)
	if r.Code != 64 || !strings.Contains(r.Stderr, "--yes") {
		t.Fatalf("del --purge without a terminal: %s, want exit 64 naming --yes", r)
	}
	if row := userRow(t, s.data, "alice@example.test"); row == nil || row[2] != "1" {
		t.Fatalf("alice after a refused purge: %q", row)
	}

	// Logged in: the maildrop lock refuses, and the user stays.
	c := s.login("alice@example.test", "alice-pw")
	r = postino(t, nil, "user", "del", "alice@example.test", "--purge", "--yes", "--data", s.data)
	if r.Code != 75 || !strings.Contains(r.Stderr, "logged in") {
		t.Fatalf("del --purge while logged in: %s, want exit 75 saying logged in", r)
	}
	if row := userRow(t, s.data, "alice@example.test"); row == nil || row[2] != "1" {
		t.Fatalf("alice after a purge refused by the lock: %q", row)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	r = postino(t, nil, "user", "del", "alice@example.test", "--purge", "--yes", "--data", s.data)
	if r.Code != 0 || !strings.Contains(r.Stdout, "deleted alice@example.test and its mailbox (1 messages") {
		t.Fatalf("del --purge --yes: %s", r)
	}
	if _, err := os.Stat(aliceDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("alice's directory still there: %v", err)
	}
	if userRow(t, s.data, "alice@example.test") != nil {
		t.Fatal("alice still listed")
	}
	if _, err := os.Stat(filepath.Join(bobDir, "Maildir", "new")); err != nil {
		t.Fatalf("bob's mailbox touched: %v", err)
	}
	if _, err := s.tryLogin("alice@example.test", "alice-pw"); err == nil {
		t.Fatal("alice can still log in")
	}
	if r := postino(t, nil, "user", "del", "alice@example.test", "--purge", "--yes", "--data", s.data); r.Code != 67 {
		t.Errorf("purging a deleted user: %s, want exit 67", r)
	}
}

// TestUserDelPurgeConfirm answers the confirmation on a terminal (a pty
// made by script(1)): anything but "yes" removes nothing.
func TestUserDelPurgeConfirm(t *testing.T) {
	scriptBin := testutil.NeedProgram(t, "script")
	data := t.TempDir()
	addUser(t, data, "alice@example.test", "alice-pw")
	mustDeliver(t, data, "x@remote.test", []byte("Subject: a\n\nx\n"), "alice@example.test")
	cmdline := "'" + binPath + "' user del alice@example.test --purge --data '" + data + "'"
	r := run(t, nil, []byte("no\n"), scriptBin, "-qec", cmdline, "/dev/null")
	if r.Code != 1 || !strings.Contains(r.Stdout+r.Stderr, "Type yes") {
		t.Fatalf("answering no: %s, want exit 1 after the question", r)
	}
	if row := userRow(t, data, "alice@example.test"); row == nil || row[2] != "1" {
		t.Fatalf("alice after answering no: %q", row)
	}
	r = run(t, nil, []byte("yes\n"), scriptBin, "-qec", cmdline, "/dev/null")
	if r.Code != 0 || !strings.Contains(r.Stdout+r.Stderr, "deleted alice@example.test and its mailbox") {
		t.Fatalf("answering yes: %s", r)
	}
	if _, err := os.Stat(filepath.Join(data, "mail", "example.test", "alice")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("alice's directory after answering yes: %v", err)
	}
}
