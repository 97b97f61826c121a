package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
)

// snapshot returns the UIDLs and octets of a mailbox of st.
func snapshot(t *testing.T, st store.Store, box string) ([]string, [][]byte) {
	t.Helper()
	ctx := context.Background()
	md, err := st.OpenMaildrop(ctx, box)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	var uids []string
	var bodies [][]byte
	for i, m := range md.Messages() {
		rc, err := md.Open(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		uids = append(uids, m.UID)
		bodies = append(bodies, b)
	}
	return uids, bodies
}

// TestCLIExport: postino export of a Maildir data folder (a backup): the
// copy serves the same UIDLs and octets; a second run writes nothing; a
// mailbox in use, a hostile address and a missing DIR are refused.
func TestCLIExport(t *testing.T) {
	t.Setenv("POSTINO_CONFIG", "")
	t.Chdir(t.TempDir())
	data := filepath.Join(t.TempDir(), "data")
	out := filepath.Join(t.TempDir(), "backup")
	d := []string{"--data", data}
	with := func(args ...string) []string { return append(args, d...) }
	const alice = "alice@example.test"
	for _, c := range []cliCase{
		{"init", with("init"), "", exitOK, "", ""},
		{"user add", with("user", "add", "--password-stdin", alice), "pw\n", exitOK, "", ""},
		{"user add bob", with("user", "add", "--password-stdin", "bob@example.test"), "pw\n", exitOK, "", ""},
		{"deliver 1", with("deliver", "--from", "x@remote.test", alice), "Subject: one\n\nhello\n", exitOK, "", ""},
		{"deliver 2", with("deliver", "--from", "x@remote.test", alice), "Subject: two\r\n\r\nno final newline", exitOK, "", ""},
		{"missing DIR", with("export"), "", exitUsage, "", "missing DIR"},
		{"export", with("export", out), "", exitOK, alice + ": 2 messages written, 0 already there", ""},
		{"export again", with("export", out, alice), "", exitOK, alice + ": 0 messages written, 2 already there", ""},
		{"hostile address", with("export", out, "../x@example.test"), "", exitUsage, "", "export:"},
	} {
		c.check(t)
	}
	cfg := config.Default()
	cfg.DataDir = data
	src, err := maildir.New(cfg.MailDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := maildir.New(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	wantU, wantB := snapshot(t, src, alice)
	gotU, gotB := snapshot(t, dst, alice)
	if len(gotU) != 2 || len(gotU) != len(wantU) {
		t.Fatalf("export has %v, source %v", gotU, wantU)
	}
	for i := range wantU {
		if gotU[i] != wantU[i] || !bytes.Equal(gotB[i], wantB[i]) {
			t.Errorf("message %d: export %s %q, source %s %q", i+1, gotU[i], gotB[i], wantU[i], wantB[i])
		}
	}
	if _, err := os.Stat(filepath.Join(out, "example.test", "alice", "Maildir", "dovecot-uidlist")); err != nil {
		t.Error(err)
	}
	// A mailbox in use by a session is not exported.
	md, err := src.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	cliCase{"in use", with("export", out, alice), "", exitTempFail, "", "in use by a POP3 session"}.check(t)
}
