package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/store/maildir"
)

// TestCLIVault: postino vault list and restore over a vault filled by a
// POP3 UPDATE (a Maildrop commit with the vault on), their argument
// errors, an unknown user, an unknown UIDL, and a mailbox in use.
func TestCLIVault(t *testing.T) {
	t.Setenv("POSTINO_CONFIG", "")
	t.Chdir(t.TempDir())
	data := filepath.Join(t.TempDir(), "data")
	cfgFile := filepath.Join(t.TempDir(), "postino.toml")
	if err := os.WriteFile(cfgFile, []byte("[pop3]\nvault_days = 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := []string{"--config", cfgFile, "--data", data}
	with := func(args ...string) []string { return append(args, d...) }
	for _, c := range []cliCase{
		{"init", with("init"), "", exitOK, "", ""},
		{"user add", with("user", "add", "--password-stdin", "alice@example.test"), "alice-pw\n", exitOK, "", ""},
		{"deliver 1", with("deliver", "--from", "bob@remote.test", "alice@example.test"), "From: Bob <bob@remote.test>\r\nSubject: first\r\n\r\nhello\r\n", exitOK, "", ""},
		{"deliver 2", with("deliver", "--from", "bob@remote.test", "alice@example.test"), "Subject: second\r\n\r\nhello\r\n", exitOK, "", ""},
		{"deliver 3", with("deliver", "--from", "bob@remote.test", "alice@example.test"), "Subject: third\r\n\r\nhello\r\n", exitOK, "", ""},
	} {
		c.check(t)
	}
	cfg := config.Default()
	cfg.DataDir = data
	st, err := maildir.New(cfg.MailDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetVault(true)
	ctx := context.Background()
	md, err := st.OpenMaildrop(ctx, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	msgs := md.Messages()
	if len(msgs) != 3 {
		t.Fatalf("%d messages delivered", len(msgs))
	}
	if err := md.Commit(ctx, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	md.Close()
	first, second := msgs[0].UID, msgs[1].UID

	for _, c := range []cliCase{
		{"no command", with("vault"), "", exitUsage, "", "vault: missing command (list, restore)"},
		{"unknown command", with("vault", "purge", "alice@example.test"), "", exitUsage, "", `unknown vault command "purge"`},
		{"list no address", with("vault", "list"), "", exitUsage, "", "missing ADDRESS"},
		{"list extra", with("vault", "list", "alice@example.test", "x"), "", exitUsage, "", `unexpected argument "x"`},
		{"restore nothing", with("vault", "restore", "alice@example.test"), "", exitUsage, "", "missing UIDL or --all"},
		{"restore both", with("vault", "restore", "alice@example.test", first, "--all"), "", exitUsage, "", "not both"},
		{"unknown user", with("vault", "list", "mallory@example.test"), "", exitNoUser, "", "no such user"},
		{"bad address", with("vault", "list", "../../etc"), "", exitDataErr, "", ""},
		{"list", with("vault", "list", "alice@example.test"), "", exitOK, first, ""},
		{"list shows header", with("vault", "list", "ALICE@example.test"), "", exitOK, "Bob <bob@remote.test>  first", ""},
		{"restore unknown", with("vault", "restore", "alice@example.test", "no-such-uidl"), "", exitDataErr, "", "no such message in the vault"},
		{"restore one", with("vault", "restore", "alice@example.test", first), "", exitOK, "1 messages restored", ""},
	} {
		c.check(t)
	}
	_, out, _ := runCmd(t, "", with("vault", "list", "alice@example.test")...)
	if strings.Contains(out, first) || !strings.Contains(out, second) {
		t.Errorf("vault after restoring %s:\n%s", first, out)
	}
	// A POP3 session holds the mailbox: restore waits for it to end.
	md, err = st.OpenMaildrop(ctx, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	cliCase{"restore in use", with("vault", "restore", "alice@example.test", "--all"), "", exitTempFail, "", "in use by a POP3 session"}.check(t)
	md.Close()
	cliCase{"restore all", with("vault", "restore", "alice@example.test", "--all"), "", exitOK, "1 messages restored", ""}.check(t)
	md, err = st.OpenMaildrop(ctx, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	var got []string
	for _, m := range md.Messages() {
		got = append(got, m.UID)
	}
	if len(got) != 3 || got[0] != first || got[1] != second {
		t.Errorf("mailbox after restore: %v, want the old UIDLs back in order", got)
	}
}

// TestListenAddrsIncludeAdmin: the admin listener is one of the addresses
// that root may serve only on loopback without run_as.
func TestListenAddrsIncludeAdmin(t *testing.T) {
	cfg := config.Default()
	cfg.POP3.Listen, cfg.POP3.ListenTLS = "", ""
	cfg.SMTP.Listen, cfg.SMTP.Submission, cfg.SMTP.Submissions, cfg.SMTP.LMTP = "", "", "", ""
	cfg.Admin.Listen = "192.0.2.1:9110"
	got := listenAddrs(cfg)
	if len(got) != 1 || got[0] != "192.0.2.1:9110" || isLoopbackAddr(got[0]) {
		t.Fatalf("listenAddrs = %v", got)
	}
}
