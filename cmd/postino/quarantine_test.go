package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/quarantine"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
)

// TestCLIQuarantine: list, show, release (into the user's mailbox) and
// delete held messages, and the argument errors, in-process.
func TestCLIQuarantine(t *testing.T) {
	t.Setenv("POSTINO_CONFIG", "")
	t.Chdir(t.TempDir())
	data := filepath.Join(t.TempDir(), "data")
	cfgFile := filepath.Join(t.TempDir(), "postino.toml")
	if err := os.WriteFile(cfgFile, []byte("[junk]\ndigest = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := []string{"--config", cfgFile, "--data", data}
	with := func(args ...string) []string { return append(args, d...) }
	for _, c := range []cliCase{
		{"init", with("init"), "", exitOK, "", ""},
		{"user add", with("user", "add", "--password-stdin", "alice@example.test"), "alice-pw\n", exitOK, "", ""},
		{"list empty", with("quarantine", "list"), "", exitOK, "quarantine is empty", ""},
		{"user junk", with("user", "junk", "alice@example.test", "Quarantine"), "", exitOK, "spam of alice@example.test: quarantine", ""},
		{"user junk bad", with("user", "junk", "alice@example.test", "drop"), "", exitUsage, "", `unknown choice "drop"`},
		{"user junk unknown user", with("user", "junk", "zed@example.test", "tag"), "", exitNoUser, "", "zed@example.test"},
		{"user junk default", with("user", "junk", "alice@example.test", "default"), "", exitOK, "the default (junk.default_action)", ""},
		{"no command", with("quarantine"), "", exitUsage, "", "missing command"},
		{"unknown command", with("quarantine", "purge"), "", exitUsage, "", `unknown quarantine command "purge"`},
		{"show without ID", with("quarantine", "show"), "", exitUsage, "", "missing ID"},
		{"bad ID", with("quarantine", "show", "../../etc/passwd"), "", exitError, "", "invalid ID"},
		{"unknown ID", with("quarantine", "release", "20261130T021200-0123456789abcdef"), "", exitError, "", "no such message"},
	} {
		c.check(t)
	}
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = data
	q := &quarantine.Store{Dir: cfg.QuarantineDir()}
	msg := "Received: from x by mx\r\nFrom: Spammer <s@spam.example>\r\nSubject: cheap pills\r\n\r\nbuy now\r\n"
	id, err := q.Hold(context.Background(), quarantine.Meta{User: "alice@example.test", Sender: "s@spam.example", Recipient: "alice@example.test", Score: 12.5, Reasons: "milter:rspamd 12.5"}, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	id2, err := q.Hold(context.Background(), quarantine.Meta{User: "alice@example.test", Recipient: "alice@example.test"}, strings.NewReader("Subject: second\r\n\r\nx\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []cliCase{
		{"list", with("quarantine", "list"), "", exitOK, id, ""},
		{"list user", with("quarantine", "list", "Alice@Example.TEST"), "", exitOK, "cheap pills", ""},
		{"list other user", with("quarantine", "list", "bob@example.test"), "", exitOK, "quarantine is empty", ""},
		{"show", with("quarantine", "show", id), "", exitOK, "Score:     12.5", ""},
		{"show message", with("quarantine", "show", id), "", exitOK, "Subject: cheap pills\r\n\r\nbuy now", ""},
		{"digest", with("quarantine", "digest"), "", exitOK, "1 digests delivered", ""},
		{"digest again", with("quarantine", "digest"), "", exitOK, "0 digests delivered", ""},
		{"release", with("quarantine", "release", id), "", exitOK, "released " + id + " into the mailbox of alice@example.test", "released by administrator"},
		{"release twice", with("quarantine", "release", id), "", exitError, "", "no such message"},
		{"delete", with("quarantine", "delete", id2), "", exitOK, "deleted " + id2, ""},
		{"list after", with("quarantine", "list"), "", exitOK, "quarantine is empty", ""},
	} {
		c.check(t)
	}
	st, err := maildir.New(cfg.MailDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	msgs := mailtest.StoreMessages(t, st, "alice@example.test")
	if len(msgs) != 2 {
		t.Fatalf("mailbox holds %d messages, want the digest and the released one", len(msgs))
	}
	var digest, released string
	for _, m := range msgs {
		if strings.Contains(m, "held as spam") {
			digest = m
		} else {
			released = m
		}
	}
	if !strings.Contains(digest, id) || !strings.Contains(digest, id2) || !strings.Contains(digest, "Return-Path: <>") {
		t.Errorf("digest:\n%s", digest)
	}
	if !strings.HasPrefix(released, "Return-Path: <s@spam.example>\r\nDelivered-To: alice@example.test\r\n"+msg) || strings.Contains(released, "X-Quarantine") {
		t.Errorf("released message:\n%q", released)
	}
}
